"""Commands on a collection as a whole: ``info``, ``delete``, ``copy`` and ``alias``."""
from __future__ import annotations

import json
import sys

import click

from mmindex.pipeline.cli.format import SectionedCommand
from mmindex.pipeline.cli.options import (
    command_line_only,
    friendly_errors,
    progress_interval_option,
    split_values,
    store_options,
)
from mmindex.pipeline.cli.progress import ResumedProgress
from mmindex.pipeline.collection.aliases import delete_alias, list_aliases, set_alias
from mmindex.pipeline.collection.copy import copy_between, copy_target
from mmindex.pipeline.collection.delete import delete_points, select_points
from mmindex.pipeline.collection.info import describe
from mmindex.pipeline.ingest.sync import describe_id_rule
from mmindex.pipeline.models.identity import model_display_name
from mmindex.pipeline.query.filters import load_raw_filter


@click.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def info(store, as_json):
    """Show a collection: points, model, vector size, payload schema and indexes.

    \b
    Example:
      mmindex info --collection photos --json
    """
    settings, store = store, store.open()
    try:
        details = describe(store, settings.place)
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
    keywords = details.get("keywords")
    if keywords:
        fields = ", ".join(["caption", *keywords.get("fields", [])])
        click.echo(f"keywords     BM25 over {fields}")
    elif "keywords" in details.get("sparse_vectors", []):
        click.echo("keywords     none written yet")
    else:
        click.echo(f"keywords     none (made before keyword search: mmindex keywords -c {details['name']} adds them)")
    click.echo("payload      " + (", ".join(f"{k} ({v})" for k, v in details["payload_types"].items()) or "-"))
    click.echo("indexed      " + (", ".join(f"{k} ({v})" for k, v in details["indexed_fields"].items()) or "-"))
    click.echo("layout       " + (", ".join(f"{k}={v}" for k, v in details["options"].items()) or "default"))


@click.command("delete")
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
    if not (ids or point_ids or where or filter_json or source_name is not None):
        raise click.UsageError("name the points to delete: --ids, --point-ids, --where, --filter-json or --source")
    for option, values in (("--ids", ids), ("--point-ids", point_ids)):
        if values and not split_values(values):
            raise click.UsageError(f"{option} names no id (give them separated by commas)")
    settings = store
    store = settings.open()
    try:
        selection = select_points(store, ids=split_values(ids) or (), point_ids=split_values(point_ids) or (),
                                  where=where, filter_json=load_raw_filter(filter_json), source=source_name,
                                  place=settings.place)
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


# What is deleted, and the consent, are typed each time: never from MMINDEX_* variables or mmindex.toml.
command_line_only(delete_command, {"ids", "point_ids", "where", "filter_json", "source_name", "yes"})


COPY_SECTIONS = [
    ("Source (the collection to copy)", ["collection", "data_dir", "url"]),
    ("Target (where the copy goes)", ["to_url", "to_data_dir", "to_collection", "to_api_key", "to_ca_cert"]),
    ("Output", ["as_json", "quiet", "progress_interval", "page_size"]),
    ("Source server connection", ["api_key", "ca_cert", "timeout", "prefer_grpc", "retries", "retry_wait"]),
]


@click.command("copy", cls=SectionedCommand, sections=COPY_SECTIONS)
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
    empty) and is made for the source's model; a copy that stopped (Ctrl-C, kill -9, a lost
    connection, even while the index was being built) continues where it stopped when the
    same command runs again, and a finished copy run again says so and copies nothing. At the
    end both collections are counted and must agree.

    Without --to-url or --to-data-dir the target is in the same store as the source (then
    --to-collection names it).

    \b
    Examples:
      mmindex copy -c photos --to-url https://qdrant.example.com:6333 --to-api-key "$KEY"
      mmindex copy -c photos --url http://localhost:6333 --to-data-dir ./offline-copy
      mmindex copy -c photos --to-data-dir /mnt/backup/mmindex_data
      mmindex copy -c photos --to-collection photos-backup --json
    """
    target = copy_target(store, url=to_url, data_dir=to_data_dir, collection=to_collection, api_key=to_api_key,
                         ca_cert=to_ca_cert)
    summary = _run_copy(store, target, page_size, quiet, progress_interval)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), default=str))
        return
    if summary.already_complete:
        click.echo(f"nothing to copy: the target is already a complete copy (finished {summary.finished_at})\n"
                   f"  from {summary.source} ({summary.source_points:,} points)\n"
                   f"  to   {summary.target} ({summary.target_points:,} points)")
        return
    resumed = (f", resumed at point {summary.resumed_from}" if summary.resumed_from else "")
    click.echo(f"copied {summary.copied:,} points in {summary.seconds:.1f}s{resumed}\n"
               f"  from {summary.source} ({summary.source_points:,} points)\n"
               f"  to   {summary.target} ({summary.target_points:,} points)")


def _run_copy(source, target, page_size: int, quiet: bool, progress_interval: float):
    """The copy with a progress bar on stderr, made once the number of points is known."""
    on_progress = ResumedProgress("copy", "points", quiet=quiet, interval=progress_interval)
    try:
        return copy_between(source, target, page=page_size, on_progress=on_progress)
    finally:
        on_progress.close()


@click.group("alias")
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
    before = set_alias(store, name, target)
    click.echo(f"alias {name} → {target}" + (f" (was {before})" if before else " (new)"))


@_without_collection_option
@alias_group.command("list")
@store_options(collection_required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON: {alias: collection}.")
@friendly_errors
def alias_list(store, as_json):
    """List the aliases of the store: NAME → COLLECTION."""
    aliases, missing = list_aliases(store)
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
    before = delete_alias(store, name)
    click.echo(f"deleted alias {name} (it pointed to {before})")
