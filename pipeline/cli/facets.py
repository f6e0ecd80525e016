"""``mmindex facets``: how many points hold each value of payload fields under a filter, as a table or JSON."""
from __future__ import annotations

import json

import click

from mmindex.pipeline.cli.format import SectionedCommand, display_width, short, terminal_width
from mmindex.pipeline.cli.options import STORE_SECTION, friendly_errors, store_options
from mmindex.pipeline.query.facets import DEFAULT_LIMIT, Facet, facets

FACETS_SECTIONS = [("Facets", ["collection", "where", "filter_json", "limit", "as_json"]), STORE_SECTION]


@click.command(cls=SectionedCommand, sections=FACETS_SECTIONS)
@click.argument("fields", nargs=-1, required=True, metavar="FIELD...")
@store_options
@click.option("--where", "-w", default=None,
              help="Count only the points this filter matches, as `query --where` filters, e.g. \"year >= 2020\".")
@click.option("--filter-json", default=None, help="A raw Qdrant filter as JSON (ANDed with --where).")
@click.option("--limit", "-k", default=DEFAULT_LIMIT, show_default=True, type=click.IntRange(1, 10_000),
              help="Values to show per field, most frequent first; a line says when there are more.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: the collection and, per field, its values with their counts and `more`.")
@friendly_errors
def facets_command(fields, store, where, filter_json, limit, as_json):
    """Count the points holding each value of payload FIELDs, under a filter.

    Each FIELD is named as --where names it (color, meta.kind, items.tag, `shot on`); its
    values are counted among the points --where and --filter-json match, the same points
    `mmindex query` with those filters can return. Values come most frequent first (ties by
    value); each element of a list field counts, and a point counts once per value. Keyword,
    integer and bool fields can be counted; a field without a payload index gets one, once
    (a note on stderr says so).

    \b
    Examples:
      mmindex facets color shape -c shapes
      mmindex facets color -c shapes --where "year >= 2020" --limit 5
      mmindex facets tags -c photos --filter-json '{"must": [{"key": "lang", "match": {"value": "en"}}]}'
      mmindex facets color -c shapes --json
    """
    settings = store
    store = settings.open()
    try:
        answers = facets(store, fields, where, filter_json, limit, origin="--filter-json")
    finally:
        store.close()
    for answer in answers:
        if answer.index_created:
            click.echo(f"note: created a payload index on {answer.field} to count its values (once; later counts "
                       "use it)", err=True)
    if as_json:
        click.echo(json.dumps({"collection": settings.collection, "facets": [a.to_dict() for a in answers]},
                              default=str, ensure_ascii=False))
        return
    conditions = " and ".join(filter(None, [f"where {where}" if where else "",
                                            "a raw filter" if filter_json else ""]))
    for number, answer in enumerate(answers):
        if number:
            click.echo()
        print_facet(answer, settings.collection, conditions, limit)


def print_facet(answer: Facet, collection: str, conditions: str, limit: int) -> None:
    """A field's header (the field, the collection, the filter), then one line per value: value and count."""
    shown = len(answer.values)
    click.echo(f"{answer.field} in {collection!r}" + (f", {conditions}" if conditions else "")
               + f": {shown}{'+' if answer.more else ''} value{'s' if shown != 1 or answer.more else ''}")
    width = terminal_width()
    labels = [short(value.value if isinstance(value.value, str) and value.value.strip() else json.dumps(value.value),
                    width - 20) for value in answer.values]
    column = max((display_width(label) for label in labels), default=0)
    for label, value in zip(labels, answer.values):
        click.echo(f"  {label}{' ' * (column - display_width(label))}  {value.count:>8,}")
    if answer.more:
        click.echo(f"  … more values (--limit {min(limit * 2, 10_000)} shows more)")
