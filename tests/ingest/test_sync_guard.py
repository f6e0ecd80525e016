"""--sync under abuse: an input that vanished (files emptied, a glob that matches fewer files, a changed --id-col, a
non-unique id column, unreadable files) never empties the collection. The --max-delete guard runs before the first
delete, is checked against a plain-Python oracle (the limit alone, and whole sync runs over random shrinks of a
source), and a sync crashed at any step of its delete phase converges to the uninterrupted result when run again.
"""
from __future__ import annotations

import os
import random
import shutil
from decimal import Decimal, getcontext

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.samples import all_rows
from hypothesis import given, settings
from hypothesis import strategies as st

import mmindex.pipeline.ingest.sync as sync
from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import InputError, UsageError
from mmindex.pipeline.ingest.options import parse_max_delete
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.ingest.summary import outcome
from helpers.stores import stored_payloads

FAST = dict(batch_size=32, workers=1, optimize=False)


def run(data, store_dir, encoder, name="c", inputs=None, **options):
    store = QdrantEdgeStore(name, data_dir=store_dir)
    try:
        return ingest(inputs or [str(data)], store, encoder, IngestOptions(**{**FAST, **options}))
    finally:
        store.close()


def points(store_dir, name="c"):
    return stored_payloads(store_dir, name)


def rewrite(path, change):
    table = pq.read_table(path)
    pq.write_table(pa.Table.from_pylist(change(table.to_pylist()), schema=table.schema), path)


def ids_of(rows):
    return {point_id_from_key(row["id"]) for row in rows}


# -- the limit against a plain-Python oracle ------------------------------------------------------------------------

def oracle_allows(spec: str, deleting: int, points: int) -> bool:
    if spec == "all":
        return True
    if spec.endswith("%"):
        getcontext().prec = 50
        return points == 0 and deleting == 0 or (points > 0 and
                                                 Decimal(deleting) / Decimal(points) * 100 <= Decimal(spec[:-1]))
    return deleting <= int(spec)


SPECS = st.one_of(st.just("all"), st.integers(0, 500).map(str),
                  st.integers(0, 100).map(lambda p: f"{p}%"),
                  st.decimals(0, 100, places=2).map(lambda d: f"{d}%"))


@settings(max_examples=400, deadline=None)
@given(SPECS, st.integers(0, 400), st.integers(0, 400))
def test_the_limit_agrees_with_a_plain_python_oracle(spec, deleting, extra):
    total = deleting + extra  # a sync deletes at most the source's points
    limit = parse_max_delete(spec)
    assert limit.allows(deleting, total) == oracle_allows(spec, deleting, total)
    most = limit.most(total)
    if most is not None:  # the number the refusal names is the largest count allowed
        assert limit.allows(most, total) and not limit.allows(most + 1, total)


@pytest.mark.parametrize("bad", ["", "ten", "-1", "-5%", "101%", "1.5", "nan%", "inf%", "5%%", True, 0.1, None])
def test_a_limit_that_is_no_limit_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="--max-delete"):
        IngestOptions(max_delete=bad)


def test_limits_as_written_and_by_default():
    assert IngestOptions().max_delete == "10%" and IngestOptions(max_delete=250).max_delete == "250"
    assert IngestOptions(max_delete=" ALL ").max_delete == "all"
    assert parse_max_delete("10%").most(60) == 6 and parse_max_delete("10%").allows(6, 60)
    assert not parse_max_delete("10%").allows(7, 60)


# -- whole sync runs against the oracle -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synced_source(tmp_path_factory, encoder):
    """30 rows over 3 files ingested with --sync; each case below copies the data and the store and shrinks them."""
    root = tmp_path_factory.mktemp("guard")
    write_sample(root / "d", rows=30, seed=31, files=3, width=32, height=32)
    run(root / "d", root / "store", encoder, sync=True, source_name="s")
    return root


def shrink(data, rng):
    """A random way a source loses rows: rows dropped, files emptied, files gone, or nothing."""
    files = sorted(data.glob("*.parquet"))
    how = rng.choice(["drop", "empty", "remove", "none"])
    for path in rng.sample(files, rng.randint(1, len(files))):
        if how == "drop":
            rewrite(path, lambda rows: [r for r in rows if rng.random() < 0.7])
        elif how == "empty":
            rewrite(path, lambda rows: [])
        elif how == "remove" and len(list(data.glob("*.parquet"))) > 1:  # an input needs one file
            path.unlink()
    return how


@pytest.mark.parametrize("case", range(10))
def test_sync_deletes_exactly_what_the_oracle_allows(synced_source, tmp_path, encoder, case):
    rng = random.Random(2024 + case)  # seeded: each case is one random shrink and one random limit
    before = set(points(synced_source / "store"))
    data, store = tmp_path / "d", tmp_path / "store"
    shutil.copytree(synced_source / "d", data)
    shutil.copytree(synced_source / "store", store)
    how = shrink(data, rng)
    spec = rng.choice(["0", "3", "10%", "34%", "50%", "all"])
    summary = run(data, store, encoder, sync=True, source_name="s", max_delete=spec)
    remaining = ids_of(all_rows(data))
    stale = before - remaining
    allowed = oracle_allows(spec, len(stale), len(before))
    assert set(points(store)) == (remaining if allowed else before), (how, spec, len(stale))
    assert bool(summary.delete_refused) == (not allowed)
    assert summary.deleted == (len(stale) if allowed else 0) and summary.stale == (0 if allowed else len(stale))
    assert outcome(summary, None, None, 0.05) == ((0, None) if allowed else (1, summary.delete_refused))


# -- the examples -------------------------------------------------------------------------------------------

def test_files_rewritten_empty_delete_nothing_and_say_why(tmp_path, encoder):
    data = tmp_path / "d"
    write_sample(data, rows=60, seed=32, files=3, width=32, height=32)
    run(data, tmp_path / "store", encoder, sync=True)
    for path in data.glob("*.parquet"):
        rewrite(path, lambda rows: [])
    summary = run(data, tmp_path / "store", encoder, sync=True)
    assert (summary.read, summary.deleted, summary.stale, len(points(tmp_path / "store"))) == (0, 0, 60, 60)
    refusal = summary.delete_refused
    assert "would delete 60 of the 60 points" in refusal and "--max-delete 10% allows (6)" in refusal
    assert "--max-delete all" in refusal and "read no row" in refusal and "\n" not in refusal
    assert outcome(summary, None, None, 0.05) == (1, refusal)
    plan = run(data, tmp_path / "store", encoder, sync=True, dry_run=True)  # a dry run says the same
    assert plan.delete_refused == refusal and plan.deleted == 0
    emptied = run(data, tmp_path / "store", encoder, sync=True, max_delete="all")  # said on purpose
    assert emptied.deleted == 60 and not points(tmp_path / "store")


def test_a_glob_that_matches_fewer_files_deletes_nothing(tmp_path, encoder):
    data = tmp_path / "d"
    write_sample(data, rows=60, seed=33, files=3, width=32, height=32)
    everything = str(data / "*.parquet")
    run(data, tmp_path / "store", encoder, inputs=[everything], sync=True)
    summary = run(data, tmp_path / "store", encoder, inputs=[str(data / "part-0000[0].parquet")], sync=True,
                  source_name=everything)  # a missing mount: one file of three is there
    assert (summary.read, summary.deleted, len(points(tmp_path / "store"))) == (20, 0, 60)
    assert "would delete 40 of the 60 points" in summary.delete_refused


def test_a_changed_id_column_is_refused_before_anything_is_written(tmp_path, encoder):
    data = tmp_path / "d"
    write_sample(data, rows=20, seed=34, width=32, height=32)
    table = pq.read_table(data / "part-00000.parquet")
    pq.write_table(table.append_column("sku", pa.array([f"sku-{i}" for i in table.column("id").to_pylist()])),
                   data / "part-00000.parquet")
    run(data, tmp_path / "store", encoder, sync=True, id_col="id")
    before = points(tmp_path / "store")
    with pytest.raises(InputError, match="would rebuild .* deleting all 20 points .* --max-delete 10%.*"
                                         "--max-delete all"):
        run(data, tmp_path / "store", encoder, sync=True, id_col="sku")
    assert points(tmp_path / "store") == before
    rebuilt = run(data, tmp_path / "store", encoder, sync=True, id_col="sku", max_delete="all")
    assert rebuilt.deleted == 20 and set(points(tmp_path / "store")) == {point_id_from_key(r["sku"])
                                                                         for r in all_rows(data)}


def test_a_non_unique_id_column_is_not_taken_as_a_rebuild(tmp_path, encoder):
    """60 rows under --id-col color would be 10 points: refused, naming file, row and value, before any write."""
    data = tmp_path / "d"
    write_sample(data, rows=60, seed=35, files=2, width=32, height=32)
    run(data, tmp_path / "store", encoder, sync=True)
    before = points(tmp_path / "store")
    with pytest.raises(InputError, match=r"part-0000\d\.parquet row \d+: --id-col 'color' does not name each row "
                                         "once: the value '[a-z]+'") as refused:
        run(data, tmp_path / "store", encoder, sync=True, id_col="color", max_delete="all")
    first = [r["color"] for r in all_rows(data)]
    repeat = next(i for i, c in enumerate(first) if c in first[:i])
    assert refused.value.row == repeat % 30 and repr(first[repeat]) in str(refused.value)
    assert points(tmp_path / "store") == before


def test_unreadable_image_files_keep_their_points_with_content_ids(tmp_path, encoder):
    """Without an id column a row whose image cannot be read has no id: the points of its file are kept."""
    data = tmp_path / "d"
    write_sample(data, rows=40, seed=36, files=2, width=32, height=32, image_kind="path")
    for path in data.glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["id"]), path)
    run(data, tmp_path / "store", encoder, sync=True)
    first = pq.read_table(data / "part-00000.parquet").to_pylist()
    os.remove(data / first[0]["image"])  # one image of the first file is unreadable today (1 of 40: under 5%)
    summary = run(data, tmp_path / "store", encoder, sync=True, max_delete="all")
    assert (summary.rejected, summary.deleted, len(points(tmp_path / "store"))) == (1, 0, 40)
    assert "1 point(s) of" in summary.warnings[0] and "part-00000.parquet kept" in summary.warnings[0]
    rewrite(data / "part-00001.parquet", lambda rows: rows[1:])  # a row really gone from the other file goes
    summary = run(data, tmp_path / "store", encoder, sync=True, max_delete="all")
    assert (summary.deleted, len(points(tmp_path / "store"))) == (1, 39)


# -- a crash at each step of the delete phase -----------------------------------------------------------------------

class Crash(BaseException):
    """What kill -9 leaves: nothing after this step runs (not an Exception, so nothing handles it)."""


def crashing(store, at):
    """Make ``store`` die before its ``at``-th write of the delete phase (deletes, then the record of the sync)."""
    steps = {"n": 0, "deleting": False}
    for name in ("delete", "update_metadata"):
        real = getattr(store, name)

        def step(*args, real=real, name=name):
            steps["deleting"] |= name == "delete"
            if steps["deleting"]:
                if steps["n"] == at:
                    raise Crash
                steps["n"] += 1
            return real(*args)

        setattr(store, name, step)
    return steps


@pytest.fixture(scope="module")
def crash_case(tmp_path_factory, encoder):
    """A source that lost 5 of 30 rows, the store as it was before the sync, and the uninterrupted sync's result."""
    root = tmp_path_factory.mktemp("crash")
    write_sample(root / "d", rows=30, seed=37, width=32, height=32)
    run(root / "d", root / "before", encoder, sync=True)
    rewrite(root / "d" / "part-00000.parquet", lambda rows: rows[:12] + rows[17:])
    shutil.copytree(root / "before", root / "after")
    run(root / "d", root / "after", encoder, sync=True, max_delete="all")
    return root


@pytest.mark.parametrize("at", range(4))  # 3 deletes of 2 ids, then the record: crash before each step
def test_a_sync_crashed_at_any_step_of_its_deletes_converges(crash_case, tmp_path, encoder, monkeypatch, at):
    monkeypatch.setattr(sync, "DELETE_BATCH", 2)
    store_dir = tmp_path / "store"
    shutil.copytree(crash_case / "before", store_dir)
    store = QdrantEdgeStore("c", data_dir=store_dir)
    crashing(store, at)
    with pytest.raises(Crash):
        ingest([str(crash_case / "d")], store, encoder, IngestOptions(**FAST, sync=True, max_delete="all"))
    store.close()
    done = min(2 * at, 5)
    assert len(points(store_dir)) == 30 - done  # the deletes before the crash are done, the others not
    again = run(crash_case / "d", store_dir, encoder, sync=True, max_delete="all")  # the same command again
    assert again.deleted == 5 - done and again.delete_refused is None
    assert points(store_dir) == points(crash_case / "after")
