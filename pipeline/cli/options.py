"""The options several commands share (store, layout, columns, device, model, progress), their help sections,
and turning library errors into one clear line at the CLI's edge."""
from __future__ import annotations

import os
from functools import wraps

import click

from mmindex.connectors import DEFAULT_DATA_DIR
from mmindex.connectors.base import CollectionOptions
from mmindex.errors import FilterError, MmindexError, UsageError
from mmindex.pipeline.cli.progress import DEFAULT_INTERVAL
from mmindex.pipeline.config import StoreSettings, env_name
from mmindex.pipeline.models.trust import trusting

EXIT_ERROR = 1


def friendly_errors(function):
    """Turn project errors into click errors: one clear line, no traceback. Exit code 2 (usage) for what the command
    line itself gets wrong — a ``UsageError`` (an option naming a column or field that is not there, options that
    cannot go together) or a ``FilterError`` (a ``--where`` or ``--filter-json`` that does not parse or cannot
    match) — and 1 for the rest (docs/reliability.md, "Exit codes")."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (UsageError, FilterError) as error:
            raise click.UsageError(str(error)) from error
        except MmindexError as error:
            raise click.ClickException(str(error)) from error

    return wrapper


STORE_PARAMS = ("collection", "data_dir", "url", "api_key", "ca_cert", "timeout", "prefer_grpc", "retries",
                "retry_wait")


LAYOUT_PARAMS = ("shard_number", "replication_factor", "write_consistency_factor", "on_disk", "quantization",
                 "hnsw_m", "hnsw_ef_construct")


def store_options(function=None, *, collection_required: bool = True, layout: bool = False,
                  collection_help: str | None = None):
    """Options that say where the collection lives; the command receives them as ``store: StoreSettings``.

    With ``layout``, also the options that lay out a new collection (shards, quantization, HNSW…);
    ``collection_help``: the --collection help of an optional collection (default: eval's).
    """
    if function is None:
        return lambda f: store_options(f, collection_required=collection_required, layout=layout,
                                       collection_help=collection_help)

    decorators = [
        click.option("--collection", "-c", default="default" if collection_required else None,
                     show_default=collection_required,
                     help="Collection name." if collection_required else collection_help or
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


def split_values(values: tuple[str, ...] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


STORE_SECTION = ("Store (embedded, or a Qdrant server)",
                 ["data_dir", "url", "api_key", "ca_cert", "timeout", "prefer_grpc", "retries", "retry_wait"])


def column_options(function):
    """--image-col, --caption-col, --id-col and --split, the same in every command that reads Parquet."""
    for decorator in reversed([
        click.option("--image-col", default=None,
                     help="Image column (bytes, {bytes, path} struct, or path). Detected if unset."),
        click.option("--caption-col", default=None, help="Caption column. Detected if unset (caption/text/txt…)."),
        click.option("--id-col", default=None,
                     help="Id column; point ids are UUIDv5 of it. Detected if unset (id/key)."),
        click.option("--split", default=None, metavar="NAME",
                     help="Split of a Hugging Face datasets input (DatasetDict folder, Hub Parquet layout, cached "
                          "Hub name) to read; 'all' reads every split into the payload field 'split'. "
                          "E.g. --split train."),
    ]):
        function = decorator(function)
    return function


def device_option(purpose: str):
    """--device, with what it runs on that device."""
    return click.option("--device", default="auto", show_default=True,
                        help=f"Where to {purpose}: cuda, cuda:1, mps, cpu, or auto (CUDA, then MPS, then CPU).")


def trust_option(function):
    """--trust-model-code: the user's word that a model's own files may run (``models/trust.py``), for the command."""

    @wraps(function)
    def wrapper(*args, trust_model_code: bool = False, **kwargs):
        with trusting(trust_model_code):
            return function(*args, **kwargs)

    return click.option("--trust-model-code", is_flag=True, envvar="MMINDEX_TRUST_MODEL_CODE",
                        help="Let the model's own files run when it loads: Python code in its folder, auto_map or "
                             "trust_remote_code in its configs, pickle weights holding more than tensors. Only for "
                             "a model whose author you trust; without it such a model is refused.")(wrapper)


def inference_options(function):
    """--backend, --model-precision, --model-threads and --trust-model-code: how the model's forward passes run,
    and whether its own code may."""
    function = trust_option(function)
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


def image_root_path(root: str | None) -> str | None:
    """--image-root as a path on the inputs' filesystem: local folders become absolute."""
    if root is None:
        return None
    if "://" in root:
        import pyarrow.fs as pafs  # pyarrow takes ~0.1 s to import: only an object-store root needs it here

        return pafs.FileSystem.from_uri(root)[1]
    if not os.path.isdir(root):
        raise click.BadParameter(f"{root} is not a folder", param_hint="--image-root")
    return os.path.realpath(root)


def env_for_every_option(command: click.Command) -> None:
    """Let every option of ``command`` (of each subcommand, for a group) come from MMINDEX_<OPTION> — the flag's
    name (``--json`` → MMINDEX_JSON) and, where it differs, the parameter's (MMINDEX_AS_JSON); options with their
    own variables keep them, and options marked ``command_line_only`` get none."""
    for each in getattr(command, "commands", {}).values() if isinstance(command, click.Group) else [command]:
        for param in each.params:
            if isinstance(param, click.Option) and not param.envvar and not getattr(param, "command_line_only", False):
                flag = max(param.opts, key=len).lstrip("-").replace("-", "_")
                param.envvar = list(dict.fromkeys([env_name(flag), env_name(param.name)]))


def command_line_only(command: click.Command, names: set[str]) -> click.Command:
    """Mark options that must be typed, never taken from MMINDEX_* variables or a config file (what ``delete``
    deletes, and its ``--yes``): a setting left in the environment must not turn into a deletion."""
    for param in command.params:
        if param.name in names:
            param.command_line_only = True
    return command
