"""The embedded store (Qdrant Edge) is one process's: another process gets a clear error and leaves the
record untouched."""
from __future__ import annotations

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from helpers.congruence import SPEC, points
from helpers import ROOT


def in_another_process(script: str):
    """Run ``script`` in a fresh Python process (the embedded store locks per process)."""
    import subprocess
    import sys
    import textwrap

    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_embedded_store_open_in_another_process_is_a_clear_error(tmp_path):
    store = QdrantEdgeStore("locked", data_dir=tmp_path)
    store.ensure_collection(SPEC)
    store.upsert(points(2))
    out = in_another_process(f"""
        from mmindex.connectors.qdrant_edge import QdrantEdgeStore
        from mmindex.errors import StoreError
        try:
            QdrantEdgeStore("locked", data_dir={str(tmp_path)!r}).count()
        except StoreError as e:
            print("ERR", e)
    """)
    store.close()
    assert "open in another process" in out.stdout, out.stderr


def test_a_run_refused_by_the_lock_leaves_the_metadata_untouched(tmp_path):
    """Another process holds the store: the new run's payload types must not be recorded."""
    store = QdrantEdgeStore("held", data_dir=tmp_path)
    store.ensure_collection(SPEC)
    store.upsert(points(2))
    metadata = (tmp_path / "held" / "collection.json").read_bytes()
    out = in_another_process(f"""
        from mmindex.connectors.base import CollectionSpec
        from mmindex.connectors.qdrant_edge import QdrantEdgeStore
        from mmindex.errors import StoreError
        try:
            QdrantEdgeStore("held", data_dir={str(tmp_path)!r}).ensure_collection(
                CollectionSpec({SPEC.model!r}, {SPEC.dim}, {{"new_field": "keyword"}}))
        except StoreError as e:
            print("ERR", e)
    """)
    store.close()
    assert "open in another process" in out.stdout, out.stderr
    assert (tmp_path / "held" / "collection.json").read_bytes() == metadata
