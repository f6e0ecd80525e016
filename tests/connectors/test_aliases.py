"""Aliases in the stores: a switch that searching readers never see half-done (Edge and server), a reader
that follows a switch within one tick of the file clock, and a collection open by name and by alias."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from mmindex.connectors.base import SearchRequest
from mmindex.connectors.qdrant_edge import ALIASES_FILE, QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from helpers.aliases import DIM, fill, write_versions


@pytest.fixture
def data_dir(tmp_path):
    """Collections v1 ({"v": 1}) and v2 ({"v": 2}) in one embedded store, closed again."""
    return write_versions(tmp_path / "data")


def search_while_switching(reader_stores, switch, seconds: float = 1.0) -> list[set[int]]:
    """Search from one thread per reader while ``switch(i)`` moves the alias; each answer's set of ``v``."""
    query = SearchRequest(vector=np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), limit=5)
    answers: list[set[int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search(store):
        try:
            while not stop.is_set():
                answers.append({hit.payload["v"] for hit in store.search(query)})
        except BaseException as error:  # noqa: BLE001 - any failure is the test's finding
            errors.append(error)

    threads = [threading.Thread(target=search, args=(store,)) for store in reader_stores]
    for thread in threads:
        thread.start()
    started, switches = time.monotonic(), 0
    # at least `seconds`, and at least 51 switches (a loaded machine switches slower), at most 30 s
    while (time.monotonic() - started < seconds or switches <= 50) and time.monotonic() - started < 30:
        switch(switches)
        switches += 1
        time.sleep(0.002)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == [] and switches > 50
    return answers


def test_switching_an_edge_alias_under_searching_readers(data_dir):
    admin = QdrantEdgeStore("v1", data_dir=data_dir)
    admin.set_alias("live", "v1")
    reader = QdrantEdgeStore("live", data_dir=data_dir)  # one store, two threads: as `mmindex serve` uses it
    answers = search_while_switching([reader, reader], lambda i: admin.set_alias("live", f"v{i % 2 + 1}"))
    assert answers and all(answer in ({1}, {2}) for answer in answers)  # never empty, never mixed
    assert {2} in answers and {1} in answers  # the readers followed the switches, both ways
    admin.set_alias("live", "v2")
    assert {hit.payload["v"] for hit in reader.search(SearchRequest(vector=np.ones(DIM), limit=3))} == {2}
    reader.close()


def test_switching_a_server_alias_under_searching_readers():
    admin = QdrantServerStore("v1", url=":memory:")
    fill(admin, 1)
    fill(QdrantServerStore("v2", url=":memory:", client=admin.client), 2)
    admin.set_alias("live", "v1")
    reader = QdrantServerStore("live", url=":memory:", client=admin.client)
    answers = search_while_switching([reader], lambda i: admin.set_alias("live", f"v{i % 2 + 1}"))
    assert answers and all(answer in ({1}, {2}) for answer in answers)
    assert {1} in answers and {2} in answers
    admin.close()


def test_an_edge_reader_follows_a_switch_that_kept_the_file_time(data_dir):
    """Two switches within one tick of the file system's clock leave aliases.json with the same mtime
    (whole seconds on some file systems): the reader must still see the second one."""
    admin = QdrantEdgeStore("v1", data_dir=data_dir)
    admin.set_alias("live", "v1")
    path = data_dir / ALIASES_FILE
    reader = QdrantEdgeStore("live", data_dir=data_dir)
    query = SearchRequest(vector=np.ones(DIM), limit=3)
    for target, version in (("v2", 2), ("v1", 1), ("v2", 2)):  # back to a collection it read before, too
        before = path.stat().st_mtime_ns
        assert {hit.payload["v"] for hit in reader.search(query)} == {3 - version}
        admin.set_alias("live", target)
        os.utime(path, ns=(before, before))
        assert {hit.payload["v"] for hit in reader.search(query)} == {version}
    reader.close()


def test_a_collection_and_its_alias_open_in_one_process(data_dir):
    """serve may reach a collection by its name and by an alias: one shard, shared, not a lock error."""
    direct = QdrantEdgeStore("v1", data_dir=data_dir)
    direct.set_alias("live", "v1")
    by_alias = QdrantEdgeStore("live", data_dir=data_dir)
    probe = SearchRequest(vector=np.ones(DIM, np.float32).tolist(), limit=3)
    assert direct.search(probe) and by_alias.search(probe)
    by_alias.close()
    assert direct.count() == 20  # the shard stays open for the store that still holds it
    direct.close()
