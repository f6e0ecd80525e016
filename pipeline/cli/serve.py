"""``mmindex serve``: the HTTP service and its search page."""
from __future__ import annotations

import importlib.util
import json

import click

from mmindex.pipeline.cli.format import SectionedCommand
from mmindex.pipeline.cli.options import (STORE_SECTION, device_option, friendly_errors, image_root_path,
                                          inference_options, store_options)
from mmindex.pipeline.config import mask
from mmindex.pipeline.serve.settings import Limits, ServeSettings

SERVE_SECTIONS = [
    ("Service", ["collection", "allow_collection", "model", "text_model", "device", "backend", "model_precision",
                 "model_threads", "trust_model_code", "host", "port", "image_root", "log_level",
                 "dry_run"]),
    ("Access and limits", ["serve_api_key", "cors_origin", "max_body_bytes", "max_query_pixels", "max_decode_mib",
                           "max_window", "store_timeout", "max_connections"]),
    ("Query batching", ["batch_window_ms", "max_batch"]),
    STORE_SECTION,
]


@click.command(cls=SectionedCommand, sections=SERVE_SECTIONS)
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
@click.option("--max-decode-mib", default=128, show_default=True, type=click.IntRange(1),
              help="Memory one query image may take to decode, from its header: pixels × bytes a pixel (400 above "
                   "it; 4096×4096 RGBA needs 128).")
@click.option("--max-window", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Most results one can page through: offset + limit (target both fuses this many per vector).")
@click.option("--store-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a store call may take before the request gets 503.")
@click.option("--max-connections", default=256, show_default=True, type=click.IntRange(1),
              help="Connections open at once; past it new requests get 503. A connection must send each request's "
                   "headers within 10 s (408 and closed after).")
@click.option("--batch-window-ms", default=5.0, show_default=True, type=click.FloatRange(0, 1000),
              help="How long concurrent encode requests wait to share one forward pass.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1),
              help="Most queries encoded in one forward pass.")
@click.option("--image-root", default=None,
              help="Folder of the images of path-image collections: thumbnails are read from under it, never "
                   "from elsewhere. (Collections ingested with --thumbnails need nothing.)")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
              default="info", show_default=True,
              help="Least severe server log messages to print (access logs are info), in any case: --log-level "
                   "WARNING. Example: mmindex serve --log-level debug")
@click.option("--print-config", "--dry-run", "dry_run", is_flag=True,
              help="Check the options and print the resolved settings as JSON; serve nothing (--dry-run: the old name).")
@friendly_errors
def serve(store, model, text_model, device, backend, model_precision, model_threads, host, port, serve_api_key,
          cors_origin, allow_collection, max_body_bytes, max_query_pixels, max_decode_mib, max_window, store_timeout,
          max_connections, batch_window_ms, max_batch, image_root, log_level, dry_run):
    """Serve search and embedding over HTTP, with a search page at /.

    \b
    Routes: POST /search, POST /search/upload, POST /embed, GET /collections/NAME,
    GET /thumbnails/ID, GET /facets, POST /facets, GET /duplicates, GET /healthz, GET /readyz,
    GET /metrics; the web page at /; OpenAPI at /openapi.json.
    Needs the serve extra: pip install 'mmindex[serve]'.

    \b
    Examples:
      mmindex serve -c shapes --image-root data                     # http://127.0.0.1:8080/
      mmindex serve -c photos --host 0.0.0.0 --serve-api-key "$KEY" --cors-origin https://app.example.com
      curl -s localhost:8080/search -H 'Content-Type: application/json' \\
        -d '{"text": "a blue triangle", "filter": "year >= 2020", "limit": 5}'
    """
    if store.api_key and not store.url:
        raise click.UsageError("--api-key (or QDRANT_API_KEY) is the Qdrant server's key, and this service uses the "
                               "embedded store, so it would protect nothing; to require a key from clients use "
                               "--serve-api-key (or MMINDEX_SERVE_API_KEY)")
    if serve_api_key is not None and not serve_api_key.strip():
        raise click.UsageError("--serve-api-key (or MMINDEX_SERVE_API_KEY) is empty, which would leave the service "
                               "open; give a key, or leave the option out")
    root = image_root_path(image_root) if image_root and not dry_run else image_root
    if dry_run:
        click.echo(json.dumps({
            "command": "serve", "store": store.to_dict(), "model": model, "text_model": text_model, "device": device,
            "backend": backend, "model_precision": model_precision, "model_threads": model_threads,
            "host": host, "port": port,
            "serve_api_key": mask("serve_api_key", serve_api_key), "cors_origins": list(cors_origin),
            "max_body_bytes": max_body_bytes, "batch_window_ms": batch_window_ms, "max_batch": max_batch,
            "image_root": image_root, "allow_collection": list(allow_collection), "max_query_pixels": max_query_pixels,
            "max_decode_mib": max_decode_mib,
            "max_window": max_window, "store_timeout": store_timeout, "max_connections": max_connections,
            "log_level": log_level,
        }))
        return

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise click.ClickException("mmindex serve needs its extra: pip install 'mmindex[serve]'")
    # app loads fastapi at import: only this path needs it
    from mmindex.pipeline.serve.app import run

    limits = Limits(max_body_bytes=max_body_bytes, max_query_pixels=max_query_pixels, max_window=max_window,
                    store_timeout=store_timeout, max_decode_bytes=max_decode_mib * 1024 * 1024)
    settings = ServeSettings(store=store, collections=tuple(allow_collection), model=model, text_model=text_model,
                             device=device, backend=backend, precision=model_precision, threads=model_threads,
                             api_key=serve_api_key, cors_origins=tuple(cors_origin), limits=limits,
                             batch_window_ms=batch_window_ms, max_batch=max_batch, image_root=root)
    run(settings, host, port, log_level, max_connections)
