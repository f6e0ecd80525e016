"""Duplicate signals at ingest (issue 25): every row decoded by Pillow stores ``signals_of`` its image; unchanged
rows keep them; a collection made before them gains them on the next run over the same source, without a forward
pass (and a dry run writes nothing)."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.duplicates.signals import (HEIGHT_KEY, PIXELS_KEY, SIGNAL_KEYS, WIDTH_KEY, has_signals,
                                                 signals_of)
from mmindex.pipeline.ingest.images import DEFAULT_MAX_PIXELS, decode_image
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.ingest.sample import write_sample


@pytest.fixture(params=["edge", "memory"])
def store(request, tmp_path):
    made = (QdrantEdgeStore("sig", data_dir=tmp_path / "store") if request.param == "edge"
            else QdrantServerStore("sig", url=":memory:"))
    yield made
    made.close()


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    write_sample(folder, rows=12, seed=7, width=96, height=72)  # JPEGs larger than twice the tiny model's side
    return folder


def expected_signals(folder, encoder) -> dict[str, dict]:
    """Point id → the signals of each row's image as ingest decodes it (the model's side, its crop rule)."""
    rows = pq.read_table(next(folder.glob("*.parquet"))).to_pylist()
    return {point_id_from_key(row["id"]): signals_of(decode_image(row["image"], encoder.image_size, DEFAULT_MAX_PIXELS,
                                                                   encoder.center_crop)).to_payload() for row in rows}


def stored(store) -> dict[str, dict]:
    points, _ = store.scroll(limit=1000)
    return {point.id: point.payload for point in points}


@pytest.mark.parametrize("pipelined", [True, False])
def test_each_point_stores_the_signals_of_its_decoded_image(data, encoder, store, pipelined):
    summary = ingest([str(data)], store, encoder, IngestOptions(batch_size=5, pipelined=pipelined))
    assert (summary.upserted, summary.signals_added) == (12, 0)
    expected = expected_signals(data, encoder)
    payloads = stored(store)
    assert set(payloads) == set(expected)
    for point_id, payload in payloads.items():
        assert {key: payload[key] for key in SIGNAL_KEYS} == expected[point_id]


def test_a_source_column_named_like_a_signal_keeps_its_data_under_another_name(tmp_path, encoder, store):
    folder = tmp_path / "named"
    write_sample(folder, rows=4, seed=2, width=32, height=32)
    path = next(folder.glob("*.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.append_column("_pixels", pa.array(["mine"] * 4)), path)
    summary = ingest([str(folder)], store, encoder)
    assert any("'_pixels' is stored as '_pixels_'" in note for note in summary.notes), summary.notes
    for payload in stored(store).values():
        assert payload["_pixels_"] == "mine" and len(payload[PIXELS_KEY]) == 32


def test_an_unchanged_row_keeps_its_signals(data, encoder, store):
    ingest([str(data)], store, encoder)
    before = stored(store)
    again = ingest([str(data)], store, encoder)
    assert (again.unchanged, again.payload_updated, again.signals_added, again.embedded) == (12, 0, 0, 0)
    assert stored(store) == before


def strip_signals(store) -> None:
    """Make the collection look as if made before duplicate signals were kept."""
    store.overwrite_payloads([(point_id, {k: v for k, v in payload.items() if k not in SIGNAL_KEYS})
                              for point_id, payload in stored(store).items()])


def test_a_collection_made_before_signals_gains_them_without_a_forward_pass(data, encoder, store, monkeypatch):
    ingest([str(data)], store, encoder)
    strip_signals(store)
    vectors = {p.id: list(p.vectors["image"]) for p in store.retrieve(list(stored(store)), with_vectors=True)}
    dry = ingest([str(data)], store, encoder, IngestOptions(dry_run=True))
    assert (dry.payload_updated, dry.signals_added, dry.upserted) == (12, 12, 0)
    assert not any(has_signals(payload) for payload in stored(store).values())  # the dry run wrote nothing

    def no_forward(*args, **kwargs):  # fault injection: a forward pass would fail the run
        raise AssertionError("a row was embedded again")

    monkeypatch.setattr(type(encoder), "forward", no_forward)
    monkeypatch.setattr(type(encoder), "encode_each", no_forward)
    summary = ingest([str(data)], store, encoder)
    assert (summary.embedded, summary.payload_updated, summary.signals_added, summary.unchanged) == (0, 12, 12, 0)
    assert summary.adds_up()
    expected = expected_signals(data, encoder)
    after = store.retrieve(list(expected), with_vectors=True)
    for point in after:
        assert {key: point.payload[key] for key in SIGNAL_KEYS} == expected[point.id]
        assert list(point.vectors["image"]) == pytest.approx(vectors[point.id])
    third = ingest([str(data)], store, encoder)
    assert (third.unchanged, third.signals_added) == (12, 0)


# -- the keeper's size is the file's, not the reduced decode's (review of issue 25) -----------------------------
def picture(width: int, height: int) -> Image.Image:
    """A smooth colour picture (the same at any size): two gradients and a disc."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    disc = ((x - 0.4) ** 2 + (y - 0.5) ** 2 < 0.05).astype(np.float32)
    planes = [255 * x * np.ones_like(y), 255 * y * np.ones_like(x), 255 * disc]
    return Image.fromarray(np.stack(planes, axis=-1).astype(np.uint8))


def encoded(image: Image.Image, fmt: str, orientation: int = 1) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[ExifTags.Base.Orientation] = orientation
    image.save(buffer, format=fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def test_width_and_height_are_the_files_size_not_the_reduced_decode(tmp_path, encoder, store):
    rows = [("png", encoded(picture(900, 600), "PNG"), (900, 600)),
            ("jpeg", encoded(picture(3000, 2000), "JPEG"), (3000, 2000)),  # decoded at 1/8 by libjpeg's draft
            ("turned", encoded(picture(3000, 2000), "JPEG", orientation=6), (2000, 3000))]  # EXIF: 90° on display
    pq.write_table(pa.table({"id": [r[0] for r in rows], "image": [r[1] for r in rows],
                             "caption": ["a picture"] * len(rows)}), tmp_path / "sizes.parquet")
    ingest([str(tmp_path / "sizes.parquet")], store, encoder)
    payloads = stored(store)
    for key, _, size in rows:
        payload = payloads[point_id_from_key(key)]
        assert (payload[WIDTH_KEY], payload[HEIGHT_KEY]) == size, key


@settings(max_examples=40, deadline=None)
@given(width=st.integers(8, 400), height=st.integers(8, 400), fmt=st.sampled_from(["PNG", "JPEG"]),
       orientation=st.integers(1, 8), target=st.sampled_from([None, 8, 24, 64]), crop=st.booleans())
def test_source_size_is_the_upright_size_in_the_file_for_any_decode(width, height, fmt, orientation, target, crop):
    data = encoded(picture(width, height), fmt, orientation)
    image = decode_image(data, target, DEFAULT_MAX_PIXELS, crop)
    upright = (height, width) if orientation >= 5 else (width, height)  # EXIF 2.32: 5–8 turn by 90° or 270°
    assert image.info["source_size"] == upright == decode_image(data).size
    assert (signals_of(image).width, signals_of(image).height) == upright
