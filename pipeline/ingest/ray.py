"""The ingest stages on Ray Data, for embedding on many GPUs across a cluster.

Same stages, same rows, same points as the local engine; only where they run changes:

    row groups (this shard's) ──read tasks (CPU: Parquet → rows, checks, ids, hashes)──►
    ──decode tasks (CPU: bytes → RGB)──► embedding actors (GPU: preprocess + forward,
    an autoscaling pool of 1…N, ``num_gpus`` each) ──► the driver hands each batch, in input
    order, to the store's writer.

The store lives in one actor (``StoreGate``): it decides which rows changed (the same
content-hash check as the local engine), counts every row, and writes. The embedded store
allows one process only, and keeping the bookkeeping in one place keeps "every row
accounted for" exact. Ray's own ``read_parquet`` is not used because it does not tell
which file and row a record came from; the read tasks read row groups with pyarrow instead.
"""
from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
from PIL import Image

from mmindex.errors import MmindexError
from mmindex.pipeline.ingest.rows import flag_truncated, read_batch
from mmindex.pipeline.ingest.run import IngestRun, run_options
from mmindex.pipeline.ingest.stages import Job, Prepared, decode_rows, embed
from mmindex.pipeline.ingest.summary import IngestSummary, write_rejects_of
from mmindex.pipeline.ingest.sync import finish_source, prepare_collection
from mmindex.pipeline.models.encoder import Encoder


@dataclass
class RayOptions:
    """Where and how wide to run."""

    address: str | None = None  # None: start a local Ray; "auto" or ray://host:10001: join a cluster
    max_actors: int | None = None  # embedding actors at most (default: the cluster's GPUs, or 1)
    gpus_per_actor: float | None = None  # default: 1 if the cluster has GPUs, else 0
    device: str = "auto"  # for the actors' encoder
    num_cpus: int | None = None  # a local Ray's CPUs (default: all)


class StoreGate:
    """The one place that touches the store: admits rows (change check, counting) and writes them."""

    def __init__(self, settings, source, model: str, options, text_model: str | None = None,
                 encoder_options: dict[str, Any] | None = None):
        # For the caption-length check and the collection's record; never embeds.
        self.encoder = Encoder(model, device="cpu", text_model=text_model, **(encoder_options or {}))
        self.store = settings.open()
        self.options = options
        self.rule_change = prepare_collection(source, self.store, self.encoder, options)
        self.dataset = source.dataset  # in the types the collection records (the read tasks take it from here)
        self.summary = IngestSummary(collection=self.store.collection, model=self.encoder.name,
                                     files=len(source.files), notes=list(source.mapping.notes),
                                     source=options.source_name)
        self.run = IngestRun(self.store, self.summary, options, None, None,
                             image_steps=(self.encoder.image_size, self.encoder.center_crop))

    def read_types(self):
        """The dataset's schema as this run reads it: a column's type may be the one the collection records."""
        return self.dataset

    def describe(self) -> tuple[str, tuple[int | None, bool], int]:
        """The model's identity (for content hashes), image side and weight bytes, to plan the other stages."""
        weights = self.encoder.weight_bytes()
        return self.encoder.identity, (self.encoder.image_size, self.encoder.center_crop), weights

    def admit(self, tally, rows) -> list:
        flag_truncated(rows, self.encoder.captions_too_long, tally)
        return self.run.admit(tally, rows)

    def write(self, blob: bytes) -> int:
        """Write one embedded batch; returns the run's rejected rows so far, for the driver's progress."""
        self.run.write(pickle.loads(blob))
        return self.summary.rejected

    def finish(self, optimize: bool, interrupted: bool, error: str | None = None):
        summary = self.summary
        if error is not None:
            summary.stopped_early("failed", error)
        elif interrupted:
            summary.stopped_early("interrupted")
        try:
            if summary.status == "ok":
                finish_source(self.store, summary, self.options, self.run, None, self.rule_change)
            self.store.finish(optimize=optimize and summary.status == "ok")
        finally:
            self.store.close()
        return summary


class EmbedActor:
    """Holds one model replica; turns decoded batches into vectors."""

    def __init__(self, model: str, device: str, batch_size: int, text_model: str | None = None,
                 encoder_options: dict[str, Any] | None = None):
        self.encoder = Encoder(model, device=device, batch_size=batch_size, text_model=text_model,
                               **(encoder_options or {}))

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        job, arrays, rejected = pickle.loads(item["job"])
        rows = job.rows
        images = [Image.fromarray(array) for array in arrays]
        captioned = [i for i, row in enumerate(rows) if row.caption]
        prepared = Prepared(job.seq, rows,
                            self.encoder.preprocess(images) if images else None,
                            self.encoder.preprocess([rows[i].caption for i in captioned]) if captioned else None,
                            captioned, rejected, job.source_rows)
        return {"job": pickle.dumps(embed(prepared, self.encoder)), "source_rows": job.source_rows}


def ingest_on_ray(source, settings, model: str, options, ray_options: RayOptions | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  on_stage: Callable[[str], None] | None = None, text_model: str | None = None,
                  encoder_options: dict[str, Any] | None = None):
    """Run an ingest on Ray; returns the same ``IngestSummary`` as the local engine."""
    try:
        # the ray extra: only --engine ray loads it
        import ray
    except ImportError:
        raise MmindexError("--engine ray needs Ray: pip install 'mmindex[ray]'") from None
    started = time.perf_counter()
    options = run_options(source, options)
    if options.dry_run:
        raise MmindexError("--dry-run runs with --engine local (it embeds nothing, so it needs no cluster)")
    ray_options = ray_options or RayOptions()
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not ray.is_initialized():
        ray.init(address=ray_options.address, num_cpus=ray_options.num_cpus if not ray_options.address else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False,
                 ignore_reinit_error=True)
    # The writer loads the model on its CPU (it needs the tokenizer); it also tells the driver what it is.
    gate = ray.remote(num_cpus=0)(StoreGate).remote(settings, source, model, _portable(options), text_model,
                                                              encoder_options or {})
    try:
        name, image_size, weights = ray.get(gate.describe.remote())  # image_size: (side, center_crop)
        if source.dataset is not None:
            source.dataset = ray.get(gate.read_types.remote())
            source.schema = source.dataset.schema
    except Exception as error:  # noqa: BLE001 - the store could not be opened or prepared
        raise MmindexError(f"the Ray run cannot start its store writer: {_reason(error)}") from error
    # What one embedding actor holds: the weights, activations and a batch in flight (a scheduling hint).
    actor_memory = max(256 * 2**20, 3 * weights)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus_per_actor = ray_options.gpus_per_actor if ray_options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    max_actors = ray_options.max_actors or max(1, int(gpus // gpus_per_actor) if gpus_per_actor else 1)
    device = ray_options.device if ray_options.device != "auto" else ("cuda" if gpus_per_actor else "cpu")

    units = source.my_units()
    error_text = None
    stopped = False
    try:
        if units:
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True  # "last wins" needs input order
            context.enable_progress_bars = False
            dataset = (
                ray.data.from_items([{"unit": i} for i in range(len(units))], override_num_blocks=len(units))
                .flat_map(_Reader(source, units, name, _portable(options), gate), num_cpus=1)
                .map(_Decoder(*image_size, options.max_pixels), num_cpus=1)
                # The memory reservation also keeps Ray from fusing decoding into the model's actor
                # when there are no GPUs to tell the stages apart.
                .map(EmbedActor, fn_constructor_args=(model, device, options.batch_size, text_model, encoder_options or {}),
                     concurrency=(1, max_actors), num_gpus=gpus_per_actor, num_cpus=1, memory=actor_memory)
            )
            for item in dataset.iter_rows():
                rejected = ray.get(gate.write.remote(item["job"]))
                if on_progress:
                    on_progress(item["source_rows"], rejected)
                if options.stop is not None and options.stop.is_set():
                    stopped = True
                    break
        if on_stage and options.optimize and not stopped:
            on_stage("building the vector index")
    except Exception as error:  # noqa: BLE001 - reported in the summary, then raised
        error_text = _reason(error)
        raise_later = error
    else:
        raise_later = None
    summary = ray.get(gate.finish.remote(options.optimize, stopped, error_text))
    summary.seconds = time.perf_counter() - started
    ray.kill(gate)
    write_rejects_of(summary, options)
    if raise_later is not None:
        failure = MmindexError(f"the Ray run failed: {error_text}")
        failure.summary = summary  # type: ignore[attr-defined]
        raise failure from raise_later
    return summary


class _Reader:
    """Read task: one row group → source batches → rows (checked, with ids and hashes) → admitted jobs."""

    def __init__(self, source, units, model: str, options, gate):
        self.source, self.units, self.model, self.options, self.gate = source, units, model, options, gate

    def __call__(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        # the ray extra: only --engine ray loads it
        import ray

        jobs = []
        unit = self.units[item["unit"]]
        for source_batch in self.source.batches(self.options.batch_size, self.options.skip_bad_files, units=[unit]):
            tally, rows = read_batch(self.source, source_batch, self.model, self.options)
            changed = ray.get(self.gate.admit.remote(tally, rows))
            size = source_batch.batch.num_rows if source_batch.batch is not None else 0
            jobs.append({"job": pickle.dumps(Job(0, changed, size, self.options.thumbnails))})
        return jobs


class _Decoder:
    """Decode task: image bytes → RGB arrays (the rejected rows travel with the job, to be counted)."""

    def __init__(self, image_size: int | None, center_crop: bool, max_pixels: int):
        self.image_size, self.center_crop, self.max_pixels = image_size, center_crop, max_pixels

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        job = pickle.loads(item["job"])
        rows, images, rejected = decode_rows(job, self.image_size, self.max_pixels, self.center_crop)
        arrays = [np.asarray(image, dtype=np.uint8) for image in images]
        return {"job": pickle.dumps((Job(job.seq, rows, job.source_rows, job.thumbnail), arrays, rejected))}


def _portable(options):
    """The options without what cannot cross processes (the stop event stays with the driver)."""
    return replace(options, stop=None)


def _reason(error: BaseException) -> str:
    """The innermost message of a Ray task or actor error."""
    cause = getattr(error, "cause", None) or error.__cause__
    lines = [line.strip() for line in str(cause or error).strip().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or line.startswith("Exception")]
    return (errors[-1] if errors else lines[-1]) if lines else type(error).__name__
