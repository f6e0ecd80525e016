"""`mmindex duplicates`: the labelled duplicate set ingested with the tiny model, its groups read back from each
output format and checked against the labels, refusals (thresholds, no signals, no collection), and a run stopped
mid-way that the CLI resumes. The formats themselves are checked over random reports against a plain-Python oracle."""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers.duplicate_data import make_duplicate_set, write_parquet
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.cli import main
from mmindex.pipeline.cli.duplicates import checkpoint_path, member_rows, write_jsonl, write_parquet as write_rows
from mmindex.pipeline.cli.duplicates import write_table
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.duplicates.evidence import TIERS, PairEvidence, Thresholds
from mmindex.pipeline.duplicates.find import DuplicateGroup, DuplicatePair, DuplicatesReport, find_duplicates
from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS, signals_of
from mmindex.pipeline.ingest.images import decode_image


def _ingest(folder: Path, data, collection: str, model: str, signals: bool) -> None:
    """Ingest ``data`` into ``collection`` under ``folder``/store, then give every point the signals computed here
    (independent of what ingest keeps) or, with ``signals=False``, take them all away."""
    parquet = write_parquet(data, folder / f"{collection}.parquet")
    result = CliRunner().invoke(main, ["ingest", str(parquet), "-c", collection, "--model", model, "--data-dir",
                                       str(folder / "store"), "--quiet", "--no-rejects"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = QdrantEdgeStore(collection, data_dir=folder / "store")
    points, _ = store.scroll(limit=1000)
    payloads = []
    for point in points:
        payload = {k: v for k, v in point.payload.items() if k not in SIGNAL_KEYS}
        if signals:
            payload.update(signals_of(decode_image(data.images[point.payload["id"]])).to_payload())
        payloads.append((point.id, payload))
    store.overwrite_payloads(payloads)
    store.close()


@pytest.fixture(scope="module")
def dups(tmp_path_factory, tiny_model):
    """(store folder, labelled set): 6 originals × (1 + 3 exact + 6 near) + 6 similar shots = 66 points in 'dups',
    and 'bare': the first 8 without any duplicate signals (a collection made before them)."""
    folder = tmp_path_factory.mktemp("duplicates")
    data = make_duplicate_set(6, 1)
    _ingest(folder, data, "dups", tiny_model, signals=True)
    bare = make_duplicate_set(1, 2)
    _ingest(folder, bare, "bare", tiny_model, signals=False)
    return folder / "store", data


def _labelled_groups(data, tier: str) -> set[frozenset[str]]:
    """The true groups: ids made from one original (near), or those with its exact pixels (exact)."""
    groups: dict[str, set[str]] = {}
    for image_id, original in data.group.items():
        if tier == "near" or image_id in data.exact_ids:
            groups.setdefault(original, set()).add(image_id)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def _table_groups(text: str) -> list[tuple[str, list[str]]]:
    """(tier, names with the keeper first) per block of the table."""
    blocks = []
    for line in text.splitlines():
        if line.startswith("group "):
            blocks.append((line.split(": ")[1].split(",")[0], []))
        elif line.startswith("  ") and blocks:
            words = line.split()
            blocks[-1][1].append(words[1] if words[0] == "*" else words[0])
    return blocks


def _read(run, store, tier: str, output_format: str, out: Path) -> tuple[list[tuple[str, str, set[str]]], str]:
    """(tier, keeper, ids) per group as ``output_format`` gives them back, and the line that sums them up."""
    extra = ["-o", out] if output_format == "parquet" else []
    result = run("duplicates", "-c", "dups", "--data-dir", store, "--tier", tier, "--format", output_format, *extra,
                 "--quiet")
    assert result.exit_code == 0, result.output
    if output_format == "table":
        return [(t, names[0], set(names)) for t, names in _table_groups(result.stdout)], result.stdout.splitlines()[-1]
    if output_format == "jsonl":
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        summary = lines[-1]["summary"]
        assert summary["points"] == 66 and summary["without_signals"] == 0 and summary["groups"] == len(lines) - 1
        return [(g["tier"], g["ids"][0], set(g["ids"])) for g in lines[:-1]], result.stderr
    assert f"written to {out}" in result.stderr
    groups: dict[int, tuple[str, str, set[str]]] = {}
    for row in pq.read_table(out).to_pylist():
        tier_, keeper, ids = groups.setdefault(row["group"], (row["tier"], "", set()))
        ids.add(row["id"])
        if row["is_keeper"]:
            groups[row["group"]] = (tier_, row["id"], ids)
    return list(groups.values()), result.stderr


@pytest.mark.parametrize("output_format", ["table", "jsonl", "parquet"])
@pytest.mark.parametrize("tier", ["near", "exact"])
def test_every_format_gives_the_labelled_groups(run, dups, tier, output_format, tmp_path):
    store, data = dups
    groups, summary = _read(run, store, tier, output_format, tmp_path / "groups.parquet")
    assert {frozenset(ids) for _, _, ids in groups} == _labelled_groups(data, tier)
    assert {t for t, _, _ in groups} == {tier}
    # the keeper: the most pixels, then the first in source order — the original (its label) in this set
    assert sorted(keeper for _, keeper, _ in groups) == sorted({data.group[i] for g in groups for i in g[2]})
    if output_format != "jsonl":
        assert summary.startswith(f"{len(groups)} groups (exact {len(groups) if tier == 'exact' else 0}, ")


def test_where_limits_the_points_and_json_prints_the_summary(run, dups):
    store, data = dups
    result = run("duplicates", "-c", "dups", "--data-dir", store, "--where", "group = 'dup-1-0002'", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    members = [i for i, g in data.group.items() if g == "dup-1-0002"]
    assert summary["points"] == len(members) and summary["groups"] == 1
    assert summary["points_in_groups"] == len(members)


@pytest.mark.parametrize("option,value,message", [
    ("--max-hash", "65", "--max-hash must be 0..64 bits, not 65"),
    ("--max-residual", "1.5", "--max-residual must be 0..1"),
    ("--max-displaced", "-0.1", "--max-displaced must be 0..0.5"),
    ("--similar-cosine", "1.2", "--similar-cosine must be -1..1"),
    ("--min-cosine", "0.95", "--min-cosine (0.95) must not exceed --similar-cosine (0.93)"),
    ("--neighbours", "0", "--neighbours must be 1..1000, not 0"),
    ("--max-residual", "nan", "--max-residual must be 0..1"),
])
def test_thresholds_out_of_range_are_refused(run, dups, option, value, message):
    result = run("duplicates", "-c", "dups", "--data-dir", dups[0], option, value)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_parquet_needs_output_and_a_missing_collection_is_named(run, dups):
    parquet = run("duplicates", "-c", "dups", "--data-dir", dups[0], "--format", "parquet")
    assert parquet.exit_code == 2 and "--format parquet needs --output FILE" in parquet.output
    missing = run("duplicates", "-c", "nothing", "--data-dir", dups[0])
    assert missing.exit_code == 1
    assert f"collection 'nothing' does not exist under {dups[0]}; run `mmindex ingest` first" in missing.output


def test_a_collection_without_signals_says_how_to_compute_them(run, dups):
    result = run("duplicates", "-c", "bare", "--data-dir", dups[0], "--quiet")
    assert result.exit_code == 2, result.output
    assert "no point of collection 'bare' has duplicate signals" in result.output
    assert "`mmindex ingest` on the same source into -c bare again" in result.output


def test_a_stopped_run_resumes_where_it_stopped(run, dups):
    store_dir, data = dups
    settings_ = StoreSettings("dups", data_dir=str(store_dir))
    path = checkpoint_path(settings_, "exact", None, Thresholds(), 12)  # exact: the same steps, fewer comparisons

    def stop_after_two_pages(done, total):
        if done >= 32:
            raise KeyboardInterrupt  # as a kill between pages would

    store = settings_.open()
    with pytest.raises(KeyboardInterrupt):
        find_duplicates(store, "exact", neighbours=12, page=16, checkpoint=path, on_progress=stop_after_two_pages)
    fresh = find_duplicates(store, "exact", neighbours=12, page=16)
    store.close()
    with path.open("a") as handle:
        handle.write('{"next": "torn by a kill')  # a page line cut off mid-write: read again
    result = run("duplicates", "-c", "dups", "--data-dir", store_dir, "--tier", "exact", "--neighbours", 12,
                 "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert f"resuming after 32 points (checkpoint {path})" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["summary"]["resumed_from"] == 32
    assert [g["members"] for g in lines[:-1]] == [g.members for g in fresh.groups] and len(fresh.groups) == 6
    assert not path.exists()  # removed once the run completed


def test_ctrl_c_keeps_the_checkpoint_and_exits_130(run, dups, monkeypatch):
    import mmindex.pipeline.cli.duplicates as command

    real = command.find_duplicates

    def interrupted(*args, **kwargs):
        def on_progress(done, total):
            args[7](done, total)  # the command's own progress
            if done >= 16:
                raise KeyboardInterrupt
        return real(*args[:7], on_progress, **kwargs)

    monkeypatch.setattr(command, "find_duplicates", interrupted)
    args = ("duplicates", "-c", "dups", "--data-dir", dups[0], "--tier", "exact", "--neighbours", 10, "--page-size", 16)
    stopped = run(*args)
    assert stopped.exit_code == 130 and "stopped; the same command resumes from checkpoint" in stopped.stderr
    monkeypatch.setattr(command, "find_duplicates", real)
    again = run(*args, "--json")
    assert again.exit_code == 0 and "resuming after 16 points" in again.stderr
    assert json.loads(again.stdout)["resumed_from"] == 16 and json.loads(again.stdout)["groups"] == 6


def test_checkpoints_of_other_options_and_stores_do_not_share_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "cache"))
    edge = StoreSettings("photos", data_dir=str(tmp_path / "data"))
    server = StoreSettings("photos", url="http://localhost:6333")
    path = checkpoint_path(edge, "near", None, Thresholds(), 16)
    assert path.parent == tmp_path / "data" / ".duplicates" and path.name.startswith("photos-")
    assert path == checkpoint_path(edge, "near", None, Thresholds(), 16)
    others = {checkpoint_path(edge, "exact", None, Thresholds(), 16),
              checkpoint_path(edge, "near", {"must": []}, Thresholds(), 16),
              checkpoint_path(edge, "near", None, Thresholds(max_hash=20), 16),
              checkpoint_path(edge, "near", None, Thresholds(), 8),
              checkpoint_path(server, "near", None, Thresholds(), 16)}
    assert path not in others and len(others) == 5
    assert checkpoint_path(server, "near", None, Thresholds(), 16).parent == tmp_path / "cache" / "duplicates"


# -- the formats, over random reports, against a plain-Python oracle ----------------------------------------------

@st.composite
def reports(draw):
    """A report of 0–4 groups of 2–6 members joined by a random spanning tree of pairs, some members with an
    id-column value and a size, some without."""
    groups, details, number = [], {}, 0
    for index in range(draw(st.integers(0, 4))):
        size = draw(st.integers(2, 6))
        members = [f"p{index}-{m}" for m in range(size)]
        pairs = []
        for m in range(1, size):
            other = members[draw(st.integers(0, m - 1))]
            tier = draw(st.sampled_from(TIERS))
            cosine = draw(st.none() | st.floats(-1, 1))
            left, right = sorted((other, members[m]))
            pairs.append(DuplicatePair(left, right, PairEvidence(
                tier, cosine, hash_distance=draw(st.integers(0, 64)), colour_shift=draw(st.floats(0, 255)),
                residual=draw(st.floats(0, 1)), displaced=0.0, mirrored=draw(st.booleans()))))
        weakest = max(TIERS.index(p.evidence.tier) for p in pairs)
        number += 1
        groups.append(DuplicateGroup(number, TIERS[weakest], members[0], members, pairs))
        for member in members:
            if draw(st.booleans()):
                details[member] = {"id": f"img-{member}", "width": draw(st.integers(1, 5000)),
                                   "height": draw(st.integers(1, 5000))}
    report = DuplicatesReport("c", "similar", Thresholds(), points=40, groups=groups)
    return report, details


def _with_keeper(group: DuplicateGroup, member: str) -> PairEvidence | None:
    """The oracle: the evidence of the pair that holds both the keeper and ``member``, found by a plain scan."""
    for pair in group.pairs:
        if {pair.left, pair.right} == {group.keeper, member}:
            return pair.evidence
    return None


@settings(max_examples=40, deadline=None)
@given(reports())
def test_every_format_carries_each_group_and_its_evidence(drawn):
    report, details = drawn
    lines = io.StringIO()
    write_jsonl(report, details, lines)
    parsed = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert parsed[-1] == {"summary": json.loads(json.dumps(report.summary()))}
    for line, group in zip(parsed[:-1], report.groups, strict=True):
        assert {k: v for k, v in line.items() if k != "ids"} == json.loads(json.dumps(group.to_dict()))
        assert line["ids"] == [details.get(m, {}).get("id") for m in group.members]

    with tempfile.TemporaryDirectory() as folder:
        write_rows(member_rows(report, details), f"{folder}/g.parquet")
        rows = pq.read_table(f"{folder}/g.parquet").to_pylist()
    assert [(r["group"], r["point_id"]) for r in rows] == [(g.group, m) for g in report.groups for m in g.members]
    by_id = {g.group: g for g in report.groups}
    for row in rows:
        group, evidence = by_id[row["group"]], _with_keeper(by_id[row["group"]], row["point_id"])
        assert row["is_keeper"] == (row["point_id"] == group.keeper) and row["tier"] == group.tier
        assert row["id"] == details.get(row["point_id"], {}).get("id")
        assert row["pair_tier"] == (evidence.tier if evidence else None)
        assert row["cosine"] == (evidence.cosine if evidence else None)
        assert row["hash_distance"] == (evidence.hash_distance if evidence else None)

    table = io.StringIO()
    write_table(report, details, table)
    blocks = _table_groups(table.getvalue())
    assert [tier for tier, _ in blocks] == [g.tier for g in report.groups]
    for (_, names), group in zip(blocks, report.groups, strict=True):
        shown = [details.get(m, {}).get("id") or m for m in group.members]
        assert names[0] == shown[0] and sorted(names) == sorted(shown)
