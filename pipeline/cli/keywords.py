"""``keywords``: give a collection's points their BM25 keyword vectors from what they store, resumable."""
from __future__ import annotations

import json

import click

from mmindex.pipeline.cli.options import friendly_errors, progress_interval_option, split_values, store_options
from mmindex.pipeline.cli.progress import ResumedProgress
from mmindex.pipeline.collection.keywords import backfill_keywords


@click.command("keywords")
@store_options
@click.option("--text-fields", multiple=True, metavar="A,B,…",
              help="Payload fields whose text joins the caption (strings or lists of strings; nested as --where "
                   "names them, e.g. meta.title). Default: the fields the collection records, else none. Other "
                   "fields than recorded make every point's vector again; --text-fields '' keeps the caption only.")
@click.option("--page-size", default=256, show_default=True, type=click.IntRange(1),
              help="Points read per request (payloads only, never vectors).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines.")
@progress_interval_option
@friendly_errors
def keywords_command(store, text_fields, page_size, as_json, quiet, progress_interval):
    """Give a collection's points their keyword vectors (BM25), from stored captions; no model.

    Keyword and hybrid search (query --mode keyword|hybrid) score points by the sparse
    `keywords` vector: BM25 weights of each point's caption and the --text-fields that
    ingest named. Collections made before keyword search gain it here, from the captions and
    payloads they store: no image is read and no model loads. Run it again with other
    --text-fields to make every point's vector from those fields instead.

    A run that stopped (Ctrl-C, kill -9, a lost connection) continues where it stopped when
    run again; until it has finished, keyword queries are refused. A finished run again says
    so and does nothing. The embedded store has one writer: stop a service that has the
    collection open first.

    \b
    Examples:
      mmindex keywords -c photos
      mmindex keywords -c photos --text-fields title,tags
      mmindex keywords -c photos --text-fields meta.title --json
      QDRANT_URL=http://localhost:6333 mmindex keywords -c photos
    """
    settings, opened = store, store.open()
    on_progress = ResumedProgress("keywords", "points", quiet=quiet, interval=progress_interval)

    try:
        summary = backfill_keywords(opened, split_values(text_fields), page=page_size, on_progress=on_progress,
                                    on_stage=None if quiet or as_json else lambda note: click.echo(note, err=True),
                                    place=settings.place)
    finally:
        on_progress.close()
        opened.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        return
    fields = f"the caption and {', '.join(summary.fields)}" if summary.fields else "the caption"
    if summary.already_complete:
        click.echo(f"nothing to do: the {summary.points:,} points of collection {summary.collection!r} have their "
                   f"keyword vectors (from {fields})")
        return
    how = ("added the keyword vector; " if summary.added_vector else "") + (
        "remade every point's vector; " if summary.redone else "")
    resumed = f", resumed at point {summary.resumed_from}" if summary.resumed_from else ""
    click.echo(f"{how}{summary.written:,} points given keyword vectors from {fields} in {summary.seconds:.1f}s"
               f"{resumed}; {summary.without_text:,} without text have none ({summary.points:,} points in all)")
