"""Shared helpers for the benchmarks: generated data, a ViT-B/32-shaped model, timing."""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # mmindex itself comes from the install (pip install -e .)

import numpy as np  # noqa: E402

CACHE = Path(os.environ.get("MMINDEX_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))


def sample_data(rows: int, width: int = 640, height: int = 480, files: int = 1, seed: int = 0) -> Path:
    """Synthetic JPEG rows of realistic size, generated once and cached."""
    from mmindex.pipeline.ingest.sample import write_sample

    folder = CACHE / f"sample-{rows}-{width}x{height}-{files}-{seed}"
    if not (folder / "done").exists():
        write_sample(folder, rows=rows, seed=seed, files=files, width=width, height=height)
        (folder / "done").write_text("ok")
    return folder


def model(size: str = "base") -> Path:
    """A randomly initialised CLIP (``base`` has the shape of ViT-B/32), built once and cached."""
    from mmindex.pipeline.training.scratch import build_scratch_model

    folder = CACHE / f"model-{size}"
    if not (folder / "modules.json").exists():
        build_scratch_model(folder, size=size)
    return folder


class NullEncoder:
    """A zero-cost stand-in for the model: real decoding and preprocessing, no forward pass.

    It shows how fast the pipeline alone can feed an accelerator.
    """

    def __init__(self, real):
        self.name, self.dim, self.image_size = real.name, real.dim, real.image_size
        self.model = real.model
        self.device = "cpu"
        self.oom_retries = 0
        self._real = real

    def preprocess(self, items):
        return self._real.preprocess(items)

    def captions_too_long(self, texts):
        return self._real.captions_too_long(texts)

    def forward(self, features):
        size = next(v.shape[0] for v in features.values() if hasattr(v, "shape"))
        vectors = np.zeros((size, self.dim), dtype=np.float32)
        vectors[:, 0] = 1.0
        return vectors


def tiled_sample(rows: int, unique: int, width: int = 640, height: int = 480, seed: int = 0) -> Path:
    """``rows`` rows that cycle through the images of ``sample_data(unique, …)`` under ids of their own: as many
    JPEGs to decode and rows to embed as a sample of ``rows``, for the price of generating ``unique`` images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = CACHE / f"tiled-{rows}-of-{unique}-{width}x{height}-{seed}"
    if not (folder / "done").exists():
        table = pq.read_table(sorted(sample_data(unique, width, height, seed=seed).glob("*.parquet")))
        tiled = table.take(pa.array([i % table.num_rows for i in range(rows)]))
        tiled = tiled.set_column(tiled.schema.get_field_index("id"), "id", pa.array([f"row-{i:08d}" for i in range(rows)]))
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(tiled, folder / "part-00000.parquet", row_group_size=4096)
        (folder / "done").write_text("ok")
    return folder


def ingest_rate(encoder, folder, batch_size: int, workers: int, **options) -> float:
    """End-to-end `ingest` rows/s from Parquet into a fresh embedded store (no index build); ``options`` go to
    ``IngestOptions`` (e.g. ``decode="gpu"``)."""
    import shutil
    import tempfile

    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.ingest.options import IngestOptions
    from mmindex.pipeline.ingest.run import ingest

    data_dir = tempfile.mkdtemp()
    try:
        store = QdrantEdgeStore("bench", data_dir=data_dir)
        summary, seconds = timed(ingest, [str(folder)], store, encoder,
                                 IngestOptions(batch_size=batch_size, workers=workers, optimize=False, **options))
        store.close()
        assert summary.upserted == summary.read, summary
        return summary.read / seconds
    finally:
        shutil.rmtree(data_dir)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import platform

    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"torch threads {torch.get_num_threads()}, cuda {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")


class NullStore:
    """A store that keeps nothing: separates the pipeline's own memory from the store's."""

    collection = "null"

    def spec(self):
        return None

    def ensure_collection(self, spec):
        pass

    def create_payload_index(self, name, kind):
        pass

    def begin_load(self):
        pass

    def upsert(self, points):
        pass

    def retrieve(self, ids, with_vectors=False):
        return []

    def finish(self, optimize=True):
        pass

    def close(self):
        pass
