"""Rows of sample Parquet folders, and the sample the delete tests share."""
from __future__ import annotations

import pyarrow.parquet as pq

from mmindex.pipeline.ingest.sample import write_sample


def all_rows(folder):
    return [row for path in sorted(folder.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def rows(folder):
    """The rows of ``folder``'s first file."""
    return pq.read_table(folder / "part-00000.parquet").to_pylist()


def write_delete_sample(folder):
    """The delete tests' sample: 20 rows, one file."""
    write_sample(folder, rows=20, seed=21, width=32, height=32)
    return folder
