"""One deterministic order for every ranking: score descending, then point id — exact past ties at any cut."""
from __future__ import annotations

from typing import Callable

from mmindex.connectors.base import ScoredPoint, SearchRequest, Store
from mmindex.errors import StoreError


TIE_LIMIT = 100_000  # candidates fetched at most to complete a group of equal scores at the cut


FUSED_TOLERANCE = 2e-5  # fused scores (RRF, DBSF) within this share of each other are one tie group
FUSED_DIGITS = 6  # decimals fused scores are shown with


def ranking(store: Store, request: Callable[[int], SearchRequest], depth: int,
            tie_limit: int = TIE_LIMIT, tolerance: float = 0.0) -> list[ScoredPoint]:
    """The first ``depth`` points of one deterministic order — score descending, then id ascending — and after
    them every further point tied with the last one, so any slice of the first ``depth`` is exact.

    ``request(size)`` is the engine request for the best ``size`` points (offset 0). The engine keeps an
    arbitrary subset of a group of equal scores that the cut at ``size`` falls into, and that subset can change
    from call to call; ordering ties by id after the cut would make pages repeat some points and skip others
    (the bug milvus-io/milvus#44870 fixed the same way). So this asks for one point past ``depth`` and, while
    that point still ties with the cut, for twice as many, until a lower score or the end of the collection
    shows the tie group is complete. Raises StoreError when more than ``tie_limit`` points tie at the cut
    (their order could not be made exact); a filter that narrows the search avoids it.

    ``tolerance`` (fused scores: ``FUSED_TOLERANCE``): scores within this share of each other, in a chain, are one
    tie group, because Qdrant Edge sums and normalises them in float32 and a server in float64 (DBSF's normalised
    scores of equal points came out 8e-6 apart); such scores are shown to ``FUSED_DIGITS`` decimals. Fused scores
    lie within [0, legs], so the tolerance stays below 1e-4; formula scores, of any size, are compared exactly. Fused rankings are asked for twice ``depth`` at once: the fusion over fixed prefetch legs costs
    the same, and rank fusion ties often at a cut.
    """
    return ranking_to_end(store, request, depth, tie_limit, tolerance)[0]


def ranking_to_end(store: Store, request: Callable[[int], SearchRequest], depth: int, tie_limit: int = TIE_LIMIT,
                   tolerance: float = 0.0) -> tuple[list[ScoredPoint], bool]:
    """``ranking``'s points cut to its exact part (at least ``depth`` points, through the tie group at the cut,
    unless the ranking holds fewer), and whether they are the whole ranking."""
    size = depth + 1 if not tolerance else max(2 * depth, depth + 16)
    while True:
        points = sorted(store.search(request(size)), key=lambda p: (-p.score, p.id))
        starts = group_starts(points, tolerance)
        if len(points) < size:
            return ordered(points, starts, tolerance), True
        after = [start for start in starts if depth <= start]
        if after:  # the tie group at the cut is complete: what follows it may be part of the next one
            return ordered(points[:after[0]], [s for s in starts if s < after[0]], tolerance), False
        if size >= depth + tie_limit:
            raise StoreError(f"more than {tie_limit:,} points score exactly {points[depth - 1].score:g} at rank "
                             f"{depth:,}: their order cannot be made exact; narrow the search with a filter")
        size = min(size * 2, depth + tie_limit)


def same_score(a: float, b: float, tolerance: float) -> bool:
    """Equal scores, or within ``tolerance`` × the larger magnitude of each other."""
    return a == b or abs(a - b) <= tolerance * max(abs(a), abs(b))


def group_starts(points: list[ScoredPoint], tolerance: float) -> list[int]:
    """Indexes where a new group of equal scores begins in ``points`` (sorted by score, descending)."""
    return [i for i in range(1, len(points)) if not same_score(points[i - 1].score, points[i].score, tolerance)]


def ordered(points: list[ScoredPoint], starts: list[int], tolerance: float) -> list[ScoredPoint]:
    """``points`` with each group of equal scores in id order (already so without ``tolerance``); fused scores
    rounded to ``FUSED_DIGITS`` for showing."""
    if not tolerance:
        return points
    result: list[ScoredPoint] = []
    for start, end in zip([0, *starts], [*starts, len(points)]):
        result.extend(sorted(points[start:end], key=lambda p: p.id))
    for point in result:
        point.score = round(point.score, FUSED_DIGITS)
    return result
