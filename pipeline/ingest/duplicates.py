"""``--on-duplicate`` at ingest: each embedded row checked against the points already stored and the earlier rows of
its run, and the match it has (the id it duplicates, exact or near, and the evidence).

A row is a duplicate when it is *exact* (equal decoded pixels) or *near* (the same photo changed) to a stored point
or to an earlier row of the run that was kept, by ``duplicates.evidence.compare`` at ``Thresholds()``. Candidates:
stored points with the same pixel hash (a payload filter on ``_pixels``, indexed when the run checks), the
``CANDIDATES`` nearest stored image vectors at cosine ≥ ``min_cosine``, and the earlier kept rows of the same batch
at that cosine (they are not stored yet). A row is never a duplicate of its own point id (a row re-embedded after
a caption change, a repeated id).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mmindex.connectors.base import SearchRequest, Store
from mmindex.pipeline.duplicates.evidence import PairEvidence, Thresholds, compare, same_pixels
from mmindex.pipeline.duplicates.signals import (
    PIXELS_KEY,
    WITHOUT_SIGNALS,
    ImageSignals,
    SignalCache,
    signals_from_payload,
)

DUPLICATE_OF_KEY = "duplicate_of"  # --on-duplicate link: the point id a stored row duplicates
DUPLICATE_TIER_KEY = "duplicate_tier"  # and how: exact or near
LINK_KEYS = (DUPLICATE_OF_KEY, DUPLICATE_TIER_KEY)
CANDIDATES = 16  # nearest stored image vectors compared per row
PIXEL_PAGES = 4  # pages of 256 points read per batch for stored points with a batch's pixel hashes
_STRENGTH = {"exact": 0, "near": 1}


def unsigned_warning(store: Store, mode: str) -> str | None:
    """The warning for a ``--on-duplicate skip|link`` run into a collection whose stored points lack duplicate
    signals (made before they were kept, or JPEGs decoded on the GPU): the check cannot see them, so rows that
    duplicate them are stored. None when every stored point has them (or there is no collection yet)."""
    if not store.exists():
        return None
    missing = store.count(WITHOUT_SIGNALS)
    if not missing:
        return None
    return (f"{missing:,} stored point(s) of collection {store.collection!r} have no duplicate signals (made before "
            f"they were kept, or JPEGs decoded on the GPU), so --on-duplicate {mode} cannot see them: rows that "
            "duplicate them are stored as new. Run `mmindex ingest` again on their source (unchanged rows only gain "
            "the signals, nothing is embedded again), then ingest these rows")


@dataclass(frozen=True)
class DuplicateMatch:
    """What a row duplicates: ``of`` (a point id), the pair's evidence (tier exact or near) and whether that point
    is itself a linked duplicate (a row is matched to an original before a copy)."""

    of: str
    evidence: PairEvidence
    of_a_duplicate: bool = False

    @property
    def tier(self) -> str:
        return self.evidence.tier

    def reason(self) -> str:
        """``exact duplicate of ID`` or ``near duplicate of ID (hash distance 12 bits, residual 0.015)``."""
        if self.tier == "exact":
            return f"exact duplicate of {self.of}"
        return (f"near duplicate of {self.of} (hash distance {self.evidence.hash_distance} bits, residual "
                f"{self.evidence.residual:.3f})")

    def rank(self) -> tuple:
        cosine = self.evidence.cosine if self.evidence.cosine is not None else 1.0
        return _STRENGTH[self.tier], self.of_a_duplicate, -cosine, self.of


class DuplicateCheck:
    """The run's duplicate check; ``check`` is called by the one writer thread, batch by batch in input order."""

    def __init__(self, store: Store, thresholds: Thresholds = Thresholds(), candidates: int = CANDIDATES):
        self.store = store
        self.thresholds = thresholds
        self.candidates = candidates
        self.pixels: dict[str, str] = {}  # pixel hash → point id of the first row of this run kept with it
        self._signals = SignalCache().get  # candidates' signals, kept between rows

    def check(self, rows: Sequence[Any], image_vectors: np.ndarray, keep_duplicates: bool) -> list[DuplicateMatch | None]:
        """One match or None per row (``rows``: ``SourceRow`` with signals in the payload; ``image_vectors``:
        (len(rows), dim), unit length). ``keep_duplicates``: the duplicates found are stored (link), so later rows
        may match them; else (skip) they are not. A row without signals (decoded on the GPU) is never matched."""
        signals = [signals_from_payload(row.payload) for row in rows]
        stored = self._stored_pixels({s.pixels for s in signals if s is not None})
        vectors = np.asarray(image_vectors, np.float32).reshape(len(rows), -1)
        cosines = vectors @ vectors.T
        matches: list[DuplicateMatch | None] = []
        kept: list[int] = []
        for index, row in enumerate(rows):
            mine = signals[index]
            match = None
            if mine is not None:
                earlier = [(rows[j].id, rows[j].payload, float(cosines[index, j]), matches[j] is not None)
                           for j in kept if cosines[index, j] >= self.thresholds.min_cosine]
                match = self._best(row.id, mine, vectors[index], stored.get(mine.pixels, []), earlier)
            matches.append(match)
            if match is None or keep_duplicates:
                kept.append(index)
                if mine is not None:
                    self.pixels.setdefault(mine.pixels, row.id)
        return matches

    def _best(self, own_id: str, mine: ImageSignals, vector: np.ndarray, stored: list[tuple[str, dict]],
              earlier: list[tuple[str, dict, float, bool]]) -> DuplicateMatch | None:
        """The strongest match of one row (exact before near, an original before a linked copy, then the highest
        cosine, then the lowest id). Exact is settled by the pixel hash alone; near candidates are compared in
        that order and the first near one is the answer, so a duplicate costs one ``compare``, not one per
        candidate."""
        exact = [DuplicateMatch(point_id, PairEvidence.exact(), DUPLICATE_OF_KEY in payload)
                 for point_id, payload in stored if point_id != own_id
                 and (other := self._signals(point_id, payload)) is not None and same_pixels(mine, other)]
        first = self.pixels.get(mine.pixels)
        if first is not None and first != own_id:
            exact.append(DuplicateMatch(first, PairEvidence.exact()))
        if exact:
            return min(exact, key=DuplicateMatch.rank)
        request = SearchRequest(vector=vector.tolist(), using="image", limit=self.candidates,
                                score_threshold=self.thresholds.min_cosine, with_payload=True)
        candidates = [(hit.id, hit.payload, hit.score, DUPLICATE_OF_KEY in hit.payload)
                      for hit in self.store.search(request)] + earlier
        candidates.sort(key=lambda c: (c[3], -c[2], c[0]))
        for point_id, payload, cosine, copy in candidates:
            other = self._signals(point_id, payload) if point_id != own_id else None
            if other is None:
                continue
            evidence = compare(mine, other, cosine, self.thresholds)
            if evidence.tier in _STRENGTH:
                return DuplicateMatch(point_id, evidence, copy)
        return None

    def _stored_pixels(self, hashes: set[str]) -> dict[str, list[tuple[str, dict]]]:
        """Stored points whose pixel hash is one of ``hashes``: hash → [(id, payload)] (at most ``PIXEL_PAGES``
        pages; copies past them are still found among the nearest vectors, at cosine 1)."""
        found: dict[str, list[tuple[str, dict]]] = {}
        if not hashes:
            return found
        where = {"must": [{"key": PIXELS_KEY, "match": {"any": sorted(hashes)}}]}
        offset = None
        for _ in range(PIXEL_PAGES):
            page, offset = self.store.scroll(filter=where, limit=256, offset=offset, with_payload=True)
            for point in page:
                found.setdefault(str(point.payload.get(PIXELS_KEY)), []).append((point.id, point.payload))
            if offset is None:
                break
        return found
