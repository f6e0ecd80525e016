"""Ids are deterministic; Arrow values become faithful JSON payload."""
from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa

from mmindex.pipeline.ingest.records import (
    content_hash,
    index_kind,
    payload_columns,
    point_id_from_content,
    point_id_from_key,
    rfc3339,
)


def test_ids_are_deterministic_uuid5():
    assert point_id_from_key("abc") == point_id_from_key("abc")
    assert point_id_from_key("abc") != point_id_from_key("abd")
    assert point_id_from_key(42).count("-") == 4
    a = point_id_from_content(b"img", "cap")
    assert a == point_id_from_content(b"img", "cap")
    assert a != point_id_from_content(b"img", "other")
    assert a != point_id_from_content(b"img2", "cap")


def test_content_hash_changes_with_each_part():
    base = content_hash(b"img", "cap", "model-a")
    assert base == content_hash(b"img", "cap", "model-a")
    assert len({base, content_hash(b"img", "cap", "model-b"), content_hash(b"img", "cap2", "model-a"),
                content_hash(b"img2", "cap", "model-a")}) == 4
    # Length-prefixed parts: moving bytes between fields is a different hash.
    assert content_hash(b"ab", "c", "m") != content_hash(b"a", "bc", "m")


def test_timestamps_become_rfc3339_utc():
    naive = dt.datetime(2021, 3, 4, 5, 6, 7)
    assert rfc3339(naive) == "2021-03-04T05:06:07Z"
    paris = dt.datetime(2021, 3, 4, 6, 6, 7, 250000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert rfc3339(paris) == "2021-03-04T05:06:07.250000Z"
    assert rfc3339(dt.date(2020, 1, 2)) == "2020-01-02T00:00:00Z"


def test_arrow_batch_to_payload_faithfully():
    batch = pa.RecordBatch.from_pydict(
        {
            "ts": pa.array([dt.datetime(2022, 1, 1, 12), None], pa.timestamp("ms", tz="UTC")),
            "day": pa.array([dt.date(2020, 5, 6), dt.date(2021, 1, 1)], pa.date32()),
            "f": pa.array([float("nan"), 1.5]),
            "inf": pa.array([float("inf"), -2.0]),
            "big": pa.array([2**64 - 1, 7], pa.uint64()),
            "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
            "nested": pa.array([{"x": 1, "y": "z"}, None], pa.struct([("x", pa.int32()), ("y", pa.string())])),
            "m": pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int64())),
            "dec": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)),
            "flag": pa.array([True, None]),
        }
    )
    rows, warnings, errors = payload_columns(batch, batch.schema.names)
    assert errors == {}
    first, second = rows
    assert first["ts"] == "2022-01-01T12:00:00Z" and second["ts"] is None
    assert first["day"] == "2020-05-06T00:00:00Z"
    assert first["f"] is None and second["f"] == 1.5
    assert first["inf"] is None
    assert first["big"] == str(2**64 - 1) and second["big"] == 7
    assert any("64-bit" in w and "big" in w for w in warnings)
    assert first["tags"] == ["a", "b"] and second["tags"] == []
    assert first["nested"] == {"x": 1, "y": "z"} and second["nested"] is None
    assert first["m"] == {"k": 1}
    assert first["dec"] == 1.25
    assert first["flag"] is True and second["flag"] is None


def test_index_kind_from_arrow_types():
    assert index_kind(pa.int16()) == "integer"
    assert index_kind(pa.float32()) == "float"
    assert index_kind(pa.string()) == "keyword"
    assert index_kind(pa.dictionary(pa.int8(), pa.string())) == "keyword"
    assert index_kind(pa.list_(pa.string())) == "keyword"
    assert index_kind(pa.timestamp("us")) == "datetime"
    assert index_kind(pa.bool_()) == "bool"
    assert index_kind(pa.struct([("a", pa.int8())])) is None


def test_column_values_isolate_bad_values_to_their_rows():
    import pyarrow as pa

    from mmindex.pipeline.ingest.records import column_values

    raw = pa.array([b"fine", b"caf\xe9", None], pa.binary())
    text = pa.Array.from_buffers(pa.string(), 3, raw.buffers(), null_count=1)
    values, errors, warnings = column_values(text, "caption")
    assert values == ["fine", "caf\ufffd", None] and errors == {} and "invalid UTF-8" in warnings[0]

    paths = pa.StructArray.from_arrays([raw, text], names=["bytes", "path"])
    values, errors, _ = column_values(paths, "image")
    assert values[0] == {"bytes": b"fine", "path": "fine"} and values[2] == {"bytes": None, "path": None}
    assert values[1] is None and "not valid UTF-8" in errors[1]

    stamps = pa.array([0, 253_402_300_800_000 * 10], pa.int64()).cast(pa.timestamp("ms"))
    values, errors, _ = column_values(stamps, "taken")
    assert values[0].year == 1970 and values[1] is None and "cannot be read" in errors[1]
