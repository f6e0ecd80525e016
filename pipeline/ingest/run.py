"""The ingest job: source batches → decoded images → vectors → points → store.

Every row read ends in exactly one bucket of the summary (embedded and upserted, payload
updated, unchanged, or rejected with a stage and a reason), so the numbers always add up.

A run belongs to a source (``--source``, by default its inputs): every point it writes
records the source's name in ``_source.name``. After a complete run, the points of the
source that no row of this run produced are stale; ``sync`` deletes them, so the collection
equals its inputs.
"""
from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from mmindex.connectors.base import Store
from mmindex.errors import InputError, MmindexError, UsageError
from mmindex.keys import SOURCE_KEY
from mmindex.pipeline.classify.predictions import (begin_ingest_labels, bind_labelers, mark_labels_dropped,
                                                   recorded_label_keys, recorded_labels, with_labels)
from mmindex.pipeline.collection.keywords import changed_keywords, write_keyword_vectors
from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS, has_signals, signals_of
from mmindex.pipeline.ingest.duplicates import (DUPLICATE_OF_KEY, DUPLICATE_TIER_KEY, LINK_KEYS, DuplicateCheck,
                                               unsigned_warning)
from mmindex.pipeline.ingest.gpu_decode import choose_decoder
from mmindex.pipeline.ingest.hf_layout import SPLIT_ALL
from mmindex.pipeline.ingest.images import THUMBNAIL_KEY, RejectedImage, decode_image, thumbnail
from mmindex.pipeline.ingest.options import MISSING_CAPTION_POLICIES, IngestOptions
from mmindex.pipeline.ingest.rows import SourceRow, read_batch
from mmindex.pipeline.ingest.source import Source, open_source
from mmindex.pipeline.ingest.stages import HASH_KEY, Embedded, Job, Pipeline, PipelineStopped, embed_reference
from mmindex.pipeline.ingest.summary import IngestSummary, add_tally, reject_row, skip_duplicate, write_rejects_of
from mmindex.pipeline.ingest.sync import finish_source, prepare_collection
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.models.identity import ModelChoice, ModelPlan
from mmindex.pipeline.query.keywords import recorded_settings, with_keyword_vectors


def ingest(
    inputs: Sequence[str] | Source,
    store: Store,
    encoder: Encoder | str,
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
    its rows produced; a row rejected this run keeps its point. A sync that would delete more of
    the source's points than ``options.max_delete`` allows deletes none and says why in
    ``summary.delete_refused`` (``run_ingest_job`` makes it exit code 1). A killed sync converges
    when run again: deletes are by id and idempotent.

    If the run fails, the exception raised carries the partial summary as ``error.summary``
    (what was written before the failure); the rejects file is written either way.
    ``encoder`` may be a model spec (a folder, a Hub id, an open_clip name) instead of a loaded ``Encoder``: it is
    then checked against the collection before it loads (``checked_plan``), as ``mmindex ingest`` does.
    Raises CollectionMismatchError (another model, other payload types, or another id rule
    without ``sync``) before anything is written.
    """
    options = options or IngestOptions()
    if options.missing_caption not in MISSING_CAPTION_POLICIES:
        raise InputError(f"missing_caption must be one of {', '.join(MISSING_CAPTION_POLICIES)}")
    plan = checked_plan(store, ModelChoice(encoder)) if isinstance(encoder, str) else None
    started = time.perf_counter()
    source = inputs if isinstance(inputs, Source) else open_source(
        [inputs] if isinstance(inputs, str) else list(inputs), options.image_col, options.caption_col, options.id_col,
        options.payload_cols, skip_bad_files=options.skip_bad_files, split=options.split,
    )
    if plan is not None:  # loaded once the model and the inputs have passed their checks, as `mmindex ingest` does
        encoder = Encoder(plan.model, text_model=plan.text_model, precision=plan.precision,
                          batch_size=options.batch_size, backend="auto")
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
            write_rejects_of(summary, options)
        error.summary = summary  # type: ignore[attr-defined]
        raise
    summary.seconds = time.perf_counter() - started
    if not options.dry_run:
        write_rejects_of(summary, options)
    return summary


def checked_plan(store: Store, choice: ModelChoice) -> ModelPlan:
    """The models to load for ``store``'s collection, refused before they load when they cannot fill it (another
    model, precision or changed files: CollectionMismatchError; a recorded folder gone: ModelError)."""
    existing = store.spec()
    meta = store.metadata() if existing else None
    plan = choice.resolve(meta)
    if existing is not None:
        plan.check_fills(meta, existing, store.collection)
    return plan


def run_options(source: Source, options: IngestOptions) -> IngestOptions:
    """The options as this source runs them: the source name filled in, and a sync of one shard refused."""
    if options.sync and source.shard is not None:
        raise UsageError("--sync needs the whole source, not one shard: run the shards without --sync, then the "
                         "same inputs once with --sync (stored rows are not embedded again)")
    if options.source_name is not None and not options.source_name.strip():
        raise UsageError("--source must not be empty")
    if options.sync and not options.source_name and len(source.inputs) > 1:
        raise UsageError(f"--sync with several inputs ({len(source.inputs)}; a glob the shell expanded?) needs "
                         "--source NAME, so that the next run, with other files, syncs the same points; or quote "
                         "the glob ('data/*.parquet') to pass it as one input")
    name = options.source_name or source.default_name()
    split = source.split or options.split  # the split's name (--split dev reads validation)
    if options.split not in (None, SPLIT_ALL) and not name.endswith(f"#{split}"):
        name += f"#{split}"  # --source ds --split train: ds#train, so a sync of one split keeps the others
    return replace(options, source_name=name)


def _ingest(source: Source, store: Store, encoder: Encoder, options: IngestOptions, summary: IngestSummary,
            on_progress: Callable[[int, int], None] | None, on_stage: Callable[[str], None] | None) -> None:
    decoder = _decoder(encoder, options, summary)
    if options.labelers:  # --labels: made with this run's model and checked before anything is written
        columns = [source.mapping.payload_key(column) for column in source.mapping.payload]
        options = replace(options, labelers=bind_labelers(options.labelers, encoder, columns))
    rule_change = prepare_collection(source, store, encoder, options)
    if options.labelers and not options.dry_run:
        summary.warnings += begin_ingest_labels(store, options.labelers)
    summary.model = encoder.name  # the name the collection records (a copied folder has another)
    run = IngestRun(store, summary, options, encoder.captions_too_long, on_progress,
                    image_steps=(encoder.image_size, encoder.center_crop))
    unsigned = unsigned_warning(store, options.on_duplicate) if options.on_duplicate != "keep" else None
    summary.warnings[:0] = [unsigned] if unsigned else []  # first: the CLI prints the first five
    if options.dry_run:
        if options.on_duplicate != "keep":  # a warning, so that the CLI prints it and the report lists it
            act = "leave out" if options.on_duplicate == "skip" else "store with duplicate_of"
            summary.warnings.insert(0, f"--dry-run embeds nothing, so it does not look for duplicates: the rows "
                                       f"--on-duplicate {options.on_duplicate} would {act} are counted as to embed")
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
    summary.warnings += mark_labels_dropped(store, run.labels_dropped)  # re-embedded points lost their labels
    interrupted = options.stop is not None and options.stop.is_set()
    if interrupted:
        summary.status = "interrupted"
    else:
        finish_source(store, summary, options, run, on_stage, rule_change)
    optimize = options.optimize and not interrupted  # stop within seconds; the next run builds the index
    if on_stage and optimize:
        on_stage("building the vector index")
    store.finish(optimize=optimize)


def _decoder(encoder: Encoder, options: IngestOptions, summary: IngestSummary):
    """The run's GPU decoder, or None (Pillow). ``--on-duplicate skip|link`` needs every image's duplicate signals,
    which need Pillow's image: then JPEGs are not decoded on the GPU. Otherwise a GPU decoder leaves its JPEGs
    without signals, and the summary says so once."""
    if options.dry_run:
        return None
    if not options.pipelined:
        if options.decode == "gpu":
            raise UsageError("--decode gpu decodes in the pipelined ingest; --no-pipeline is the Pillow reference path")
        return None
    if options.on_duplicate != "keep" and options.decode != "cpu":
        if options.decode == "gpu":
            summary.notes.append(f"images decoded by Pillow, not on the GPU: --on-duplicate {options.on_duplicate} "
                                 "needs each image's duplicate signals, made from Pillow's decode")
        return None
    decoder, note = choose_decoder(options.decode, encoder, options.max_pixels, options.decode_device)
    summary.notes += [note] if note else []
    if decoder is not None:
        summary.warnings.append(
            "JPEGs decoded on the GPU get no duplicate signals (_pixels, _print…), so `mmindex duplicates` and "
            "--on-duplicate cannot see them: run the same `mmindex ingest` again (with --decode cpu or not) to add "
            "them; unchanged rows are not embedded again")
    return decoder


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


class IngestRun:
    """The reading side (source → jobs) and the writing side (vectors → store) of one run."""

    def __init__(self, store: Store, summary: IngestSummary, options: IngestOptions,
                 too_long: Callable[[list[str]], list[bool]] | None, on_progress: Callable[[int, int], None] | None,
                 image_steps: tuple[int | None, bool] = (None, False)):
        self.store = store
        # The model's (image side, centre crop): how decode_rows decodes, so signals added later are the same.
        self.image_steps = image_steps
        self.duplicates = DuplicateCheck(store) if options.on_duplicate != "keep" and not options.dry_run else None
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
        # The collection's BM25 rule (recorded by prepare_collection); None: made before keyword search.
        self.keywords = None if options.dry_run else recorded_settings(store.metadata())
        # Predicted labels (`mmindex label`, --labels) are kept when a row's payload is replaced.
        self.label_keys = recorded_label_keys(store.metadata() if self.exists else None)
        # A point embedded again gets a payload from its row: the recorded label fields this run does not write are
        # gone from it (its image or caption changed: the old labels may be wrong). Point id → those fields, until
        # written; then field → points that lost it.
        rewritten = {name for name, _, _ in options.labelers}
        self.label_fields = [] if options.dry_run else [
            name for name in recorded_labels(store.metadata() if self.exists else None) if name not in rewritten]
        self.label_holders: dict[str, list[str]] = {}
        self.labels_dropped: dict[str, int] = {}
        if self.keywords is None and not options.dry_run:
            summary.notes.append(f"collection {store.collection!r} has no keyword vector (made before keyword "
                                 f"search): `mmindex keywords -c {store.collection}` adds it, no model needed")

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
            add_tally(self.summary, tally)
            self.seen.update(uuid.UUID(point_id).int for point_id in tally.kept_ids)
            self.lost_files.update(tally.lost_files)
            repeated = self._count_duplicates(rows)
        return self._changed(rows, repeated)

    def write(self, embedded: Embedded) -> None:
        embedded, skipped, linked = self._without_duplicates(embedded)
        points = with_keyword_vectors(with_labels(embedded.points(), self.options.labelers), self.keywords)
        if points:
            with self.store_lock:
                self.store.upsert(points)
        with self.summary_lock:
            for point in points if self.label_holders else ():
                for name in self.label_holders.pop(point.id, ()):
                    self.labels_dropped[name] = self.labels_dropped.get(name, 0) + 1
            for row, match in skipped:
                skip_duplicate(self.summary, row.file, row.row, row.key, match.reason(), match.of, match.tier)
            self.summary.linked_duplicates += linked
            for row, reason in embedded.rejected:
                reject_row(self.summary, row.file, row.row, row.key, "decode", reason)
            for row, reason in embedded.failed:
                reject_row(self.summary, row.file, row.row, row.key, "embed", reason)
            self.summary.embedded += len(points)
            self.summary.upserted += len(points)
            rejected = self.summary.rejected
        if self.on_progress:
            self.on_progress(embedded.source_rows, rejected)

    def _without_duplicates(self, embedded: Embedded) -> tuple[Embedded, list, int]:
        """``--on-duplicate``: (the rows to write, [(row, match)] of the rows skipped, rows linked)."""
        if self.duplicates is None or not embedded.rows:
            return embedded, [], 0
        link = self.options.on_duplicate == "link"
        with self.store_lock:
            matches = self.duplicates.check(embedded.rows, embedded.image_vectors, keep_duplicates=link)
        if link:
            for row, match in zip(embedded.rows, matches):
                if match is not None:
                    row.payload[DUPLICATE_OF_KEY], row.payload[DUPLICATE_TIER_KEY] = match.of, match.tier
            return embedded, [], sum(match is not None for match in matches)
        skipped = [(row, match) for row, match in zip(embedded.rows, matches) if match is not None]
        if not skipped:
            return embedded, [], 0
        return embedded.keeping([i for i, match in enumerate(matches) if match is None]), skipped, 0

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
        unchanged = signals_added = 0
        others: dict[str, int] = {}
        for row in rows:
            previous = stored.get(row.id)
            owner = ((previous or {}).get(SOURCE_KEY) or {}).get("name")
            if owner is not None and owner != self.options.source_name:
                others[owner] = others.get(owner, 0) + 1
            if row.id in repeated or previous is None or previous.get(HASH_KEY) != row.hash:
                todo.append(row)
                holds = [name for name in self.label_fields if name in (previous or {})]
                if holds:
                    with self.summary_lock:
                        self.label_holders[row.id] = holds
                continue
            payload = self._payload_for(row, previous)
            if payload is None:
                todo.append(row)  # a thumbnail is wanted but the image no longer decodes: let the run reject it
            elif payload == previous:
                unchanged += 1
            else:
                updates.append((row.id, payload))
                signals_added += not has_signals(previous)
        if updates and not self.options.dry_run:
            with self.store_lock:
                self.store.overwrite_payloads(updates)
                write_keyword_vectors(self.store, changed_keywords(self.keywords, updates, stored))
        with self.summary_lock:
            self.summary.unchanged += unchanged
            self.summary.payload_updated += len(updates)
            self.summary.signals_added += signals_added
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

        The stored thumbnail is kept when the run asks for none or for its size; else one is made. The stored
        duplicate signals and links are kept; a point made before signals were kept gets them, from the image
        decoded as the run decodes it (no forward pass).
        """
        payload = {**row.payload, HASH_KEY: row.hash}
        payload.update({key: previous[key] for key in LINK_KEYS if key in previous})
        payload.update({key: previous[key] for key in self.label_keys if key in previous and key not in payload})
        if has_signals(previous):
            payload.update({key: previous[key] for key in SIGNAL_KEYS})
        elif self.options.dry_run:
            payload.update(dict.fromkeys(SIGNAL_KEYS))  # would be computed: differs from the stored payload
        else:
            try:
                image = decode_image(row.image.data, self.image_steps[0], self.options.max_pixels, self.image_steps[1])
            except RejectedImage:
                return None
            payload.update(signals_of(image).to_payload())
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
    try:
        with Image.open(io.BytesIO(base64.b64decode(stored))) as small, Image.open(io.BytesIO(image)) as big:
            return max(small.size) == min(size, max(big.size))
    except Exception:  # noqa: BLE001 - an unreadable stored thumbnail is replaced
        return False


