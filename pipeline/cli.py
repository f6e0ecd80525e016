"""The ``mmindex`` command: parse options, call the library, print.

Errors the user can fix come out as one line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import json
import os
import sys
from functools import wraps
from typing import Any

import click

from connectors import DEFAULT_DATA_DIR, open_store
from pipeline.errors import MmindexError

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


def store_options(function):
    """Options that say where the collection lives."""
    decorators = [
        click.option("--collection", "-c", default="default", show_default=True, envvar="MMINDEX_COLLECTION",
                     help="Collection name."),
        click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, envvar="MMINDEX_DATA_DIR",
                     type=click.Path(file_okay=False), help="Folder of the embedded Qdrant Edge store."),
        click.option("--url", default=None, envvar="QDRANT_URL",
                     help="Qdrant server URL (e.g. http://localhost:6333); when set, the server is used "
                          "instead of the embedded store. Env: QDRANT_URL."),
        click.option("--api-key", default=None, envvar="QDRANT_API_KEY",
                     help="Qdrant server API key. Env: QDRANT_API_KEY."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _open(collection: str, data_dir: str, url: str | None, api_key: str | None):
    return open_store(collection, url=url, api_key=api_key, data_dir=data_dir)


def _split(values: tuple[str, ...] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mmindex")
def main():
    """mmindex: index images and captions from Parquet into Qdrant, and search across them.

    \b
    Quick start (offline, with a tiny untrained model):
      mmindex sample data --rows 200
      mmindex init-model models/tiny --size tiny --texts-from data
      mmindex ingest data --collection shapes --model models/tiny
      mmindex query "a red circle" --collection shapes --where "year >= 2020"

    The embedded store (Qdrant Edge, no server) lives under --data-dir; pass --url (or set
    QDRANT_URL) to use a Qdrant server instead.
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@store_options
@click.option("--model", "-m", default=None, envvar="MMINDEX_MODEL",
              help="sentence-transformers CLIP model: a Hub id or a local folder. Default: the model the "
                   "collection was built with, else clip-ViT-B-32.")
@click.option("--device", default="auto", show_default=True, help="cuda, cuda:1, mps, cpu or auto.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Rows per embedding batch.")
@click.option("--workers", default=min(8, os.cpu_count() or 1), show_default=True, type=click.IntRange(1),
              help="Image decoding threads.")
@click.option("--image-col", default=None, help="Image column (bytes, {bytes, path} struct, or path). Detected if unset.")
@click.option("--caption-col", default=None, help="Caption column. Detected if unset (caption/text/txt…).")
@click.option("--id-col", default=None, help="Id column; point ids are UUIDv5 of it. Detected if unset (id/key).")
@click.option("--payload-cols", multiple=True, help="Comma-separated payload columns (default: every other column).")
@click.option("--index-fields", multiple=True,
              help="Comma-separated payload fields to index for fast filtering, as NAME or NAME:TYPE.")
@click.option("--max-pixels", default=89_478_485, show_default=True, type=click.IntRange(1),
              help="Reject images with more pixels than this (decompression bombs).")
@click.option("--no-optimize", is_flag=True, help="Skip building the vector index at the end (embedded store).")
@click.option("--rejects", default=None, type=click.Path(dir_okay=False),
              help="Write rejected rows (file, row, id, stage, reason) to this Parquet file.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes.")
@friendly_errors
def ingest(inputs, collection, data_dir, url, api_key, model, device, batch_size, workers, image_col, caption_col,
           id_col, payload_cols, index_fields, max_pixels, no_optimize, rejects, as_json, quiet):
    """Embed images and captions from Parquet INPUTS and upsert one point per row.

    INPUTS are Parquet files, directories, globs or object-store URIs (s3://, gs://, …).
    Each row becomes a point with named vectors `image` and `text` and the other columns
    as payload. Point ids are deterministic, so re-running never duplicates, and rows
    whose image, caption and model are unchanged are not embedded again.

    \b
    Examples:
      mmindex ingest data/*.parquet --collection photos
      mmindex ingest s3://bucket/laion/ --image-col jpg --caption-col txt --index-fields year,lang
      QDRANT_URL=http://localhost:6333 mmindex ingest data/ -c photos --model ./my-clip
    """
    from tqdm import tqdm

    from pipeline.encoder import DEFAULT_MODEL, Encoder
    from pipeline.ingestion import IngestOptions
    from pipeline.ingestion import ingest as run_ingest
    from pipeline.source import open_source

    store = _open(collection, data_dir, url, api_key)
    try:
        existing = store.spec()
        model = model or (existing.model if existing else DEFAULT_MODEL)
        source = open_source(list(inputs), image_col, caption_col, id_col, _split(payload_cols))
        if existing is not None:
            from pipeline.encoder import model_identity

            if model_identity(model) != existing.model:
                from connectors.base import CollectionSpec

                CollectionSpec(model_identity(model), -1).check_matches(existing, collection)
        total = source.count_rows()
        if not quiet:
            for note in source.mapping.notes:
                click.echo(f"note: {note}", err=True)
            click.echo(f"loading model {model} …", err=True)
        encoder = Encoder(model, device=device, batch_size=batch_size)
        if not quiet:
            click.echo(f"model on {encoder.device}, {encoder.dim}-d vectors; {total:,} rows in "
                       f"{len(source.files)} file(s) → collection {collection!r} ({getattr(store, 'kind', '')})",
                       err=True)
        options = IngestOptions(
            batch_size=batch_size, workers=workers, index_fields=_split(index_fields) or (), max_pixels=max_pixels,
            optimize=not no_optimize, rejects_path=rejects,
        )
        with tqdm(total=total, unit="rows", disable=quiet, file=sys.stderr, dynamic_ncols=True,
                  desc="ingest") as bar:
            summary = run_ingest(source, store, encoder, options, on_progress=bar.update)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), default=str))
    else:
        _print_summary(summary)
    if not summary.adds_up():
        raise click.ClickException("internal error: the run summary does not add up")


def _print_summary(summary) -> None:
    click.echo(
        f"collection {summary.collection}: read {summary.read:,} rows from {summary.files} file(s) in "
        f"{summary.seconds:.1f}s ({summary.rows_per_second:,.1f} rows/s)\n"
        f"  embedded {summary.embedded:,}  upserted {summary.upserted:,}  unchanged (skipped) {summary.unchanged:,}  "
        f"rejected {summary.rejected:,}"
        + (f"  duplicate ids {summary.duplicate_ids:,}" if summary.duplicate_ids else "")
    )
    for rejection in summary.rejections[:10]:
        click.echo(f"  rejected {rejection.file} row {rejection.row} [{rejection.stage}]: {rejection.reason}")
    if summary.rejected > 10:
        click.echo(f"  … and {summary.rejected - 10} more rejected rows (use --rejects FILE to keep them all)")
    for warning in summary.warnings[:5]:
        click.echo(f"  warning: {warning}")


@main.command()
@click.argument("text", required=False)
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False), help="Query with this image file.")
@click.option("--target", "-t", type=click.Choice(["image", "text"]), default=None,
              help="Which vectors to search: image (default) or text (captions).")
@store_options
@click.option("--model", "-m", default=None, envvar="MMINDEX_MODEL",
              help="Model to encode the query. Default: the one the collection was built with.")
@click.option("--device", default="auto", show_default=True)
@click.option("--where", "-w", default=None,
              help="Filter, e.g. \"year >= 2020 and color in ('red', 'blue') and shape != 'star'\".")
@click.option("--filter-json", default=None, help="A raw Qdrant filter as JSON (ANDed with --where).")
@click.option("--limit", "-k", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.option("--score-threshold", default=None, type=float, help="Drop hits scoring below this (cosine).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit, one per line.")
@friendly_errors
def query(text, image_path, target, collection, data_dir, url, api_key, model, device, where, filter_json, limit,
          offset, score_threshold, as_json):
    """Search a collection with TEXT or an --image, across modalities.

    \b
    Examples:
      mmindex query "a dog running on a beach" -c photos --limit 5 --where "year >= 2020"
      mmindex query --image query.jpg -c photos                 # image → similar images
      mmindex query --image query.jpg -c photos --target text   # image → captions
      mmindex query "a red circle" --target text --json         # text → captions, JSON lines
      mmindex query "cat" --where "created >= '2021-06-01' and tags in ('cat', 'kitten')"
    """
    from pipeline.encoder import Encoder
    from pipeline.errors import InputError, StoreError
    from pipeline.images import RejectedImage, decode_image
    from pipeline.query import load_filter_json, search

    if bool(text) == bool(image_path):
        raise click.UsageError("give either TEXT or --image (one of them)")
    store = _open(collection, data_dir, url, api_key)
    try:
        spec = store.spec()
        if spec is None:
            raise StoreError(f"collection {collection!r} does not exist"
                             + (f" on {url}" if url else f" under {data_dir}") + "; run `mmindex ingest` first")
        encoder = Encoder(model or spec.model, device=device)
        if model:
            from connectors.base import CollectionSpec

            CollectionSpec(encoder.name, encoder.dim).check_matches(spec, collection)
        if image_path:
            try:
                with open(image_path, "rb") as handle:
                    image = decode_image(handle.read(), encoder.image_size)
            except RejectedImage as error:
                raise InputError(f"{image_path}: {error.message}") from error
            vector = encoder.encode_images([image])[0]
        else:
            vector = encoder.encode_texts([text])[0]
        hits = search(store, vector, target=target or "image", where=where,
                      filter_json=load_filter_json(filter_json), limit=limit, offset=offset,
                      score_threshold=score_threshold)
    finally:
        store.close()
    if as_json:
        for hit in hits:
            click.echo(json.dumps(hit.to_dict(), default=str))
        return
    if not hits:
        click.echo("no hits")
        return
    for rank, hit in enumerate(hits, start=offset + 1):
        fields = ", ".join(f"{k}={_short(v)}" for k, v in list(hit.payload.items())[:6])
        click.echo(f"{rank:>3}. {hit.score:.4f}  {_short(hit.caption, 70)}")
        click.echo(f"      point {hit.id}  {fields}")


def _short(value: Any, width: int = 30) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def info(collection, data_dir, url, api_key, as_json):
    """Show a collection: points, model, vector size, payload schema and indexes.

    \b
    Example:
      mmindex info --collection photos --json
    """
    store = _open(collection, data_dir, url, api_key)
    try:
        details = store.info().to_dict()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(details))
        return
    click.echo(f"collection   {details['name']}  ({details['store']} at {details['location']})")
    click.echo(f"points       {details['points']:,}")
    click.echo(f"model        {details['model']}")
    click.echo(f"vectors      {', '.join(details['vectors'])}: {details['dim']}-d, {details['distance']}")
    click.echo("payload      " + (", ".join(f"{k} ({v})" for k, v in details["payload_types"].items()) or "-"))
    click.echo("indexed      " + (", ".join(f"{k} ({v})" for k, v in details["indexed_fields"].items()) or "-"))


@main.command()
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--rows", default=200, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@click.option("--files", default=1, show_default=True, type=click.IntRange(1), help="Split rows over this many files.")
@click.option("--width", default=128, show_default=True, type=click.IntRange(8))
@click.option("--height", default=128, show_default=True, type=click.IntRange(8))
@click.option("--image-kind", type=click.Choice(["bytes", "struct", "path"]), default="bytes", show_default=True,
              help="How the image column holds images: raw bytes, a {bytes, path} struct, or relative paths.")
@click.option("--format", "image_format", type=click.Choice(["jpeg", "png"]), default="jpeg", show_default=True)
def sample(output, rows, seed, files, width, height, image_kind, image_format):
    """Write synthetic image–caption Parquet (coloured shapes) to OUTPUT.

    Columns: id, image, caption, color, shape, size, position, background, second_object,
    year, score, created (timestamp), tags (list). Same seed, same data.

    \b
    Example:
      mmindex sample data --rows 1000 --files 4 --width 640 --height 480
    """
    from pipeline.sample import write_sample

    paths = write_sample(output, rows=rows, seed=seed, files=files, width=width, height=height,
                         image_kind=image_kind, image_format=image_format)
    click.echo(f"wrote {rows:,} rows to {len(paths)} file(s) under {output}")


@main.command("init-model")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--size", type=click.Choice(["tiny", "small", "base"]), default="tiny", show_default=True)
@click.option("--texts-from", multiple=True, help="Parquet inputs whose captions train the tokenizer.")
@click.option("--seed", default=0, show_default=True)
@friendly_errors
def init_model(output, size, texts_from, seed):
    """Create an UNTRAINED CLIP model folder at OUTPUT, offline.

    Its weights are random: search results are not meaningful. It exists to try the whole
    flow without a download, and for tests and benchmarks (`base` has the shape of
    CLIP ViT-B/32). For real use pass --model clip-ViT-B-32 (or any sentence-transformers
    CLIP) to ingest and query.
    """
    from pipeline.scratch import build_scratch_model

    texts: list[str] = []
    if texts_from:
        from pipeline.source import open_source

        source = open_source(list(texts_from))
        if source.mapping.caption:
            for batch in source.batches(4096):
                column = batch.batch.column(batch.batch.schema.get_field_index(source.mapping.caption))
                texts.extend(t for t in column.to_pylist() if t)
    build_scratch_model(output, size=size, texts=texts, seed=seed)
    click.echo(f"wrote an untrained {size} CLIP model to {output} (random weights: results are not meaningful)")


if __name__ == "__main__":
    main()
