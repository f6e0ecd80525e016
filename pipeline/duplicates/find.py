"""Duplicates in a whole collection (``mmindex duplicates``, ``find_duplicates``): each point's nearest image
neighbours through the engine, their signals compared (``evidence.py``), the pairs joined into groups.

How it scales: the collection is read page by page in id order (payloads and image vectors of one page at a
time); each point asks the engine for its ``neighbours`` nearest image vectors above ``min_cosine`` (HNSW, under
the ``where`` filter), and only those pairs are compared. Exact copies are also found by their pixel hash, so
copies past the neighbour limit are never missed. Memory holds one page, the pixel hashes seen (about 100 bytes
a point) and the pairs found — never all vectors, never a distance matrix. Qdrant's distance-matrix API
(``search_matrix_pairs``) is not used: it samples points, so it cannot promise every duplicate.

Resumable: with a ``checkpoint`` file, each finished page appends its pairs and pixel hashes and the cursor; a
run stopped at any moment continues after the last finished page when started again with the same options.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mmindex.connectors.base import SearchRequest, Store
from mmindex.errors import UsageError
from mmindex.keys import SOURCE_KEY
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.duplicates.evidence import TIERS, PairEvidence, Thresholds, compare
from mmindex.pipeline.duplicates.signals import WITH_SIGNALS, ImageSignals, SignalCache
from mmindex.pipeline.query.filters import combine_filters

DEFAULT_NEIGHBOURS = 16
DEFAULT_PAGE = 256
SIGNALS_KEPT = 4096  # signals of recently read points kept (about 14 KB each with their planes: 56 MB)
BACKFILL_HINT = ("compute them without re-embedding by running `mmindex ingest` on the same source into -c {name} "
                 "again: unchanged rows are not embedded again, they only gain the missing fields")


@dataclass(frozen=True)
class DuplicatePair:
    """Two point ids (``left`` < ``right``) and the evidence for their tier."""

    left: str
    right: str
    evidence: PairEvidence

    def to_dict(self) -> dict[str, Any]:
        return {"left": self.left, "right": self.right, **self.evidence.to_dict()}


@dataclass
class DuplicateGroup:
    """Points joined by pairs of the asked tier or a stronger one. ``tier``: the weakest tier among its pairs;
    ``keeper``: the suggested point to keep (the most pixels, then the first in source order, then the lowest id);
    ``members``: every id, the keeper first, then by id."""

    group: int
    tier: str
    keeper: str
    members: list[str]
    pairs: list[DuplicatePair]

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "tier": self.tier, "keeper": self.keeper, "members": self.members,
                "size": len(self.members), "pairs": [pair.to_dict() for pair in self.pairs]}


@dataclass
class DuplicatesReport:
    """What ``find_duplicates`` found. ``points``: points under the filter; ``without_signals``: those of them that
    had no duplicate signals (compared by cosine only: never exact or near); ``pairs_compared``: neighbour pairs
    whose signals were compared (each once; a resumed run compares again the pairs of points done before the stop
    with points after it); ``resumed_from``: points already done by an earlier, stopped run."""

    collection: str
    tier: str
    thresholds: Thresholds
    points: int = 0
    without_signals: int = 0
    pairs_compared: int = 0
    groups: list[DuplicateGroup] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The report without its groups (for the end of JSON lines output and ``--json``)."""
        tiers = {tier: sum(1 for g in self.groups if g.tier == tier) for tier in TIERS}
        return {"collection": self.collection, "tier": self.tier, "thresholds": self.thresholds.to_dict(),
                "points": self.points, "without_signals": self.without_signals, "pairs_compared": self.pairs_compared,
                "groups": len(self.groups), "groups_by_tier": tiers,
                "points_in_groups": sum(len(g.members) for g in self.groups),
                "resumed_from": self.resumed_from, "seconds": round(self.seconds, 3)}


@dataclass
class Member:
    """What the keeper choice needs of a point: ``area`` (decoded px, 0 when unknown) and ``order`` (its place in
    the source: file, row)."""

    area: int
    order: tuple


def find_duplicates(store: Store, tier: str = "near", filter: dict[str, Any] | None = None,
                    thresholds: Thresholds | None = None, neighbours: int = DEFAULT_NEIGHBOURS,
                    page: int = DEFAULT_PAGE, checkpoint: str | Path | None = None,
                    on_progress: Callable[[int, int], None] | None = None, place: str = "") -> DuplicatesReport:
    """The duplicate groups of the collection's points under ``filter`` (a Qdrant filter, e.g. from
    ``compile_filter``), joined by pairs of tier ``tier`` or stronger (exact < near < similar).

    ``neighbours``: nearest image vectors compared per point (1..1000); ``page``: points read per scroll;
    ``thresholds``: None for the defaults; ``checkpoint``: a file to resume from (module docstring), removed when
    the run completes (a resumed run drops the pairs of points deleted since);
    ``on_progress(done, total)`` after each page. Raises ``StoreError`` when the collection does not exist,
    ``UsageError`` for an unknown tier or a limit out of range, and when no point under the filter has duplicate
    signals (with the command that computes them; as a collection without keyword vectors is refused).
    """
    started = time.monotonic()
    thresholds = Thresholds() if thresholds is None else thresholds
    _check(tier, neighbours, page)
    require_collection(store, place)
    report = DuplicatesReport(store.collection, tier, thresholds)
    total = store.count(filter)
    report.points = total
    if total and not store.count(combine_filters(filter, WITH_SIGNALS)):
        raise _no_signals(store.collection, filter)  # before the scan, not after it
    state = _Checkpoint.open(checkpoint, _header(store.collection, tier, filter, thresholds, neighbours, total))
    report.resumed_from = state.done
    pixels: dict[str, str] = dict(state.pixels)
    pairs: dict[tuple[str, str], DuplicatePair] = {}
    _merge(pairs, state.pairs)  # the same rule as a live run: which of a pair's two findings is kept
    members: dict[str, Member] = dict(state.members)
    report.without_signals, report.pairs_compared = state.without_signals, state.compared
    cursor, done = state.cursor, state.done
    seen = Seen()
    finished = done > 0 and cursor is None  # an earlier run read every page and stopped before grouping
    if on_progress:
        on_progress(done, total)
    while not finished:
        points, cursor = store.scroll(filter=filter, limit=page, offset=cursor, with_payload=True, with_vectors=True)
        found, new_pixels, new_members, compared, missing = _page(store, points, filter, thresholds, neighbours,
                                                                 pixels, tier, seen)
        _merge(pairs, found)
        pixels.update(new_pixels)
        members.update(new_members)
        report.pairs_compared += compared
        report.without_signals += missing
        done += len(points)
        state.append(cursor, done, found, new_pixels, new_members, compared, missing)
        if on_progress:
            on_progress(done, total)
        finished = cursor is None or not points
    if total and report.without_signals == total:
        raise _no_signals(store.collection, filter)  # the points changed under the run
    if report.resumed_from:  # points deleted since the stopped run's pages must not come back as members
        _drop_deleted(store, pairs)
    report.groups = group_pairs(pairs.values(), members, tier)
    state.remove()
    report.seconds = time.monotonic() - started
    return report


def _drop_deleted(store: Store, pairs: dict[tuple[str, str], DuplicatePair]) -> None:
    """Remove the pairs of points that no longer exist (read back by id, 1,000 at a time)."""
    ids = sorted({i for key in pairs for i in key})
    existing: set[str] = set()
    for start in range(0, len(ids), 1000):
        existing.update(point.id for point in store.retrieve(ids[start:start + 1000]))
    for key in [key for key in pairs if not set(key) <= existing]:
        del pairs[key]


def _no_signals(collection: str, filter: dict[str, Any] | None) -> UsageError:
    return UsageError(f"no point of collection {collection!r}{' under the filter' if filter else ''} has "
                      "duplicate signals (it was made before they were kept, or with --decode gpu); "
                      + BACKFILL_HINT.format(name=collection))


def _check(tier: str, neighbours: int, page: int) -> None:
    if tier not in TIERS:
        raise UsageError(f"--tier must be one of {', '.join(TIERS)}, not {tier!r}")
    if not 1 <= neighbours <= 1000:
        raise UsageError(f"--neighbours must be 1..1000, not {neighbours}")
    if not 1 <= page <= 10_000:
        raise UsageError(f"page size must be 1..10000, not {page}")


class Seen:
    """What a run remembers to compare less: the signals of recently read points (their hashes and planes are
    made once; at most ``SIGNALS_KEPT``), and which pairs were compared (a 64-bit hash per pair, about 70 bytes
    each), so a pair found from both of its points is compared once (``compare`` is symmetric)."""

    def __init__(self) -> None:
        self.signals = SignalCache(SIGNALS_KEPT).get
        self.pairs: set[int] = set()

    def first_time(self, a: str, b: str) -> bool:
        key = hash((a, b) if a < b else (b, a))
        if key in self.pairs:
            return False
        self.pairs.add(key)
        return True


def _page(store: Store, points: list, filter: dict[str, Any] | None, thresholds: Thresholds, neighbours: int,
          pixels: dict[str, str], tier: str,
          seen: Seen) -> tuple[list[DuplicatePair], dict[str, str], dict[str, Member], int, int]:
    """The pairs of one page's points with their neighbours (and with earlier points of the same pixels)."""
    found, new_pixels, new_members, compared, missing = [], {}, {}, 0, 0
    for point in points:
        signals = seen.signals(point.id, point.payload)
        if signals is None:
            missing += 1
        else:
            first = pixels.get(signals.pixels) or new_pixels.get(signals.pixels)
            if first is None:
                new_pixels[signals.pixels] = point.id
            elif first != point.id:
                found.append(_pair(first, point.id, PairEvidence.exact()))
            new_members[point.id] = _member(point.payload, signals)
        vector = (point.vectors or {}).get("image")
        if vector is None:
            continue
        request = SearchRequest(vector=vector, using="image", filter=filter, limit=neighbours + 1,
                                score_threshold=thresholds.min_cosine, with_payload=True)
        for hit in store.search(request):
            if hit.id == point.id or not seen.first_time(point.id, hit.id):
                continue  # itself, or a pair already compared from its other point
            other = seen.signals(hit.id, hit.payload)
            if tier == "exact":
                if signals is None or other is None or signals.pixels != other.pixels:
                    continue  # only equal pixels matter; the hash found those past the neighbour limit too
                evidence = compare(signals, other, hit.score, thresholds)
            elif signals is None or other is None:
                evidence = PairEvidence("similar" if hit.score >= thresholds.similar_cosine else "different", hit.score)
            else:
                compared += 1
                evidence = compare(signals, other, hit.score, thresholds)
            if evidence.tier != "different" and TIERS.index(evidence.tier) <= TIERS.index(tier):
                found.append(_pair(point.id, hit.id, evidence))
                new_members[hit.id] = _member(hit.payload, other)
                new_members.setdefault(point.id, _member(point.payload, signals))
    return found, new_pixels, new_members, compared, missing


def _merge(pairs: dict[tuple[str, str], DuplicatePair], found: Iterable[DuplicatePair]) -> None:
    """Add ``found`` to ``pairs`` in order: a pair found from both of its points keeps its first finding (the two
    directions' evidence may differ), except that an exact pair found by its hash gains its cosine."""
    for pair in found:
        known = pairs.get((pair.left, pair.right))
        if known is None or (known.evidence.cosine is None and pair.evidence.cosine is not None):
            pairs[(pair.left, pair.right)] = pair


def _pair(a: str, b: str, evidence: PairEvidence) -> DuplicatePair:
    left, right = sorted((a, b))
    return DuplicatePair(left, right, evidence)


def _member(payload: dict[str, Any], signals: ImageSignals | None) -> Member:
    source = payload.get(SOURCE_KEY) or {}
    order = (str(source.get("file", "")), int(source.get("row", 0) or 0)) if isinstance(source, dict) else ("", 0)
    return Member(signals.area if signals else 0, order)


def group_pairs(pairs: Iterable[DuplicatePair], members: dict[str, Member], tier: str) -> list[DuplicateGroup]:
    """Groups of the pairs of tier ``tier`` or stronger, each around its keeper, in order of the keeper's id.

    Not connected components: a chain of near pairs (a burst, a slow fade from one photo into another) would join
    images that are not duplicates of one another. Instead, greedily: the best remaining image (most pixels, then
    first in source order, then lowest id) is a keeper; its group is its exact copies (equal pixels: an equivalence)
    and every remaining image paired directly with one of them, with that image's exact copies. Every member of a
    group is thus the keeper's copy by a pair of the group's own evidence, so deleting every other member deletes
    only duplicates of the keeper. The group's ``tier``: the weakest of its members' strongest pair with the
    keeper's copies; ``pairs``: every pair inside the group.
    """
    strength = TIERS.index(tier)
    kept = sorted((p for p in pairs if TIERS.index(p.evidence.tier) <= strength), key=lambda p: (p.left, p.right))
    copies = _exact_classes(kept)
    links: dict[str, dict[str, int]] = {}  # exact class → neighbouring class → strongest tier between them
    for pair in kept:
        a, b = copies[pair.left], copies[pair.right]
        if a != b:
            rank = TIERS.index(pair.evidence.tier)
            for one, other in ((a, b), (b, a)):
                known = links.setdefault(one, {}).get(other)
                links[one][other] = rank if known is None else min(known, rank)
    members_of: dict[str, list[str]] = {}
    for node, root in copies.items():
        members_of.setdefault(root, []).append(node)
    order = lambda i: (-members.get(i, NO_MEMBER).area, members.get(i, NO_MEMBER).order, i)  # noqa: E731
    remaining = sorted(copies, key=order)
    taken: set[str] = set()
    groups = []
    for candidate in remaining:
        if candidate in taken:
            continue
        keeper_class = copies[candidate]
        joined = {c: r for c, r in links.get(keeper_class, {}).items() if not taken & set(members_of[c])}
        ids = [i for c in (keeper_class, *joined) for i in members_of[c] if i not in taken]
        if len(ids) < 2:
            continue
        taken.update(ids)
        inside = set(ids)
        weakest = max(joined.values(), default=0)
        ordered = [candidate] + sorted(i for i in ids if i != candidate)
        groups.append(DuplicateGroup(0, TIERS[weakest], candidate, ordered,
                                     [p for p in kept if p.left in inside and p.right in inside]))
    groups.sort(key=lambda g: (g.keeper, g.members))
    for number, group in enumerate(groups, 1):
        group.group = number
    return groups


NO_MEMBER = Member(0, ("", 0))


def _exact_classes(pairs: list[DuplicatePair]) -> dict[str, str]:
    """Every id of ``pairs`` → the lowest id of its exact copies (union-find over the exact pairs)."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for pair in pairs:
        a, b = root(pair.left), root(pair.right)
        if pair.evidence.tier == "exact" and a != b:
            parent[max(a, b)] = min(a, b)
    return {node: root(node) for node in list(parent)}


def _header(collection: str, tier: str, filter: dict[str, Any] | None, thresholds: Thresholds, neighbours: int,
            total: int) -> dict[str, Any]:
    return {"collection": collection, "tier": tier, "filter": filter, "thresholds": thresholds.to_dict(),
            "neighbours": neighbours, "points": total}


@dataclass
class _Checkpoint:
    """A JSON-lines file: the run's header, then one line per finished page (module docstring)."""

    path: Path | None
    cursor: str | None = None
    done: int = 0
    pairs: list[DuplicatePair] = field(default_factory=list)
    pixels: dict[str, str] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    compared: int = 0
    without_signals: int = 0

    @classmethod
    def open(cls, path: str | Path | None, header: dict[str, Any]) -> "_Checkpoint":
        """Read an earlier run's pages when its header equals ``header``; else start the file afresh."""
        state = cls(Path(path) if path is not None else None)
        if state.path is None:
            return state
        lines = state.path.read_text().splitlines() if state.path.is_file() else []
        try:
            same = bool(lines) and json.loads(lines[0]) == json.loads(json.dumps(header))
        except ValueError:
            same = False
        if same:
            good = 1
            for line in lines[1:]:
                try:
                    state._replay(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    break  # a line torn by a kill: the pages after the last whole line are read again
                good += 1
            if good < len(lines):
                state.path.write_text("\n".join(lines[:good]) + "\n")
            return state
        state = cls(state.path)
        state.path.parent.mkdir(parents=True, exist_ok=True)
        state.path.write_text(json.dumps(header) + "\n")
        return state

    def _replay(self, line: dict[str, Any]) -> None:
        self.cursor, self.done = line["next"], line["done"]
        self.pairs += [DuplicatePair(p["left"], p["right"], PairEvidence(**p["evidence"])) for p in line["pairs"]]
        self.pixels.update(line["pixels"])
        self.members.update({i: Member(m[0], tuple(m[1])) for i, m in line["members"].items()})
        self.compared += line["compared"]
        self.without_signals += line["missing"]

    def append(self, cursor: str | None, done: int, pairs: list[DuplicatePair], pixels: dict[str, str],
               members: dict[str, Member], compared: int, missing: int) -> None:
        if self.path is None:
            return
        line = {"next": cursor, "done": done, "compared": compared, "missing": missing, "pixels": pixels,
                "pairs": [{"left": p.left, "right": p.right, "evidence": asdict(p.evidence)} for p in pairs],
                "members": {i: [m.area, list(m.order)] for i, m in members.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
