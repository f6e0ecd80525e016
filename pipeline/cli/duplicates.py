"""``mmindex duplicates``: the duplicate groups of a collection (``find_duplicates``) as a table, JSON lines or
Parquet, with progress on stderr and a checkpoint that lets a stopped run resume."""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from mmindex.connectors.base import Store
from mmindex.errors import UsageError
from mmindex.pipeline.cli.format import SectionedCommand
from mmindex.pipeline.cli.options import (STORE_SECTION, friendly_errors, progress_interval_option,
                                          store_options)
from mmindex.pipeline.cli.progress import ResumedProgress
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.duplicates.evidence import TIERS, Thresholds
from mmindex.pipeline.duplicates.find import (DEFAULT_NEIGHBOURS, DEFAULT_PAGE, DuplicateGroup, DuplicatesReport,
                                              find_duplicates)
from mmindex.pipeline.duplicates.members import id_column, id_value
from mmindex.pipeline.duplicates.signals import HEIGHT_KEY, WIDTH_KEY
from mmindex.pipeline.models.onnx_cache import default_cache_root
from mmindex.pipeline.query.filters import compile_filter

DEFAULTS = Thresholds()
EVIDENCE = ("cosine", "hash_distance", "colour_shift", "residual", "difference", "displaced", "mirrored")  # of a member's pair with its keeper
SECTIONS = [
    ("What to find", ["collection", "tier", "where", "filter_json", "neighbours"]),
    ("Thresholds (docs/duplicates.md, \"How it decides\")",
     ["max_hash", "max_colour", "max_residual", "max_difference", "max_displaced", "similar_cosine",
      "min_cosine"]),
    ("Output", ["output_format", "output", "as_json", "quiet", "progress_interval"]),
    ("Resuming", ["checkpoint", "page_size"]),
    STORE_SECTION,
]


@click.command("duplicates", cls=SectionedCommand, sections=SECTIONS)
@store_options
@click.option("--tier", type=click.Choice(TIERS), default="near", show_default=True,
              help="The weakest tier that joins two images: exact (same pixels), near (the same photo changed: "
                   "resized, recompressed, cropped, recoloured, captioned, mirrored) or similar (another shot of the "
                   "same scene). E.g. --tier exact.")
@click.option("--where", "-w", default=None,
              help="Look only among the points this filter matches, as `query --where` filters, e.g. "
                   "--where \"year >= 2020\".")
@click.option("--filter-json", default=None, help="A raw Qdrant filter as JSON (ANDed with --where).")
@click.option("--neighbours", default=DEFAULT_NEIGHBOURS, show_default=True, type=int,
              help="Nearest images compared per point (1..1000); copies past it are still found by pixel hash "
                   "(exact) or through the copies they are near. E.g. --neighbours 32.")
@click.option("--max-hash", default=DEFAULTS.max_hash, show_default=True, type=int,
              help="Near: most perceptual-hash bits (of 64) that may differ, 0..64. E.g. --max-hash 20.")
@click.option("--max-colour", default=DEFAULTS.max_colour, show_default=True, type=float,
              help="Near: largest shift of mean colour (Cb or Cr, 0..255 levels); keeps a pattern in other colours "
                   "out of near. E.g. --max-colour 15.")
@click.option("--max-residual", default=DEFAULTS.max_residual, show_default=True, type=float,
              help="Near: largest share of cells (0..1) still different after aligning the two. E.g. --max-residual 0.1.")
@click.option("--max-difference", default=DEFAULTS.max_difference, show_default=True, type=float,
              help="Near: largest mean luminance difference after aligning (0..255 levels); keeps two faint, "
                   "smooth images of other contrast out of near. E.g. --max-difference 8.")
@click.option("--max-displaced", default=DEFAULTS.max_displaced, show_default=True, type=float,
              help="Near: largest residual × moved-content score (0..0.5); keeps a moved object out of near.")
@click.option("--similar-cosine", default=DEFAULTS.similar_cosine, show_default=True, type=float,
              help="Similar: least image-vector cosine (-1..1); a property of the model, measure it for yours.")
@click.option("--min-cosine", default=DEFAULTS.min_cosine, show_default=True, type=float,
              help="Neighbours under this cosine are never compared (-1..1, at most --similar-cosine).")
@click.option("--format", "output_format", type=click.Choice(["table", "jsonl", "parquet"]), default="table",
              show_default=True,
              help="table: a block per group; jsonl: a line per group, then a summary line; parquet: a row per "
                   "image (needs --output). E.g. --format jsonl.")
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False),
              help="Write the groups to this file instead of stdout (the summary goes to stderr). "
                   "E.g. -o dups.parquet.")
@click.option("--json", "as_json", is_flag=True,
              help="Print only the summary, as one JSON object (the groups go to --output if given).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines.")
@progress_interval_option
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="File that lets a stopped run resume (default: under --data-dir/.duplicates, or the user's "
                   "cache folder for a server). Removed when the run completes.")
@click.option("--page-size", default=DEFAULT_PAGE, show_default=True, type=click.IntRange(1, 10_000),
              help="Points read per request (and per checkpoint step).")
@friendly_errors
def duplicates_command(store, tier, where, filter_json, neighbours, max_hash, max_colour, max_residual,
                       max_difference, max_displaced, similar_cosine, min_cosine, output_format, output, as_json,
                       quiet, progress_interval, checkpoint, page_size):
    """Find groups of duplicate images in a collection, with a suggested keeper for each.

    Three tiers, kept apart: exact (the same pixels, under any encoding or metadata), near
    (the same photo resized, recompressed, cropped, recoloured, captioned or mirrored) and
    similar (another shot of the same scene). --tier names the weakest tier that joins two
    images: near (the default) groups exact and near duplicates. The keeper is the image with
    the most pixels, then the first in source order.

    Each point's nearest images are asked of the engine page by page, so memory stays bounded
    and a large collection shows progress. A run stopped by Ctrl-C or a kill resumes where it
    stopped when the same command runs again ("resuming after N points").

    The images' duplicate signals are kept by `mmindex ingest`; a collection made before them
    gets them when `mmindex ingest` runs again on the same source (no image is embedded again).

    \b
    Examples:
      mmindex duplicates -c photos
      mmindex duplicates -c photos --tier exact --where "year >= 2020"
      mmindex duplicates -c photos --format jsonl -o groups.jsonl
      mmindex duplicates -c photos --format parquet -o groups.parquet --max-hash 20
      mmindex duplicates -c photos --tier similar --similar-cosine 0.9 --json
    """
    if output_format == "parquet" and not output:
        raise UsageError("--format parquet needs --output FILE (Parquet is not written to a terminal)")
    thresholds = Thresholds(max_hash=max_hash, max_colour=max_colour, max_residual=max_residual,
                            max_difference=max_difference, max_displaced=max_displaced,
                            similar_cosine=similar_cosine, min_cosine=min_cosine)
    settings, opened = store, store.open()
    progress = ResumedProgress("duplicates", "points", quiet=quiet, interval=progress_interval)
    try:
        spec = require_collection(opened, settings.place)
        query_filter = compile_filter(where, filter_json, field_types=spec.payload_types, origin="--filter-json")
        path = Path(checkpoint) if checkpoint else checkpoint_path(settings, tier, query_filter, thresholds,
                                                                   neighbours)
        report = _run(opened, tier, query_filter, thresholds, neighbours, page_size, path, progress, quiet,
                      settings.place)
        shown = member_details(opened, report.groups)
    finally:
        progress.close()
        opened.close()
    write_report(report, shown, output_format, output, as_json)


def _run(store: Store, tier: str, query_filter: dict[str, Any] | None, thresholds: Thresholds, neighbours: int,
         page: int, path: Path, progress: ResumedProgress, quiet: bool, place: str) -> DuplicatesReport:
    """``find_duplicates`` with progress, the resume note, and Ctrl-C turned into a note and exit code 130."""
    first = True

    def on_progress(done: int, total: int) -> None:
        nonlocal first
        if first and done and not quiet:
            click.echo(f"resuming after {done:,} points (checkpoint {path})", err=True)
        first = False
        progress(done, total)

    try:
        return find_duplicates(store, tier, query_filter, thresholds, neighbours, page, path, on_progress,
                               place=place)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"stopped; the same command resumes from checkpoint {path}", err=True)
        sys.exit(130)


def checkpoint_path(settings: StoreSettings, tier: str, query_filter: dict[str, Any] | None,
                    thresholds: Thresholds, neighbours: int) -> Path:
    """Where a run with these options keeps its checkpoint: ``<data_dir>/.duplicates/<collection>-<key>.jsonl`` for
    the embedded store, ``<cache>/duplicates/…`` (``$MMINDEX_CACHE``, else ``~/.cache/mmindex``) for a server.
    ``key``: 16 hex digits of the SHA-256 of the store's place and the options, so runs with other options do not
    share a file (``find_duplicates`` also checks the file's header)."""
    options = {"place": settings.place, "collection": settings.collection, "tier": tier, "filter": query_filter,
               "thresholds": thresholds.to_dict(), "neighbours": neighbours}
    key = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = default_cache_root() / "duplicates" if settings.url else Path(settings.data_dir) / ".duplicates"
    return folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', settings.collection)}-{key}.jsonl"


def member_details(store: Store, groups: list[DuplicateGroup], page: int = 256) -> dict[str, dict[str, Any]]:
    """Point id → what people know a grouped image by: ``id`` (the id column's value, as text, when the collection
    makes point ids from a column; else None), ``width`` and ``height`` (px, when its signals are stored)."""
    column = id_column(store)
    ids = [member for group in groups for member in group.members]
    details: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), page):
        for point in store.retrieve(ids[start:start + page]):
            details[point.id] = {"id": id_value(point.payload, column),
                                 "width": point.payload.get(WIDTH_KEY), "height": point.payload.get(HEIGHT_KEY)}
    return details


def member_rows(report: DuplicatesReport, details: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per grouped image: group, tier, point_id, id, is_keeper, width, height, and the evidence of its
    pair with the keeper (``pair_tier`` and ``EVIDENCE``; None where the two are joined only through others)."""
    rows = []
    for group in report.groups:
        with_keeper = {(p.right if p.left == group.keeper else p.left): p.evidence for p in group.pairs
                       if group.keeper in (p.left, p.right)}
        for member in group.members:
            evidence = with_keeper.get(member)
            shown = details.get(member, {})
            row = {"group": group.group, "tier": group.tier, "point_id": member, "id": shown.get("id"),
                   "is_keeper": member == group.keeper, "width": shown.get("width"), "height": shown.get("height"),
                   "pair_tier": evidence.tier if evidence else None}
            row.update({name: getattr(evidence, name) if evidence else None for name in EVIDENCE})
            rows.append(row)
    return rows


def write_report(report: DuplicatesReport, details: dict[str, dict[str, Any]], output_format: str,
                 output: str | None, as_json: bool) -> None:
    """The groups in ``output_format`` to ``output`` (else stdout, unless ``as_json``), then the summary: as JSON
    on stdout with ``as_json``, else as a line (on stderr when stdout does not hold the table)."""
    summary = report.summary()
    if output_format == "parquet":
        write_parquet(member_rows(report, details), output)
    elif output or not as_json:
        with (open(output, "w", encoding="utf-8") if output else _Unclosed(sys.stdout)) as stream:
            if output_format == "jsonl":
                write_jsonl(report, details, stream)
            else:
                write_table(report, details, stream)
    if as_json:
        click.echo(json.dumps(summary))
    elif output or output_format != "table":
        click.echo(summary_line(report, output), err=True)


class _Unclosed:
    """stdout as a context manager that is not closed at the end."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __enter__(self) -> TextIO:
        return self.stream

    def __exit__(self, *exc_info: object) -> None:
        self.stream.flush()


def write_jsonl(report: DuplicatesReport, details: dict[str, dict[str, Any]], stream: TextIO) -> None:
    """One object per group (``DuplicateGroup.to_dict()``, plus ``ids``: the members' id-column values in the same
    order, or None), then ``{"summary": …}``."""
    for group in report.groups:
        line = group.to_dict()
        line["ids"] = [details.get(member, {}).get("id") for member in group.members]
        stream.write(json.dumps(line, ensure_ascii=False) + "\n")
    stream.write(json.dumps({"summary": report.summary()}) + "\n")


def write_table(report: DuplicatesReport, details: dict[str, dict[str, Any]], stream: TextIO) -> None:
    """A block per group: its number, tier and size, then each image (its id-column value, else its point id) — the
    keeper first, marked ``*`` — with its size in px and the evidence of its pair with the keeper; the summary line
    last."""
    rows = member_rows(report, details)
    names = {row["point_id"]: row["id"] or row["point_id"] for row in rows}
    # Within a group: the keeper, then the others by the name shown (the library orders them by point id).
    rows.sort(key=lambda r: (r["group"], not r["is_keeper"], names[r["point_id"]]))
    column = max((len(name) for name in names.values()), default=0)
    for row in rows:
        if row["is_keeper"]:
            if row["group"] > 1:
                stream.write("\n")
            size = len(report.groups[row["group"] - 1].members)
            stream.write(f"group {row['group']}: {row['tier']}, {size} images\n")
        size = f"{row['width']}×{row['height']}" if row["width"] else "?"
        stream.write(f"  {'*' if row['is_keeper'] else ' '} {names[row['point_id']]:<{column}}  {size:>9}  "
                     f"{_evidence_text(row)}\n".rstrip(" \n") + "\n")
    stream.write(("\n" if rows else "") + summary_line(report) + "\n")


def _evidence_text(row: dict[str, Any]) -> str:
    if row["is_keeper"]:
        return "keeper"
    if row["pair_tier"] is None:
        return "(joined to the keeper through other images)"
    parts = [row["pair_tier"]]
    if row["hash_distance"] is not None and row["pair_tier"] != "exact":
        parts.append(f"hash {row['hash_distance']}")
    if row["residual"] is not None and row["pair_tier"] != "exact":
        parts.append(f"residual {row['residual']:.3f}")
    if row["cosine"] is not None:
        parts.append(f"cosine {row['cosine']:.3f}")
    if row["mirrored"]:
        parts.append("mirrored")
    return "  ".join(parts)


def summary_line(report: DuplicatesReport, output: str | None = None) -> str:
    """``3 groups (exact 0, near 3, similar 0) hold 30 of 66 points in 'photos'; …`` in one line."""
    summary = report.summary()
    tiers = ", ".join(f"{tier} {count}" for tier, count in summary["groups_by_tier"].items())
    line = (f"{summary['groups']:,} group{'s' if summary['groups'] != 1 else ''} ({tiers}) hold "
            f"{summary['points_in_groups']:,} of {summary['points']:,} points in {report.collection!r} "
            f"(tier {report.tier} or stronger); {summary['pairs_compared']:,} pairs compared in "
            f"{summary['seconds']:.1f}s")
    if summary["resumed_from"]:
        line += f", resumed after {summary['resumed_from']:,} points"
    if summary["without_signals"]:
        line += (f"; {summary['without_signals']:,} points have no duplicate signals (run `mmindex ingest` on their "
                 "source again to add them)")
    return line + (f"; written to {output}" if output else "")


def write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    """``member_rows`` as a Parquet file, with nullable columns for ids and evidence."""
    import pyarrow as pa  # pyarrow: ~0.1 s to import, needed only for this format
    import pyarrow.parquet as pq  # the same

    schema = pa.schema([("group", pa.int32()), ("tier", pa.string()), ("point_id", pa.string()),
                        ("id", pa.string()), ("is_keeper", pa.bool_()), ("width", pa.int32()),
                        ("height", pa.int32()), ("pair_tier", pa.string()), ("cosine", pa.float64()),
                        ("hash_distance", pa.int32()), ("colour_shift", pa.float64()), ("residual", pa.float64()), ("difference", pa.float64()),
                        ("displaced", pa.float64()),
                        ("mirrored", pa.bool_())])
    table = pa.Table.from_pylist(rows, schema=schema)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
