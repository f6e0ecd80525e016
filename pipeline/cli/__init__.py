"""The ``mmindex`` command: parse options, call the library, print.

Errors the user can fix come out as one line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import json
import os
import re
import sys
from functools import wraps
from typing import Any

import click

from mmindex import __version__
from mmindex.connectors import DEFAULT_DATA_DIR
from mmindex.pipeline.cli.format import (SectionedCommand, display_width, field_order, fields_line, short,
                                          terminal_width)
from mmindex.errors import MmindexError
from mmindex.pipeline.cli.progress import DEFAULT_INTERVAL, open_progress

EXIT_ERROR = 1


def friendly_errors(function):
    """Turn project errors into click errors: one clear line, exit code 1, no traceback."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except MmindexError as error:
            raise click.ClickException(str(error)) from error

    return wrapper


STORE_PARAMS = ("collection", "data_dir", "url", "api_key", "ca_cert", "timeout", "prefer_grpc", "retries",
                "retry_wait")
LAYOUT_PARAMS = ("shard_number", "replication_factor", "write_consistency_factor", "on_disk", "quantization",
                 "hnsw_m", "hnsw_ef_construct")


def store_options(function=None, *, collection_required: bool = True, layout: bool = False):
    """Options that say where the collection lives; the command receives them as ``store: StoreSettings``.

    With ``layout``, also the options that lay out a new collection (shards, quantization, HNSW…).
    """
    if function is None:
        return lambda f: store_options(f, collection_required=collection_required, layout=layout)
    from mmindex.pipeline.config import StoreSettings

    decorators = [
        click.option("--collection", "-c", default="default" if collection_required else None,
                     show_default=collection_required,
                     help="Collection name." if collection_required else
                     "Also measure through this collection's own search (its ANN index), for comparison."),
        click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False),
                     help="Folder of the embedded Qdrant Edge store."),
        click.option("--url", default=None, envvar=["MMINDEX_URL", "QDRANT_URL"],
                     help="Qdrant server URL (http://host:6333, https://…); when set, the server is used "
                          "instead of the embedded store. Env: QDRANT_URL."),
        click.option("--api-key", default=None, envvar=["MMINDEX_API_KEY", "QDRANT_API_KEY"],
                     help="Qdrant server API key. Env: QDRANT_API_KEY. Never printed; a warning if it would go "
                          "over plain http:// to another host."),
        click.option("--ca-cert", default=None, type=click.Path(dir_okay=False),
                     help="Server: PEM file of a private CA to verify https:// (and gRPC TLS) against."),
        click.option("--timeout", default=60, show_default=True, type=click.IntRange(1),
                     help="Server: seconds before a request times out (then it is retried)."),
        click.option("--prefer-grpc", is_flag=True, help="Server: talk gRPC (port 6334) instead of REST."),
        click.option("--retries", default=5, show_default=True, type=click.IntRange(0),
                     help="Server: retries of a call that failed transiently (unreachable, timeout, 429, 5xx)."),
        click.option("--retry-wait", default=0.5, show_default=True, type=click.FloatRange(0),
                     help="Server: first backoff in seconds; doubles each retry, with jitter, up to 30 s."),
    ]
    if layout:
        decorators += [
            click.option("--shard-number", default=None, type=click.IntRange(1),
                         help="New server collection: shards to split it into (≥ nodes of the cluster)."),
            click.option("--replication-factor", default=None, type=click.IntRange(1),
                         help="New server collection: copies of each shard (2+ survives a node loss)."),
            click.option("--write-consistency-factor", default=None, type=click.IntRange(1),
                         help="New server collection: replicas that must confirm a write."),
            click.option("--on-disk", is_flag=True, help="New collection: keep vectors on disk (memory-mapped)."),
            click.option("--quantization", type=click.Choice(["int8"]), default=None,
                         help="New collection: int8 scalar quantization (4x less memory; queries rescore "
                              "with the full vectors)."),
            click.option("--hnsw-m", default=None, type=click.IntRange(0),
                         help="New collection: HNSW links per node (default 16; more = better recall, more RAM)."),
            click.option("--hnsw-ef-construct", default=None, type=click.IntRange(4),
                         help="New collection: HNSW build beam (default 100)."),
        ]

    @wraps(function)
    def wrapper(*args, **kwargs):
        from mmindex.connectors.base import CollectionOptions

        settings = {name: kwargs.pop(name) for name in STORE_PARAMS}
        layout_values = {name: kwargs.pop(name) for name in LAYOUT_PARAMS if name in kwargs}
        try:
            options = CollectionOptions(**layout_values)
        except ValueError as error:
            raise click.UsageError(str(error)) from error
        kwargs["store"] = StoreSettings(**settings, options=options)
        return function(*args, **kwargs)

    for decorator in reversed(decorators):
        wrapper = decorator(wrapper)
    return wrapper


def _split(values: tuple[str, ...] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mmindex", message="%(prog)s, version %(version)s")
@click.option("--config", "config_path", default=None, envvar="MMINDEX_CONFIG", type=click.Path(dir_okay=False),
              help="TOML file of settings (default: ./mmindex.toml if present). Env: MMINDEX_CONFIG.")
@click.pass_context
def main(ctx, config_path):
    """mmindex: index images and captions from Parquet into Qdrant, and search across them.

    \b
    Quick start (offline, from a checkout, with the bundled demo model):
      mmindex sample data --rows 500 --image-kind path
      mmindex ingest data --collection shapes --model demo/shapes-clip
      mmindex query "a blue triangle" --collection shapes --where "year >= 2020"
      mmindex query --image data/images/shape-0000003.jpg -c shapes --target text
      mmindex eval data --model demo/shapes-clip
      mmindex serve -c shapes --image-root data        # a search page on http://127.0.0.1:8080/

    The embedded store (Qdrant Edge, no server) lives under --data-dir; pass --url (or set
    QDRANT_URL) to use a Qdrant server instead.

    Every option can also come from the environment as MMINDEX_<OPTION> (e.g.
    MMINDEX_BATCH_SIZE=128) or from a TOML file (--config, or ./mmindex.toml): flags win over
    the environment, which wins over the file. `mmindex config show` prints what applies.
    MMINDEX_LOG_LEVEL=INFO shows mmindex's own notes on stderr (e.g. why a query did not take the
    fast path).
    """
    from mmindex.pipeline.config import default_map, find_config, read_config

    level = os.environ.get("MMINDEX_LOG_LEVEL", "").strip().upper()
    if level:
        import logging

        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("mmindex").setLevel(level if isinstance(logging.getLevelName(level), int) else "INFO")

    path = find_config(config_path)
    ctx.ensure_object(dict)["config_path"] = path
    if path:
        try:
            ctx.default_map = default_map(read_config(path), _configurable(), path)
        except MmindexError as error:
            raise click.ClickException(str(error)) from error


def _configurable() -> dict[str, click.Command]:
    """The commands a config file can set options of."""
    return {name: command for name, command in main.commands.items() if not isinstance(command, click.Group)}


STORE_SECTION = ("Store (embedded, or a Qdrant server)",
                 ["data_dir", "url", "api_key", "ca_cert", "timeout", "prefer_grpc", "retries", "retry_wait"])
INGEST_SECTIONS = [
    ("Input, model and collection", ["collection", "model", "text_model", "image_col", "caption_col", "id_col", "payload_cols",
                                     "index_fields", "image_root", "thumbnails", "data_dir", "url"]),
    ("Keeping the collection in sync", ["sync", "source_name", "dry_run"]),
    ("Reliability", ["missing_caption", "max_pixels", "max_payload_bytes", "skip_bad_files", "rejects", "no_rejects",
                     "max_reject_rate", "report"]),
    ("Throughput", ["device", "backend", "model_precision", "model_threads", "devices", "decode", "batch_size", "workers", "no_pipeline", "parallel_writes", "bulk_load",
                    "no_optimize", "shard_spec", "engine", "ray_address", "ray_actors", "ray_gpus_per_actor"]),
    ("Output", ["as_json", "quiet", "progress_interval", "print_config"]),
    ("Server connection and collection layout (Qdrant server or cluster)",
     ["api_key", "ca_cert", "timeout", "prefer_grpc", "retries", "retry_wait", "shard_number", "replication_factor",
      "write_consistency_factor", "on_disk", "quantization", "hnsw_m", "hnsw_ef_construct"]),
]


def column_options(function):
    """--image-col, --caption-col and --id-col, the same in every command that reads Parquet."""
    for decorator in reversed([
        click.option("--image-col", default=None,
                     help="Image column (bytes, {bytes, path} struct, or path). Detected if unset."),
        click.option("--caption-col", default=None, help="Caption column. Detected if unset (caption/text/txt…)."),
        click.option("--id-col", default=None,
                     help="Id column; point ids are UUIDv5 of it. Detected if unset (id/key)."),
    ]):
        function = decorator(function)
    return function


def device_option(purpose: str):
    """--device, with what it runs on that device."""
    return click.option("--device", default="auto", show_default=True,
                        help=f"Where to {purpose}: cuda, cuda:1, mps, cpu, or auto (CUDA, then MPS, then CPU).")


def inference_options(function):
    """--backend, --model-precision and --model-threads: how the model's forward passes run."""
    function = click.option("--model-threads", default=None, type=click.IntRange(1), envvar="MMINDEX_MODEL_THREADS",
                            help="Threads for the model's forward passes (default: the library's own, one per core); "
                                 "the rest of the cores are left to decode workers.")(function)
    function = click.option("--model-precision", "model_precision", default=None,
                            type=click.Choice(["fp32", "int8"]), envvar="MMINDEX_MODEL_PRECISION",
                            help="int8: ONNX Runtime's dynamic int8 quantisation of the towers (faster, other "
                                 "vectors: recorded in the collection, mixing refused). Default: the collection's, "
                                 "else fp32.")(function)
    return click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnx"]),
                        envvar="MMINDEX_BACKEND",
                        help="Run the model in torch (eager) or onnx (ONNX Runtime: the towers are exported once per "
                             "model into $MMINDEX_CACHE/onnx, about a minute for ViT-B/32 on 2 cores, and checked "
                             "against torch). auto: the fastest for the device: onnx on the CPU and for int8, torch "
                             "on CUDA and MPS (open_clip models: torch).")(function)


def progress_interval_option(function):
    return click.option("--progress-interval", default=DEFAULT_INTERVAL, show_default=True, type=click.FloatRange(0),
                        metavar="SECONDS",
                        help="When stderr is not a terminal (cron, systemd, Kubernetes): write a progress line "
                             "this often, instead of a redrawn bar.")(function)


@main.command(cls=SectionedCommand, sections=INGEST_SECTIONS)
@click.argument("inputs", nargs=-1, required=True)
@store_options(layout=True)
@click.option("--model", "-m", default=None,
              help="CLIP-style model: a sentence-transformers or transformers Hub id or local folder (CLIP, SigLIP, "
                   "Chinese-CLIP), or an open_clip model (open_clip:ARCH/TAG, hf-hub:ORG/NAME, a local open_clip "
                   "folder). Default: the model the collection was built with, else clip-ViT-B-32.")
@click.option("--text-model", default=None,
              help="A text model trained into --model's space (e.g. sentence-transformers/clip-ViT-B-32-multilingual-"
                   "v1 beside clip-ViT-B-32): it embeds captions and text queries; recorded in the collection, so "
                   "query, serve and eval use it. Default: the collection's, else --model embeds text too.")
@device_option("run the model")
@inference_options
@click.option("--devices", default=None,
              help="Several devices, one model replica each, fed by one decode pool: e.g. cuda:0,cuda:1.")
@click.option("--decode", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "gpu"]),
              envvar="MMINDEX_DECODE",
              help="Who decodes JPEGs: cpu (Pillow, in the workers) or gpu (torchvision on the model's GPU; pip "
                   "install 'mmindex[gpu]'). auto: gpu when the model runs on CUDA and torchvision imports.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="Rows per forward pass (halved automatically after a CUDA out-of-memory error).")
@click.option("--workers", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(1),
              help="Threads that decode and preprocess images while the model runs.")
@click.option("--no-pipeline", is_flag=True,
              help="Run the stages one after another in one thread (the reference path; slower).")
@click.option("--parallel-writes", default=4, show_default=True, type=click.IntRange(1),
              help="Server: upsert requests in flight at once.")
@click.option("--bulk-load", is_flag=True,
              help="Server: defer HNSW index building during this load and restore it at the end.")
@column_options
@click.option("--payload-cols", multiple=True, help="Comma-separated payload columns (default: every other column).")
@click.option("--index-fields", multiple=True,
              help="Comma-separated payload fields to index for fast filtering, as NAME or NAME:TYPE.")
@click.option("--max-pixels", default=89_478_485, show_default=True, type=click.IntRange(1),
              help="Reject images with more pixels than this (decompression bombs).")
@click.option("--image-root", default=None,
              help="Folder that image paths must stay inside; relative paths resolve against it. Paths "
                   "leading outside it (.., absolute paths, links) are rejected. Default: paths resolve "
                   "against each Parquet file's folder, unconfined.")
@click.option("--missing-caption", type=click.Choice(["image-only", "reject"]), default="image-only",
              show_default=True, help="Rows with a null or empty caption: store the image vector only, or reject.")
@click.option("--max-payload-bytes", default=1024 * 1024, show_default=True, type=click.IntRange(1024),
              help="Reject rows whose payload (other columns, caption) is larger than this as JSON.")
@click.option("--skip-bad-files", is_flag=True,
              help="Report unreadable or mismatched Parquet files (their rows as rejected) and go on, "
                   "instead of stopping at the first.")
@click.option("--no-optimize", is_flag=True, help="Skip building the vector index at the end (embedded store).")
@click.option("--thumbnails", default=0, show_default=True, type=click.IntRange(0, 512), metavar="PX",
              help="Store a JPEG thumbnail of PX pixels (e.g. 128, ~4 KB) in each payload, for `mmindex serve`'s page.")
@click.option("--rejects", default=None, type=click.Path(dir_okay=False),
              help="Parquet file for rejected rows (file, row, id, stage, reason). Default: rejects.parquet in "
                   "the collection's folder (embedded store) or ./mmindex-rejects-COLLECTION.parquet (server).")
@click.option("--no-rejects", is_flag=True, help="Do not write a rejects file.")
@click.option("--report", default=None, type=click.Path(dir_okay=False),
              help="Also write the run summary as JSON to this file (status, counts, rejections, timings).")
@click.option("--max-reject-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Exit with code 3 if more than this fraction of the rows read was rejected (and then --sync "
                   "deletes nothing).")
@click.option("--shard", "shard_spec", default=None, metavar="I/N",
              help="Take only part I of N of the input (0-based; split by file and row group), so N workers "
                   "(an Indexed Job, a Slurm array) together ingest every row exactly once. auto/N takes I "
                   "from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: threads in this process. ray: the same stages on a Ray cluster (mmindex[ray]).")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (ray://host:10001 or auto); default: start a local Ray.")
@click.option("--ray-actors", default=None, type=click.IntRange(1),
              help="Ray: most embedding actors (the pool scales from 1 up to this; default: GPUs, or 1).")
@click.option("--ray-gpus-per-actor", default=None, type=click.FloatRange(0),
              help="Ray: GPUs per embedding actor (default 1 when the cluster has GPUs, else 0).")
@click.option("--sync", is_flag=True,
              help="Make the collection equal to INPUTS: after a complete run, delete this source's points whose "
                   "rows are gone (a run with unreadable files deletes nothing).")
@click.option("--source", "source_name", default=None, metavar="NAME",
              help="Name of this source in the collection (recorded in _source.name; --sync deletes only its "
                   "points). Default: the inputs, as absolute paths.")
@click.option("--dry-run", is_flag=True,
              help="Read and compare only: count the rows that would be embedded, the payloads that would be "
                   "updated and the points that would be deleted; write nothing.")
@click.option("--print-config", is_flag=True,
              help="Check the options and print the resolved settings as JSON; read, load and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, progress lines or notes.")
@progress_interval_option
@friendly_errors
def ingest(inputs, store, model, text_model, device, backend, model_precision, model_threads, devices, decode, batch_size, workers, no_pipeline, parallel_writes, bulk_load,
           image_col, caption_col, id_col, payload_cols, index_fields, max_pixels, image_root, missing_caption,
           max_payload_bytes, skip_bad_files, no_optimize, thumbnails, rejects, no_rejects, report, max_reject_rate, shard_spec,
           engine, ray_address, ray_actors, ray_gpus_per_actor, sync, source_name, dry_run, print_config, as_json, quiet,
           progress_interval):
    """Embed images and captions from Parquet INPUTS and upsert one point per row.

    INPUTS are Parquet files, directories, globs or object-store URIs (s3://, gs://, …).
    Each row becomes a point with named vectors `image` and `text` and the other columns
    as payload. Point ids are deterministic, so re-running never duplicates, and rows
    whose image, caption and model are unchanged are not embedded again: a run that was
    killed resumes by running the same command again.

    Every row read is counted once: upserted, payload updated (same content, other payload:
    vectors kept), unchanged, or rejected with a stage (read, decode, embed) and a reason, kept in
    the rejects file.

    Scheduled runs: points record their source (--source, default the inputs); --sync then
    deletes the source's points whose rows are gone, so the collection equals its inputs.
    --dry-run says what a run would embed, update and delete. SIGTERM or Ctrl-C finishes the batches
    in flight, writes them, prints the summary and exits; a second one stops at once.

    Progress goes to stderr: a bar in a terminal; in logs (cron, systemd, Kubernetes) a line
    every --progress-interval seconds with rows, rows/s, rejects and ETA.

    \b
    Exit codes: 0 done; 1 error (the summary says what was written before it);
    2 usage error; 3 more rows rejected than --max-reject-rate; 130/143 interrupted.

    \b
    Examples:
      mmindex ingest data/*.parquet --collection photos
      mmindex ingest s3://bucket/laion/ --image-col jpg --caption-col txt --index-fields year,lang
      mmindex ingest photos.parquet --image-root /srv/photos --report run.json --max-reject-rate 0.01
      QDRANT_URL=http://localhost:6333 mmindex ingest data/ -c photos --model ./my-clip
      mmindex ingest data/ -c photos --model open_clip:ViT-B-32/laion2b_s34b_b79k
      mmindex ingest data/ -c photos --model clip-ViT-B-32 \\
          --text-model sentence-transformers/clip-ViT-B-32-multilingual-v1   # queries in 50+ languages
      mmindex ingest data/ -c photos --sync --dry-run            # what a nightly sync would do
      mmindex ingest data/ -c photos --sync --source nightly     # then do it
    """
    import signal
    import threading

    from mmindex.pipeline.models.encoder import (
        Encoder,
        check_model_spec,
        model_source,
        model_to_load,
        precision_to_load,
        recorded_model_changed,
        text_model_to_load,
    )
    from mmindex.pipeline.ingest.run import IngestOptions, utc_now, write_report
    from mmindex.pipeline.ingest.run import ingest as run_ingest
    from mmindex.pipeline.ingest.source import open_source, parse_shard

    started_at = utc_now()
    settings = store
    collection = settings.collection
    shard = parse_shard(shard_spec)
    if no_rejects:
        rejects = None
    elif rejects is None:
        suffix = f"-shard-{shard[0]}-of-{shard[1]}" if shard else ""
        rejects = (f"mmindex-rejects-{collection}{suffix}.parquet" if settings.url
                   else os.path.join(settings.data_dir, collection, f"rejects{suffix}.parquet"))
    if print_config:
        click.echo(json.dumps({
            "command": "ingest", "inputs": list(inputs), "store": settings.to_dict(), "model": model,
            "text_model": text_model, "backend": backend, "model_precision": model_precision,
            "model_threads": model_threads, "decode": decode,
            "engine": engine, "shard": list(shard) if shard else None, "batch_size": batch_size, "workers": workers,
            "rejects": rejects, "report": report, "max_reject_rate": max_reject_rate, "sync": sync,
            "source": source_name, "dry_run": dry_run,
            "config_file": (click.get_current_context().find_root().obj or {}).get("config_path"),
        }, default=str))
        return
    store = settings.open(parallel_writes=parallel_writes, bulk_load=bulk_load)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, frame):
        # Only flags here: writing to stderr inside a handler can collide with the progress bar's write.
        if stop.is_set():
            os.write(2, f"\n{signal.Signals(signum).name} again: stopping now; rows in flight are taken up by "
                        "the next run\n".encode())
            os._exit(128 + signum)
        received.append(signum)
        stop.set()

    announced = threading.Lock()

    def announce():
        if stop.is_set() and announced.acquire(blocking=False):
            # In a terminal the note must leave the progress bar's line; a log has whole lines already.
            click.echo(("\n" if sys.stderr.isatty() else "") + f"{signal.Signals(received[0]).name}: finishing the "
                       "batches in flight, then stopping (send it again to stop at once)", err=True)

    def watch():
        while not finished.wait(0.05):
            announce()

    finished = threading.Event()
    threading.Thread(target=watch, name="mmindex-signals", daemon=True).start()

    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[sig] = signal.signal(sig, on_signal)
    summary = None
    failure = None
    model_name = None
    try:
        if decode == "gpu":  # refused before the model loads (it may take minutes)
            from mmindex.pipeline.ingest.gpu_decode import check_gpu_decode_possible

            check_gpu_decode_possible(_split((devices,))[0] if devices else device, engine, not no_pipeline)
        existing = store.spec()
        meta = store.metadata() if existing else None
        given, model = model, model_to_load(meta, model)
        given_text, text_model = text_model, text_model_to_load(meta, text_model)
        check_model_spec(model, "--model")
        if text_model is not None:
            check_model_spec(text_model, "--text-model")
        precision = precision_to_load(meta, model_precision)
        source = open_source(list(inputs), image_col, caption_col, id_col, _split(payload_cols),
                             skip_bad_files=skip_bad_files, shard=shard)
        if existing is not None:  # refused before the model loads (it may take minutes)
            from mmindex.connectors.base import CollectionSpec

            _, name, fingerprint = model_source(model)
            _, text_name, text_fingerprint = model_source(text_model) if text_model else (None, None, None)
            ours = CollectionSpec(name, -1, fingerprint=fingerprint, text_model=text_name,
                                  text_fingerprint=text_fingerprint, precision=precision)
            if precision != existing.precision:  # only the precision differs: say so, not "the files changed"
                ours.check_matches(existing, collection)
            if not given and not ours.same_image_model(existing):
                raise recorded_model_changed(meta, model, ours.fingerprint, collection)
            if text_model and not given_text and not ours.same_model(existing) and ours.same_image_model(existing):
                raise recorded_model_changed(meta, text_model, ours.text_fingerprint, collection,
                                             key="text_model")
            ours.check_matches(existing, collection)
        total = source.count_rows(skip_bad_files)
        if not quiet:
            for note in source.mapping.notes:
                click.echo(f"note: {note}", err=True)
            if shard:
                click.echo(f"shard {shard[0]}/{shard[1]}: {len(source.my_units())} of {len(source.units())} "
                           "row groups", err=True)
        device_list = _split((devices,)) if devices else []
        for name in device_list:  # before the model loads: e.g. "cpu+cpu" (devices are separated by commas)
            if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
                raise click.BadParameter(f"{name!r} is not a device; give devices separated by commas, such as "
                                         "cuda:0,cuda:1 or cpu,cpu", param_hint="--devices")
        encoder = None
        if engine == "local":
            if not quiet:
                click.echo(f"loading model {model} …", err=True)
            encoder = Encoder(model, device=device_list[0] if device_list else device, batch_size=batch_size,
                              text_model=text_model, backend=backend, precision=precision, threads=model_threads)
            model_name = encoder.name
            if not quiet:
                click.echo(f"model on {encoder.device}, {encoder.dim}-d vectors; {total:,} rows in "
                           f"{len(source.files)} file(s) → collection {collection!r} ({settings.kind})", err=True)
        options = IngestOptions(
            batch_size=batch_size, workers=workers, devices=device_list, pipelined=not no_pipeline, decode=decode,
            index_fields=_split(index_fields) or (), max_pixels=max_pixels, optimize=not no_optimize,
            rejects_path=rejects, image_root=_image_root(image_root), missing_caption=missing_caption,
            skip_bad_files=skip_bad_files, max_payload_bytes=max_payload_bytes, stop=stop, thumbnails=thumbnails,
            source_name=source_name, sync=sync, dry_run=dry_run, max_reject_rate=max_reject_rate,
        )
        with open_progress("ingest", "rows", total, quiet=quiet, interval=progress_interval) as bar:
            def stage(message: str) -> None:
                bar.close()  # the rows are done: their last progress line comes before the note
                if not quiet:
                    bar.write(f"{message} …")

            try:
                if engine == "ray":
                    from mmindex.pipeline.ingest.ray import RayOptions, ingest_on_ray

                    store.close()  # the Ray run's writer opens the store in its own process
                    summary = ingest_on_ray(source, settings, model, options, RayOptions(
                        address=ray_address, max_actors=ray_actors, gpus_per_actor=ray_gpus_per_actor,
                        device=device), on_progress=bar.update, on_stage=stage, text_model=text_model,
                        encoder_options={"backend": backend, "precision": precision, "threads": model_threads})
                    model_name = summary.model
                else:
                    summary = run_ingest(source, store, encoder, options, on_progress=bar.update, on_stage=stage)
            except Exception as error:
                summary = getattr(error, "summary", None)
                failure = error
                if summary is None:
                    raise
    finally:
        try:
            store.close()
        finally:
            finished.set()
            announce()  # if the run ended before the watcher saw the signal
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)

    exit_code = 0
    problem = None
    if failure is not None:
        exit_code = 1
        problem = (f"{failure}\n  {summary.upserted:,} rows were written before the failure and are kept; "
                   "run the same command again to go on (stored rows are skipped, not embedded again)")
    elif summary.status == "interrupted":
        exit_code = 128 + (received[0] if received else signal.SIGINT)
        problem = (f"interrupted: {summary.not_processed:,} rows read but not processed; run the same command "
                   "again to go on")
    elif summary.read and summary.reject_rate > max_reject_rate:
        exit_code = 3
        problem = (f"{summary.rejected:,} of {summary.read:,} rows rejected ({summary.reject_rate:.1%}), more than "
                   f"--max-reject-rate {max_reject_rate:.1%}"
                   + (f"; see {summary.rejects_file}" if summary.rejects_file else ""))
    if not summary.adds_up():
        exit_code, problem = 1, "internal error: the run summary does not add up"
    if report:
        write_report(summary, report, {
            "exit_code": exit_code, "problem": problem, "started_at": started_at, "finished_at": utc_now(),
            "inputs": list(inputs), "store": settings.kind, "shard": shard_spec, "engine": engine,
            "model": model_name,
            "max_reject_rate": max_reject_rate,
        })
    if as_json:
        data = summary.to_dict()
        data.update({"exit_code": exit_code, "problem": problem})
        click.echo(json.dumps(data, default=str))
    else:
        _print_summary(summary)
    if problem:
        click.echo(f"Error: {problem}", err=True)
        sys.exit(exit_code)


def _image_root(root: str | None) -> str | None:
    """--image-root as a path on the inputs' filesystem: local folders become absolute."""
    if root is None:
        return None
    if "://" in root:
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(root)[1]
    if not os.path.isdir(root):
        raise click.BadParameter(f"{root} is not a folder", param_hint="--image-root")
    return os.path.realpath(root)


def _print_summary(summary) -> None:
    status = "" if summary.status == "ok" else f" [{summary.status.upper()}]"
    if summary.dry_run:
        click.echo(
            f"collection {summary.collection} [DRY RUN, nothing written]: read {summary.read:,} rows from "
            f"{summary.files} file(s) of source {summary.source!r}\n"
            f"  would embed {summary.upserted:,}  update the payload of {summary.payload_updated:,}  "
            f"unchanged {summary.unchanged:,}  rejected {summary.rejected:,}  "
            + ("stale points not counted (an input was not read in full)" if summary.stale is None else
               f"would delete {summary.deleted:,}" if summary.deleted or not summary.stale else
               f"stale {summary.stale:,} (--sync would delete them)"))
        for warning in summary.warnings[:5]:
            click.echo(f"  warning: {warning}")
        return
    click.echo(
        f"collection {summary.collection}{status}: read {summary.read:,} rows from {summary.files} file(s) in "
        f"{summary.seconds:.1f}s ({summary.rows_per_second:,.1f} rows/s)\n"
        f"  embedded {summary.embedded:,}  upserted {summary.upserted:,}"
        + (f"  payload updated {summary.payload_updated:,}" if summary.payload_updated else "")
        + f"  unchanged (skipped) {summary.unchanged:,}  rejected {summary.rejected:,}"
        + (f"  deleted {summary.deleted:,}" if summary.deleted else "")
        + (f"  not processed {summary.not_processed:,}" if summary.not_processed else "")
        + (f"  duplicate ids {summary.duplicate_ids:,}" if summary.duplicate_ids else "")
        + (f"  (batch halved after {summary.oom_retries} CUDA out-of-memory errors)" if summary.oom_retries else "")
    )
    extras = [f"{summary.image_only:,} without caption (image vector only)" if summary.image_only else "",
              f"{summary.truncated_captions:,} captions longer than the model's limit (embedded truncated, "
              "payload _caption_truncated=true)" if summary.truncated_captions else "",
              f"{summary.cleaned_captions:,} captions cleaned of control characters or bad UTF-8"
              if summary.cleaned_captions else ""]
    for extra in filter(None, extras):
        click.echo(f"  {extra}")
    if summary.stale:
        click.echo(f"  stale {summary.stale:,}: points of source {summary.source!r} that no row of this run produced "
                   "(rows deleted or edited in the inputs); --sync deletes them")
    for skipped in summary.skipped_files:
        click.echo(f"  skipped file {skipped['file']}: {skipped['reason']}")
    for rejection in summary.rejections[:10]:
        click.echo(f"  rejected {rejection.file} row {rejection.row} [{rejection.stage}]: {rejection.reason}")
    if summary.rejected > 10:
        click.echo(f"  … and {summary.rejected - 10:,} more rejected rows")
    if summary.rejects_file:
        click.echo(f"  all rejected rows: {summary.rejects_file}")
    for warning in summary.warnings[:5]:
        click.echo(f"  warning: {warning}")
    if len(summary.warnings) > 5:
        click.echo(f"  … and {len(summary.warnings) - 5:,} more warnings (--report FILE keeps them)")


QUERY_SECTIONS = [
    ("Query", ["image_paths", "collection", "target", "where", "filter_json", "limit", "offset", "fields", "as_json",
               "model", "text_model", "device", "backend", "model_precision", "model_threads"]),
    ("Search tuning", ["score_threshold", "exact", "hnsw_ef", "oversampling"]),
    STORE_SECTION,
]


@main.command(cls=SectionedCommand, sections=QUERY_SECTIONS)
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@click.option("--image", "image_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Query with this image file (repeatable: one query each).")
@click.option("--target", "-t", type=click.Choice(["image", "text", "both"]), default=None,
              help="Which vectors to search: image (default), text (captions), or both (rankings fused by "
                   "reciprocal rank).")
@store_options
@click.option("--model", "-m", default=None,
              help="Model to encode the query. Default: the one the collection was built with.")
@click.option("--text-model", default=None,
              help="Encode text queries with this text model, trained into the collection's image model space "
                   "(same vector size). Default: the collection's text model, else its model.")
@device_option("encode the queries")
@inference_options
@click.option("--where", "-w", default=None,
              help="Filter, e.g. \"year >= 2020 and color in ('red', 'blue') and shape != 'star'\".")
@click.option("--filter-json", default=None, help="A raw Qdrant filter as JSON (ANDed with --where).")
@click.option("--limit", "-k", default=10, show_default=True, type=click.IntRange(1, 10_000),
              help="Hits to return per query.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0),
              help="Skip this many best hits first (for paging: --offset 10 --limit 10 is page 2).")
@click.option("--fields", "fields", default=None, metavar="A,B,…",
              help="Payload fields to show under each hit (default: the indexed fields, then the rest, cut to the "
                   "terminal width).")
@click.option("--score-threshold", default=None, type=float, help="Drop hits scoring below this (cosine).")
@click.option("--exact", is_flag=True, help="Brute-force search instead of the HNSW index (slow; checks recall).")
@click.option("--hnsw-ef", default=None, type=click.IntRange(1), help="HNSW search beam (larger: slower, more exact).")
@click.option("--oversampling", default=2.0, show_default=True, type=click.FloatRange(1),
              help="Quantized collections: candidates per result rescored with the full vectors.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per hit, one per line, with the query it answers and its rank.")
@friendly_errors
def query(texts, image_paths, target, store, model, text_model, device, backend, model_precision, model_threads, where, filter_json, limit, offset, fields, score_threshold,
          exact, hnsw_ef, oversampling, as_json):
    """Search a collection with TEXT or an --image, across modalities.

    Several TEXTs (or --image options) run one query each, with the model loaded once;
    each query's hits are printed under a header that names the query, the collection
    and the filter.

    \b
    Examples:
      mmindex query "a dog running on a beach" -c photos --limit 5 --where "year >= 2020"
      mmindex query --image query.jpg -c photos                 # image → similar images
      mmindex query --image query.jpg -c photos --target text   # image → captions
      mmindex query "a red circle" "a blue square" --fields color,shape,year
      mmindex query "a red circle" --target text --json         # text → captions, JSON lines
      mmindex query "cat" --where "created >= '2021-06-01' and tags in ('cat', 'kitten')"
      mmindex query "海滩上的狗" -c photos --text-model sentence-transformers/clip-ViT-B-32-multilingual-v1
    """
    from mmindex.pipeline.models.encoder import encoder_for, model_display_name
    from mmindex.errors import InputError, StoreError
    from mmindex.pipeline.ingest.images import RejectedImage, decode_image
    from mmindex.pipeline.query.search import load_filter_json, search
    from mmindex.pipeline.models.quick import quick_encoder_for

    if not texts and not image_paths:
        raise click.UsageError("give a TEXT to search for, or --image FILE")
    if any(not text.strip() for text in texts):
        raise click.UsageError("a TEXT to search for is empty")
    chosen = list(dict.fromkeys(name.strip() for name in fields.split(",") if name.strip())) if fields else None
    settings = store
    collection = settings.collection
    store = settings.open()
    answers = []
    try:
        spec = store.spec()
        if spec is None:
            target = getattr(store, "alias_of", None)
            raise StoreError((f"alias {collection!r} points to collection {target!r}, which" if target else
                              f"collection {collection!r}") + " does not exist"
                             + (f" on {settings.url}" if settings.url else f" under {settings.data_dir}")
                             + ("; point the alias at a collection (mmindex alias set)" if target else
                                "; run `mmindex ingest` first"))
        if chosen:
            from mmindex.pipeline.ingest.run import TRUNCATED_KEY

            known = {key for key in spec.payload_types if not key.startswith('"')} | {"caption", TRUNCATED_KEY}
            unknown = [name for name in chosen if name not in known]
            if unknown:
                raise click.UsageError(f"--fields: no field {', '.join(map(repr, unknown))} in collection "
                                       f"{collection!r} (fields: {', '.join(sorted(known))})")
        meta = store.metadata()
        # The fast path (ONNX Runtime + tokenizers from the model's query bundle, no torch), else the full one.
        encoder = quick_encoder_for(meta, model, text_model, model_precision, backend, device, model_threads,
                                    images=bool(image_paths))
        if encoder is None:
            encoder = encoder_for(meta, model, collection, text_model=text_model, device=device, backend=backend,
                                  precision=model_precision, threads=model_threads)
        raw_filter = load_filter_json(filter_json)
        vectors = list(encoder.encode_texts(texts)) if texts else []
        for image_path in image_paths:
            try:
                with open(image_path, "rb") as handle:
                    image = decode_image(handle.read(), encoder.image_size, center_crop=encoder.center_crop)
            except RejectedImage as error:
                raise InputError(f"{image_path}: {error.message}") from error
            vectors.append(encoder.encode_images([image])[0])
        queries = [("text", text) for text in texts] + [("image", path) for path in image_paths]
        for query_input, vector in zip(queries, vectors):
            hits = search(store, vector, target=target or "image", where=where, filter_json=raw_filter, limit=limit,
                          offset=offset, score_threshold=score_threshold, exact=exact, hnsw_ef=hnsw_ef,
                          oversampling=oversampling)
            answers.append((query_input, hits))
        indexed = list(store.info().indexed_fields) if not as_json and not chosen else []
    finally:
        store.close()
    if as_json:
        for (kind, value), hits in answers:
            for rank, hit in enumerate(hits, start=offset + 1):
                answer = hit.to_dict()
                if chosen:
                    answer["payload"] = {k: v for k, v in answer["payload"].items() if k in chosen}
                click.echo(json.dumps({"query": {kind: value}, "rank": rank, **answer}, default=str, ensure_ascii=False))
        return
    searched = {"image": "images", "text": "captions", "both": "images and captions"}[target or "image"]
    width = terminal_width()
    for number, ((kind, value), hits) in enumerate(answers):
        if number:
            click.echo()
        conditions = " and ".join(filter(None, [f"where {where}" if where else "",
                                                "a raw filter" if raw_filter else ""]))
        text_model = (f", text model {model_display_name(encoder.text_name)}"
                      if kind == "text" and encoder.text_name else "")
        rest = (f" → {searched} of {collection!r} (model {model_display_name(encoder.name)}{text_model})"
                + (f", {conditions}" if conditions else "")
                + f": {len(hits)} hit{'s' if len(hits) != 1 else ''}"
                + (f" from rank {offset + 1}" if offset else ""))
        room = max(width - display_width(rest) - 8, 12)  # the query itself is cut first
        label = repr(short(value, room)) if kind == "text" else f"image {short(value, room)}"
        click.echo(label + rest)
        for rank, hit in enumerate(hits, start=offset + 1):
            shown = {**hit.payload, "caption": hit.caption} if chosen and "caption" in chosen else hit.payload
            names = field_order(list(shown), indexed, chosen)
            click.echo(f"{rank:>3}. {hit.score:.4f}  {short(hit.caption or '(no caption)', width - 14)}")
            line = fields_line(shown, names, width - 6, explicit=bool(chosen))
            click.echo(f"      {line}" if line else f"      point {hit.id}")


@main.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def info(store, as_json):
    """Show a collection: points, model, vector size, payload schema and indexes.

    \b
    Example:
      mmindex info --collection photos --json
    """
    from mmindex.pipeline.models.encoder import model_display_name
    from mmindex.pipeline.ingest.run import describe_id_rule, source_filter

    store = store.open()
    try:
        details = store.info().to_dict()
        for name, record in details["sources"].items():
            details["sources"][name] = {**record, "points": store.count(source_filter(name))}
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(details))
        return
    click.echo(f"collection   {details['name']}  ({details['store']} at {details['location']})")
    if details.get("alias_of"):
        click.echo(f"alias of     {details['alias_of']}")
    click.echo(f"points       {details['points']:,}")
    name = model_display_name(details["model"])
    known = [details["model_fingerprint"][:19] + "…" if details["model_fingerprint"] else "",
             f"loaded from {details['model_path'] or details['model']}" if details["model_path"] or name != details["model"]
             else ""]
    if details.get("model_precision", "fp32") != "fp32":
        known.insert(0, f"{details['model_precision']} towers")
    click.echo(f"model        {name}" + (f"  ({', '.join(filter(None, known))})" if any(known) else ""))
    if details.get("text_model"):
        text_known = [(details["text_model_fingerprint"] or "")[:19] + ("…" if details["text_model_fingerprint"] else ""),
                      f"loaded from {details['text_model_path']}" if details["text_model_path"] else ""]
        click.echo(f"text model   {model_display_name(details['text_model'])}"
                   + (f"  ({', '.join(filter(None, text_known))})" if any(text_known) else "")
                   + "  — embeds captions and text queries")
    if details["id_rule"]:
        click.echo(f"point ids    {describe_id_rule(details['id_rule'])}")
    for number, (source, record) in enumerate(details["sources"].items()):
        synced = f", synced {record['synced_at']}" if record.get("synced_at") else ""
        click.echo(f"{'sources' if not number else '':<13}{source}: {record['points']:,} points{synced}")
    click.echo(f"vectors      {', '.join(details['vectors'])}: {details['dim']}-d, {details['distance']}")
    click.echo("payload      " + (", ".join(f"{k} ({v})" for k, v in details["payload_types"].items()) or "-"))
    click.echo("indexed      " + (", ".join(f"{k} ({v})" for k, v in details["indexed_fields"].items()) or "-"))
    click.echo("layout       " + (", ".join(f"{k}={v}" for k, v in details["options"].items()) or "default"))


@main.command("delete")
@store_options
@click.option("--ids", "ids", multiple=True, metavar="A,B,…",
              help="Values of the collection's id column (--id-col at ingest), comma-separated; repeatable.")
@click.option("--point-ids", multiple=True, metavar="UUID,…", help="Point ids as search results show them.")
@click.option("--where", "-w", default=None, help="Points matching this filter (the query --where language).")
@click.option("--filter-json", default=None, help="Points matching this raw Qdrant filter (ANDed with --where).")
@click.option("--source", "source_name", default=None, metavar="NAME",
              help="Every point a source wrote (ingest --source; `mmindex info` lists the sources).")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking (needed when stdin is not a terminal).")
@click.option("--dry-run", is_flag=True, help="Count the matching points; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@friendly_errors
def delete_command(store, ids, point_ids, where, filter_json, source_name, yes, dry_run, as_json):
    """Delete points from a collection: by id, by filter, or everything one source wrote.

    Shows how many points match and asks before deleting (--yes skips the question;
    without a terminal it is required). Deletes are by id: a killed delete is finished by
    running it again. The HTTP service never deletes.

    \b
    Examples:
      mmindex delete -c photos --ids sku-1,sku-2
      mmindex delete -c photos --where "year < 2000" --dry-run
      mmindex delete -c photos --source /srv/old-export --yes
    """
    from mmindex.pipeline.collection.delete import delete_points, select_points
    from mmindex.pipeline.query.search import load_filter_json

    if not (ids or point_ids or where or filter_json or source_name is not None):
        raise click.UsageError("name the points to delete: --ids, --point-ids, --where, --filter-json or --source")
    settings = store
    store = settings.open()
    try:
        selection = select_points(store, ids=_split(ids) or (), point_ids=_split(point_ids) or (), where=where,
                           filter_json=load_filter_json(filter_json), source=source_name)
        outcome = {**selection.to_dict(), "deleted": 0, "dry_run": dry_run}
        count = len(selection.ids)
        if not as_json:
            click.echo(f"{count:,} point(s) of collection {settings.collection!r} match {selection.described}"
                       + (f"; {len(selection.not_found):,} given id(s) have no point" if selection.not_found else ""))
        if count and not dry_run:
            if not yes:
                if not sys.stdin.isatty():
                    raise click.UsageError(f"this would delete {count:,} point(s); pass --yes to confirm "
                                           "(stdin is not a terminal to ask)")
                click.confirm(f"Delete {count:,} point(s) from {settings.collection!r}?", abort=True, err=True)
            outcome["deleted"] = delete_points(store, selection)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(outcome))
    elif outcome["deleted"]:
        click.echo(f"deleted {outcome['deleted']:,} point(s)")


def _print_metrics(title: str, metrics: list[dict[str, Any]]) -> None:
    click.echo(title)
    click.echo(f"  {'direction':<12} {'queries':>7} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'median rank':>11}")
    for m in metrics:
        median = "-" if m["median_rank"] is None else f"{m['median_rank']:g}"
        click.echo(f"  {m['direction']:<12} {m['queries']:>7} {m['recall@1']:>6.3f} {m['recall@5']:>6.3f} "
                   f"{m['recall@10']:>6.3f} {m['mrr']:>6.3f} {median:>11}")


@main.command("eval")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "-m", default=None,
              help="Model to evaluate (default: the collection's model with --collection, else clip-ViT-B-32).")
@click.option("--text-model", default=None,
              help="Text model for captions, trained into --model's space (default: the collection's, if any).")
@store_options(collection_required=False)
@click.option("--ingest/--no-ingest", "do_ingest", default=False, show_default=True,
              help="With --collection: ingest INPUTS into it first (unchanged rows are skipped).")
@click.option("--group-col", multiple=True,
              help="Column(s) whose equal values mark rows as matching each other (e.g. an image id "
                   "for several captions per image). Comma-separated for a combined key.")
@column_options
@device_option("run the model")
@inference_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def evaluate_command(inputs, model, text_model, store, do_ingest, group_col, image_col, caption_col,
                     id_col, device, backend, model_precision, model_threads, as_json):
    """Measure retrieval quality on image–caption pairs in INPUTS.

    Reports Recall@1/5/10, MRR and median rank for text→image and image→text, computed
    exactly in memory and, with --collection, through the collection's own search, so you
    can see whether indexing loses anything. Rows with identical image bytes (or equal
    --group-col values) count as correct answers for each other.

    \b
    Examples:
      mmindex eval heldout/ --model demo/shapes-clip
      mmindex eval heldout/ --model demo/shapes-clip --caption-col short_caption --group-col color,shape
      mmindex eval coco_val.parquet --group-col image_id -c coco --ingest --json
    """
    from mmindex.pipeline.models.encoder import encoder_for, model_display_name
    from mmindex.pipeline.training.evaluate import evaluate

    groups = _split(group_col) or []
    settings = store
    collection = settings.collection
    store = settings.open() if collection else None
    try:
        spec = store.spec() if store is not None else None
        encoder = encoder_for(store.metadata() if spec else None, model, collection, text_model=text_model,
                              device=device, backend=backend, precision=model_precision, threads=model_threads)
        if store is not None and do_ingest:
            from mmindex.pipeline.ingest.run import IngestOptions
            from mmindex.pipeline.ingest.run import ingest as run_ingest

            run_ingest(list(inputs), store, encoder, IngestOptions(image_col=image_col, caption_col=caption_col,
                                                                  id_col=id_col))
        elif store is not None and spec is None:
            raise click.ClickException(f"collection {collection!r} does not exist; add --ingest to create it")
        report = evaluate(list(inputs), encoder, groups, store, image_col, caption_col, id_col)
    finally:
        if store is not None:
            store.close()
    if as_json:
        click.echo(json.dumps(report))
        return
    text_model = f" + text model {model_display_name(report['text_model'])}" if report.get("text_model") else ""
    click.echo(f"model {model_display_name(report['model'])}{text_model}: {report['images']:,} images, "
               f"{report['captions']:,} captions, "
               f"{report['groups']:,} groups" + (f", {report['rejected']} rejected" if report["rejected"] else ""))
    for warning in report.get("warnings", [])[:5]:
        click.echo(f"  warning: {warning}", err=True)
    _print_metrics("exact (in memory):", report["exact"])
    if "store" in report:
        _print_metrics(f"through collection {report['collection']!r}:", report["store"])
        if report["rows_missing_from_collection"]:
            click.echo(f"  note: {report['rows_missing_from_collection']} rows are not in the collection "
                       "(add --ingest)")


@main.command("train")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for the best model (a sentence-transformers folder that --model accepts).")
@click.option("--model", "-m", default=None, help="Pretrained sentence-transformers CLIP to start from.")
@click.option("--from-scratch", type=click.Choice(["tiny", "small", "base"]), default=None,
              help="Start from a fresh CLIP of this size instead (no download).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1),
              help="Passes over the training rows.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(2),
              help="Pairs per step; the other pairs in a batch are the negatives.")
@click.option("--lr", "learning_rate", default=5e-4, show_default=True, type=float,
              help="Peak learning rate (use ~1e-5 when fine-tuning a pretrained model).")
@click.option("--weight-decay", default=0.1, show_default=True, type=float,
              help="AdamW weight decay.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0.01, 0.5),
              help="Share of rows held out for validation, chosen by id (stable across runs).")
@click.option("--group-col", multiple=True, help="Columns marking rows that match each other, for validation.")
@click.option("--seed", default=0, show_default=True, help="Seed for the initial weights and the batch order (the split is by id).")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="Data loading processes.")
@device_option("train")
@click.option("--save-half", is_flag=True, help="Save weights in fp16 (half the size on disk).")
@click.option("--freeze", multiple=True, type=click.Choice(["image", "text"]),
              help="Keep this tower's weights as they are (image: its vectors stay valid for collections "
                   "ingested before; its features are computed once, so epochs are much faster).")
@click.option("--add-char-tokens", is_flag=True,
              help="Give every non-ASCII character of the training captions (e.g. Chinese) that has no token "
                   "of its own a new one, instead of several byte pieces; for teaching a model a new language.")
@column_options
@click.option("--json", "as_json", is_flag=True, help="Print the training report as JSON.")
@progress_interval_option
@friendly_errors
def train_command(inputs, output, model, from_scratch, epochs, batch_size, learning_rate, weight_decay, val_fraction,
                  group_col, seed, workers, device, save_half, freeze, add_char_tokens, image_col, caption_col, id_col,
                  as_json, progress_interval):
    """Fine-tune a CLIP contrastively on image–caption pairs in INPUTS.

    Symmetric InfoNCE (the CLIP loss) over in-batch negatives. A fixed share of rows
    (--val-fraction, chosen by id) is held out and evaluated after every epoch with the
    metrics of `mmindex eval`; the best epoch is saved to --output with its metrics.

    \b
    Examples:
      mmindex train data/ --model clip-ViT-B-32 --lr 1e-5 --epochs 3 -o models/my-clip
      mmindex sample train --rows 6000 --caption-style mixed && \\
        mmindex train train --from-scratch small --epochs 30 -o models/shapes
      mmindex sample zh --rows 6000 --caption-style mixed --caption-lang mixed && \\
        mmindex train zh --model demo/shapes-clip --freeze image --add-char-tokens -o models/shapes-zh
    """
    from mmindex.pipeline.training.train import TrainOptions, train

    if bool(model) == bool(from_scratch):
        raise click.UsageError("give exactly one of --model or --from-scratch")
    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
        val_fraction=val_fraction, seed=seed, workers=workers, device=device, group_cols=_split(group_col) or (),
        from_scratch=from_scratch, save_half=save_half, freeze=freeze, add_char_tokens=add_char_tokens,
        image_col=image_col, caption_col=caption_col, id_col=id_col,
    )
    bar = open_progress("train", "steps", interval=progress_interval)

    def on_step(step, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    def on_epoch(epoch):
        t2i, i2t = epoch.validation
        bar.write(f"epoch {epoch.epoch}: loss {epoch.train_loss:.4f}  val R@1 text→image {t2i['recall@1']:.3f} "
                  f"image→text {i2t['recall@1']:.3f}  ({epoch.seconds:.0f}s)")

    command = "mmindex train " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "mmindex train"
    with bar:
        report = train(list(inputs), output, model, options, on_step, on_epoch, command=command)
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=str))
        return
    _print_metrics("validation before training:", report.baseline)
    best = next((e for e in report.epochs if e.epoch == report.best_epoch), None)
    if best:
        _print_metrics(f"validation at the best epoch ({best.epoch}):", best.validation)
        click.echo(f"saved to {output}")
    else:
        click.echo("no epoch beat the starting model; saved the starting model to " + str(output))


@main.command()
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--rows", default=200, show_default=True, type=click.IntRange(1), help="Rows to write.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same rows and images.")
@click.option("--files", default=1, show_default=True, type=click.IntRange(1), help="Split rows over this many files.")
@click.option("--width", default=128, show_default=True, type=click.IntRange(8), help="Image width in pixels.")
@click.option("--height", default=128, show_default=True, type=click.IntRange(8), help="Image height in pixels.")
@click.option("--image-kind", type=click.Choice(["bytes", "struct", "path"]), default="bytes", show_default=True,
              help="How the image column holds images: raw bytes, a {bytes, path} struct, or relative paths.")
@click.option("--format", "image_format", type=click.Choice(["jpeg", "png"]), default="jpeg", show_default=True,
              help="Image file format.")
@click.option("--caption-style", type=click.Choice(["full", "mixed"]), default="full", show_default=True,
              help="full: every caption names the whole scene; mixed: some name only part of it (for training).")
@click.option("--caption-lang", type=click.Choice(["en", "zh", "both", "mixed"]), default="en", show_default=True,
              help="en: English captions; zh: Chinese ones; both: English, plus Chinese in caption_zh and "
                   "short_caption_zh; mixed: each row's in English or Chinese at random (for training). "
                   "The images of a seed are the same in every language.")
@click.option("--start-index", default=0, show_default=True, type=click.IntRange(0),
              help="First row number, so that several samples have distinct ids.")
def sample(output, rows, seed, files, width, height, image_kind, image_format, caption_style, caption_lang,
           start_index):
    """Write synthetic image–caption Parquet (coloured shapes) to OUTPUT.

    Columns: id, image, caption, short_caption ("a red circle"), color, shape, size,
    position, background, second_object, year, score, created (timestamp), tags (list);
    with --caption-lang both also caption_zh and short_caption_zh ("一个红色的圆形").
    Same seed, same data.

    \b
    Examples:
      mmindex sample data --rows 1000 --files 4 --width 640 --height 480
      mmindex sample heldout --rows 1000 --seed 1234 --caption-lang both
    """
    from mmindex.pipeline.ingest.sample import write_sample

    paths = write_sample(output, rows=rows, seed=seed, files=files, width=width, height=height,
                         image_kind=image_kind, image_format=image_format, caption_style=caption_style,
                         start_index=start_index, caption_lang=caption_lang)
    click.echo(f"wrote {rows:,} rows to {len(paths)} file(s) under {output}")


@main.command("init-model")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--size", type=click.Choice(["tiny", "small", "base"]), default="tiny", show_default=True,
              help="tiny and small: seconds on a CPU; base: the shape of CLIP ViT-B/32.")
@click.option("--texts-from", multiple=True, help="Parquet inputs whose captions train the tokenizer.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@friendly_errors
def init_model(output, size, texts_from, seed):
    """Create an UNTRAINED CLIP model folder at OUTPUT, offline.

    Its weights are random: search results are not meaningful. It exists to try the whole
    flow without a download, and for tests and benchmarks (`base` has the shape of
    CLIP ViT-B/32). For real use pass --model clip-ViT-B-32 (or any sentence-transformers
    CLIP) to ingest and query.
    """
    from mmindex.pipeline.training.scratch import build_scratch_model

    texts: list[str] = []
    if texts_from:
        from mmindex.pipeline.ingest.source import open_source

        source = open_source(list(texts_from))
        if source.mapping.caption:
            for batch in source.batches(4096):
                column = batch.batch.column(batch.batch.schema.get_field_index(source.mapping.caption))
                texts.extend(t for t in column.to_pylist() if t)
    build_scratch_model(output, size=size, texts=texts, seed=seed)
    click.echo(f"wrote an untrained {size} CLIP model to {output} (random weights: results are not meaningful)")


SERVE_SECTIONS = [
    ("Service", ["collection", "allow_collection", "model", "text_model", "device", "backend", "model_precision",
                 "model_threads", "host", "port", "image_root", "log_level",
                 "dry_run"]),
    ("Access and limits", ["serve_api_key", "cors_origin", "max_body_bytes", "max_query_pixels", "max_window",
                           "store_timeout", "max_connections"]),
    ("Query batching", ["batch_window_ms", "max_batch"]),
    STORE_SECTION,
]


@main.command(cls=SectionedCommand, sections=SERVE_SECTIONS)
@store_options
@click.option("--model", "-m", default=None,
              help="Model to encode queries. Default: the one the collection was built with.")
@click.option("--text-model", default=None,
              help="Text model for text queries, trained into the model's space. Default: the collection's.")
@device_option("encode the queries")
@inference_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--serve-api-key", default=None, envvar=["MMINDEX_SERVE_API_KEY"],
              help="Require this key (Authorization: Bearer KEY, or X-API-Key) on every route but /healthz, /readyz "
                   "and the page. Env: MMINDEX_SERVE_API_KEY. (--api-key is the Qdrant server's key.)")
@click.option("--cors-origin", multiple=True, help="Origin allowed to call the API from a browser (repeatable).")
@click.option("--allow-collection", multiple=True, metavar="NAME",
              help="Another collection clients may name in `collection` (repeatable); -c is always served. Any "
                   "other name is 404 and never opened.")
@click.option("--max-body-bytes", default=10 * 1024 * 1024, show_default=True, type=click.IntRange(1024),
              help="Largest request body, counted as it arrives whatever the transfer encoding (413 above it).")
@click.option("--max-query-pixels", default=16_777_216, show_default=True, type=click.IntRange(1),
              help="Largest query image in pixels, read from its header before decoding (400 above it).")
@click.option("--max-window", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Most results one can page through: offset + limit (target both fuses this many per vector).")
@click.option("--store-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a store call may take before the request gets 503.")
@click.option("--max-connections", default=256, show_default=True, type=click.IntRange(1),
              help="Connections open at once; past it new ones get 503.")
@click.option("--batch-window-ms", default=5.0, show_default=True, type=click.FloatRange(0, 1000),
              help="How long concurrent encode requests wait to share one forward pass.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1),
              help="Most queries encoded in one forward pass.")
@click.option("--image-root", default=None,
              help="Folder of the images of path-image collections: thumbnails are read from under it, never "
                   "from elsewhere. (Collections ingested with --thumbnails need nothing.)")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Least severe server log messages to print (access logs are info).")
@click.option("--print-config", "--dry-run", "dry_run", is_flag=True,
              help="Check the options and print the resolved settings as JSON; serve nothing (--dry-run: the old name).")
@friendly_errors
def serve(store, model, text_model, device, backend, model_precision, model_threads, host, port, serve_api_key, cors_origin, allow_collection, max_body_bytes,
          max_query_pixels, max_window, store_timeout, max_connections, batch_window_ms, max_batch, image_root,
          log_level, dry_run):
    """Serve search and embedding over HTTP, with a search page at /.

    \b
    Routes: POST /search, POST /search/upload, POST /embed, GET /collections/NAME,
    GET /thumbnails/ID, GET /healthz, GET /readyz, GET /metrics; OpenAPI at /openapi.json.
    Needs the serve extra: pip install 'mmindex[serve]'.

    \b
    Examples:
      mmindex serve -c shapes --image-root data                     # http://127.0.0.1:8080/
      mmindex serve -c photos --host 0.0.0.0 --serve-api-key "$KEY" --cors-origin https://app.example.com
      curl -s localhost:8080/search -H 'Content-Type: application/json' \\
        -d '{"text": "a blue triangle", "filter": "year >= 2020", "limit": 5}'
    """
    from mmindex.pipeline.config import mask

    if store.api_key and not store.url:
        raise click.UsageError("--api-key (or QDRANT_API_KEY) is the Qdrant server's key, and this service uses the "
                               "embedded store, so it would protect nothing; to require a key from clients use "
                               "--serve-api-key (or MMINDEX_SERVE_API_KEY)")
    if serve_api_key is not None and not serve_api_key.strip():
        raise click.UsageError("--serve-api-key (or MMINDEX_SERVE_API_KEY) is empty, which would leave the service "
                               "open; give a key, or leave the option out")
    root = _image_root(image_root) if image_root and not dry_run else image_root
    if dry_run:
        click.echo(json.dumps({
            "command": "serve", "store": store.to_dict(), "model": model, "text_model": text_model, "device": device,
            "backend": backend, "model_precision": model_precision, "model_threads": model_threads,
            "host": host, "port": port,
            "serve_api_key": mask("serve_api_key", serve_api_key), "cors_origins": list(cors_origin),
            "max_body_bytes": max_body_bytes, "batch_window_ms": batch_window_ms, "max_batch": max_batch,
            "image_root": image_root, "allow_collection": list(allow_collection), "max_query_pixels": max_query_pixels,
            "max_window": max_window, "store_timeout": store_timeout, "max_connections": max_connections,
        }))
        return
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise click.ClickException("mmindex serve needs its extra: pip install 'mmindex[serve]'")
    from mmindex.pipeline.serve.service import Limits, ServeSettings, run

    limits = Limits(max_body_bytes=max_body_bytes, max_query_pixels=max_query_pixels, max_window=max_window,
                    store_timeout=store_timeout)
    settings = ServeSettings(store=store, collections=tuple(allow_collection), model=model, text_model=text_model,
                             device=device, backend=backend, precision=model_precision, threads=model_threads,
                             api_key=serve_api_key, cors_origins=tuple(cors_origin), limits=limits,
                             batch_window_ms=batch_window_ms, max_batch=max_batch, image_root=root)
    run(settings, host, port, log_level, max_connections)


@main.group("config")
def config_group():
    """Inspect the settings that flags, MMINDEX_* variables and the config file resolve to."""


@config_group.command("show")
@click.argument("command_name", default="ingest", metavar="[COMMAND]")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def config_show(ctx, command_name, as_json):
    """Print every option of COMMAND (default: ingest) with its value and where it came from.

    Sources: flag, env (MMINDEX_<OPTION>), file (--config / ./mmindex.toml), default.
    Secrets (API keys, tokens) are masked.

    \b
    Examples:
      mmindex config show                         # what `mmindex ingest` would use
      MMINDEX_BATCH_SIZE=256 mmindex --config prod.toml config show ingest --json
    """
    from mmindex.connectors.qdrant_server import insecure_key
    from mmindex.pipeline.config import mask

    root = ctx.find_root()
    command = _configurable().get(command_name)
    if command is None:
        raise click.UsageError(f"no command {command_name!r} (commands: {', '.join(sorted(_configurable()))})")
    resolved = command.make_context(command_name, [], parent=root, resilient_parsing=True)
    names = {"COMMANDLINE": "flag", "ENVIRONMENT": "env", "DEFAULT_MAP": "file", "DEFAULT": "default"}
    settings = []
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        source = resolved.get_parameter_source(param.name)
        value = resolved.params.get(param.name)
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        settings.append({"name": param.name, "option": max(param.opts, key=len), "value": mask(param.name, value),
                         "source": names.get(source.name, source.name.lower()) if source else "default",
                         "env": envvars})
    config_path = (root.obj or {}).get("config_path")
    warning = insecure_key(resolved.params.get("url"), resolved.params.get("api_key"))
    if as_json:
        click.echo(json.dumps({"command": command_name, "config_file": config_path, "settings": settings,
                               "warnings": [warning] if warning else []}, default=str))
        return
    click.echo(f"mmindex {command_name}: config file {config_path or '(none)'}")
    for item in settings:
        value = item["value"]
        shown = "-" if value is None or value == () else json.dumps(list(value) if isinstance(value, tuple) else value,
                                                                  default=str)
        click.echo(f"  {item['option']:<28} {shown:<36} {item['source']}")
    if warning:
        click.echo(f"warning: {warning}", err=True)


def _env_for_every_option(group: click.Group) -> None:
    """Let every option come from MMINDEX_<OPTION_NAME> (options with their own variables keep them too)."""
    from mmindex.pipeline.config import env_name

    for command in group.commands.values():
        if isinstance(command, click.Group):
            continue
        for param in command.params:
            if isinstance(param, click.Option) and not param.envvar:
                param.envvar = env_name(param.name)


COPY_SECTIONS = [
    ("Source (the collection to copy)", ["collection", "data_dir", "url"]),
    ("Target (where the copy goes)", ["to_url", "to_data_dir", "to_collection", "to_api_key", "to_ca_cert"]),
    ("Output", ["as_json", "quiet", "progress_interval", "page_size"]),
    ("Source server connection", ["api_key", "ca_cert", "timeout", "prefer_grpc", "retries", "retry_wait"]),
]


@main.command("copy", cls=SectionedCommand, sections=COPY_SECTIONS)
@store_options
@click.option("--to-url", default=None, help="Target: a Qdrant server URL (http://host:6333, https://…).")
@click.option("--to-data-dir", default=None, type=click.Path(file_okay=False),
              help="Target: the folder of an embedded store (another one than --data-dir, or the same with "
                   "--to-collection).")
@click.option("--to-collection", default=None, help="Target collection name. Default: the source's name.")
@click.option("--to-api-key", default=None, envvar=["MMINDEX_TO_API_KEY"],
              help="Target server's API key. Env: MMINDEX_TO_API_KEY. Never printed.")
@click.option("--to-ca-cert", default=None, type=click.Path(dir_okay=False),
              help="Target server: PEM file of a private CA to verify https:// against.")
@click.option("--page-size", default=256, show_default=True, type=click.IntRange(1),
              help="Points read per request, vectors included (writes are split further by bytes).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines.")
@progress_interval_option
@friendly_errors
def copy_command(store, to_url, to_data_dir, to_collection, to_api_key, to_ca_cert, page_size, as_json, quiet,
                 progress_interval):
    """Copy a collection to another store: points, vectors, payloads, model record, layout, indexes.

    No model runs: the stored vectors are copied as they are. The target must be new (or
    empty) and is made for the source's model; a copy that stopped (Ctrl-C, a lost
    connection) continues where it stopped when the same command runs again. At the end both
    collections are counted and must agree.

    Without --to-url or --to-data-dir the target is in the same store as the source (then
    --to-collection names it).

    \b
    Examples:
      mmindex copy -c photos --to-url https://qdrant.example.com:6333 --to-api-key "$KEY"
      mmindex copy -c photos --url http://localhost:6333 --to-data-dir ./offline-copy
      mmindex copy -c photos --to-data-dir /mnt/backup/mmindex_data
      mmindex copy -c photos --to-collection photos-backup --json
    """
    from dataclasses import replace

    from mmindex.pipeline.collection.copy import copy_collection

    if to_url and to_data_dir:
        raise click.UsageError("give --to-url or --to-data-dir, not both")
    if not (to_url or to_data_dir or to_collection):
        raise click.UsageError("say where to copy to: --to-url, --to-data-dir and/or --to-collection")
    if to_url:
        target_settings = replace(store, url=to_url, api_key=to_api_key, ca_cert=to_ca_cert)
    elif to_data_dir:
        target_settings = replace(store, url=None, api_key=None, ca_cert=None, data_dir=to_data_dir)
    else:
        target_settings = store
    target_settings = replace(target_settings, collection=to_collection or store.collection)
    source = store.open()
    try:
        target = target_settings.open()
        try:
            summary = _run_copy(copy_collection, source, target, page_size, quiet, progress_interval)
        finally:
            target.close()
    finally:
        source.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), default=str))
        return
    resumed = (f", resumed at point {summary.resumed_from}" if summary.resumed_from else "")
    click.echo(f"copied {summary.copied:,} points in {summary.seconds:.1f}s{resumed}\n"
               f"  from {summary.source} ({summary.source_points:,} points)\n"
               f"  to   {summary.target} ({summary.target_points:,} points)")


def _run_copy(copy_collection, source, target, page_size: int, quiet: bool, progress_interval: float):
    """The copy with a progress bar on stderr, made once the number of points is known."""
    bar = None
    shown = 0

    def on_progress(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            shown = done  # points copied by an earlier run are not this run's progress
            bar = open_progress("copy", "points", max(total - done, 0), quiet=quiet, interval=progress_interval)
        bar.update(done - shown)
        shown = done

    try:
        return copy_collection(source, target, page=page_size, on_progress=on_progress)
    finally:
        if bar is not None:
            bar.close()


@main.group("alias")
def alias_group():
    """Names that point to a collection, switched in one atomic step.

    Searches through an alias (mmindex query -c ALIAS, serve -c ALIAS) go to its collection;
    pointing the alias at a new collection (a re-ingest with another model, a rebuilt copy)
    switches every reader at once, with no moment where the name answers nothing.

    \b
    Examples:
      mmindex alias set photos photos-v2       # photos now answers from photos-v2
      mmindex alias list --json
      mmindex alias delete photos
      QDRANT_URL=http://localhost:6333 mmindex alias set photos photos-v2
    """


def _alias_store(settings, name: str):
    """A store of ``settings``' place, bound to ``name`` (aliases belong to the place, not to a collection)."""
    from dataclasses import replace

    return replace(settings, collection=name).open()


def _exists(settings, name: str) -> bool:
    target = _alias_store(settings, name)
    try:
        return target.exists()
    finally:
        target.close()


def _without_collection_option(command: click.Command) -> click.Command:
    """Alias commands take names as arguments: hide the store options' --collection."""
    for param in command.params:
        if param.name == "collection":
            param.hidden = True
    return command


@_without_collection_option
@alias_group.command("set")
@click.argument("name")
@click.argument("target", metavar="COLLECTION")
@store_options(collection_required=False)
@friendly_errors
def alias_set(name, target, store):
    """Point alias NAME at COLLECTION (atomically replacing what it pointed to).

    \b
    Example:
      mmindex alias set photos photos-v2
    """
    opened = _alias_store(store, target)
    try:
        before = opened.set_alias(name, target)
    finally:
        opened.close()
    click.echo(f"alias {name} → {target}" + (f" (was {before})" if before else " (new)"))


@_without_collection_option
@alias_group.command("list")
@store_options(collection_required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON: {alias: collection}.")
@friendly_errors
def alias_list(store, as_json):
    """List the aliases of the store: NAME → COLLECTION."""
    opened = _alias_store(store, store.collection or "default")
    try:
        aliases = opened.aliases()
        missing = {c for c in set(aliases.values()) if not _exists(store, c)}
    finally:
        opened.close()
    if as_json:
        click.echo(json.dumps(dict(sorted(aliases.items()))))
        return
    if not aliases:
        click.echo("no aliases")
    for name, collection in sorted(aliases.items()):
        click.echo(f"{name} → {collection}" + ("  (missing: no such collection)" if collection in missing else ""))


@_without_collection_option
@alias_group.command("delete")
@click.argument("name")
@store_options(collection_required=False)
@friendly_errors
def alias_delete(name, store):
    """Remove alias NAME (its collection stays)."""
    from mmindex.errors import StoreError

    opened = _alias_store(store, name)
    try:
        before = opened.delete_alias(name)
    finally:
        opened.close()
    if before is None:
        raise StoreError(f"no alias {name!r} (see `mmindex alias list`)")
    click.echo(f"deleted alias {name} (it pointed to {before})")


_env_for_every_option(alias_group)


_env_for_every_option(main)


if __name__ == "__main__":
    main()
