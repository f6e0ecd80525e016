"""``--collapse-duplicates``: one hit per near-duplicate group at query time, the best scoring one shown with the ids
of the copies it stands for, read from one ranking until the page is full or the ranking ends.

The rule, walked down the ranking (score descending, then id: ``pipeline/query/ranking.py``): a hit is *collapsed*
into the first hit shown above it whose tier against it is exact or near (``evidence.compare`` at the given
thresholds, on the stored signals); otherwise it is shown. So a hit shown is always the best scoring of its
group, and which hits are shown depends only on the hits above them: page 2 is the next shown hits after page 1's,
and a hit whose duplicate was shown on an earlier page is never shown again. Hits without signals (a collection
made before them) are always shown and never collapse others. The tier needs no cosine: exact and near are decided
by the signals alone (the cosine only separates similar from different).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

from mmindex.connectors.base import SearchRequest, Store
from mmindex.errors import StoreError
from mmindex.pipeline.duplicates.evidence import Thresholds, compare
from mmindex.pipeline.duplicates.signals import ImageSignals, signals_from_payload
from mmindex.pipeline.query.hits import Hit, hit_from
from mmindex.pipeline.query.plan import DepthError
from mmindex.pipeline.query.ranking import ranking_to_end

COLLAPSED_TIERS = ("exact", "near")  # the tiers that put two hits in one group; "similar" shots stay apart
FIRST_SCAN = 64  # hits read at first; doubled until the page is full
SCAN_LIMIT = 100_000  # hits read at most for one page


@dataclass
class Shown:
    """A hit shown: its point (id, score, payload), its rank (0-based) in the ranking, its signals (None: none
    stored), and the (rank, id) of each hit collapsed into it, in ranking order."""

    point: Any
    rank: int
    signals: ImageSignals | None
    collapsed: list[tuple[int, str]] = field(default_factory=list)


def collapse(points: Sequence[Any], thresholds: Thresholds = Thresholds()) -> list[Shown]:
    """The hits of ``points`` (a ranking: objects with ``id``, ``score`` and ``payload``, best first) that are
    shown, each with the hits collapsed into it (module docstring). Cost: one ``compare`` per (hit, hit shown
    above it with signals) pair until the first duplicate; most pairs stop at the perceptual hash."""
    shown: list[Shown] = []
    for rank, point in enumerate(points):
        signals = signals_from_payload(point.payload or {})
        into = None if signals is None else next(
            (entry for entry in shown if entry.signals is not None and same_photo(entry.signals, signals, thresholds)),
            None)
        if into is None:
            shown.append(Shown(point, rank, signals))
        else:
            into.collapsed.append((rank, point.id))
    return shown


def same_photo(a: ImageSignals, b: ImageSignals, thresholds: Thresholds) -> bool:
    """Whether ``compare`` puts ``a`` and ``b`` in a tier of ``COLLAPSED_TIERS``; remembered for the
    ``PAIR_CACHE`` latest pairs, since the same points meet again on the next page and in the next query."""
    return _same_photo(a.pixels, a.width, a.height, a.fingerprint, b.pixels, b.width, b.height, b.fingerprint,
                       thresholds)


PAIR_CACHE = 65_536  # pairs remembered (about 200 bytes each: keys hold references to the fingerprints)


@lru_cache(maxsize=PAIR_CACHE)
def _same_photo(pixels_a: str, width_a: int, height_a: int, print_a: bytes, pixels_b: str, width_b: int,
                height_b: int, print_b: bytes, thresholds: Thresholds) -> bool:
    a = ImageSignals(pixels_a, width_a, height_a, print_a)
    b = ImageSignals(pixels_b, width_b, height_b, print_b)
    return compare(a, b, None, thresholds).tier in COLLAPSED_TIERS


def collapsed_hits(shown: Sequence[Shown], limit: int, offset: int) -> list[Hit]:
    """Shown hits ``offset`` to ``offset + limit`` (of ``collapse``) as ``Hit`` values, each with ``duplicates``:
    the ids collapsed into it that rank above the next hit shown after it (all of them when none is shown after it:
    the ranking ended), so a hit's list is the same however the pages are cut."""
    hits = []
    for index in range(offset, min(offset + limit, len(shown))):
        entry = shown[index]
        before = shown[index + 1].rank if index + 1 < len(shown) else None  # the next hit shown after this one
        hit = hit_from(entry.point.id, entry.point.score, entry.point.payload)
        hit.duplicates = [point_id for rank, point_id in entry.collapsed if before is None or rank < before]
        hits.append(hit)
    return hits


def collapsed_page(store: Store, request: Callable[..., SearchRequest], limit: int, offset: int,
                   tolerance: float = 0.0, matching: Callable[[], int] | None = None,
                   thresholds: Thresholds = Thresholds(), scan_limit: int = SCAN_LIMIT) -> list[Hit]:
    """Shown hits ``offset`` to ``offset + limit`` of the ranking ``request(size, with_payload)`` returns, each
    listing the ids collapsed into it (``Hit.duplicates``) that rank above the next shown hit.

    Reads the ranking deeper (doubling from ``FIRST_SCAN``) until one more hit than the page is shown or the
    ranking ends, so the page and its ``duplicates`` are the same however deep it read. Raises StoreError past
    ``scan_limit`` hits (narrow the search with a filter). ``matching``: for a ranking that covers only some
    candidates (fused or boosted: each leg's best ``--fusion-depth``), how many points the filter keeps; when the
    ranking ends before the page is full and more points match, DepthError says so rather than return a page that
    may be short.
    """
    wanted = offset + limit + 1  # the hit after the page bounds the page's duplicates
    depth = max(FIRST_SCAN, 2 * wanted)
    while True:
        points, ended = ranking_to_end(store, lambda size: request(size, True), depth, tolerance=tolerance)
        shown = collapse(points, thresholds)
        if len(shown) >= wanted or ended:
            if ended and len(shown) < offset + limit and matching is not None and matching() > len(points):
                raise DepthError(f"--collapse-duplicates: the ranking holds only {len(points):,} candidates (each "
                                 "leg's best --fusion-depth), too few to fill this page of distinct hits, and more "
                                 "points match: raise --fusion-depth (up to 10,000), or collapse a plain dense search")
            return collapsed_hits(shown, limit, offset)
        if depth >= scan_limit:
            raise StoreError(f"--collapse-duplicates: the best {scan_limit:,} hits do not fill a page of distinct "
                             "hits; narrow the search with a filter, or ask for a smaller page")
        depth = min(depth * 2, scan_limit)
