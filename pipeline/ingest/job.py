"""A whole ingest job as ``mmindex ingest`` runs it, for the CLI and the Python API alike: the model and collection
checks before the model loads (minutes, for a large one), the source, the engine (threads here, or Ray), a graceful
stop on SIGINT/SIGTERM, the JSON report and the exit code.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Sequence

from mmindex.errors import MmindexError, UsageError
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.ingest.gpu_decode import check_gpu_decode_possible
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.ray import RayOptions, ingest_on_ray
from mmindex.pipeline.ingest.run import checked_plan, ingest
from mmindex.pipeline.ingest.sync import index_plan, keyword_plan
from mmindex.pipeline.ingest.signals import graceful_stop
from mmindex.pipeline.ingest.source import Source, open_source
from mmindex.pipeline.ingest.summary import IngestSummary, outcome, utc_now, write_report
from mmindex.pipeline.models.encoder import Encoder, check_device
from mmindex.pipeline.models.identity import ModelChoice, ModelPlan

ENGINES = ("local", "ray")


@dataclass
class IngestJob:
    """Everything ``mmindex ingest`` is told: inputs, where the collection lives, which models, how to run.

    ``options`` holds the run's own settings (columns, batch size, rejects file, sync…); ``options.rejects_path`` is
    filled by ``with_default_rejects`` when left None and not ``no_rejects``. ``shard``: part (i, N) of the input.
    ``engine``: ``local`` (threads in this process) or ``ray``. ``report``: a JSON file for the run summary.
    """

    inputs: Sequence[str]
    store: StoreSettings
    models: ModelChoice = ModelChoice()
    options: IngestOptions = field(default_factory=IngestOptions)
    device: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    engine: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    shard: tuple[int, int] | None = None
    no_rejects: bool = False
    report: str | None = None
    parallel_writes: int = 4
    bulk_load: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):  # one input given as a plain string is one input, not its letters
            self.inputs = [self.inputs]

    def with_default_rejects(self) -> "IngestJob":
        """The job with its rejects file where the docs say: beside the embedded collection, or in the working
        folder for a server (one per shard); none with ``no_rejects``."""
        if self.no_rejects:
            return replace(self, options=replace(self.options, rejects_path=None))
        if self.options.rejects_path is not None:
            return self
        suffix = f"-shard-{self.shard[0]}-of-{self.shard[1]}" if self.shard else ""
        collection = self.store.collection
        path = (f"mmindex-rejects-{collection}{suffix}.parquet" if self.store.url
                else os.path.join(self.store.data_dir, collection, f"rejects{suffix}.parquet"))
        return replace(self, options=replace(self.options, rejects_path=path))

    def check(self) -> None:
        """Refuse what can only fail, before anything is opened: devices that are not devices, GPU decoding where it
        cannot run, an engine, shard or batch size that cannot be. Raises UsageError or ModelError."""
        check_device(self.device)
        if self.engine not in ENGINES:
            raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.engine == "ray" and self.options.on_duplicate != "keep":
            raise UsageError(f"--on-duplicate {self.options.on_duplicate} runs on the local engine only (the check "
                             "follows the run's input order in one writer); drop --engine ray, or use --on-duplicate "
                             "keep and find the duplicates afterwards with `mmindex duplicates -c NAME`")
        if self.shard is not None and not (len(self.shard) == 2 and 0 <= self.shard[0] < self.shard[1]):
            raise UsageError(f"shard must be (I, N) with 0 <= I < N, not {self.shard!r}")
        for name in ("batch_size", "workers"):
            if getattr(self.options, name) < 1:
                raise UsageError(f"{name} must be at least 1, not {getattr(self.options, name)!r}")
        folder = os.path.dirname(os.path.abspath(self.report)) if self.report else None
        if folder and not os.path.isdir(folder):  # refused now, not after hours of embedding
            raise UsageError(f"--report: the folder {folder} does not exist")
        for name in self.options.devices:  # e.g. "cpu+cpu" (devices are separated by commas)
            check_device(name, "--devices")
        if self.options.decode == "gpu":
            device = self.options.devices[0] if self.options.devices else self.device
            check_gpu_decode_possible(device, self.engine, self.options.pipelined)


@dataclass
class JobResult:
    """How a job ended: its summary, the exit code and problem ``summary.outcome`` gives, and the model's name."""

    summary: IngestSummary
    exit_code: int
    problem: str | None
    model: str | None


Progress = Callable[[int], ContextManager[Any]]  # total rows → a bar with update(rows, rejected), write, close


def run_ingest_job(job: IngestJob, *, on_note: Callable[[str], None] | None = None,
                   progress: Progress | None = None, announce: Callable[[str], None] | None = None) -> JobResult:
    """Run ``job`` to its end and say how it ended; the CLI prints what this returns.

    ``on_note(text)``: what a person watching wants to know (column notes, the shard, the model loading);
    ``progress(total)``: a progress bar for ``total`` rows; ``announce``: the message when a first SIGINT/SIGTERM
    asks for a graceful stop. Raises MmindexError subclasses for what is refused before a row is read (a model
    that is not the collection's, unreadable inputs…); a failure during the run is a ``JobResult`` with exit
    code 1, its summary holding what was written.
    """
    note = on_note or (lambda text: None)
    job = job.with_default_rejects()
    job.check()
    started_at = utc_now()
    store = job.store.open(parallel_writes=job.parallel_writes, bulk_load=job.bulk_load)
    summary = failure = model_name = None
    with graceful_stop(announce) as stopping:
        try:
            plan, source = _checked_plan(job, store)
            total = source.count_rows(job.options.skip_bad_files)
            for text in source.mapping.notes:
                note(f"note: {text}")
            if job.shard:
                note(f"shard {job.shard[0]}/{job.shard[1]}: {len(source.my_units())} of {len(source.units())} "
                     "row groups")
            encoder = _load(job, plan, note, total, len(source.files)) if job.engine == "local" else None
            model_name = encoder.name if encoder else None
            options = replace(job.options, stop=stopping.event)
            try:
                summary = _run(job, plan, source, store, encoder, options, progress, note, total)
                model_name = summary.model
            except Exception as error:
                summary, failure = getattr(error, "summary", None), error
                if summary is None:
                    raise
        finally:
            store.close()
    exit_code, problem = outcome(summary, failure, stopping.first, job.options.max_reject_rate)
    if job.report:
        report_of(summary, job.report, {
            "exit_code": exit_code, "problem": problem, "started_at": started_at, "finished_at": utc_now(),
            "inputs": list(job.inputs), "store": job.store.kind, "shard": "/".join(map(str, job.shard or ())) or None,
            "engine": job.engine, "model": model_name, "max_reject_rate": job.options.max_reject_rate,
            "max_delete": job.options.max_delete,
        })
    return JobResult(summary, exit_code, problem, model_name)


def report_of(summary: IngestSummary, path: str, extra: dict[str, Any]) -> None:
    """Write the JSON report; a report that cannot be written (a read-only or full disk, a folder where the file
    should be, a pipe nobody reads) is a warning in the summary, never an error: the rows are stored, and the exit
    code stays the run's."""
    try:
        write_report(summary, path, extra)
    except (OSError, ValueError, MmindexError) as error:
        summary.warnings.append(f"cannot write the report {path}: {error}")


def _checked_plan(job: IngestJob, store) -> tuple[ModelPlan, Source]:
    """The models to load, checked against the collection (if it exists) before any of them loads; the source."""
    plan = checked_plan(store, job.models)  # refused before the model loads (it may take minutes)
    if store.exists():
        store.count()  # opens it: an embedded collection another process holds is refused now, naming that process
    options = job.options
    source = open_source(list(job.inputs), options.image_col, options.caption_col, options.id_col,
                         options.payload_cols, skip_bad_files=options.skip_bad_files, shard=job.shard,
                         split=options.split)
    index_plan(source, options.index_fields)  # a field --index-fields names that is not there: refused now too
    keyword_plan(source, store, store.metadata() if store.exists() else None, options)  # and --text-fields
    return plan, source


def _load(job: IngestJob, plan: ModelPlan, note: Callable[[str], None], total: int, files: int) -> Encoder:
    note(f"loading model {plan.model} …")
    devices = job.options.devices
    encoder = Encoder(plan.model, device=devices[0] if devices else job.device, batch_size=job.options.batch_size,
                      text_model=plan.text_model, backend=job.backend, precision=plan.precision, threads=job.threads)
    note(f"model on {encoder.device}, {encoder.dim}-d vectors; {total:,} rows in {files} file(s) → collection "
         f"{job.store.collection!r} ({job.store.kind})")
    return encoder


def _run(job: IngestJob, plan: ModelPlan, source: Source, store, encoder: Encoder | None, options: IngestOptions,
         progress: Progress | None, note: Callable[[str], None], total: int) -> IngestSummary:
    bar = progress(total) if progress else None
    with bar if bar is not None else contextlib.nullcontext():
        def stage(message: str) -> None:
            if bar is not None:
                bar.close()  # the rows are done: their last progress line comes before the note
            note(f"{message} …")

        update = bar.update if bar is not None else None
        if job.engine == "ray":
            store.close()  # the Ray run's writer opens the store in its own process
            return ingest_on_ray(source, job.store, plan.model, options, replace(job.ray, device=job.device),
                                 on_progress=update, on_stage=stage, text_model=plan.text_model,
                                 encoder_options={"backend": job.backend, "precision": plan.precision,
                                                  "threads": job.threads})
        return ingest(source, store, encoder, options, on_progress=update, on_stage=stage)
