"""Benchmark 12 (duplicates at scale, issue 25): ``find_duplicates`` on collections of 512-d image vectors (the
shape of CLIP ViT-B/32's) in the embedded store (Qdrant Edge), per size: wall time, peak memory, pairs compared,
cost per point as the collection grows, and how many of the planted duplicate groups were found.

The data, made to make the candidate search do real work (not uniform random vectors):
- vectors from a Gaussian mixture (``--clusters-per`` points per centre on average): a shared direction
  (weight² 0.3), the point's centre (weight² 0.1–0.5, drawn per centre) and the point's own noise, so the
  cosine of two unrelated points is about 0.3 across centres and 0.4–0.8 within one, as CLIP image vectors
  are; a good share of each point's 16 neighbours lie above ``min_cosine`` (0.6) and are compared;
- images: 64×64 colour photo-like fields (1/f² noise, as ``tests/helpers/duplicate_data.py``'s
  ``_smooth_field``, one shared field and one per channel, over a colour gradient), one per point, their
  signals by ``signals_of`` and stored in the payload as ingest stores them;
- ``--dup-share`` (10 %) of the points are copies of others, 1–3 copies per original: exact ones (the same
  pixels, the vector through cosine ≈ 0.999 of noise, as another encoding of one image) and near ones
  (resized to 75 %, JPEG at quality 30–50, cropped by 5–10 %, brightness ±8 %, mirrored, a text overlay; the
  vector at cosine 0.95–0.99 of the original's).

Each size is built and searched in a subprocess of its own, so ``resource.getrusage`` maxrss is the peak of that
phase alone (the build's peak is reported apart from the search's); the build (upsert + HNSW index) is timed
apart from the duplicates run. The machine's load average (``os.getloadavg``) is printed beside the figures.
Goal (issue 25): 100k points in ≤ 10 min with peak ≤ 2 GB, cost per point near-constant from 10k to 100k.

    python bench/duplicates.py --sizes 10000,30000,100000 [--neighbours 16] [--keep bench/.cache/duplicates]

With ``--keep``, each size's collection stays under that folder and a later run with the same data reuses it
(its build figures are those of the run that built it). Figures: bench/README.md §12.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps
from scipy import fft as scipy_fft

DIM = 512  # CLIP ViT-B/32's image vector
SIDE = 64  # images are SIDE×SIDE
CHUNK = 1000  # points generated and upserted at a time
COLLECTION = "bench-duplicates"
NEAR_KINDS = ("resize", "recompress", "crop", "brightness", "mirror", "text")


# -- the plan: which points are copies of which (no images, cheap) ----------------------------------
class Plan:
    """Point ``i``'s content: ``source[i]`` is the original it copies (itself for an original) and ``kind[i]``
    its transform (``original``, ``exact`` or one of ``NEAR_KINDS``). Deterministic in (size, seed, share)."""

    def __init__(self, size: int, seed: int, dup_share: float):
        rng = np.random.default_rng([seed, size, 1])
        self.size = size
        self.source = np.arange(size)
        self.kind = np.array(["original"] * size, dtype=object)
        copies = int(round(dup_share * size))
        order = rng.permutation(size)
        copy_slots, originals = list(order[:copies]), iter(order[copies:])
        while copy_slots:
            original = next(originals)
            for _ in range(min(int(rng.integers(1, 4)), len(copy_slots))):
                slot = copy_slots.pop()
                self.source[slot] = original
                self.kind[slot] = "exact" if rng.random() < 0.25 else NEAR_KINDS[int(rng.integers(len(NEAR_KINDS)))]

    def groups(self) -> dict[int, list[int]]:
        """Planted group (its original's index) → its member indices, for originals that have copies."""
        members: dict[int, list[int]] = {}
        for i in np.flatnonzero(self.source != np.arange(self.size)):
            members.setdefault(int(self.source[i]), [int(self.source[i])]).append(int(i))
        return members


# -- vectors ----------------------------------------------------------------------------------------
class Vectors:
    """The Gaussian mixture of the module docstring; ``of(indices, plan)`` gives unit vectors (n, DIM)."""

    def __init__(self, size: int, seed: int, clusters_per: int):
        rng = np.random.default_rng([seed, 2])
        self.clusters = max(8, size // clusters_per)
        self.shared = unit(rng.standard_normal(DIM))
        self.centres = unit(rng.standard_normal((self.clusters, DIM)))
        self.weights = rng.uniform(0.1, 0.5, self.clusters)  # the centre's weight², per centre
        self.seed = seed

    def original(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 3, i])
        centre = int(rng.integers(self.clusters))
        noise = unit(rng.standard_normal(DIM))
        weight = self.weights[centre]
        return unit(np.sqrt(0.3) * self.shared + np.sqrt(weight) * self.centres[centre]
                    + np.sqrt(max(0.0, 0.7 - weight)) * noise)

    def of(self, i: int, plan: Plan) -> np.ndarray:
        vector = self.original(int(plan.source[i]))
        if plan.kind[i] == "original":
            return vector
        rng = np.random.default_rng([self.seed, 4, i])
        cosine = 0.999 if plan.kind[i] == "exact" else rng.uniform(0.95, 0.99)
        noise = unit(rng.standard_normal(DIM))
        noise = unit(noise - vector * float(noise @ vector))  # orthogonal to the original
        return (cosine * vector + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


# -- images -----------------------------------------------------------------------------------------
def fields(indices: list[int], seed: int) -> np.ndarray:
    """(n, SIDE, SIDE, 3) uint8 photo-like images of originals ``indices`` (1/f² fields, batched FFT)."""
    generators = [np.random.default_rng([seed, 5, i]) for i in indices]  # per original: the same in any chunk
    noise = np.stack([g.standard_normal((4, SIDE, SIDE)) for g in generators])
    base = np.stack([g.uniform(70, 190, (3, 1, 1)) for g in generators])
    slopes = np.stack([g.uniform(-80, 80, (3, 2, 1, 1)) for g in generators])
    fy = np.fft.fftfreq(SIDE)[:, None]
    fx = np.fft.rfftfreq(SIDE)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    filtered = scipy_fft.rfft2(noise.astype(np.float32), workers=1) / radius**2
    filtered[..., 0, 0] = 0
    smooth = scipy_fft.irfft2(filtered, s=(SIDE, SIDE))
    smooth /= smooth.std(axis=(-1, -2), keepdims=True) + 1e-9
    channels = 0.7 * smooth[:, :1] + 0.3 * smooth[:, 1:]  # (n, 3, SIDE, SIDE): correlated colour channels
    ramp = np.linspace(-0.5, 0.5, SIDE)
    pixels = base + 55 * channels + slopes[:, :, 0] * ramp[None, :] + slopes[:, :, 1] * ramp[:, None]
    return np.clip(pixels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def transformed(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """The copy of ``image`` made by ``kind`` (an original and an exact copy: the same pixels)."""
    if kind in ("original", "exact"):
        return image
    if kind == "resize":
        return image.resize((SIDE * 3 // 4, SIDE * 3 // 4), Image.BICUBIC)
    if kind == "recompress":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(30, 51)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "crop":
        cut = rng.uniform(0.05, 0.10) * SIDE
        left, top = rng.uniform(0, cut), rng.uniform(0, cut)
        return image.crop((round(left), round(top), round(SIDE - (cut - left)), round(SIDE - (cut - top))))
    if kind == "brightness":
        return ImageEnhance.Brightness(image).enhance(1 + rng.choice((-1, 1)) * rng.uniform(0.04, 0.08))
    if kind == "mirror":
        return ImageOps.mirror(image)
    if kind != "text":
        raise ValueError(f"unknown kind {kind!r}")
    copy = image.copy()
    ImageDraw.Draw(copy).text((2, SIDE - 12), "IMG", font=ImageFont.load_default(size=9), fill=(255, 255, 255))
    return copy


# -- the two phases, each in its own process ---------------------------------------------------------
def build(folder: Path, size: int, seed: int, dup_share: float, clusters_per: int) -> dict:
    """Write the collection of ``size`` points under ``folder``; the time to make the data, to upsert, to index."""
    from mmindex.connectors.base import CollectionSpec, PointRecord
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.duplicates.signals import signals_of
    from mmindex.pipeline.ingest.records import point_id_from_key

    plan, vectors = Plan(size, seed, dup_share), Vectors(size, seed, clusters_per)
    store = QdrantEdgeStore(COLLECTION, data_dir=folder)
    store.ensure_collection(CollectionSpec("bench-vit-b32-shape", DIM, {}))
    making = upserting = 0.0
    for start in range(0, size, CHUNK):
        started = time.perf_counter()
        indices = list(range(start, min(size, start + CHUNK)))
        sources = sorted({int(plan.source[i]) for i in indices})
        images = {}
        for at in range(0, len(sources), 100):  # the FFTs' buffers stay small
            images.update(zip(sources[at:at + 100], fields(sources[at:at + 100], seed)))
        records = []
        for i in indices:
            image = Image.fromarray(images[int(plan.source[i])])
            image = transformed(image, str(plan.kind[i]), np.random.default_rng([seed, 7, i]))
            records.append(PointRecord(point_id_from_key(i), {"image": vectors.of(i, plan)},
                                       {"n": i, **signals_of(image).to_payload()}))
        upsert_started = time.perf_counter()
        making += upsert_started - started
        store.upsert(records)
        upserting += time.perf_counter() - upsert_started
    started = time.perf_counter()
    store.finish(optimize=True)
    store.close()
    return {"make_s": making, "upsert_s": upserting, "index_s": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(), "clusters": vectors.clusters}


def search(folder: Path, size: int, seed: int, dup_share: float, neighbours: int) -> dict:
    """Run ``find_duplicates`` (tier near, default thresholds) and score it against the plan."""
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.duplicates.find import find_duplicates
    from mmindex.pipeline.ingest.records import point_id_from_key

    store = QdrantEdgeStore(COLLECTION, data_dir=folder)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    report = find_duplicates(store, tier="near", neighbours=neighbours)
    seconds = time.perf_counter() - started
    load = max(load, os.getloadavg()[0])
    store.close()
    index = {point_id_from_key(i): i for i in range(size)}
    plan = Plan(size, seed, dup_share)
    false_pairs = [{"left": index[p.left], "right": index[p.right], **p.evidence.to_dict()}
                   for g in report.groups for p in g.pairs
                   if plan.source[index[p.left]] != plan.source[index[p.right]]]
    return {"find_s": seconds, "peak_rss_mb": peak_rss_mb(), "pairs_compared": report.pairs_compared,
            "groups": len(report.groups), "load": load, "false_pairs": false_pairs[:5],
            **score([[index[m] for m in g.members] for g in report.groups], plan)}


def score(found: list[list[int]], plan: Plan) -> dict:
    """Planted groups found whole, planted pairs (original, copy) joined, and found members wrongly joined."""
    group_of = {m: g for g, members in enumerate(found) for m in members}
    planted = plan.groups()
    whole = sum(1 for members in planted.values() if len({group_of.get(m, -1 - m) for m in members}) == 1)
    pairs = [(o, c) for o, members in planted.items() for c in members[1:]]
    joined = sum(1 for o, c in pairs if o in group_of and group_of.get(o) == group_of.get(c))
    # A found member is wrongly joined when its group's majority original is not its own.
    wrong = 0
    for members in found:
        sources = [int(plan.source[m]) for m in members]
        wrong += len(sources) - max(sources.count(s) for s in set(sources))
    return {"planted_groups": len(planted), "groups_whole": whole, "planted_pairs": len(pairs),
            "pairs_joined": joined, "members_wrong": wrong, "members_found": sum(len(g) for g in found)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def phase(name: str, folder: Path, size: int, args) -> dict:
    """Run one phase in a fresh interpreter, so its peak RSS is its own."""
    command = [sys.executable, __file__, "--phase", name, "--folder", str(folder), "--sizes", str(size),
               "--seed", str(args.seed), "--dup-share", str(args.dup_share), "--clusters-per",
               str(args.clusters_per), "--neighbours", str(args.neighbours)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} phase at {size} points failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[dict]) -> None:
    print(f"{'points':>8}{'build s':>9}{'index s':>9}{'build MB':>10}{'find s':>9}{'find MB':>9}{'compared':>10}"
          f"{'cmp/pt':>8}{'µs/pt':>8}{'× first':>8}{'groups':>8}{'whole':>13}{'pairs':>15}{'wrong':>7}{'load':>6}")
    first = rows[0]["find_s"] / rows[0]["points"]
    for r in rows:
        per_point = r["find_s"] / r["points"]
        print(f"{r['points']:>8}{r['make_s'] + r['upsert_s'] + r['index_s']:>9.1f}{r['index_s']:>9.1f}"
              f"{r['build_mb']:>10.0f}{r['find_s']:>9.1f}{r['peak_rss_mb']:>9.0f}{r['pairs_compared']:>10}"
              f"{r['pairs_compared'] / r['points']:>8.1f}{per_point * 1e6:>8.0f}{per_point / first:>8.2f}"
              f"{r['groups']:>8}{r['groups_whole']:>6}/{r['planted_groups']:<6}{r['pairs_joined']:>7}/"
              f"{r['planted_pairs']:<7}{r['members_wrong']:>7}{r['load']:>6.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000",
                        help="collection sizes, comma-separated (e.g. --sizes 2000,5000)")
    parser.add_argument("--neighbours", type=int, default=16, help="nearest vectors compared per point")
    parser.add_argument("--dup-share", type=float, default=0.10, help="share of points that copy another")
    parser.add_argument("--clusters-per", type=int, default=100, help="points per mixture centre, on average")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the built collections under this folder (one per size) and reuse them")
    parser.add_argument("--phase", choices=("build", "find"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.phase:
        run = build if args.phase == "build" else search
        extra = args.clusters_per if args.phase == "build" else args.neighbours
        print(json.dumps(run(Path(args.folder), sizes[0], args.seed, args.dup_share, extra)))
        return
    print(f"{os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}; {DIM}-d vectors, "
          f"{args.dup_share:.0%} copies, neighbours {args.neighbours}", flush=True)
    rows = []
    for size in sizes:
        root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-duplicates-"))
        folder = root / f"{size}-{args.seed}-{args.dup_share}-{args.clusters_per}"
        marker = folder / "build.json"
        if not marker.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            marker.write_text(json.dumps(phase("build", folder, size, args)))
        built = json.loads(marker.read_text())
        found = phase("find", folder, size, args)
        rows.append({"points": size, **{k: v for k, v in built.items() if k != "peak_rss_mb"},
                     "build_mb": built["peak_rss_mb"], **found})
        print(json.dumps(rows[-1]), flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(rows)


if __name__ == "__main__":
    main()
