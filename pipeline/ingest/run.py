"""The ingest job: source batches → decoded images → vectors → points → store.

Every row read ends in exactly one bucket of the summary (embedded and upserted, payload
updated, unchanged, or rejected with a stage and a reason), so the numbers always add up.

A run belongs to a source (``--source``, by default its inputs): every point it writes
records the source's name in ``_source.name``. After a complete run, the points of the
source that no row of this run produced are stale; ``sync`` deletes them, so the collection
equals its inputs.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.pipeline.models.encoder import Encoder
from mmindex.errors import CollectionMismatchError, InputError, MmindexError
from mmindex.pipeline.ingest.gpu_decode import choose_decoder
from mmindex.pipeline.ingest.images import (
    DEFAULT_MAX_PIXELS,
    THUMBNAIL_KEY,
    ImageBytes,
    RejectedImage,
    Rejection,
    decode_image,
    image_bytes,
    thumbnail,
)
from mmindex.pipeline.ingest.records import (
    clean_caption,
    column_values,
    content_hash,
    id_problem,
    index_kind,
    payload_columns,
    payload_types,
    point_id_from_content,
    point_id_from_key,
)
from mmindex.pipeline.ingest.source import CAPTION_KEY, Source, SourceBatch, open_source
from mmindex.pipeline.ingest.stages import HASH_KEY, Embedded, Job, Pipeline, PipelineStopped, embed_reference

SOURCE_KEY = "_source"
TRUNCATED_KEY = "_caption_truncated"
MISSING_CAPTION_POLICIES = ("image-only", "reject")
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DELETE_BATCH = 1000  # point ids per delete request in a sync


@dataclass
class IngestOptions:
    """Everything an ingest run needs besides its inputs, store and model."""

    image_col: str | None = None
    caption_col: str | None = None
    id_col: str | None = None
    payload_cols: Sequence[str] | None = None
    index_fields: Sequence[str] = ()
    batch_size: int = 64
    workers: int = 4
    devices: Sequence[str] = ()  # one model replica per device; empty: the encoder's own device
    pipelined: bool = True
    # auto, cpu or gpu: who decodes JPEGs (gpu_decode.choose_decoder); decode_device runs the torchvision
    # path on another device than the model's (tests and benchmarks: "cpu"), not a promise of the CLI.
    decode: str = "auto"
    decode_device: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    optimize: bool = True
    rejects_path: str | None = None
    image_root: str | None = None  # image paths must stay inside this folder
    missing_caption: str = "image-only"  # or "reject": what to do with null/empty captions
    skip_bad_files: bool = False  # report unreadable Parquet files and go on, instead of stopping
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    stop: threading.Event | None = None  # set it (e.g. on SIGTERM) to finish the batches in flight and stop
    thumbnails: int = 0  # > 0: keep a JPEG thumbnail of this many pixels in the payload (for the web page)
    source_name: str | None = None  # recorded in each point's _source.name; default: the inputs (Source.default_name)
    sync: bool = False  # after a complete run, delete this source's points that no input row produced
    dry_run: bool = False  # read and compare only: count what would be embedded, updated and deleted; write nothing
    max_reject_rate: float = 0.05  # a sync whose run rejected more than this fraction of its rows deletes nothing


@dataclass
class IngestSummary:
    """What a run did: ``read == upserted + payload_updated + unchanged + rejected + not_processed``.

    ``not_processed`` is non-zero only when a run stopped early (a signal or a failure):
    those rows were read but neither written nor rejected, and the next run takes them up.
    ``payload_updated`` rows had the same image, caption and model as their stored point but
    other payload (a moved image path, a new column, a thumbnail): their payload was replaced,
    their vectors kept. ``stale`` counts the source's points that no row of this run produced;
    with ``sync`` they are ``deleted``. In a dry run the counts say what a run would do.
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
    duplicate_ids: int = 0
    stale: int | None = None  # None: not counted (the run did not read its whole source)
    deleted: int = 0
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
        return self.read == self.upserted + self.payload_updated + self.unchanged + self.rejected + self.not_processed

    def stopped_early(self, status: str, error: str | None = None) -> None:
        """Mark a run that ended before all it read was written: what is left over was not processed."""
        self.status, self.error = status, error
        self.not_processed = max(0, self.read - self.upserted - self.payload_updated - self.unchanged - self.rejected)

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
        data["adds_up"] = self.adds_up()
        return data


@dataclass
class SourceRow:
    """One readable row: where it came from, its point id, image bytes, caption, payload and hash."""

    file: str
    row: int
    id: str
    key: Any
    image: ImageBytes
    caption: str | None
    payload: dict[str, Any]
    hash: str


def ingest(
    inputs: Sequence[str] | Source,
    store: Store,
    encoder: Encoder,
    options: IngestOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Read ``inputs``, embed every row with ``encoder`` and upsert one point per row into ``store``.

    Reading, decoding, the model's forward passes and store writes run concurrently
    (``options.workers`` decode threads, one model thread per replica in ``options.devices``);
    ``options.pipelined=False`` runs the single-threaded reference path instead.

    ``on_progress(rows, rejected)`` is called after each batch is written with the number of
    source rows it finished and the run's running total of rejected rows; ``on_stage(note)``
    names a step such as deleting stale points or building the vector index.

    With ``options.sync``, a run that read every input and every row (no early stop, no
    skipped file) then deletes the points recorded under ``options.source_name`` that none of
    its rows produced; a row rejected this run keeps its point. A killed sync converges when
    run again: deletes are by id and idempotent.

    If the run fails, the exception raised carries the partial summary as ``error.summary``
    (what was written before the failure); the rejects file is written either way.
    Raises CollectionMismatchError (another model, other payload types, or another id rule
    without ``sync``) before anything is written.
    """
    options = options or IngestOptions()
    if options.missing_caption not in MISSING_CAPTION_POLICIES:
        raise InputError(f"missing_caption must be one of {', '.join(MISSING_CAPTION_POLICIES)}")
    started = time.perf_counter()
    source = inputs if isinstance(inputs, Source) else open_source(
        list(inputs), options.image_col, options.caption_col, options.id_col, options.payload_cols,
        skip_bad_files=options.skip_bad_files,
    )
    options = run_options(source, options)
    summary = IngestSummary(collection=store.collection, model=encoder.name, files=len(source.files),
                            notes=list(source.mapping.notes), source=options.source_name, dry_run=options.dry_run)
    try:
        _ingest(source, store, encoder, options, summary, on_progress, on_stage)
    except BaseException as error:
        if isinstance(error, MmindexError) and not summary.read:
            raise  # refused before reading a row (another model, id rule, the store's lock): no run to report
        summary.stopped_early("failed", str(error) or type(error).__name__)
        summary.seconds = time.perf_counter() - started
        if summary.read and not options.dry_run:  # a run refused before reading a row keeps the last rejects file
            _write_rejects_of(summary, options)
        error.summary = summary  # type: ignore[attr-defined]
        raise
    summary.seconds = time.perf_counter() - started
    if not options.dry_run:
        _write_rejects_of(summary, options)
    return summary


def run_options(source: Source, options: IngestOptions) -> IngestOptions:
    """The options as this source runs them: the source name filled in, and a sync of one shard refused."""
    if options.sync and source.shard is not None:
        raise InputError("--sync needs the whole source, not one shard: run the shards without --sync, then the "
                         "same inputs once with --sync (stored rows are not embedded again)")
    if options.source_name is not None and not options.source_name.strip():
        raise InputError("--source must not be empty")
    if options.sync and not options.source_name and len(source.inputs) > 1:
        raise InputError(f"--sync with several inputs ({len(source.inputs)}; a glob the shell expanded?) needs "
                         "--source NAME, so that the next run, with other files, syncs the same points; or quote "
                         "the glob ('data/*.parquet') to pass it as one input")
    return options if options.source_name else replace(options, source_name=source.default_name())


def _ingest(source: Source, store: Store, encoder: Encoder, options: IngestOptions, summary: IngestSummary,
            on_progress: Callable[[int, int], None] | None, on_stage: Callable[[str], None] | None) -> None:
    decoder = None
    if options.pipelined and not options.dry_run:
        decoder, note = choose_decoder(options.decode, encoder, options.max_pixels, options.decode_device)
        summary.notes += [note] if note else []
    elif options.decode == "gpu" and not options.dry_run:
        raise InputError("--decode gpu decodes in the pipelined ingest; --no-pipeline is the Pillow reference path")
    rule_change = prepare_collection(source, store, encoder, options)
    run = _Run(store, summary, options, encoder.captions_too_long, on_progress)
    if options.dry_run:
        for job in run.jobs(source, encoder.identity, options.batch_size):
            summary.upserted += len(job.rows)  # would be embedded and upserted
            if on_progress:
                on_progress(job.source_rows, summary.rejected)
        finish_source(store, summary, options, run, on_stage, rule_change)
        return
    if options.pipelined:
        encoders = [encoder] + [encoder.replica(d) for d in options.devices[1:]] if options.devices else [encoder]
        pipeline = Pipeline(encoders, options.workers, run.write, options.max_pixels, skip=run.skip, decoder=decoder)
        watcher = _StopWatcher(options.stop, pipeline.cancel)
        try:
            for job in run.jobs(source, encoder.identity, options.batch_size):
                pipeline.submit(job)
        except PipelineStopped:
            pass  # a stage failed; close() raises its error
        except BaseException as error:
            pipeline.abort(error)
        finally:
            watcher.stop()
        pipeline.close()
        summary.oom_retries = sum(e.oom_retries for e in encoders)
    else:
        for job in run.jobs(source, encoder.identity, options.batch_size):
            run.write(embed_reference(job, encoder, options.max_pixels))
    interrupted = options.stop is not None and options.stop.is_set()
    if interrupted:
        summary.status = "interrupted"
    else:
        finish_source(store, summary, options, run, on_stage, rule_change)
    optimize = options.optimize and not interrupted  # stop within seconds; the next run builds the index
    if on_stage and optimize:
        on_stage("building the vector index")
    store.finish(optimize=optimize)


def id_rule(source: Source) -> dict[str, str]:
    """How this source's rows get point ids: from the id column, or from image bytes and caption."""
    return {"rule": "column", "column": source.mapping.id} if source.mapping.id else {"rule": "content"}


def describe_id_rule(rule: dict[str, Any]) -> str:
    return f"from column {rule['column']!r}" if rule.get("rule") == "column" else "from image and caption content"


def prepare_collection(source: Source, store: Store, encoder: Encoder, options: IngestOptions) -> dict | None:
    """Create or check the collection for this model and source, its payload indexes, and start the load.

    Everything that can refuse the run is checked before the first write. Returns the id rule
    to record at the end of the run when a sync changes it (else None). A dry run only checks.
    """
    indexes = _index_plan(source, options.index_fields)
    spec = replace(encoder.spec(),
                   payload_types=payload_types(source.schema, source.mapping.payload, source.mapping.payload_key))
    meta = store.metadata() if store.exists() else None
    rule = id_rule(source)
    rule_change = None
    renamed = False
    if meta is not None:
        spec.check_matches(CollectionSpec.from_metadata(meta), store.collection)
        recorded = meta.get("id_rule")
        if recorded is not None and recorded != rule and _renamed_id_column(source, store, recorded, rule):
            renamed = True  # the same values under another column name: the same points
        elif recorded is not None and recorded != rule:
            others = store.count({"must_not": source_filter(options.source_name)["must"]}) if options.sync else 0
            if not options.sync or others:
                same = ("Run with the same rule (--id-col " + recorded["column"] + ")"
                        if recorded.get("rule") == "column" else "Run with the same rule (no --id-col)")
                how = (f"; --sync cannot rebuild it under the new rule, since {others:,} of its points come from "
                       "other sources: ingest into another --collection" if others else
                       ", or rebuild the collection under the new rule with --sync (its points are deleted and the "
                       "rows embedded again)")
                raise CollectionMismatchError(
                    f"collection {store.collection!r} makes point ids {describe_id_rule(recorded)}; this run would "
                    f"make them {describe_id_rule(rule)}, so its rows would be stored a second time. {same}{how}")
            rule_change = rule
    if options.dry_run:
        return rule_change
    store.ensure_collection(spec)
    changes = _model_changes(meta or {}, encoder)
    if meta is None or meta.get("id_rule") is None or renamed:
        changes["id_rule"] = rule
    sources = dict((meta or {}).get("sources", {}))
    if options.source_name not in sources:
        sources[options.source_name] = {"inputs": list(source.inputs)}
        changes["sources"] = sources
    if changes:
        store.update_metadata(changes)
    for name, kind in indexes.items():
        store.create_payload_index(name, kind)
    store.begin_load()
    return rule_change


def _renamed_id_column(source: Source, store: Store, recorded: dict, rule: dict, sample: int = 256) -> bool:
    """Whether this run's id column holds the recorded one's values under a new name (a renamed column).

    Decided on the first rows: if at least half of their ids are points already, the ids are the
    same and nothing would be stored twice.
    """
    if recorded.get("rule") != "column" or rule.get("rule") != "column":
        return False
    for source_batch in source.batches(sample):
        if source_batch.batch is None:
            continue
        keys = source_batch.batch.column(source.mapping.id).to_pylist()
        ids = list(dict.fromkeys(point_id_from_key(k) for k in keys if id_problem(k) is None))
        return bool(ids) and 2 * len(store.retrieve(ids)) >= len(ids)
    return False


def _model_changes(meta: dict[str, Any], encoder: Encoder) -> dict[str, Any]:
    """What to record of this run's model: where it was loaded from; the name and fingerprint once.

    The name a collection shows stays the one it was made with, even when a copy of the folder
    under another name is used later (the fingerprint says it is the same model).
    """
    recorded = encoder.recorded()
    changes = {}
    if meta.get("model_path") != recorded["model_path"]:
        changes["model_path"] = recorded["model_path"]
    if not meta.get("model_fingerprint") and recorded["model_fingerprint"]:
        changes["model_fingerprint"] = recorded["model_fingerprint"]
        changes["model"] = recorded["model"]  # a collection from before fingerprints recorded a path here
    if recorded["text_model"] and meta.get("text_model_path") != recorded["text_model_path"]:
        changes["text_model_path"] = recorded["text_model_path"]
    return changes


def finish_source(store: Store, summary: IngestSummary, options: IngestOptions, run: "_Run",
                  on_stage: Callable[[str], None] | None, rule_change: dict | None) -> None:
    """After a complete run: count the source's stale points and, with sync, delete them.

    A run that skipped files or lost rows of a file did not see its whole source, so it
    counts and deletes nothing.
    """
    incomplete = sorted(run.lost_files | {f["file"] for f in summary.skipped_files})
    if incomplete:
        if options.sync:
            summary.warnings.insert(0, f"--sync deleted nothing: {len(incomplete)} input file(s) could not be read "
                                       f"in full ({', '.join(incomplete[:3])}{' …' if len(incomplete) > 3 else ''})")
        return
    if options.sync and summary.read and summary.reject_rate > options.max_reject_rate:
        summary.warnings.insert(0, f"--sync deleted nothing: {summary.rejected:,} of {summary.read:,} rows were "
                                   f"rejected ({summary.reject_rate:.1%}, over --max-reject-rate "
                                   f"{options.max_reject_rate:.1%}); an unreachable image store must not empty "
                                   "the collection")
        return
    stale = stale_points(store, options.source_name, run) if store.exists() else []
    summary.stale = len(stale)
    if not options.sync or options.dry_run:
        if options.dry_run and options.sync:
            summary.deleted = len(stale)
        return
    if stale and on_stage:
        on_stage(f"deleting {len(stale):,} point(s) whose rows are gone from the inputs")
    for start in range(0, len(stale), DELETE_BATCH):
        chunk = stale[start:start + DELETE_BATCH]
        store.delete(chunk)
        summary.deleted += len(chunk)
    summary.stale = 0
    changes: dict[str, Any] = {}
    if rule_change is not None:
        changes["id_rule"] = rule_change
    meta = store.metadata() or {}
    sources = dict(meta.get("sources", {}))
    sources[options.source_name] = {**sources.get(options.source_name, {}), "synced_at": utc_now()}
    changes["sources"] = sources
    store.update_metadata(changes)


def source_filter(name: str) -> dict[str, Any]:
    """The Qdrant filter for the points a source wrote (``_source.name``)."""
    return {"must": [{"key": "_source.name", "match": {"value": name}}]}


def stale_points(store: Store, source_name: str, run: "_Run", page: int = 8192) -> list[str]:
    """Ids of the points recorded under ``source_name`` that this run neither produced nor rejected."""
    stale = []
    offset = None
    while True:
        points, offset = store.scroll(source_filter(source_name), limit=page, offset=offset, with_payload=False)
        stale.extend(p.id for p in points if uuid.UUID(p.id).int not in run.seen)
        if offset is None:
            return stale


def utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class _StopWatcher:
    """Calls ``on_stop`` from a helper thread as soon as ``event`` is set (signal handlers only set events)."""

    def __init__(self, event: threading.Event | None, on_stop: Callable[[], None]):
        self.event, self.on_stop = event, on_stop
        self.done = threading.Event()
        self.thread = None
        if event is not None:
            self.thread = threading.Thread(target=self._watch, name="mmindex-stop", daemon=True)
            self.thread.start()

    def _watch(self) -> None:
        while not self.done.is_set():
            if self.event.is_set():
                self.on_stop()
                return
            self.done.wait(0.05)

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
        if self.event is not None and self.event.is_set():
            self.on_stop()


class _Run:
    """The reading side (source → jobs) and the writing side (vectors → store) of one run."""

    def __init__(self, store: Store, summary: IngestSummary, options: IngestOptions,
                 too_long: Callable[[list[str]], list[bool]] | None, on_progress: Callable[[int, int], None] | None):
        self.store = store
        self.summary = summary
        self.options = options
        self.too_long = too_long
        self.on_progress = on_progress
        # Reader and writer share the summary and the store; each lock is held only briefly,
        # so reading the next batch never waits for a write to finish.
        self.summary_lock = threading.Lock()
        self.store_lock = threading.Lock()
        # The point ids this run produced or kept, as 128-bit ints (a UUID string would take ~2x more).
        self.seen: set[int] = set()
        self.lost_files: set[str] = set()  # files whose rows could not all be read
        self.owners: set[str] = set()  # other sources whose points rows of this run took over
        self.exists = store.exists() if options.dry_run else True

    def jobs(self, source: Source, model: str, batch_size: int) -> Iterator[Job]:
        stop = self.options.stop
        for seq, source_batch in enumerate(source.batches(batch_size, self.options.skip_bad_files)):
            if stop is not None and stop.is_set():
                return
            tally, rows = read_batch(source, source_batch, model, self.options, self.too_long)
            yield Job(seq, self.admit(tally, rows), source_batch.batch.num_rows if source_batch.batch else 0,
                      self.options.thumbnails)

    def admit(self, tally: IngestSummary, rows: list[SourceRow]) -> list[SourceRow]:
        """Count a batch that was read (its ``tally``) and return the rows that need embedding."""
        with self.summary_lock:
            _add_tally(self.summary, tally)
            self.seen.update(uuid.UUID(point_id).int for point_id in tally.kept_ids)
            self.lost_files.update(tally.lost_files)
            repeated = self._count_duplicates(rows)
        return self._changed(rows, repeated)

    def write(self, embedded: Embedded) -> None:
        points = embedded.points()
        if points:
            with self.store_lock:
                self.store.upsert(points)
        with self.summary_lock:
            for row, reason in embedded.rejected:
                _reject(self.summary, row.file, row.row, row.key, "decode", reason)
            for row, reason in embedded.failed:
                _reject(self.summary, row.file, row.row, row.key, "embed", reason)
            self.summary.embedded += len(points)
            self.summary.upserted += len(points)
            rejected = self.summary.rejected
        if self.on_progress:
            self.on_progress(embedded.source_rows, rejected)

    def skip(self, job: Job) -> None:
        """A job the pipeline handed back unprocessed (the run was told to stop)."""
        with self.summary_lock:
            self.summary.not_processed += len(job.rows)

    def _count_duplicates(self, rows: list[SourceRow]) -> set[str]:
        repeated = set()
        for row in rows:
            key = uuid.UUID(row.id).int
            if key in self.seen:
                repeated.add(row.id)
                self.summary.duplicate_ids += 1
                if len(self.summary.warnings) < 1000:
                    self.summary.warnings.append(f"{row.file} row {row.row}: id {row.key!r} seen before in this "
                                                 "run; the last row with it wins")
            self.seen.add(key)
        return repeated

    def _changed(self, rows: list[SourceRow], repeated: set[str]) -> list[SourceRow]:
        """The rows to embed: those whose image, caption or model differ from the stored point's.

        A row with the same content but another payload (a moved image path, an edited or new
        column, a thumbnail asked for) gets its payload replaced, its vectors kept. A repeated
        id is always embedded: an earlier row with it may have been written in this run, and
        the last row must win.
        """
        if not rows:
            return []
        stored = {}
        if self.exists:
            with self.store_lock:
                stored = {p.id: p.payload for p in self.store.retrieve(list(dict.fromkeys(r.id for r in rows)))}
        todo, updates = [], []
        unchanged = 0
        others: dict[str, int] = {}
        for row in rows:
            previous = stored.get(row.id)
            owner = ((previous or {}).get(SOURCE_KEY) or {}).get("name")
            if owner is not None and owner != self.options.source_name:
                others[owner] = others.get(owner, 0) + 1
            if row.id in repeated or previous is None or previous.get(HASH_KEY) != row.hash:
                todo.append(row)
                continue
            payload = self._payload_for(row, previous)
            if payload is None:
                todo.append(row)  # a thumbnail is wanted but the image no longer decodes: let the run reject it
            elif payload == previous:
                unchanged += 1
            else:
                updates.append((row.id, payload))
        if updates and not self.options.dry_run:
            with self.store_lock:
                self.store.overwrite_payloads(updates)
        with self.summary_lock:
            self.summary.unchanged += unchanged
            self.summary.payload_updated += len(updates)
            for owner, count in others.items():
                self._taken_over(owner, count)
        return todo

    def _taken_over(self, owner: str, count: int) -> None:
        """Rows whose ids another source's points have: the points move to this source (one warning per source)."""
        first = self.summary.taken_over == 0 or owner not in self.owners
        self.summary.taken_over += count
        self.owners.add(owner)
        if first:
            self.summary.warnings.insert(0, (
                f"rows of this source have the ids of points that source {owner!r} wrote; those points now belong "
                f"to this source (and a --sync of {owner!r} will not delete them). Two sources whose id values "
                "overlap overwrite each other's points: give them distinct ids, or separate collections"))

    def _payload_for(self, row: SourceRow, previous: dict[str, Any]) -> dict[str, Any] | None:
        """The payload a stored point with this row's content should have (None: the image does not decode).

        The stored thumbnail is kept when the run asks for none or for its size; else one is made.
        """
        payload = {**row.payload, HASH_KEY: row.hash}
        old = previous.get(THUMBNAIL_KEY)
        size = self.options.thumbnails
        if old is not None and (not size or _thumbnail_fits(old, row.image.data, size)):
            payload[THUMBNAIL_KEY] = old
        elif size:
            if self.options.dry_run:
                payload[THUMBNAIL_KEY] = ""  # would be made: differs from the stored payload
                return payload
            try:
                payload[THUMBNAIL_KEY] = thumbnail(decode_image(row.image.data, None, self.options.max_pixels), size)
            except RejectedImage:
                return None
        return payload


def _thumbnail_fits(stored: str, image: bytes, size: int) -> bool:
    """Whether a stored thumbnail is the one ``size`` would make of ``image`` (compared by longest side)."""
    import base64
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(stored))) as small, Image.open(io.BytesIO(image)) as big:
            return max(small.size) == min(size, max(big.size))
    except Exception:  # noqa: BLE001 - an unreadable stored thumbnail is replaced
        return False


def read_batch(source: Source, source_batch: SourceBatch, model: str, options: IngestOptions,
               too_long: Callable[[list[str]], list[bool]] | None = None) -> tuple[IngestSummary, list[SourceRow]]:
    """One source batch read into rows, with its own tally of what was read and rejected."""
    tally = IngestSummary(collection="")
    if source_batch.batch is None:
        return tally, _lost_rows(source_batch, tally)
    return tally, read_rows(source, source_batch, model, tally, options, too_long)


def _add_tally(summary: IngestSummary, tally: IngestSummary) -> None:
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


def _lost_rows(source_batch: SourceBatch, summary: IngestSummary) -> list[SourceRow]:
    """Account for a file skipped with skip_bad_files: its unreadable rows are rejected, one by one."""
    summary.lost_files.append(source_batch.file)
    if source_batch.lost_rows is None:
        summary.skipped_files.append({"file": source_batch.file, "reason": source_batch.error})
        summary.warnings.append(f"{source_batch.file}: skipped, {source_batch.error}")
        return []
    for offset in range(source_batch.lost_rows):
        summary.read += 1
        _reject(summary, source_batch.file, source_batch.first_row + offset, None, "read",
                f"file unreadable from row {source_batch.first_row}: {source_batch.error}")
    return []


INDEX_KINDS = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")


def _index_plan(source: Source, fields: Sequence[str]) -> dict[str, str]:
    """Payload key → index type for ``--index-fields`` (payload keys, or the columns they come from)."""
    mapping = source.mapping
    columns = {mapping.payload_key(column): column for column in mapping.payload}
    plan = {}
    for item in fields:
        name, _, kind = item.rpartition(":")
        if not name or item in columns or item in mapping.payload:
            name, kind = item, ""  # a field whose name has a colon in it
        if kind and kind not in INDEX_KINDS:
            raise InputError(f"--index-fields {item!r}: {kind!r} is not an index type "
                             f"(types: {', '.join(INDEX_KINDS)})")
        if name == CAPTION_KEY and mapping.caption:
            plan[name] = kind or "text"
            continue
        if name not in columns and name in mapping.payload:
            name = mapping.payload_key(name)
        if name not in columns:
            raise InputError(f"--index-fields {name!r} is not a payload field "
                             f"(payload: {', '.join(columns) or 'none'})")
        arrow_type = source.schema.field(columns[name]).type
        inferred = index_kind(arrow_type)
        if kind and inferred and kind != inferred and (inferred, kind) != ("keyword", "text"):
            raise InputError(f"--index-fields {item!r}: {name!r} holds {inferred} values, which an index of type "
                             f"{kind} would not serve; leave the type out, or give {name}:{inferred}")
        if not (kind or inferred):
            raise InputError(f"cannot index {name!r} of type {arrow_type}; "
                             "give a type as NAME:keyword|integer|float|bool|datetime|text")
        plan[name] = kind or inferred
    return plan


def read_rows(source: Source, source_batch: SourceBatch, model: str, summary: IngestSummary,
              options: IngestOptions | None = None, too_long: Callable[[list[str]], list[bool]] | None = None
              ) -> list[SourceRow]:
    """The rows of a batch that can become points; every other row is rejected into ``summary``."""
    options = options or IngestOptions()
    mapping = source.mapping
    file, first_row, batch = source_batch.file, source_batch.first_row, source_batch.batch

    def column(name: str | None) -> tuple[list[Any], dict[int, str]]:
        if not name:
            return [None] * batch.num_rows, {}
        values, errors, warnings = column_values(batch.column(batch.schema.get_field_index(name)), name)
        summary.warnings.extend(f"{file}: {w}" for w in warnings)
        return values, errors

    images, image_errors = column(mapping.image)
    captions, caption_errors = column(mapping.caption)
    keys, key_errors = column(mapping.id)
    payloads, warnings, payload_errors = payload_columns(batch, mapping.payload, mapping.payload_key)
    summary.warnings.extend(f"{file}: {w}" for w in warnings)
    rows = []
    for index in range(batch.num_rows):
        row_number = first_row + index
        summary.read += 1
        key = keys[index]
        problem = (source_batch.row_errors.get(index) or image_errors.get(index) or caption_errors.get(index)
                   or key_errors.get(index) or payload_errors.get(index))
        if problem is None and mapping.id:
            trouble = id_problem(key)
            problem = f"id column {mapping.id!r} {trouble}" if trouble else None
        if problem is not None:
            _reject(summary, file, row_number, None if key_errors.get(index) else key, "read", problem)
            _keep(summary, mapping.id, key, key_errors.get(index))
            continue
        if not _is_text(captions[index]):
            _reject(summary, file, row_number, key, "read",
                    f"caption column {mapping.caption!r} holds {_kind_of(captions[index])}, not text "
                    "(name a text column with --caption-col)")
            _keep(summary, mapping.id, key)
            continue
        caption, cleaned = clean_caption(captions[index])
        summary.cleaned_captions += cleaned
        if mapping.caption and caption is None:
            if options.missing_caption == "reject":
                _reject(summary, file, row_number, key, "read",
                        f"caption is {'null' if captions[index] is None else 'empty'} (--missing-caption reject)")
                _keep(summary, mapping.id, key)
                continue
            summary.image_only += 1
        try:
            data = image_bytes(images[index], mapping.image_kind, source_batch.path, source.open_input,
                               options.image_root)
        except RejectedImage as error:
            _reject(summary, file, row_number, key, "read", error.message)
            _keep(summary, mapping.id, key)
            continue
        point_id = point_id_from_key(key) if mapping.id else point_id_from_content(data.data, caption)
        payload = payloads[index]
        if caption is not None:
            payload[CAPTION_KEY] = caption
        payload[SOURCE_KEY] = {"name": options.source_name, "file": file, "row": row_number, "path": data.path}
        oversize = _payload_problem(payload, options.max_payload_bytes)
        if oversize:
            _reject(summary, file, row_number, key, "read", oversize)
            summary.kept_ids.append(point_id)
            continue
        rows.append(SourceRow(file, row_number, point_id, key, data, caption, payload,
                              content_hash(data.data, caption, model)))
    _flag_truncated(rows, too_long, summary)
    return rows


def _keep(summary: IngestSummary, id_column: str | None, key: Any, key_error: str | None = None) -> None:
    """Record the point id of a rejected row when the id column gives it: a sync keeps that point."""
    if id_column and key_error is None and id_problem(key) is None:
        summary.kept_ids.append(point_id_from_key(key))


def _is_text(value: Any) -> bool:
    return value is None or isinstance(value, (str, bytes, bytearray, memoryview))


def _kind_of(value: Any) -> str:
    """A cell's kind for a rejection reason: 'a list of 3 values', 'a number (12)', …"""
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} value{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a struct"
    if isinstance(value, bool):
        return f"true/false ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return f"a {type(value).__name__}"


def _flag_truncated(rows: list[SourceRow], too_long: Callable[[list[str]], list[bool]] | None,
                    summary: IngestSummary) -> None:
    """Mark captions the model cuts at its token limit: ``_caption_truncated: true`` in the payload."""
    captioned = [row for row in rows if row.caption is not None]
    if too_long is None or not captioned:
        return
    for row, cut in zip(captioned, too_long([row.caption for row in captioned])):
        if cut:
            row.payload[TRUNCATED_KEY] = True
            summary.truncated_captions += 1


def _payload_problem(payload: dict[str, Any], limit: int) -> str | None:
    try:
        size = len(json.dumps(payload, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError) as error:
        return f"payload cannot be stored as JSON: {error}"
    if size <= limit:
        return None
    sizes = {name: len(json.dumps(value, ensure_ascii=False).encode()) for name, value in payload.items()}
    biggest = max(sizes, key=sizes.get)
    return (f"payload is {size:,} bytes, over the limit of {limit:,} (--max-payload-bytes); "
            f"largest field {biggest!r} is {sizes[biggest]:,} bytes")


def _reject(summary: IngestSummary, file: str, row: int, key: Any, stage: str, reason: str) -> None:
    summary.rejected += 1
    summary.rejections.append(Rejection(file, row, None if key is None else str(key), stage, reason))


REJECTS_SCHEMA = pa.schema([
    ("file", pa.string()), ("row", pa.int64()), ("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
])


def write_rejects(rejections: Sequence[Rejection], path: str) -> None:
    """Write the rejected rows (file, row, id, stage, reason) to Parquet, atomically."""
    table = pa.Table.from_pylist([asdict(r) for r in rejections], schema=REJECTS_SCHEMA)
    _write_atomically(path, lambda partial: pq.write_table(table, partial))


def _write_rejects_of(summary: IngestSummary, options: IngestOptions) -> None:
    """This run's rejects replace the previous run's file; with none, an old file is removed."""
    path = options.rejects_path
    if not path:
        return
    try:
        if summary.rejections:
            write_rejects(summary.rejections, path)
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
        write(path)  # a pipe or a device: write into it, never replace it with a file
        return
    target = os.path.realpath(path) if os.path.islink(path) else path
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    partial = f"{target}.partial"
    write(partial)
    os.replace(partial, target)


__all__ = ["IngestOptions", "IngestSummary", "ingest", "write_rejects", "write_report", "MmindexError",
           "source_filter"]
