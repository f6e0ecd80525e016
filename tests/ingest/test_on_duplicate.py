"""``--on-duplicate keep|skip|link`` at ingest (issue 25), on the labelled duplicates set
(``helpers/duplicate_data``): every skipped row is accounted for with the id it duplicates, of its own group;
``link`` stores them with ``duplicate_of``; stored points are found on a later run; a row is never a duplicate of its
own point; the summary adds up for any order, batch size and mode (checked against a plain-Python oracle)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.duplicate_data import make_duplicate_set, write_parquet
from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import UsageError
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS
from mmindex.pipeline.ingest.job import IngestJob
from mmindex.pipeline.duplicates.evidence import Thresholds, compare
from mmindex.pipeline.duplicates.signals import signals_from_payload
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.query.filters import compile_filter

ORIGINALS = 8


@pytest.fixture(scope="module")
def duplicates(tmp_path_factory):
    """(the labelled set, its Parquet file): 8 originals, each with its copies, near duplicates and a similar shot."""
    data = make_duplicate_set(ORIGINALS, 1)
    return data, write_parquet(data, tmp_path_factory.mktemp("duplicates") / "set.parquet")


@pytest.fixture(params=["edge", "memory"])
def store(request, tmp_path):
    made = (QdrantEdgeStore("dups", data_dir=tmp_path / "store") if request.param == "edge"
            else QdrantServerStore("dups", url=":memory:"))
    yield made
    made.close()


def stored(store) -> dict[str, dict]:
    points, _ = store.scroll(limit=10_000)
    return {point.id: point.payload for point in points}


def test_skip_leaves_out_every_duplicate_and_names_what_it_duplicates(duplicates, encoder, store, tmp_path):
    data, path = duplicates
    rejects = tmp_path / "rejects.parquet"
    summary = ingest([str(path)], store, encoder, IngestOptions(batch_size=16, on_duplicate="skip",
                                                                 rejects_path=str(rejects)))
    assert summary.adds_up() and summary.rejected == 0
    assert summary.read == len(data.images) == summary.upserted + summary.skipped_duplicates
    payloads = stored(store)
    assert len(payloads) == summary.upserted
    kept_groups = [payload["group"] for payload in payloads.values()]
    assert sorted(kept_groups) == sorted(set(data.group.values()))  # one point per original and per similar shot
    for skipped in summary.duplicates:
        assert skipped.duplicate_of in payloads  # the point it duplicates is stored
        assert payloads[skipped.duplicate_of]["group"] == data.group[skipped.id]
        assert skipped.tier in ("exact", "near") and skipped.reason.startswith(f"{skipped.tier} duplicate of ")
        if skipped.id.endswith(("byte-copy", "jpeg-comment")):  # the same JPEG data: the same decoded pixels
            assert skipped.tier == "exact", skipped
        # (a PNG of a JPEG's pixels is "near" here: for the tiny model's side, libjpeg decodes the JPEG at a reduced
        # scale and the PNG is resized, as signals.signals_of says)
    written = pq.read_table(rejects).to_pylist()
    assert sorted((r["id"], r["duplicate_of"]) for r in written if r["stage"] == "duplicate") == sorted(
        (d.id, d.duplicate_of) for d in summary.duplicates)
    assert len(written) == summary.skipped_duplicates
    report = summary.to_dict()
    assert report["adds_up"] and len(report["duplicates"]) == summary.skipped_duplicates


@pytest.mark.slow
def test_link_stores_every_row_and_marks_the_duplicates(duplicates, encoder, store):
    data, path = duplicates
    summary = ingest([str(path)], store, encoder, IngestOptions(batch_size=16, on_duplicate="link"))
    assert (summary.upserted, summary.skipped_duplicates) == (len(data.images), 0)
    payloads = stored(store)
    linked = {point_id: p for point_id, p in payloads.items() if "duplicate_of" in p}
    assert len(linked) == summary.linked_duplicates == len(data.images) - len(set(data.group.values()))
    for payload in linked.values():
        target = payloads[payload["duplicate_of"]]
        assert target["group"] == payload["group"] and payload["duplicate_tier"] in ("exact", "near")
        assert payload["duplicate_of"] != point_id_from_key(payload["id"])
    originals = sum("duplicate_of" not in payloads[p["duplicate_of"]] for p in linked.values())
    assert originals >= 0.9 * len(linked)  # an original before a copy, when both match
    again = ingest([str(path)], store, encoder, IngestOptions(batch_size=16))  # keep: unchanged rows keep links
    assert (again.unchanged, again.payload_updated) == (len(data.images), 0)
    assert stored(store) == payloads


def split_originals(path, folder) -> tuple[list[dict], list[dict]]:
    """``path``'s rows as two files in ``folder``: originals.parquet (each group's original), rest.parquet; returns
    (every row, the originals)."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    originals = [row for row in rows if row["id"] == row["group"]]
    pq.write_table(table.from_pylist(originals, schema=table.schema), folder / "originals.parquet")
    pq.write_table(table.from_pylist([r for r in rows if r["id"] != r["group"]], schema=table.schema),
                   folder / "rest.parquet")
    return rows, originals


@pytest.mark.slow
def test_a_later_run_skips_rows_that_duplicate_stored_points(duplicates, encoder, store, tmp_path):
    data, path = duplicates
    rows, originals = split_originals(path, tmp_path)
    ingest([str(tmp_path / "originals.parquet")], store, encoder)
    summary = ingest([str(tmp_path / "rest.parquet")], store, encoder,
                     IngestOptions(batch_size=16, on_duplicate="skip", source_name="rest"))
    skipped = {d.id: d.duplicate_of for d in summary.duplicates}
    near_or_exact = {r["id"] for r in rows if r["id"] != r["group"] and r["tier"] in ("exact", "near")}
    assert set(skipped) == near_or_exact
    for key, of in skipped.items():
        assert of == point_id_from_key(data.group[key])  # the stored original
    assert summary.upserted == len(rows) - len(originals) - len(near_or_exact)


def test_a_row_is_never_a_duplicate_of_its_own_point(tmp_path, duplicates, encoder, store):
    data, path = duplicates
    ingest([str(path)], store, encoder, IngestOptions(on_duplicate="skip"))
    table = pq.read_table(path).to_pylist()
    first = table[0]  # an original, kept; its caption changes, so it is embedded again
    first["caption"] = "a caption edited since"
    edited = tmp_path / "edited.parquet"
    pq.write_table(pq.read_table(path).from_pylist([first], schema=pq.read_schema(path)), edited)
    summary = ingest([str(edited)], store, encoder, IngestOptions(on_duplicate="skip", source_name=str(path)))
    assert (summary.embedded, summary.skipped_duplicates) == (1, 0)


def test_dry_run_writes_nothing_and_says_duplicates_are_not_checked(duplicates, encoder, store):
    _, path = duplicates
    summary = ingest([str(path)], store, encoder, IngestOptions(on_duplicate="skip", dry_run=True))
    assert not store.exists() or store.count() == 0
    assert any("does not look for duplicates" in warning for warning in summary.warnings)


def test_an_unknown_choice_is_refused():
    with pytest.raises(UsageError, match="--on-duplicate must be one of keep, skip, link, not 'drop'"):
        IngestOptions(on_duplicate="drop")


# -- the summary adds up, and the rows skipped are the oracle's ------------------------------------------------
@pytest.fixture(scope="module")
def reference(duplicates, encoder):
    """Each row's signals and image vector, from one keep run (for the oracle)."""
    data, path = duplicates
    store = QdrantServerStore("reference", url=":memory:")
    ingest([str(path)], store, encoder)
    points = store.retrieve([point_id_from_key(key) for key in data.images], with_vectors=True)
    store.close()
    return {p.payload["id"]: (signals_from_payload(p.payload), p.vectors["image"]) for p in points}


def oracle(order: list[str], reference: dict, mode: str = "skip") -> set[str]:
    """The rows ``skip`` leaves out (``link`` marks), in plain Python: each row against every earlier stored row at
    cosine ≥ ``min_cosine`` (no candidate limit). ``skip`` stores only the rows it keeps; ``link`` stores every
    row, so a row may be the copy of an earlier linked copy."""
    thresholds, kept, skipped = Thresholds(), [], set()
    for key in order:
        signals, vector = reference[key]
        for other in kept:
            cosine = float(sum(a * b for a, b in zip(vector, reference[other][1])))
            if signals.pixels == reference[other][0].pixels or (
                    cosine >= thresholds.min_cosine
                    and compare(signals, reference[other][0], cosine, thresholds).tier in ("exact", "near")):
                skipped.add(key)
                break
        if key not in skipped or mode == "link":
            kept.append(key)
    return skipped


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.randoms(use_true_random=False), batch_size=st.integers(1, 40), mode=st.sampled_from(["skip", "link"]))
def test_the_summary_adds_up_for_any_order_and_batch_size(duplicates, encoder, reference, tmp_path_factory, seed,
                                                        batch_size, mode):
    data, path = duplicates
    rows = pq.read_table(path).to_pylist()
    seed.shuffle(rows)
    rows = rows[:seed.randint(10, len(rows))]
    shuffled = tmp_path_factory.mktemp("order") / "rows.parquet"
    pq.write_table(pq.read_table(path).from_pylist(rows, schema=pq.read_schema(path)), shuffled)
    store = QdrantServerStore("prop", url=":memory:")
    summary = ingest([str(shuffled)], store, encoder, IngestOptions(batch_size=batch_size, on_duplicate=mode))
    payloads = stored(store)
    store.close()
    assert summary.adds_up() and summary.read == len(rows)
    assert summary.read == summary.upserted + summary.skipped_duplicates
    expected = oracle([row["id"] for row in rows], reference, mode)
    if mode == "skip":
        assert {d.id for d in summary.duplicates} == expected
        assert len(payloads) == len(rows) - len(expected)
    else:
        assert {p["id"] for p in payloads.values() if "duplicate_of" in p} == expected
        assert summary.linked_duplicates == len(expected)


@pytest.mark.slow
def test_the_cli_skips_duplicates_and_prints_them(cli, duplicates, tiny_model, tmp_path):
    data, path = duplicates
    result = cli("ingest", path, "-c", "d", "--data-dir", tmp_path / "store", "--model", tiny_model,
                 "--on-duplicate", "skip", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["adds_up"] and report["skipped_duplicates"] == len(report["duplicates"]) > 0
    assert report["read"] == report["upserted"] + report["skipped_duplicates"]
    printed = cli("ingest", path, "-c", "d2", "--data-dir", tmp_path / "store", "--model", tiny_model,
                  "--on-duplicate", "skip", "--quiet")
    assert f"duplicates skipped {report['skipped_duplicates']}" in printed.output
    assert "duplicate of " in printed.output


# -- review of issue 25: link's fields are typed, sync is refused with skip|link, unsigned points are named ----------
@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """2 originals with their copies, near duplicates and similar shots (22 rows)."""
    data = make_duplicate_set(2, 1)
    return data, write_parquet(data, tmp_path_factory.mktemp("small") / "small.parquet")


def test_link_records_its_fields_as_keywords_and_where_finds_the_originals(small_set, encoder, store):
    data, path = small_set
    ingest([str(path)], store, encoder, IngestOptions(on_duplicate="link"))
    types = store.metadata()["payload_types"]
    assert (types["duplicate_of"], types["duplicate_tier"]) == ("keyword", "keyword")
    payloads = stored(store)
    originals = {point_id for point_id, p in payloads.items() if "duplicate_of" not in p}
    assert 0 < len(originals) < len(payloads)
    for where, expected in (("duplicate_of is null", originals), ("duplicate_of is not null", set(payloads) - originals),
                            ("duplicate_tier = 'near'", {i for i, p in payloads.items()
                                                         if p.get("duplicate_tier") == "near"})):
        found, _ = store.scroll(filter=compile_filter(where, field_types=types), limit=1000)
        assert {point.id for point in found} == expected, where
    ingest([str(path)], store, encoder)  # a later keep run keeps the recorded types
    assert store.metadata()["payload_types"]["duplicate_of"] == "keyword"


@pytest.mark.slow
def test_link_records_its_fields_so_where_and_fields_know_them(cli, small_set, tiny_model, tmp_path):
    data, path = small_set
    where = ("-c", "linked", "--data-dir", tmp_path / "store")
    assert cli("ingest", path, *where, "--model", tiny_model, "--on-duplicate", "link", "--quiet").exit_code == 0
    info = json.loads(cli("info", *where, "--json").output)
    assert {key: info["payload_types"].get(key) for key in ("duplicate_of", "duplicate_tier")} == {
        "duplicate_of": "keyword", "duplicate_tier": "keyword"}
    hits = [json.loads(line) for line in cli("query", "a picture", *where, "--limit", "100", "--json",
                                             "--where", "duplicate_of is null").output.splitlines()]
    store = QdrantEdgeStore("linked", data_dir=tmp_path / "store")
    originals = {p["id"] for p in stored(store).values() if "duplicate_of" not in p}
    store.close()
    assert 0 < len(originals) < len(data.images)
    assert {hit["payload"]["id"] for hit in hits} == originals
    shown = cli("query", "a picture", *where, "--limit", "100", "--fields", "id,duplicate_of,duplicate_tier")
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("duplicate_tier=near") + shown.output.count("duplicate_tier=exact") == (
        len(data.images) - len(originals))


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("mode", ["keep", "skip", "link"])
@pytest.mark.parametrize("sync", [False, True])
def test_sync_is_refused_with_skip_and_link(sync, mode, dry_run):
    if sync and mode != "keep":  # the sync could delete the stored point a skipped row duplicates
        with pytest.raises(UsageError, match=f"--sync cannot be combined with --on-duplicate {mode}"):
            IngestOptions(sync=sync, on_duplicate=mode, dry_run=dry_run)
    else:
        assert IngestOptions(sync=sync, on_duplicate=mode, dry_run=dry_run).on_duplicate == mode


def test_the_cli_refuses_sync_with_skip_before_the_model_loads(cli, small_set, tmp_path):
    _, path = small_set
    result = cli("ingest", path, "-c", "s", "--data-dir", tmp_path / "store", "--model", tmp_path / "no-such-model",
                 "--sync", "--on-duplicate", "skip")
    assert result.exit_code == 2
    assert "--sync cannot be combined with --on-duplicate skip" in result.output
    assert "mmindex duplicates" in result.output and "no-such-model" not in result.output


def test_the_ray_engine_refuses_skip_and_link(tmp_path):
    job = IngestJob(["x.parquet"], StoreSettings(collection="c", data_dir=str(tmp_path)), engine="ray",
                    options=IngestOptions(on_duplicate="link"))
    with pytest.raises(UsageError, match="--on-duplicate link runs on the local engine only"):
        job.check()


def test_stored_points_without_signals_are_counted_in_a_warning(small_set, encoder, store):
    _, path = small_set
    ingest([str(path)], store, encoder)
    assert not any("no duplicate signals" in w for w in ingest([str(path)], store, encoder,
                                                             IngestOptions(on_duplicate="skip")).warnings)
    payloads = sorted(stored(store).items())[:3]  # three points made before signals were kept
    store.overwrite_payloads([(i, {k: v for k, v in p.items() if k not in SIGNAL_KEYS}) for i, p in payloads])
    for dry_run in (True, False):
        summary = ingest([str(path)], store, encoder, IngestOptions(on_duplicate="link", dry_run=dry_run))
        assert any(w.startswith("3 stored point(s) of collection 'dups' have no duplicate signals") and
                   "--on-duplicate link cannot see them" in w for w in summary.warnings), summary.warnings
    keep = ingest([str(path)], store, encoder)
    assert not any("no duplicate signals" in w for w in keep.warnings)  # keep looks for none


@pytest.mark.slow
def test_stored_points_without_signals_are_counted_in_a_warning_the_cli_shows(cli, small_set, tiny_model, tmp_path):
    data, path = small_set
    where = ("-c", "old", "--data-dir", tmp_path / "store")
    split_originals(path, tmp_path)
    assert cli("ingest", tmp_path / "originals.parquet", *where, "--model", tiny_model, "-q").exit_code == 0
    store = QdrantEdgeStore("old", data_dir=tmp_path / "store")
    first = sorted(stored(store).items())[0]  # one point made before signals were kept
    store.overwrite_payloads([(first[0], {k: v for k, v in first[1].items() if k not in SIGNAL_KEYS})])
    store.close()
    result = cli("ingest", tmp_path / "rest.parquet", *where, "--on-duplicate", "skip", "-q")
    assert result.exit_code == 0, result.output
    assert ("warning: 1 stored point(s) of collection 'old' have no duplicate signals" in result.output
            and "Run `mmindex ingest` again on their source" in result.output)
    again = cli("ingest", tmp_path / "originals.parquet", *where, "--on-duplicate", "skip", "-q")
    assert "1 stored points gained their duplicate signals" in again.output
    assert "have no duplicate signals" not in cli("ingest", tmp_path / "rest.parquet", *where, "--on-duplicate",
                                                  "skip", "-q").output


def test_a_dry_run_with_skip_says_in_print_and_report_that_it_does_not_look(cli, small_set, tiny_model, tmp_path):
    _, path = small_set
    result = cli("ingest", path, "-c", "dr", "--data-dir", tmp_path / "store", "--model", tiny_model,
                 "--on-duplicate", "skip", "--dry-run", "--report", tmp_path / "run.json", "-q")
    assert result.exit_code == 0, result.output
    assert "warning: --dry-run embeds nothing, so it does not look for duplicates" in result.output
    report = json.loads((tmp_path / "run.json").read_text())
    assert any("does not look for duplicates" in warning for warning in report["warnings"])
