"""ingest --decode gpu: JPEGs decoded by torchvision and preprocessed as tensors, checked against the Pillow path.

No GPU here: the torchvision path runs with ``decode_device="cpu"`` (the same code, another device). Those
tests need torchvision (the `gpu` extra; it imports only beside torch 2.14.1, see README) and are skipped
without it; the refusals run everywhere.
"""
from __future__ import annotations

import io
import random
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import ModelError
from mmindex.pipeline.ingest import gpu_decode
from mmindex.pipeline.ingest.gpu_decode import COSINE_BAR, GpuDecoder, choose_decoder
from mmindex.pipeline.ingest.images import DEFAULT_MAX_PIXELS, ImageBytes, decode_image
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.ingest.rows import SourceRow
from mmindex.pipeline.ingest.sample import make_row


@pytest.fixture(scope="module")
def encoder(tiny_model):
    """The tiny CLIP in torch (the GPU decode feeds the torch backend), whatever the default backend becomes."""
    from mmindex.pipeline.models.encoder import Encoder

    return Encoder(tiny_model, device="cpu", batch_size=16, backend="torch")


def _torchvision_imports() -> bool:
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or built for another torch
        return False
    return True


needs_torchvision = pytest.mark.skipif(
    not _torchvision_imports(),
    reason="torchvision is not importable: pip install 'mmindex[gpu]' (with torch 2.14.1 + torchvision 0.29.1, "
           "as .ci/run's second venv)")


def jpeg(image: Image.Image, orientation: int = 1, **options) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def scene(index: int, width: int, height: int) -> Image.Image:
    return make_row(random.Random(index), index, width, height).image


def cut_after_header(data: bytes) -> bytes:
    """A JPEG whose header reads (size, mode) but with no image data: Pillow and torchvision both fail on it."""
    return data[:data.index(b"\xff\xda")] + b"\xff\xd9"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# id → image bytes, and whether the torchvision path takes it (else Pillow decodes it, or rejects it).
def photos() -> dict[str, tuple[bytes, bool]]:
    return {
        "landscape": (jpeg(scene(1, 640, 480)), True),
        "smaller than the model's input": (jpeg(scene(12, 24, 20)), True),
        "portrait": (jpeg(scene(2, 480, 640)), True),
        "panorama": (jpeg(scene(3, 1500, 300)), True),
        "gray": (jpeg(scene(4, 800, 600).convert("L")), True),
        "turned": (jpeg(scene(5, 640, 480), orientation=6), True),
        "mirrored": (jpeg(scene(6, 400, 300), orientation=5), True),
        "png": (png(scene(7, 300, 200)), False),
        "cmyk": (jpeg(scene(8, 320, 240).convert("CMYK")), False),
        "progressive": (jpeg(scene(9, 320, 240), progressive=True), False),
        "no-data": (cut_after_header(jpeg(scene(10, 320, 240))), True),
        "truncated": (jpeg(scene(11, 320, 240))[:3000], False),
    }


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    items = photos()
    pq.write_table(pa.table({"id": list(items), "image": [data for data, _ in items.values()],
                             "caption": [f"a photo called {name}" for name in items]}), folder / "photos.parquet")
    return folder


def Row(data: bytes) -> SourceRow:
    """A row as read_batch makes it (the real class: a stand-in drifted once from what the decoder writes to)."""
    return SourceRow("photos.parquet", 0, "id", "id", ImageBytes(data), None, {}, "hash")


def cpu_pixels(encoder, data: bytes):
    image = decode_image(data, encoder.image_size, DEFAULT_MAX_PIXELS, encoder.center_crop)
    return encoder.preprocess([image])["pixel_values"][0]


def gpu_pixels(encoder, datas: list[bytes], fallbacks: int = 0):
    """The torchvision path's inputs; ``fallbacks``: how many JPEGs it should have handed to Pillow."""
    decoder = GpuDecoder(encoder, DEFAULT_MAX_PIXELS, "cpu")
    kept, batch, rejected = decoder.read_rows([Row(data) for data in datas], encoder)
    features, errors = decoder.features(batch, encoder)
    assert decoder.fallbacks == fallbacks
    return kept, batch, rejected, features["pixel_values"], errors


def stored_image_vectors(store, ids) -> dict[str, np.ndarray]:
    points = store.retrieve([point_id_from_key(i) for i in ids], with_vectors=True)
    by_point = {point_id_from_key(i): i for i in ids}
    return {by_point[p.id]: np.asarray(p.vectors["image"], dtype=np.float64) for p in points}


def ingest_with(folder, tmp_path, encoder, name: str, **options):
    store = QdrantEdgeStore(name, data_dir=tmp_path / name)
    summary = ingest([str(folder)], store, encoder, IngestOptions(batch_size=16, optimize=False, **options))
    return store, summary


@needs_torchvision
def test_vectors_by_torchvision_match_the_pillow_path(photo_dir, tmp_path, encoder):
    cpu_store, cpu = ingest_with(photo_dir, tmp_path, encoder, "cpu", decode="cpu")
    gpu_store, gpu = ingest_with(photo_dir, tmp_path, encoder, "gpu", decode="gpu", decode_device="cpu")
    assert any("JPEGs decoded by torchvision on cpu" in note for note in gpu.notes), gpu.notes
    assert (gpu.read, gpu.upserted, gpu.rejected) == (cpu.read, cpu.upserted, cpu.rejected) == (12, 10, 2)
    assert gpu.adds_up()
    ids = list(photos())
    expected, got = stored_image_vectors(cpu_store, ids), stored_image_vectors(gpu_store, ids)
    assert sorted(got) == sorted(expected) == sorted(set(ids) - {"no-data", "truncated"})
    cosines = {name: float(expected[name] @ got[name]) for name in expected}
    assert min(cosines.values()) >= COSINE_BAR, cosines
    for name in ("png", "cmyk", "progressive"):  # decoded by Pillow on both paths: the same vectors
        assert cosines[name] == pytest.approx(1.0, abs=1e-6), name
    cpu_store.close()
    gpu_store.close()


@needs_torchvision
def test_a_png_and_a_broken_jpeg_fail_or_fall_back_alone(photo_dir, tmp_path, encoder):
    store, summary = ingest_with(photo_dir, tmp_path, encoder, "mixed", decode="gpu", decode_device="cpu")
    rejected = {r.id: (r.stage, r.reason) for r in summary.rejections}
    assert set(rejected) == {"no-data", "truncated"}
    assert rejected["no-data"][0] == rejected["truncated"][0] == "decode"
    assert "cannot be decoded" in rejected["no-data"][1]  # Pillow's reason, as on the CPU path
    assert rejected["truncated"][1] == _cpu_reason(photos()["truncated"][0])
    assert rejected["no-data"][1] == _cpu_reason(photos()["no-data"][0])
    assert all(r.file.endswith("photos.parquet") and r.row >= 0 for r in summary.rejections)
    assert store.count() == 10
    store.close()


def _cpu_reason(data: bytes) -> str:
    from mmindex.pipeline.ingest.images import RejectedImage

    with pytest.raises(RejectedImage) as caught:
        decode_image(data, 32)
    return caught.value.message


@needs_torchvision
def test_only_the_images_torchvision_takes_skip_pillow(encoder):
    items = photos()
    kept, batch, rejected, pixels, errors = gpu_pixels(encoder, [data for data, _ in items.values()], fallbacks=1)
    assert [row.image.data for row, _ in rejected] == [items["truncated"][0]]  # rejected by Pillow in the worker
    takes = [taken for name, (_, taken) in items.items() if name != "truncated"]
    assert [data is not None for data in batch.jpeg] == takes
    assert list(errors) == [list(items).index("no-data")]  # torchvision and then Pillow failed on it alone
    for row, taken in zip(kept, takes):  # Pillow's images carry duplicate signals; torchvision's JPEGs none
        assert ("_pixels" in row.payload) != taken
    assert pixels.shape == (11, 3, encoder.image_size, encoder.image_size)
    for (name, (data, taken)), got in zip(items.items(), pixels):  # each beside the CPU path's input
        if name != "no-data":
            difference = (got - cpu_pixels(encoder, data)).abs()
            assert float(difference.mean()) < 0.01 if taken else float(difference.max()) == 0.0, name


@needs_torchvision
def test_an_image_torchvision_fails_on_is_decoded_by_pillow_alone(encoder, monkeypatch):
    import torchvision.io

    datas = [jpeg(scene(20, 320, 240)), jpeg(scene(21, 300, 400)), jpeg(scene(22, 256, 256))]
    real = torchvision.io.decode_jpeg
    calls = []

    def failing_on_the_second(data, *args, **kwargs):  # fault injection: a JPEG torchvision cannot read
        calls.append(data)
        items = data if isinstance(data, list) else [data]
        if any(len(item) == len(datas[1]) for item in items):
            raise RuntimeError("unsupported JPEG")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", failing_on_the_second)
    _, _, _, pixels, errors = gpu_pixels(encoder, datas, fallbacks=1)
    assert errors == {} and len(calls) == 4  # the batch, then each one alone
    assert np.array_equal(pixels[1].numpy(), cpu_pixels(encoder, datas[1]).numpy())  # Pillow's, exactly
    for index in (0, 2):
        assert float((pixels[index] - cpu_pixels(encoder, datas[index])).abs().mean()) < 0.01


@needs_torchvision
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(encoder, orientation):
    image = scene(30, 400, 300)
    data = jpeg(image, orientation)
    _, _, _, pixels, _ = gpu_pixels(encoder, [data])
    upright = cpu_pixels(encoder, data)
    unturned = cpu_pixels(encoder, jpeg(image))
    close = float((pixels[0] - upright).abs().mean())
    assert close < 0.01
    if orientation != 1:  # the check can tell: an image left unturned is far off
        assert float((unturned - upright).abs().mean()) > 5 * close


@needs_torchvision
def test_grayscale_jpeg_becomes_three_equal_channels(encoder):
    data = jpeg(scene(31, 640, 480).convert("L"))
    _, _, _, pixels, _ = gpu_pixels(encoder, [data])
    assert float((pixels[0] - cpu_pixels(encoder, data)).abs().mean()) < 0.01
    steps = encoder.backend.image_steps
    raw = pixels[0].numpy() * np.array(steps.std)[:, None, None] + np.array(steps.mean)[:, None, None]
    assert np.allclose(raw[0], raw[1], atol=1e-5) and np.allclose(raw[1], raw[2], atol=1e-5)


@needs_torchvision
def test_load_check_refuses_vectors_past_the_bar(encoder, monkeypatch):
    decoder, note = choose_decoder("gpu", encoder, DEFAULT_MAX_PIXELS, "cpu")
    assert decoder is not None and min(decoder.cosines) >= COSINE_BAR and len(decoder.cosines) == 8
    monkeypatch.setattr(gpu_decode, "COSINE_BAR", 1.5)  # a bar no path can meet
    with pytest.raises(ModelError, match=r"lowest cosine [01]\.\d+ < 1\.5 over 8 probe photos.*--decode cpu"):
        choose_decoder("gpu", encoder, DEFAULT_MAX_PIXELS, "cpu")
    decoder, note = choose_decoder("auto", encoder, DEFAULT_MAX_PIXELS, "cpu")  # auto: Pillow, and says why
    assert decoder is None and "--decode auto" in note and "lowest cosine" in note


def test_gpu_decode_without_torchvision_is_refused_naming_the_extra(encoder, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    with pytest.raises(ModelError, match=r"torchvision cannot be imported.*pip install 'mmindex\[gpu\]'"):
        choose_decoder("gpu", encoder, DEFAULT_MAX_PIXELS, "cpu")
    assert choose_decoder("auto", encoder, DEFAULT_MAX_PIXELS) == (None, None)  # a CPU model: nothing to say


def test_gpu_decode_on_a_cpu_model_is_refused_naming_cuda_and_the_extra(encoder):
    with pytest.raises(ModelError, match=r"runs on cpu, and GPU decoding needs CUDA.*mmindex\[gpu\]"):
        choose_decoder("gpu", encoder, DEFAULT_MAX_PIXELS)


def test_no_pipeline_is_refused_with_gpu_decode_in_the_library(sample_dir, tmp_path, encoder):
    from mmindex.errors import InputError

    store = QdrantEdgeStore("np", data_dir=tmp_path / "np")
    with pytest.raises(InputError, match="--no-pipeline is the Pillow reference path"):
        ingest([str(sample_dir)], store, encoder, IngestOptions(decode="gpu", pipelined=False))
    assert store.spec() is None  # refused before anything was written
    store.close()
