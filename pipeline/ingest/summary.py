"""What one ingest run reports: its options, the summary every row is counted in, the rejects file, the JSON
report and the exit code the rules give it."""
from __future__ import annotations

import datetime as dt
import errno
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex.errors import InputError, MmindexError
from mmindex.pipeline.ingest.images import Rejection
from mmindex.pipeline.ingest.options import IngestOptions


@dataclass
class SkippedDuplicate:
    """A row ``--on-duplicate skip`` left out: where it came from, its id value, why (``DuplicateMatch.reason``),
    the point id it duplicates and the tier (exact or near)."""

    file: str
    row: int
    id: str | None
    stage: str  # always "duplicate"
    reason: str
    duplicate_of: str
    tier: str


@dataclass
class IngestSummary:
    """What a run did: ``read == upserted + payload_updated + unchanged + rejected + skipped_duplicates +
    not_processed``.

    ``not_processed`` is non-zero only when a run stopped early (a signal or a failure):
    those rows were read but neither written nor rejected, and the next run takes them up.
    ``payload_updated`` rows had the same image, caption and model as their stored point but
    other payload (a moved image path, a new column, a thumbnail): their payload was replaced,
    their vectors kept. ``stale`` counts the source's points that no row of this run produced;
    with ``sync`` they are ``deleted``. In a dry run the counts say what a run would do.

    ``--on-duplicate skip``: ``skipped_duplicates`` rows were exact or near duplicates of a stored point or an earlier
    row, and not written; each is in ``duplicates`` (and the rejects file, stage ``duplicate``) with the id it
    duplicates. ``link``: ``linked_duplicates`` of the upserted rows carry ``duplicate_of``. ``signals_added``: of the
    payload-updated rows, those whose stored point gained its duplicate signals (made before they were kept).
    """

    collection: str
    status: str = "ok"  # ok, interrupted or failed
    model: str | None = None
    source: str | None = None
    dry_run: bool = False
    files: int = 0
    read: int = 0
    embedded: int = 0
    upserted: int = 0
    payload_updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    not_processed: int = 0
    skipped_duplicates: int = 0
    linked_duplicates: int = 0
    signals_added: int = 0
    duplicate_ids: int = 0
    stale: int | None = None  # None: not counted (the run did not read its whole source)
    deleted: int = 0
    # Why a sync deleted nothing although points were stale (more than --max-delete): the run fails with it.
    delete_refused: str | None = None
    image_only: int = 0  # rows without a caption, stored with an image vector only
    truncated_captions: int = 0
    cleaned_captions: int = 0
    oom_retries: int = 0
    seconds: float = 0.0
    error: str | None = None
    rejects_file: str | None = None  # where this run's rejected rows were written, if anywhere
    skipped_files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: list[SkippedDuplicate] = field(default_factory=list)  # the skipped_duplicates rows
    taken_over: int = 0  # rows whose point was recorded under another source (they share ids)
    # Point ids of rows rejected this run whose id is known: a sync keeps their stored points.
    kept_ids: list[str] = field(default_factory=list, repr=False)
    lost_files: list[str] = field(default_factory=list, repr=False)  # files not read in full

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.read if self.read else 0.0

    def adds_up(self) -> bool:
        return self.read == self.accounted + self.not_processed

    @property
    def accounted(self) -> int:
        """Rows that ended in a bucket: written, updated, unchanged, rejected or skipped as duplicates."""
        return self.upserted + self.payload_updated + self.unchanged + self.rejected + self.skipped_duplicates

    def stopped_early(self, status: str, error: str | None = None) -> None:
        """Mark a run that ended before all it read was written: what is left over was not processed."""
        self.status, self.error = status, error
        self.not_processed = max(0, self.read - self.accounted)

    def rejections_by_stage(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rejection in self.rejections:
            counts[rejection.stage] = counts.get(rejection.stage, 0) + 1
        return counts

    def to_dict(self, max_rejections: int = 1000) -> dict[str, Any]:
        data = asdict(self)
        del data["kept_ids"], data["lost_files"]
        data["rows_per_second"] = round(self.rows_per_second, 2)
        data["reject_rate"] = round(self.reject_rate, 6)
        data["rejected_by_stage"] = self.rejections_by_stage()
        data["rejections"] = [asdict(r) for r in self.rejections[:max_rejections]]
        data["duplicates"] = [asdict(d) for d in self.duplicates[:max_rejections]]
        data["adds_up"] = self.adds_up()
        return data


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def add_tally(summary: IngestSummary, tally: IngestSummary) -> None:
    summary.read += tally.read
    summary.payload_updated += tally.payload_updated
    summary.rejected += tally.rejected
    summary.image_only += tally.image_only
    summary.truncated_captions += tally.truncated_captions
    summary.cleaned_captions += tally.cleaned_captions
    summary.rejections.extend(tally.rejections)
    summary.skipped_files.extend(tally.skipped_files)
    room = max(0, 1000 - len(summary.warnings))
    summary.warnings.extend(tally.warnings[:room])


def skip_duplicate(summary: IngestSummary, file: str, row: int, key: Any, reason: str, of: str, tier: str) -> None:
    summary.skipped_duplicates += 1
    summary.duplicates.append(SkippedDuplicate(file, row, None if key is None else str(key), "duplicate", reason, of,
                                               tier))


def reject_row(summary: IngestSummary, file: str, row: int, key: Any, stage: str, reason: str) -> None:
    summary.rejected += 1
    summary.rejections.append(Rejection(file, row, None if key is None else str(key), stage, reason))


REJECTS_SCHEMA = pa.schema([
    ("file", pa.string()), ("row", pa.int64()), ("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
    ("duplicate_of", pa.string()),
])


def write_rejects(rejections: Sequence[Rejection | SkippedDuplicate], path: str) -> None:
    """Write the rejected rows (file, row, id, stage, reason) and the rows skipped as duplicates (stage
    ``duplicate``, with ``duplicate_of``: the point id they duplicate; null for other rows) to Parquet, atomically."""
    names = REJECTS_SCHEMA.names
    table = pa.Table.from_pylist([{name: asdict(r).get(name) for name in names} for r in rejections],
                                 schema=REJECTS_SCHEMA)
    _write_atomically(path, lambda partial: pq.write_table(table, partial))


def write_rejects_of(summary: IngestSummary, options: IngestOptions) -> None:
    """This run's rejects replace the previous run's file; with none, an old file is removed."""
    path = options.rejects_path
    if not path:
        return
    try:
        if summary.rejections or summary.duplicates:
            write_rejects([*summary.rejections, *summary.duplicates], path)
            summary.rejects_file = path
        elif os.path.islink(path) and os.path.isfile(path):
            write_rejects([], path)  # empty, through the link: the link is the user's, not ours to remove
        elif os.path.isfile(path):
            os.remove(path)
    except (OSError, MmindexError) as error:
        summary.warnings.append(f"cannot write the rejects file {path}: {error}")


def write_report(summary: IngestSummary, path: str, extra: dict[str, Any] | None = None) -> None:
    """The run summary as JSON (for schedulers and dashboards), written atomically."""
    data = {**summary.to_dict(), **(extra or {})}

    def dump(partial: str) -> None:
        with open(partial, "w") as handle:
            json.dump(data, handle, indent=2, default=str)

    _write_atomically(path, dump)


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write`` a sibling file, then rename it over ``path``: readers never see half a file.

    A symbolic link is followed (the file it points to is replaced, the link kept). A path that
    is not a regular file (a named pipe, /dev/stdout) is written through, since there is no file
    to replace. A folder is an ``InputError``.
    """
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder; give a file name")
    if os.path.exists(path) and not os.path.isfile(path):
        held = _check_reader(path)  # held open until the write is done, so the reader sees no early end of file
        try:
            write(path)  # a pipe or a device: write into it, never replace it with a file
        finally:
            os.close(held)
        return
    target = os.path.realpath(path) if os.path.islink(path) else path
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    partial = f"{target}.partial"
    write(partial)
    os.replace(partial, target)


def _check_reader(path: str) -> int:
    """A write descriptor of ``path`` (the caller closes it); OSError when ``path`` is a named pipe that nobody
    reads: opening it to write would wait for ever. Closing it before the real write would end the reader's
    file, so the caller keeps it open until the write is done. A reader gets ``READER_GRACE`` seconds to open the
    pipe (``mmindex ingest --report pipe & cat pipe`` starts both at once)."""
    deadline = time.monotonic() + READER_GRACE
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO or time.monotonic() >= deadline:
                raise OSError(error.errno, f"nothing reads from it ({error.strerror})") from error
            time.sleep(0.02)


READER_GRACE = 2.0  # seconds a named pipe's reader has to open it


EXIT_FAILED, EXIT_TOO_MANY_REJECTS = 1, 3


def outcome(summary: IngestSummary, failure: BaseException | None, signal_number: int | None,
            max_reject_rate: float) -> tuple[int, str | None]:
    """(exit code, problem or None) of a run, by the rules ``mmindex ingest`` documents.

    0: the run completed; 1: it failed (what was written is kept, a re-run goes on), or its sync would have deleted
    more than ``--max-delete`` and deleted nothing; 128 + N: stopped by signal N (SIGINT when the stop came
    otherwise); 3: more than ``max_reject_rate`` of the rows read were rejected (then a sync deleted nothing). A
    summary that does not add up is an internal error (1).
    """
    exit_code, problem = 0, None
    if failure is not None:
        exit_code = EXIT_FAILED
        problem = (f"{failure}\n  {summary.upserted:,} rows were written before the failure and are kept; "
                   "run the same command again to go on (stored rows are skipped, not embedded again)")
    elif summary.status == "interrupted":
        exit_code = 128 + (signal_number or signal.SIGINT)
        problem = (f"interrupted: {summary.not_processed:,} rows read but not processed; run the same command "
                   "again to go on")
    elif summary.read and summary.reject_rate > max_reject_rate:
        exit_code = EXIT_TOO_MANY_REJECTS
        problem = (f"{summary.rejected:,} of {summary.read:,} rows rejected ({summary.reject_rate:.1%}), more than "
                   f"--max-reject-rate {max_reject_rate:.1%}"
                   + (f"; see {summary.rejects_file}" if summary.rejects_file else ""))
    elif summary.delete_refused:
        exit_code, problem = EXIT_FAILED, summary.delete_refused
    if not summary.adds_up():
        exit_code, problem = EXIT_FAILED, "internal error: the run summary does not add up"
    return exit_code, problem
