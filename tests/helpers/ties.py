"""``ShuffledTies``: a store whose engine keeps a random subset of a group of equal scores at the cut, as a real
engine may from one call to the next (milvus-io/milvus#44819); the tie tests run every ranking through it."""
from __future__ import annotations

import dataclasses
import random

from mmindex.connectors.base import SearchRequest


class ShuffledTies:
    """Answers the best ``limit`` points by score, equal scores in a random order (so a cut inside a tie group
    keeps a random subset of it); everything else is the wrapped store's."""

    def __init__(self, store, seed: int):
        self.store, self.random = store, random.Random(seed)

    def search(self, request: SearchRequest):
        everything = self.store.search(dataclasses.replace(request, limit=100_000, offset=0))
        self.random.shuffle(everything)
        everything.sort(key=lambda p: -p.score)  # stable: equal scores stay shuffled
        return everything[request.offset:request.offset + request.limit]

    def __getattr__(self, name):
        return getattr(self.store, name)
