"""Benchmark 7 (peers): mmindex against what users would pick instead, side by side.

The same Parquet rows (640x480 JPEG + captions) and the same model (the ViT-B/32-shaped random
CLIP of common.py) go through each contestant, each in a fresh process (imports and model load
count), interleaved over K rounds in a rotated order:

  mmindex torch / onnx fp32 / onnx int8   `mmindex ingest` (embedded store, --no-optimize)
  plain script   pyarrow + PIL + SentenceTransformer.encode + qdrant-client local mode
  fastembed      FastEmbed ImageEmbedding / TextEmbedding over the ONNX towers mmindex exported
                 (fp32; loaded offline from a folder) + qdrant-client local mode
  daft           Daft: read_parquet, decode_image, a class UDF batch-embedding with the same
                 SentenceTransformer, then qdrant-client local mode

Timed: the whole process (start to exit) and ingest rows/s (first row read to last point
written; the model is loaded before). After each run the store is opened and every point
counted with both vectors; a contestant that wrote fewer than N is failed, not timed. Ratios
paired within each round are printed too (a busy machine slows one round for everybody), with the
1-min load average before and after every run; so is issue 27's fp32 pair (mmindex onnx fp32 against
FastEmbed on the same fp32 towers) in every round, on rows/s and on whole-process time, with its
median and spread at the end against the 1.25× goal. The
last line reads ``mmindex ÷ best peer: R``: the best mmindex backend's median rows/s over
the fastest of the plain script, FastEmbed and Daft.

    python bench/peers.py [--rows 256] [--rounds 3] [--batch-size 64] [--only plain,fastembed]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common
from common import CACHE

HERE = Path(__file__).resolve()
COLLECTION = "bench"
ONNX_CACHE = CACHE / "mmindex"  # $MMINDEX_CACHE of every contestant: the towers are exported once, before round 1
FASTEMBED_DIR = CACHE / "fastembed"  # the same towers laid out as FastEmbed loads a model from a folder
PEERS = ("plain", "fastembed", "daft")


@dataclass
class Contestant:
    key: str
    label: str
    available: str | None = None  # None: runs; else why not
    rates: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    loads: list[tuple[float, float]] = field(default_factory=list)  # 1-min load average before and after each run
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.available is None and self.failure is None and bool(self.rates)


CONTESTANTS = (
    ("mmindex-torch", "mmindex ingest, torch"),
    ("mmindex-onnx-fp32", "mmindex ingest, onnx fp32"),
    ("mmindex-onnx-int8", "mmindex ingest, onnx int8"),
    ("mmindex-onnx-fp32-2x1", "mmindex ingest, onnx fp32, 2 replicas x 1 thread"),
    ("plain", "plain script: pyarrow+PIL+ST.encode+qdrant local"),
    ("fastembed", "FastEmbed (our ONNX fp32 towers) + qdrant local"),
    ("daft", "Daft UDF + ST.encode + qdrant local"),
)


# -- the peers, each what a competent user writes (run in a worker process) ------------------------------------

def parquet_files(data: str) -> list[str]:
    return sorted(str(p) for p in Path(data).glob("*.parquet"))


def to_payload(row: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items() if k != "image"}


def point_id(key: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def open_qdrant(store: str, dim: int):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=store)
    client.create_collection(COLLECTION, vectors_config={
        name: models.VectorParams(size=dim, distance=models.Distance.COSINE) for name in ("image", "text")})
    return client


def upsert(client, rows: list[dict], image_vectors, text_vectors) -> None:
    from qdrant_client import models

    client.upsert(COLLECTION, [
        models.PointStruct(id=point_id(row["id"]), payload=to_payload(row),
                           vector={"image": [float(x) for x in image], "text": [float(x) for x in text]})
        for row, image, text in zip(rows, image_vectors, text_vectors)])


def run_plain(data: str, model: str, store: str, batch_size: int, **_) -> tuple[int, float]:
    import io

    import pyarrow.dataset as ds
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(model, device="cpu")
    client = open_qdrant(store, encoder.get_embedding_dimension())
    started, rows = time.perf_counter(), 0
    for batch in ds.dataset(parquet_files(data)).to_batches(batch_size=batch_size):
        table = batch.to_pylist()
        images = [Image.open(io.BytesIO(row["image"])).convert("RGB") for row in table]
        upsert(client, table, encoder.encode(images, batch_size=batch_size),
               encoder.encode([row["caption"] for row in table], batch_size=batch_size))
        rows += len(table)
    seconds = time.perf_counter() - started
    client.close()
    return rows, seconds


def register_fastembed_text(name: str, dim: int) -> None:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    # The tower already returns the projected sentence vector: no pooling, FastEmbed normalises it.
    TextEmbedding.add_custom_model(name, pooling=PoolingType.DISABLED, normalization=True, dim=dim,
                                   sources=ModelSource(hf=name), model_file="model.onnx",
                                   additional_files=["text.onnx.data"])


def run_fastembed(data: str, store: str, batch_size: int, fastembed_dir: str, **_) -> tuple[int, float]:
    import io

    import pyarrow.dataset as ds
    from fastembed import ImageEmbedding, TextEmbedding

    folder, cache = Path(fastembed_dir), str(Path(fastembed_dir) / "hub-cache")
    register_fastembed_text("mmindex-bench/clip-text", 512)
    texts = TextEmbedding("mmindex-bench/clip-text", cache_dir=cache, local_files_only=True,
                          specific_model_path=str(folder / "text"))
    # ImageEmbedding has no add_custom_model: its built-in CLIP ViT-B/32 entry (512-d, model.onnx,
    # normalised) is pointed at our folder instead, so nothing is downloaded.
    images = ImageEmbedding("Qdrant/clip-ViT-B-32-vision", cache_dir=cache, local_files_only=True,
                            specific_model_path=str(folder / "image"))
    client = open_qdrant(store, 512)
    started, rows = time.perf_counter(), 0
    for batch in ds.dataset(parquet_files(data)).to_batches(batch_size=batch_size):
        table = batch.to_pylist()
        image_vectors = list(images.embed([io.BytesIO(row["image"]) for row in table], batch_size=batch_size))
        text_vectors = list(texts.embed([row["caption"] for row in table], batch_size=batch_size))
        upsert(client, table, image_vectors, text_vectors)
        rows += len(table)
    seconds = time.perf_counter() - started
    client.close()
    return rows, seconds


_MODELS: dict = {}


def sentence_transformer(path: str):
    """Loaded once per process: the Daft UDF's __init__ finds the model the worker loaded before the clock."""
    if path not in _MODELS:
        from sentence_transformers import SentenceTransformer

        _MODELS[path] = SentenceTransformer(path, device="cpu")
    return _MODELS[path]


def run_daft(data: str, model: str, store: str, batch_size: int, **_) -> tuple[int, float]:
    import daft
    import numpy as np
    from daft import DataType
    from daft.functions import decode_image
    from PIL import Image

    dim = sentence_transformer(model).get_embedding_dimension()
    vector_type = DataType.embedding(DataType.float32(), dim)

    @daft.cls(max_concurrency=1, use_process=False)
    class Embedder:
        def __init__(self, path: str):
            self.model = sentence_transformer(path)

        @daft.method.batch(return_dtype=vector_type, batch_size=batch_size)
        def images(self, pixels):
            pictures = [Image.fromarray(np.asarray(array)) for array in pixels.to_pylist()]
            return list(self.model.encode(pictures, batch_size=batch_size))

        @daft.method.batch(return_dtype=vector_type, batch_size=batch_size)
        def texts(self, captions):
            return list(self.model.encode(captions.to_pylist(), batch_size=batch_size))

    client = open_qdrant(store, dim)
    started, rows = time.perf_counter(), 0
    embedder = Embedder(model)
    frame = daft.read_parquet(parquet_files(data))
    frame = frame.with_column("image_vector", embedder.images(decode_image(frame["image"], mode="RGB")))
    frame = frame.with_column("text_vector", embedder.texts(frame["caption"]))
    for batch in frame.to_arrow_iter():
        table = batch.to_pylist()
        upsert(client, table, [row.pop("image_vector") for row in table], [row.pop("text_vector") for row in table])
        rows += len(table)
    seconds = time.perf_counter() - started
    client.close()
    return rows, seconds


WORKERS = {"plain": run_plain, "fastembed": run_fastembed, "daft": run_daft}


def worker(args) -> None:
    if args.worker == "prepare":
        print(json.dumps(prepare(args.model)))
        return
    rows, seconds = WORKERS[args.worker](data=args.data, model=args.model, store=args.store,
                                         batch_size=args.batch_size, fastembed_dir=str(FASTEMBED_DIR))
    Path(args.result).write_text(json.dumps({"rows": rows, "seconds": seconds}))


# -- preparation (once, in its own process): ONNX export, FastEmbed's folders --------------------------------

def prepare(model: str) -> dict:
    """Export the towers (fp32, int8) into ONNX_CACHE and lay out FastEmbed's folders; what is available."""
    status: dict = {}
    try:
        from mmindex.pipeline.models.bundle import write_bundle
        from mmindex.pipeline.models.onnx_model import OnnxModel

        for precision in ("fp32", "int8"):
            onnx = OnnxModel(model, precision=precision, cache_root=ONNX_CACHE)
            write_bundle(onnx)  # as a first `mmindex ingest` does: later runs take the torch-free path
        status["onnx"] = str(onnx.cache_dir.parent)
    except Exception as error:  # ImportError (no onnxruntime), ModelError
        status["onnx_error"] = f"{type(error).__name__}: {error}"
        return status
    try:
        import fastembed  # noqa: F401

        fastembed_folders(Path(model), Path(status["onnx"]) / "fp32")
        status["fastembed"] = str(FASTEMBED_DIR)
    except Exception as error:
        status["fastembed_error"] = f"{type(error).__name__}: {error}"
    return status


def fastembed_folders(model: Path, towers: Path) -> None:
    """image/ and text/ as FastEmbed expects a model folder: model.onnx beside its external data and configs."""
    image, text = FASTEMBED_DIR / "image", FASTEMBED_DIR / "text"
    shutil.rmtree(FASTEMBED_DIR, ignore_errors=True)
    image.mkdir(parents=True)
    text.mkdir()
    for modality, folder in (("image", image), ("text", text)):
        link(towers / f"{modality}.onnx", folder / "model.onnx")
        link(towers / f"{modality}.onnx.data", folder / f"{modality}.onnx.data")  # the name the graph refers to
    processor = json.loads((model / "processor_config.json").read_text()).get("image_processor") \
        if (model / "processor_config.json").exists() else json.loads((model / "preprocessor_config.json").read_text())
    (image / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        if (model / name).exists():
            shutil.copy(model / name, text / name)


def link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        target.symlink_to(source)


# -- the race ---------------------------------------------------------------------------------------------

def mmindex_command(key: str, data: Path, model: Path, store: Path, report: Path, batch_size: int) -> list[str]:
    command = [str(Path(sys.executable).parent / "mmindex"), "ingest", str(data), "--collection", COLLECTION,
               "--data-dir", str(store), "--model", str(model), "--batch-size", str(batch_size),
               "--no-optimize", "--no-rejects", "--quiet", "--report", str(report)]
    if key == "mmindex-torch":
        return command + (["--backend", "torch"] if mmindex_has("--backend") else [])
    if key == "mmindex-onnx-fp32-2x1":  # one single-thread replica per core (issue 16 asks whether it is faster)
        return command + ["--backend", "onnx", "--model-precision", "fp32", "--devices", "cpu,cpu", "--model-threads", "1"]
    return command + ["--backend", "onnx", "--model-precision", key.rsplit("-", 1)[1]]


_HELP: list[str] = []


def mmindex_has(option: str) -> bool:
    if not _HELP:
        _HELP.append(subprocess.run([str(Path(sys.executable).parent / "mmindex"), "ingest", "--help"],
                                    capture_output=True, text=True, env=child_env()).stdout)
    return option in _HELP[0]


def child_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MMINDEX_CACHE=str(ONNX_CACHE),
               TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env.pop("MMINDEX_URL", None)
    env.pop("QDRANT_URL", None)
    return env


def run_once(contestant: Contestant, data: Path, model: Path, rows: int, batch_size: int) -> None:
    """One fresh process; its wall time, its own ingest rows/s, then the points it wrote counted."""
    scratch = Path(tempfile.mkdtemp(prefix=f"peers-{contestant.key}-"))
    store, result = scratch / "store", scratch / "result.json"
    if contestant.key.startswith("mmindex"):
        command = mmindex_command(contestant.key, data, model, store, result, batch_size)
    else:
        command = [sys.executable, str(HERE), "--worker", contestant.key, "--data", str(data), "--model", str(model),
                   "--store", str(store), "--result", str(result), "--batch-size", str(batch_size)]
    try:
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=child_env())
        wall = time.perf_counter() - started
        load = (load_before, os.getloadavg()[0])
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"exit {done.returncode}: {' | '.join(tail)}")
        report = json.loads(result.read_text())
        seconds = report["seconds"]
        written = count_points(contestant.key, store)
        if written != rows:
            raise RuntimeError(f"wrote {written} of {rows} points with both vectors")
        contestant.rates.append(rows / seconds)
        contestant.walls.append(wall)
        contestant.loads.append(load)
        print(f"  {contestant.key:<18} {rows / seconds:7.2f} rows/s  ingest {seconds:6.1f} s  whole {wall:6.1f} s  "
              f"load {load[0]:.2f}→{load[1]:.2f}", flush=True)
    except Exception as error:
        contestant.failure = str(error)[:300]
        print(f"  {contestant.key:<18} FAILED: {contestant.failure}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def count_points(key: str, store: Path) -> int:
    """Points holding an image and a text vector of the same, non-zero length."""
    def whole(vectors) -> bool:
        vectors = vectors or {}
        image, text = vectors.get("image"), vectors.get("text")
        return bool(image) and bool(text) and len(image) == len(text)

    if key.startswith("mmindex"):
        from mmindex.connectors.qdrant_edge import QdrantEdgeStore

        edge = QdrantEdgeStore(COLLECTION, data_dir=store)
        good, offset = 0, None
        try:
            precision = (edge.metadata() or {}).get("model_precision", "fp32")
            if precision != ("int8" if key.endswith("int8") else "fp32"):
                raise RuntimeError(f"the collection records model precision {precision}")
            while True:
                points, offset = edge.scroll(limit=256, offset=offset, with_payload=False, with_vectors=True)
                good += sum(whole(p.vectors) for p in points)
                if offset is None:
                    return good
        finally:
            edge.close()
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(store))
    try:
        good, offset = 0, None
        while True:
            points, offset = client.scroll(COLLECTION, limit=256, offset=offset, with_payload=False,
                                           with_vectors=True)
            good += sum(whole(p.vector) for p in points)
            if offset is None:
                return good
    finally:
        client.close()


def availability(contestants: list[Contestant], prepared: dict) -> None:
    for contestant in contestants:
        key = contestant.key
        if key.startswith("mmindex-onnx"):
            if not mmindex_has("--backend") or not mmindex_has("--model-precision"):
                contestant.available = "not available: `mmindex ingest` has no --backend/--model-precision yet"
            elif "onnx_error" in prepared:
                contestant.available = f"not available: {prepared['onnx_error']}"
        elif key == "fastembed" and "fastembed" not in prepared:
            contestant.available = "not available: " + prepared.get("fastembed_error", prepared.get("onnx_error", "?"))
        elif key == "daft":
            try:
                import daft  # noqa: F401
            except ImportError:
                contestant.available = "not available: pip install daft"


def table(contestants: list[Contestant], rows: int, rounds: int) -> None:
    base = next((c for c in contestants if c.key == "mmindex-torch" and c.ok), None)
    base_rate = statistics.median(base.rates) if base else None
    print(f"\n{'contestant':<50} {'rows/s':>8} {'whole s':>8} {'vs mmindex torch':>17}")
    for c in contestants:
        if not c.ok:
            print(f"{c.label:<50} {c.available or 'FAILED: ' + (c.failure or 'no run')}")
            continue
        rate, wall = statistics.median(c.rates), statistics.median(c.walls)
        ratio = f"{rate / base_rate:.2f}" if base_rate else "n/a"
        print(f"{c.label:<50} {rate:8.2f} {wall:8.1f} {ratio:>17}")
    print(f"(medians of {rounds} round(s), {rows} rows each; rows/s = first row read to last point written)")


def verdict(contestants: list[Contestant]) -> str:
    def best(keys) -> tuple[float, str] | None:
        rates = [(statistics.median(c.rates), c.label) for c in contestants if c.ok and c.key in keys]
        return max(rates) if rates else None

    ours = best({c.key for c in contestants if c.key.startswith("mmindex")})
    ours_fp32 = best({"mmindex-torch", "mmindex-onnx-fp32", "mmindex-onnx-fp32-2x1"})
    peer = best(PEERS)
    paired = paired_ratios(contestants)
    if paired:
        print("paired per round (best mmindex ÷ best peer of the same round): "
              + ", ".join(f"{ratio:.2f}" for ratio in paired))
    if ours_fp32 and peer:
        print(f"mmindex fp32 ({ours_fp32[1]}) ÷ best peer ({peer[1]}): {ours_fp32[0] / peer[0]:.2f}")
    if ours and peer:
        print(f"best mmindex: {ours[1]}; best peer: {peer[1]}")
        return f"mmindex ÷ best peer: {ours[0] / peer[0]:.2f}"
    return "mmindex ÷ best peer: n/a"


def paired_ratios(contestants: list[Contestant]) -> list[float]:
    """Per round, the best mmindex rate over the best peer rate: the load of that round hits both sides."""
    ours = [c for c in contestants if c.ok and c.key.startswith("mmindex")]
    peers = [c for c in contestants if c.ok and c.key in PEERS]
    if not ours or not peers:
        return []
    rounds = min(len(c.rates) for c in ours + peers)
    return [max(c.rates[r] for c in ours) / max(c.rates[r] for c in peers) for r in range(rounds)]


FP32_PAIR = ("mmindex-onnx-fp32", "fastembed")  # the CPU default against FastEmbed on the same fp32 towers
GOAL = 1.25  # issue 27: mmindex fp32 ≥ 1.25× FastEmbed fp32, on rows/s and on whole-process time


def fp32_ratios(contestants: list[Contestant], round_number: int) -> tuple[float, float] | None:
    """Round ``round_number``'s (rows/s ratio, whole-process ratio) of mmindex fp32 over FastEmbed fp32, each > 1
    when mmindex is faster (rows/s: ours ÷ theirs; whole time: theirs ÷ ours); None if either did not run."""
    by_key = {c.key: c for c in contestants}
    ours, theirs = (by_key.get(key) for key in FP32_PAIR)
    if not ours or not theirs or min(len(ours.rates), len(theirs.rates)) <= round_number:
        return None
    return (ours.rates[round_number] / theirs.rates[round_number],
            theirs.walls[round_number] / ours.walls[round_number])


def print_fp32_pair(contestants: list[Contestant], round_number: int) -> None:
    ratios = fp32_ratios(contestants, round_number)
    if ratios:
        print(f"  fp32 pair, round {round_number + 1}: mmindex ÷ FastEmbed  rows/s {ratios[0]:.2f}  "
              f"whole process {ratios[1]:.2f}", flush=True)


def fp32_summary(contestants: list[Contestant]) -> None:
    """Median and spread of the paired fp32 ratios, and whether both medians meet GOAL."""
    pairs = [ratio for r in range(max((len(c.rates) for c in contestants), default=0))
             if (ratio := fp32_ratios(contestants, r))]
    if not pairs:
        print("fp32 pair (mmindex onnx fp32 ÷ FastEmbed): not measured (both must run)")
        return
    for index, figure in enumerate(("rows/s", "whole process")):
        values = [pair[index] for pair in pairs]
        median = statistics.median(values)
        print(f"fp32 pair, {figure}: " + ", ".join(f"{v:.2f}" for v in values) + f"  → median {median:.2f}, "
              f"spread {min(values):.2f}–{max(values):.2f} over {len(values)} round(s); goal ≥ {GOAL}: "
              + ("met" if median >= GOAL else f"missed by {GOAL - median:.2f}"))


def race(args) -> None:
    data = common.sample_data(args.rows)
    model = common.model(args.model_size)
    print("preparing: ONNX export of the towers (once per model) and FastEmbed's folders …", flush=True)
    done = subprocess.run([sys.executable, str(HERE), "--worker", "prepare", "--model", str(model)],
                          capture_output=True, text=True, env=child_env())
    prepared = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else \
        {"onnx_error": (done.stderr.strip().splitlines() or ["prepare failed"])[-1]}
    chosen = [Contestant(key, label) for key, label in CONTESTANTS if not args.only or key in args.only]
    availability(chosen, prepared)
    print(f"machine: {machine_line()}; {os.getloadavg()[0]:.2f} load (1 min) at start; {args.rows} rows of 640x480 "
          f"JPEG in {data.name}; model {args.model_size} (ViT-B/32 shape, random weights, 512-d); batch "
          f"{args.batch_size}; {args.rounds} round(s)", flush=True)
    for c in chosen:
        if c.available:
            print(f"  {c.key}: {c.available}")
    running = [c for c in chosen if not c.available]
    for round_number in range(args.rounds):
        shift = round_number % max(len(running), 1)
        order = running[shift:] + running[:shift]
        print(f"round {round_number + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f}):", flush=True)
        for contestant in order:
            if contestant.failure is None:
                run_once(contestant, data, model, args.rows, args.batch_size)
        print_fp32_pair(running, round_number)
    print(f"load (1 min) at end: {os.getloadavg()[0]:.2f}")
    table(chosen, args.rows, args.rounds)
    fp32_summary(chosen)
    print(verdict(chosen))


def machine_line() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, " + versions(
        "torch", "onnxruntime", "sentence-transformers", "fastembed", "daft", "qdrant-client")


def versions(*names: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} absent")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="rows of 640x480 JPEG (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default: %(default)s)")
    parser.add_argument("--model-size", default="base",
                        help="random-weight model shape: tiny, small, base = ViT-B/32 (default: %(default)s)")
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default=None,
                        help="Comma-separated contestants: " + ", ".join(k for k, _ in CONTESTANTS))
    for hidden in ("--worker", "--data", "--model", "--store", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    else:
        race(args)


if __name__ == "__main__":
    main()
