"""Bad files: a truncated Parquet file, a footer that claims what the file cannot hold, a file replaced or
rewritten while the run reads it. Each is one error naming the file (or, with skip_bad_files, a file skipped
or its rows rejected), never a traceback, a hang, a large allocation or rows silently missing."""
from __future__ import annotations

import copy
import io
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import parquet_footer as footer_tree
from mmindex.errors import InputError
from mmindex.pipeline.ingest import schema as schema_module
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.rows import read_batch
from mmindex.pipeline.ingest.source import open_source

ROWS = [{"id": i, "image": b"img%d" % i, "caption": None if i == 2 else f"c{i}"} for i in range(6)]


def parquet_bytes(row_group_size: int = 3) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), buffer, row_group_size=row_group_size)
    return buffer.getvalue()


def outcome(path, skip: bool = False):
    """("rows", the rows read) or ("error", the InputError's text); with ``skip`` also the run's tally of the file:
    ("skipped", reason) or ("rejected", rows rejected)."""
    try:
        source = open_source([str(path)], skip_bad_files=skip)
        source.count_rows(skip)
        rows, lost = [], None
        for batch in source.batches(2, skip):
            if batch.batch is None:
                tally, _ = read_batch(source, batch, "m", IngestOptions(rejects_path=None))
                lost = ("skipped", tally.skipped_files[0]["reason"]) if tally.skipped_files else (
                    "rejected", tally.rejected)
                assert tally.adds_up() and batch.file == str(path)
                continue
            rows.extend(batch.batch.to_pylist())
        return lost or ("rows", rows)
    except InputError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error).split(": ", 1)[0]
        return "error", str(error)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_a_truncated_file_is_named_or_skipped(tmp_path):
    data = parquet_bytes()
    folder = tmp_path / "d"
    folder.mkdir()
    write(folder / "good.parquet", data)
    for cut in (0, 3, 4, 11, 12, len(data) // 2, len(data) - 9, len(data) - 8, len(data) - 1):
        path = write(tmp_path / f"cut{cut}.parquet", data[:cut])
        kind, text = outcome(path)
        assert kind == "error" and "not a readable Parquet file" in text, (cut, text)
        assert outcome(path, skip=True)[0] == "error"  # the only file: named even when bad files are skipped
        write(folder / "short.parquet", data[:cut])
        batches = list(open_source([str(folder)], skip_bad_files=True).batches(10, True))
        assert [b.batch.num_rows for b in batches if b.batch is not None] == [3, 3]
        (bad,) = [b for b in batches if b.batch is None]
        assert bad.file.endswith("short.parquet") and bad.lost_rows is None and "not a readable" in bad.error


def test_a_footer_that_claims_huge_sizes_is_named_without_allocating(tmp_path, monkeypatch):
    data = parquet_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    huge_length = write(tmp_path / "length.parquet", data[:-8] + (2**31).to_bytes(4, "little") + b"PAR1")
    kind, text = outcome(huge_length)
    assert kind == "error" and "its footer claims 2,147,483,648 bytes, more than the file has" in text
    tree = footer_tree.footer(data)
    rows_claimed = copy.deepcopy(tree)
    footer_tree.set_field(footer_tree.field(rows_claimed, 4, 0), 3, 2**40)  # row group 0 says 2**40 rows
    assert footer_tree.field(tree, 4, 0, 3) == 3 and footer_tree.field(rows_claimed, 4, 0, 3) == 2**40
    lie = write(tmp_path / "rows.parquet", footer_tree.with_footer(data, rows_claimed))
    kind, text = outcome(lie)
    assert kind == "error" and "its footer does not describe it" in text
    monkeypatch.setattr(schema_module, "MAX_FOOTER_BYTES", length - 1)
    kind, text = outcome(write(tmp_path / "ok.parquet", data))
    assert kind == "error" and f"its footer claims {length:,} bytes, over the {length - 1:,} mmindex reads" in text


def test_a_page_that_claims_two_gigabytes_is_a_row_error_without_taking_them(tmp_path):
    buffer = io.BytesIO()
    pq.write_table(pa.table({"image": [b"x" * 100 + bytes([i]) for i in range(50)]}), buffer, compression="snappy",
                   use_dictionary=False, write_statistics=False)
    path = write(tmp_path / "page.parquet", footer_tree.with_page_claim(buffer.getvalue(), 2**31 - 1))
    kind, text = outcome(path)
    assert kind == "error" and "row 0: cannot read Parquet data (row group 0)" in text and "2147483647" in text
    assert outcome(path, skip=True) == ("rejected", 50)


def consistent_lie(data: bytes, rows: int) -> bytes:
    """The footer of ``data`` with its row count, row group 0's and every column's value count all ``rows``:
    no count contradicts another, only the pages do."""
    tree = footer_tree.footer(data)
    others = sum(footer_tree.field(tree, 4, g, 3) for g in range(1, len(footer_tree.field(tree, 4)[2])))
    footer_tree.set_field(tree, 3, rows + others)  # the file's rows
    group = footer_tree.field(tree, 4, 0)
    footer_tree.set_field(group, 3, rows)  # row group 0's
    for chunk in footer_tree.field(group, 1)[2]:
        footer_tree.set_field(footer_tree.field(chunk, 3), 5, rows)  # each column chunk's value count
    return footer_tree.with_footer(data, tree)


def test_a_footer_whose_counts_agree_but_lie_never_hangs(tmp_path):
    path = write(tmp_path / "lie.parquet", consistent_lie(parquet_bytes(), 2**40))
    started = time.perf_counter()
    kind, text = outcome(path)
    assert kind == "error" and "row 3: row group 0 holds 3 rows, its footer says 1099511627776" in text
    assert outcome(path, skip=True)[0] == "skipped" and "too many to reject one by one" in outcome(path, True)[1]
    small = write(tmp_path / "small.parquet", consistent_lie(parquet_bytes(), 5))
    assert outcome(small, skip=True) == ("rejected", 2)  # rows 3 and 4, each rejected with the reason
    assert time.perf_counter() - started < 5


def test_a_file_replaced_or_rewritten_while_it_is_read(tmp_path):
    more = pa.Table.from_pylist(ROWS * 2)
    for how in ("replaced", "rewritten", "grown"):
        path = tmp_path / f"{how}.parquet"
        write(path, parquet_bytes())
        source = open_source([str(path)])
        batches = source.batches(2)
        first = next(batches)
        assert first.batch.num_rows == 2
        if how == "replaced":
            pq.write_table(more, tmp_path / "new.parquet", row_group_size=3)
            os.replace(tmp_path / "new.parquet", path)
        elif how == "rewritten":
            with open(path, "wb") as handle:  # the same file, other bytes (the same inode, as `>` in a shell)
                handle.write(parquet_bytes(row_group_size=2))
        else:
            pq.write_table(more, path, row_group_size=3)
        with pytest.raises(InputError, match=rf"{how}\.parquet.*the file changed after the run listed it"):
            list(batches)
    path = tmp_path / "before.parquet"
    write(path, parquet_bytes())
    source = open_source([str(path)])
    pq.write_table(more, path, row_group_size=3)  # between listing and reading: the run listed other rows
    with pytest.raises(InputError, match="the file changed after the run listed it"):
        list(source.batches(2))
    skipped = list(open_source([str(path)], skip_bad_files=True).batches(2, True))
    assert sum(b.batch.num_rows for b in skipped) == 12


# -- the kind: every number a footer claims, against the rows the file holds --------------------------------------

def same_rows(found, renamed: bool) -> bool:
    """Whether ``found`` are the rows of ``ROWS``; when a name in the footer changed (``renamed``), in the columns
    whose names are the same."""
    if not renamed:
        return found == ROWS
    kept = set(found[0]) & set(ROWS[0]) if found else set()
    return len(found) == len(ROWS) and all(
        {k: v for k, v in row.items() if k in kept} == {k: v for k, v in want.items() if k in kept}
        for row, want in zip(found, ROWS))


def claims(tree):
    """Every integer of the footer set to -1, 2**31-1, 2**62 or ten times itself; every string or binary (names,
    statistics) emptied, cut to a byte, made nine 0xff bytes (not UTF-8) or three times itself."""
    for path, value in footer_tree.integer_fields(tree):
        for claim in {-1, 2**31 - 1, 2**62, value * 10 + 7}:
            yield path, value, claim
    for path, value in footer_tree.binary_fields(tree):
        for claim in {b"", value[:1], b"\xff" * 9, value * 3}:
            yield path, value, claim


@pytest.mark.parametrize("row_group_size", [3, 6])
def test_any_field_of_the_footer_changed_is_the_same_rows_or_one_error_naming_the_file(tmp_path, row_group_size):
    """Each number and string a footer holds (row counts, offsets, sizes, value counts, types, repetition,
    statistics, names…) changed: the rows read are exactly the file's, or an InputError names the file; with
    skip_bad_files the file is skipped or its rows rejected. Never another exception, an abort (pyarrow aborts
    on some broken column chunk metadata when it is looked at), or more than a moment."""
    data = parquet_bytes(row_group_size)
    tree = footer_tree.footer(data)
    started = time.perf_counter()
    outcomes = {"rows": 0, "error": 0}
    for number, (path, value, claim) in enumerate(claims(tree)):
        changed = copy.deepcopy(tree)
        footer_tree.set_at(changed, path, claim)
        file = write(tmp_path / f"f{number}.parquet", footer_tree.with_footer(data, changed))
        kind, found = outcome(file)
        outcomes[kind] += 1
        if kind == "rows":  # the file's rows; a renamed column (a name changed) under its new name
            assert same_rows(found, isinstance(claim, bytes)), (path, value, claim)
        else:  # skipped, or its rows rejected, or the same error when no file of the run can be read
            skipped = outcome(file, skip=True)
            assert skipped[0] in ("error", "skipped", "rejected") or same_rows(skipped[1], isinstance(claim, bytes))
    assert outcomes["rows"] and outcomes["error"]
    assert time.perf_counter() - started < 30
