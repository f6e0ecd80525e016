"""What a collection is: its description with the points each source holds, and the one error for a collection (or
an alias's target) that is not there."""
from __future__ import annotations

from typing import Any

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.errors import StoreError
from mmindex.pipeline.query.filters import source_filter


def describe(store: Store, place: str = "") -> dict[str, Any]:
    """``store.info()`` as a dict (``CollectionInfo.to_dict``), each recorded source with its current ``points``.
    Raises StoreError when the collection (or its alias's) does not exist (``require_collection``)."""
    require_collection(store, place)
    details = store.info().to_dict()
    for name, record in details["sources"].items():
        details["sources"][name] = {**record, "points": store.count(source_filter(name))}
    return details


def require_collection(store: Store, place: str = "", remedy: str = "run `mmindex ingest` first") -> CollectionSpec:
    """The collection's spec; StoreError saying what to do when it (or the collection its alias names) is missing.
    ``place``: where it was looked for (``StoreSettings.place``: "on URL" or "under DIR"); ``remedy``: what to do
    about a missing collection."""
    spec = store.spec()
    if spec is not None:
        return spec
    target = getattr(store, "alias_of", None)
    raise StoreError((f"alias {store.collection!r} points to collection {target!r}, which" if target else
                      f"collection {store.collection!r}") + " does not exist"
                     + (f" {place}" if place else "")
                     + ("; point the alias at a collection (mmindex alias set)" if target else f"; {remedy}"))
