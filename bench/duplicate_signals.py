"""Which signals tell exact, near-duplicate and similar images apart (issue 25), measured on the labelled set
of tests/helpers/duplicate_data.py: byte SHA-256, decoded-pixel hash, CLIP image cosine (the demo model), a
DCT perceptual hash of our own (plain and mirror-invariant) and imagehash's pHash when installed.

Thresholds are chosen on one seed (near-duplicate recall, subject to precision >= 0.99 and no similar pair
called near) and reported on another:
    python bench/duplicate_signals.py --originals 60 --tune-seed 0 --test-seed 1

Then the rule ``mmindex duplicates`` runs — ``pipeline/duplicates/evidence.compare`` at ``Thresholds()`` defaults,
on ``signals_of(decode_image(bytes))`` and the demo model's cosine — per tier (precision, recall, similar pairs
called near) and per transform kind on the held-out seed, on the listed pairs and on the whole set (every pair of
ids that ``DuplicateSet.truth`` labels: within a group, against the similar shot, across different groups), with
``similar_cosine`` chosen on the tune seed (best similar F1) and printed: the figures of bench/README.md §11.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy.fft import dctn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the data set lives with the tests that keep it

from helpers.duplicate_data import TIERS, DuplicateSet, make_duplicate_set  # noqa: E402
from mmindex.pipeline.duplicates.evidence import Thresholds, compare  # noqa: E402
from mmindex.pipeline.duplicates.signals import signals_of  # noqa: E402
from mmindex.pipeline.ingest.images import decode_image  # noqa: E402

HASH_SIGNALS = ("phash", "phash_mirror", "imagehash", "imagehash_mirror")
# Shown per tier and kind, not searched for rules: a 256-bit DCT hash (64x64 → 16x16), mirror-invariant.
WIDE_HASH = "phash256_mirror"
FLOORS = [round(0.5 + 0.05 * k, 2) for k in range(9)]


# -- signals per image ------------------------------------------------------------------------------
def dct_hash(image: Image.Image, size: int = 8) -> np.ndarray:
    """size² bits: (4·size)² greyscale → 2-D DCT → the top-left size×size → above their median (imagehash's
    pHash recipe; size 8 gives its 64 bits)."""
    grey = np.asarray(image.convert("L").resize((4 * size, 4 * size), Image.LANCZOS), dtype=np.float64)
    low = dctn(grey, type=2, norm="ortho")[:size, :size]
    return (low > np.median(low)).ravel()


def image_signals(images: dict[str, bytes], encoder) -> dict[str, dict]:
    """Per id: byte hash, pixel hash, own pHash of the image and of its mirror, imagehash's, CLIP vector, and the
    production signals (``signals_of``, as ingest keeps them)."""
    try:
        import imagehash  # optional: pip install imagehash
    except ImportError:
        imagehash = None
    ids = list(images)
    decoded = {i: decode_image(images[i]) for i in ids}
    vectors = encoder.encode_images([decoded[i] for i in ids])
    signals = {}
    for row, i in enumerate(ids):
        pixels = np.asarray(decoded[i])
        mirror = ImageOps.mirror(decoded[i])
        signals[i] = {
            "sha256": hashlib.sha256(images[i]).hexdigest(),
            "pixels": hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest(),
            "phash": dct_hash(decoded[i]), "phash_flip": dct_hash(mirror), "vector": vectors[row],
            "wide": dct_hash(decoded[i], 16), "wide_flip": dct_hash(mirror, 16),
            "production": signals_of(decoded[i]),
        }
        if imagehash is not None:
            signals[i]["imagehash"] = imagehash.phash(decoded[i]).hash.ravel()
            signals[i]["imagehash_flip"] = imagehash.phash(mirror).hash.ravel()
    return signals


def pair_signals(a: dict, b: dict) -> dict:
    """The evidence for one pair: equalities, hash distances (bits of 64), cosine."""
    result = {
        "bytes_equal": a["sha256"] == b["sha256"], "pixels_equal": a["pixels"] == b["pixels"],
        "cosine": float(np.dot(a["vector"], b["vector"])),
        "phash": int(np.count_nonzero(a["phash"] != b["phash"])),
    }
    result[WIDE_HASH] = int(min(np.count_nonzero(a["wide"] != b["wide"]),
                                np.count_nonzero(a["wide"] != b["wide_flip"])))
    result["phash_mirror"] = min(result["phash"], int(np.count_nonzero(a["phash"] != b["phash_flip"])))
    if "imagehash" in a:
        result["imagehash"] = int(np.count_nonzero(a["imagehash"] != b["imagehash"]))
        result["imagehash_mirror"] = min(result["imagehash"],
                                         int(np.count_nonzero(a["imagehash"] != b["imagehash_flip"])))
    return result


def measured_pairs(seed: int, originals: int, encoder) -> tuple[DuplicateSet, dict[str, dict], list[dict]]:
    """The labelled set of ``seed``, its images' signals, and the signals of its listed pairs."""
    data = make_duplicate_set(originals, seed)
    signals = image_signals(data.images, encoder)
    pairs = [{"tier": p.tier, "kind": p.kind, **pair_signals(signals[p.left], signals[p.right])} for p in data.pairs]
    return data, signals, pairs


# -- rules ------------------------------------------------------------------------------------------
def rule_families(hash_name: str) -> dict[str, list]:
    """(name, predicate) rules by family: the hash alone, the cosine alone, and hash OR (cosine AND a looser
    hash). A predicate maps the pairs' columns to a mask of pairs called near."""
    cosines = [round(float(c), 3) for c in np.arange(0.80, 1.0, 0.005)]
    combined = [
        (f"{hash_name}<={t1} or (cosine>={c} and {hash_name}<={t2})",
         lambda p, t1=t1, t2=t2, c=c: (p[hash_name] <= t1) | ((p["cosine"] >= c) & (p[hash_name] <= t2)))
        for t1, t2, c in itertools.product(range(0, 25), range(1, 33), cosines) if t2 > t1
    ]
    floored = [
        (f"({hash_name}<={t1} and cosine>={floor}) or (cosine>={c} and {hash_name}<={t2})",
         lambda p, t1=t1, t2=t2, c=c, floor=floor: ((p[hash_name] <= t1) & (p["cosine"] >= floor))
         | ((p["cosine"] >= c) & (p[hash_name] <= t2)))
        for t1, t2, c, floor in itertools.product(range(4, 17), range(6, 25, 2), cosines[::2], FLOORS)
        if t2 > t1 and c > floor
    ]
    return {
        f"{hash_name} alone": [(f"{hash_name}<={t}", lambda p, t=t: p[hash_name] <= t) for t in range(0, 33)],
        "cosine alone": [(f"cosine>={c}", lambda p, c=c: p["cosine"] >= c) for c in cosines],
        f"{hash_name} + cosine": combined,
        f"{hash_name} + cosine floor": floored,
    }


def columns(pairs: list[dict]) -> dict[str, np.ndarray]:
    """The pairs as one array per field, so that each rule of the grid is a few vector operations."""
    return {key: np.array([p[key] for p in pairs]) for key in pairs[0]}


def is_exact(pairs: dict[str, np.ndarray]) -> np.ndarray:
    return pairs["bytes_equal"] | pairs["pixels_equal"]


def near_scores(pairs: dict[str, np.ndarray], predicate) -> tuple[float, float, int]:
    """Near-tier precision, recall and similar pairs called near, among pairs not already exact."""
    called = ~is_exact(pairs) & predicate(pairs)
    near = pairs["tier"] == "near"
    hits = int(np.count_nonzero(called & near))
    precision = hits / int(called.sum()) if called.any() else 1.0
    recall = hits / int(near.sum()) if near.any() else 1.0
    return precision, recall, int(np.count_nonzero(called & (pairs["tier"] == "similar")))


def choose_rule(pairs: dict[str, np.ndarray], rules) -> tuple[str, object, tuple[float, float, int]]:
    """The rule of highest recall with precision >= 0.99 and no similar pair called near; among equals, the
    middle one of the feasible list (thresholds away from both edges)."""
    feasible = []
    for name, predicate in rules:
        scores = near_scores(pairs, predicate)
        if scores[0] >= 0.99 and scores[2] == 0:
            feasible.append((scores[1], name, predicate, scores))
    if not feasible:
        return "none feasible", lambda p: np.zeros(len(p["tier"]), bool), (1.0, 0.0, 0)
    best = max(f[0] for f in feasible)
    top = [f for f in feasible if f[0] == best]
    _, name, predicate, scores = top[len(top) // 2]
    return name, predicate, scores


def choose_similar(cosine: np.ndarray, truth: np.ndarray, rest: np.ndarray) -> float:
    """The cosine above which a pair that is neither exact nor near (``rest``) is called similar: best F1 of the
    similar tier on the seed, cosines 0.5–1 in steps of 0.005."""
    similar = truth == "similar"
    best, best_f1 = 1.0, -1.0
    for c in np.arange(0.5, 1.0, 0.005):
        called = rest & (cosine >= c)
        hits = int(np.count_nonzero(called & similar))
        f1 = 2 * hits / (int(called.sum()) + int(similar.sum()))
        if f1 > best_f1:
            best, best_f1 = float(c), f1
    return round(best, 3)


def predict(pairs: dict[str, np.ndarray], near, similar_cosine: float) -> np.ndarray:
    return np.where(is_exact(pairs), "exact", np.where(near(pairs), "near", np.where(
        pairs["cosine"] >= similar_cosine, "similar", "different")))


# -- the production rule (pipeline/duplicates/evidence.compare) -------------------------------------
def id_kind(data: DuplicateSet, image_id: str) -> str:
    """What made ``image_id`` from its original: ``original``, a transform (``crop``, ``byte-copy``...)."""
    base = data.group[image_id]
    return "original" if image_id == base else image_id[len(base) + 1:]


def listed_pairs(data: DuplicateSet) -> list[tuple[str, str, str, str]]:
    """The set's labelled pairs as (left, right, true tier, kind)."""
    return [(p.left, p.right, p.tier, p.kind) for p in data.pairs]


def whole_set(data: DuplicateSet) -> list[tuple[str, str, str, str]]:
    """Every pair a whole-collection run could report, labelled by ``DuplicateSet.truth``: every two ids of one
    group, every id of a group against its similar shot, every two ids across the listed different groups."""
    members: dict[str, list[str]] = {}
    for image_id in data.images:
        members.setdefault(data.group[image_id], []).append(image_id)
    similar_kind = {p.right: p.kind for p in data.pairs if p.tier == "similar"}
    pairs = [(a, b, data.truth(a, b), " / ".join(sorted((id_kind(data, a), id_kind(data, b)))))
             for ids in members.values() for a, b in itertools.combinations(ids, 2)]
    groups = {frozenset(g) for g in data.similar_groups}
    groups |= {frozenset((data.group[p.left], data.group[p.right])) for p in data.pairs if p.tier == "different"}
    for first, second in sorted(tuple(sorted(g)) for g in groups):
        kind = (f"{similar_kind.get(second, similar_kind.get(first))} shot"
                if frozenset((first, second)) in data.similar_groups else "other original")
        pairs += [(a, b, data.truth(a, b), kind) for a in members[first] for b in members[second]]
    return pairs


def production(signals: dict[str, dict], pairs: list[tuple[str, str, str, str]],
               thresholds: Thresholds = Thresholds()) -> dict[str, np.ndarray]:
    """``compare`` on each pair's production signals and demo-model cosine: columns tier (truth), kind, called
    (compare's tier), cosine; and the seconds it took."""
    started = time.perf_counter()
    rows = []
    for a, b, truth, kind in pairs:
        cosine = float(np.dot(signals[a]["vector"], signals[b]["vector"]))
        evidence = compare(signals[a]["production"], signals[b]["production"], cosine, thresholds)
        rows.append((truth, kind, evidence.tier, cosine))
    result = {name: np.array([r[k] for r in rows]) for k, name in enumerate(("tier", "kind", "called", "cosine"))}
    result["seconds"] = np.array(time.perf_counter() - started)
    return result


def called_at(rows: dict[str, np.ndarray], similar_cosine: float) -> np.ndarray:
    """The tiers with the similar rule at ``similar_cosine`` (it only splits pairs neither exact nor near)."""
    strong = np.isin(rows["called"], ("exact", "near"))
    return np.where(strong, rows["called"], np.where(rows["cosine"] >= similar_cosine, "similar", "different"))


def kind_confusion(rows: dict[str, np.ndarray], predicted: np.ndarray) -> str:
    """Per true tier and kind: pairs, and how many were called each tier (which transforms are missed)."""
    kinds = sorted(set(zip(rows["tier"], rows["kind"])), key=lambda k: (TIERS.index(k[0]), k[1]))
    lines = [f"{'tier / kind':<32}{'pairs':>6}" + "".join(f"{t:>10}" for t in TIERS)]
    for tier, kind in kinds:
        mask = (rows["tier"] == tier) & (rows["kind"] == kind)
        counts = [int(np.count_nonzero(mask & (predicted == t))) for t in TIERS]
        lines.append(f"{tier + ' / ' + kind:<32}{int(mask.sum()):>6}" + "".join(f"{c:>10}" for c in counts))
    return "\n".join(lines)


def production_report(tune: tuple, test: tuple, tune_seed: int, test_seed: int) -> None:
    """The figures of the rule ``mmindex duplicates`` runs: listed pairs and whole sets, tune and held-out seed."""
    defaults = Thresholds()
    tune_whole = production(tune[1], whole_set(tune[0]))
    similar_cosine = choose_similar(tune_whole["cosine"], tune_whole["tier"],
                                    ~np.isin(tune_whole["called"], ("exact", "near")))
    print(f"\n== The production rule: evidence.compare at Thresholds() defaults ({defaults.to_dict()}) on "
          "signals_of(decode_image(bytes)), cosine of the demo model's image vectors ==")
    print(f"similar_cosine chosen on seed {tune_seed} (best similar F1 over its whole set): {similar_cosine}  "
          f"(Thresholds().similar_cosine is {defaults.similar_cosine})")
    for label, data, signals in ((f"held-out seed {test_seed}", *test[:2]), (f"seed {tune_seed}", *tune[:2])):
        listed = production(signals, listed_pairs(data))
        print(f"\nListed pairs, {label}, similar_cosine {similar_cosine} "
              f"({len(listed['tier'])} pairs, {float(listed['seconds']):.1f} s):")
        print(scores_table(listed["tier"], listed["kind"], called_at(listed, similar_cosine)))
        if label.startswith("held-out"):
            print(f"\nPer kind, listed pairs, {label}: pairs called each tier")
            print(kind_confusion(listed, called_at(listed, similar_cosine)))
        whole = tune_whole if label == f"seed {tune_seed}" else production(signals, whole_set(data))
        print(f"\nWhole set, {label} (every two ids of a group, every id against its group's similar shot, every "
              f"two ids across the listed different groups; {len(whole['tier'])} pairs, "
              f"{float(whole['seconds']):.1f} s):")
        print(scores_table(whole["tier"], whole["kind"], called_at(whole, similar_cosine)))
        if label.startswith("held-out"):
            print(f"(at the default similar_cosine {defaults.similar_cosine}: similar P/R "
                  + "{:.3f}/{:.3f})".format(*similar_pr(whole, defaults.similar_cosine)))


def similar_pr(rows: dict[str, np.ndarray], similar_cosine: float) -> tuple[float, float]:
    predicted = called_at(rows, similar_cosine)
    called, truth = predicted == "similar", rows["tier"] == "similar"
    hits = int(np.count_nonzero(called & truth))
    return hits / max(1, int(called.sum())), hits / max(1, int(truth.sum()))


# -- report -----------------------------------------------------------------------------------------
def distribution_table(pairs: list[dict], signals: list[str]) -> str:
    lines = [f"{'signal':<18}" + "".join(f"{t:>22}" for t in TIERS), f"{'':<18}" + "   min / median / max" * 4]
    for signal in signals:
        cells = []
        for tier in TIERS:
            values = np.array([float(p[signal]) for p in pairs if p["tier"] == tier])
            fmt = "{:.3f}" if signal == "cosine" else "{:.0f}" if signal in (*HASH_SIGNALS, WIDE_HASH) else "{:.2f}"
            cells.append(" / ".join(fmt.format(v) for v in (values.min(), np.median(values), values.max()))
                         if len(values) else "-")
        lines.append(f"{signal:<18}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def kind_table(pairs: list[dict], signals: list[str]) -> str:
    """Median (max) of each signal per transform kind: which transform a signal finds hard."""
    kinds = sorted({(p["tier"], p["kind"]) for p in pairs}, key=lambda k: (TIERS.index(k[0]), k[1]))
    lines = [f"{'tier / kind':<30}" + "".join(f"{s:>18}" for s in signals)]
    for tier, kind in kinds:
        cells = []
        for signal in signals:
            values = np.array([float(p[signal]) for p in pairs if p["kind"] == kind and p["tier"] == tier])
            fmt = "{:.3f}" if signal == "cosine" else "{:.0f}"
            worst = values.min() if signal == "cosine" else values.max()
            if tier in ("similar", "different"):
                worst = values.max() if signal == "cosine" else values.min()
            cells.append(f"{fmt.format(np.median(values))} ({fmt.format(worst)})")
        lines.append(f"{tier + ' / ' + kind:<30}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def tier_scores(pairs: dict[str, np.ndarray], near, similar_cosine: float) -> str:
    return scores_table(pairs["tier"], pairs["kind"], predict(pairs, near, similar_cosine))


def scores_table(truths: np.ndarray, kinds: np.ndarray, predicted: np.ndarray) -> str:
    """Per tier: true pairs, pairs called it, precision, recall; then every miss as truth/kind -> called."""
    lines = [f"{'tier':<10}{'pairs':>7}{'called':>8}{'precision':>11}{'recall':>8}"]
    for tier in TIERS:
        truth = int(np.count_nonzero(truths == tier))
        called = int(np.count_nonzero(predicted == tier))
        hits = int(np.count_nonzero((predicted == tier) & (truths == tier)))
        precision = f"{hits / called:.3f}" if called else "-"
        lines.append(f"{tier:<10}{truth:>7}{called:>8}{precision:>11}{hits / truth if truth else 0:>8.3f}")
    lines.append(f"similar pairs called near: {int(np.count_nonzero((truths == 'similar') & (predicted == 'near')))}")
    confusion: dict[str, int] = {}
    for guess, tier, kind in zip(predicted, truths, kinds):
        if guess != tier:
            key = f"{tier}/{kind} -> {guess}"
            confusion[key] = confusion.get(key, 0) + 1
    lines.append("misses: " + (", ".join(f"{k}: {v}" for k, v in sorted(confusion.items())) or "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=60)
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=1)
    parser.add_argument("--model", default=str(ROOT / "demo" / "shapes-clip"))
    args = parser.parse_args(argv)
    from mmindex import Encoder

    started = time.perf_counter()
    encoder = Encoder(args.model, device="cpu")
    tune_set = measured_pairs(args.tune_seed, args.originals, encoder)
    test_set = measured_pairs(args.test_seed, args.originals, encoder)
    tune, test = tune_set[2], test_set[2]
    signals = ["bytes_equal", "pixels_equal", "cosine", *[s for s in HASH_SIGNALS if s in tune[0]], WIDE_HASH]
    tune_columns, test_columns = columns(tune), columns(test)
    print(f"{args.originals} originals; {len(tune)} pairs per seed; model {encoder.name}\n")
    print(f"Per tier, seed {args.tune_seed} (hash distances in bits of 64; {WIDE_HASH} of 256):")
    print(distribution_table(tune, signals))
    print(f"\nPer kind, seed {args.tune_seed}: median (worst case: for near, min cosine and max bits; "
          "for the others, max cosine and min bits)")
    print(kind_table(tune, [s for s in signals if s not in ("bytes_equal", "pixels_equal")]))
    print(f"\nRules chosen on seed {args.tune_seed} (near recall s.t. precision >= 0.99, 0 similar called near), "
          f"scored on seed {args.test_seed}:")
    print(f"{'family':<26}{'rule':<84}{'tune P/R':>13}{'test P/R':>13}{'test sim->near':>16}")
    chosen = {}
    for hash_name in [s for s in HASH_SIGNALS if s in tune[0]]:
        for family, rules in rule_families(hash_name).items():
            if family in chosen:
                continue
            name, predicate, scores = choose_rule(tune_columns, rules)
            chosen[family] = (name, predicate)
            test_scores = near_scores(test_columns, predicate)
            print(f"{family:<26}{name:<84}{scores[0]:>6.3f}/{scores[1]:.3f}{test_scores[0]:>6.3f}/{test_scores[1]:.3f}"
                  f"{test_scores[2]:>16}")
    best_family = max((f for f in chosen if "+ cosine" in f),
                      key=lambda f: near_scores(tune_columns, chosen[f][1])[1])
    name, near = chosen[best_family]
    similar_cosine = choose_similar(tune_columns["cosine"], tune_columns["tier"],
                                    ~is_exact(tune_columns) & ~near(tune_columns))
    print(f"\nChosen: exact = bytes or decoded pixels equal; near = {name}; similar = cosine >= {similar_cosine}")
    print(f"Per tier on held-out seed {args.test_seed}:")
    print(tier_scores(test_columns, near, similar_cosine))
    print(f"\n(seed {args.tune_seed} with the same rule:)")
    print(tier_scores(tune_columns, near, similar_cosine))
    production_report(tune_set, test_set, args.tune_seed, args.test_seed)
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
