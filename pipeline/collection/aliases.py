"""Aliases: names that point to a collection, switched in one atomic step. They belong to a place (an embedded store's
folder, a server), not to a collection, so each call opens the place through a store bound to some name."""
from __future__ import annotations

from dataclasses import replace

from mmindex.errors import StoreError
from mmindex.pipeline.config import StoreSettings


def set_alias(settings: StoreSettings, name: str, collection: str) -> str | None:
    """Point alias ``name`` at ``collection`` (replacing what it pointed to); what it pointed to before, or None."""
    store = replace(settings, collection=collection).open()
    try:
        return store.set_alias(name, collection)
    finally:
        store.close()


def list_aliases(settings: StoreSettings) -> tuple[dict[str, str], set[str]]:
    """({alias: collection}, the collections named that do not exist)."""
    store = replace(settings, collection=settings.collection or "default").open()
    try:
        aliases = store.aliases()
    finally:
        store.close()
    return aliases, {collection for collection in set(aliases.values()) if not exists(settings, collection)}


def delete_alias(settings: StoreSettings, name: str) -> str:
    """Remove alias ``name`` (its collection stays); the collection it pointed to. StoreError when there is none."""
    store = replace(settings, collection=name).open()
    try:
        before = store.delete_alias(name)
    finally:
        store.close()
    if before is None:
        raise StoreError(f"no alias {name!r} (see `mmindex alias list`)")
    return before


def exists(settings: StoreSettings, collection: str) -> bool:
    """Whether ``collection`` exists in ``settings``' place."""
    store = replace(settings, collection=collection).open()
    try:
        return store.exists()
    finally:
        store.close()
