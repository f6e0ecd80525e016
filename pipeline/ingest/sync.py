"""Keeping a collection equal to its source: the id rule and model record a collection keeps, payload indexes,
each point's source, stale points and the ``--sync`` deletes."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import pyarrow as pa

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.errors import CollectionMismatchError, FilterError, UsageError
from mmindex.pipeline.duplicates.signals import PIXELS_KEY
from mmindex.pipeline.ingest.arrow_shards import open_rows
from mmindex.pipeline.ingest.duplicates import LINK_KEYS
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.records import id_problem, payload_types, point_id_from_key
from mmindex.pipeline.ingest.source import CAPTION_KEY, Source, keep_stored_types
from mmindex.pipeline.ingest.summary import IngestSummary, utc_now
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.query.fields import resolve_field
from mmindex.pipeline.query.filters import source_filter
from mmindex.pipeline.query.keywords import SETTINGS_KEY, ingest_record

if TYPE_CHECKING:  # the run's record of what it saw: run.py calls this module, not the other way round
    from mmindex.pipeline.ingest.run import IngestRun


DELETE_BATCH = 1000  # point ids per delete request in a sync


def id_rule(source: Source) -> dict[str, str]:
    """How this source's rows get point ids: from the id column, or from image bytes and caption."""
    return {"rule": "column", "column": source.mapping.id} if source.mapping.id else {"rule": "content"}


def describe_id_rule(rule: dict[str, Any]) -> str:
    return f"from column {rule['column']!r}" if rule.get("rule") == "column" else "from image and caption content"


def prepare_collection(source: Source, store: Store, encoder: Encoder, options: IngestOptions) -> dict | None:
    """Create or check the collection for this model and source, its payload indexes, and start the load.

    Everything that can refuse the run is checked before the first write. Returns the id rule
    to record at the end of the run when a sync changes it (else None). A dry run only checks.
    """
    meta = store.metadata() if store.exists() else None
    if meta is not None:  # a column typed otherwise than the collection records it is read in the recorded type
        keep_stored_types(source, meta.get("payload_types", {}), store.collection)
    indexes = index_plan(source, options.index_fields)
    types = payload_types(source.schema, source.mapping.payload, source.mapping.payload_key)
    if options.on_duplicate == "link":  # the fields link writes, typed so that --where and --fields know them
        types.update(dict.fromkeys(LINK_KEYS, "keyword"))
    spec = replace(encoder.spec(), payload_types=types)
    keywords = keyword_plan(source, store, meta, options)
    rule = id_rule(source)
    rule_change = None
    renamed = False
    if meta is not None:
        spec.check_matches(CollectionSpec.from_metadata(meta), store.collection)
        encoder.take_recorded_names(meta)  # a copied model folder is named as the collection records it
        recorded = meta.get("id_rule")
        if recorded is not None and recorded != rule and _renamed_id_column(source, store, recorded, rule):
            renamed = True  # the same values under another column name: the same points
        elif recorded is not None and recorded != rule:
            others = store.count({"must_not": source_filter(options.source_name)["must"]}) if options.sync else 0
            if not options.sync or others:
                same = ("Run with the same rule (--id-col " + recorded["column"] + ")"
                        if recorded.get("rule") == "column" else "Run with the same rule (no --id-col)")
                how = (f"; --sync cannot rebuild it under the new rule, since {others:,} of its points come from "
                       "other sources: ingest into another --collection" if others else
                       ", or rebuild the collection under the new rule with --sync (its points are deleted and the "
                       "rows embedded again)")
                raise CollectionMismatchError(
                    f"collection {store.collection!r} makes point ids {describe_id_rule(recorded)}; this run would "
                    f"make them {describe_id_rule(rule)}, so its rows would be stored a second time. {same}{how}")
            rule_change = rule
            check_rebuild(source, store, options, recorded, rule)
    if options.dry_run:
        return rule_change
    store.ensure_collection(spec)
    changes = _model_changes(meta or {}, encoder)
    if meta is None or meta.get("id_rule") is None or renamed:
        changes["id_rule"] = rule
    if keywords is not None:
        changes[SETTINGS_KEY] = keywords  # the BM25 rule and --text-fields, recorded at the first write
    sources = dict((meta or {}).get("sources", {}))
    if options.source_name not in sources:
        sources[options.source_name] = {"inputs": list(source.inputs)}
        changes["sources"] = sources
    if changes:
        store.update_metadata(changes)
    for name, kind in indexes.items():
        store.create_payload_index(name, kind)
    if options.on_duplicate != "keep":  # each written batch looks stored points up by their pixel hash
        store.create_payload_index(PIXELS_KEY, "keyword")
    store.begin_load()
    return rule_change


def keyword_plan(source: Source, store: Store, meta: dict | None, options: IngestOptions) -> dict | None:
    """The keyword record (BM25 rule, ``--text-fields``) to write at the first write, or None; refuses text fields
    that are not text or not the recorded ones (``query/keywords.ingest_record``) before anything loads or writes."""
    types = payload_types(source.schema, source.mapping.payload, source.mapping.payload_key)
    return ingest_record(meta, {**(meta or {}).get("payload_types", {}), **types}, options.text_fields,
                         store.collection)


def check_rebuild(source: Source, store: Store, options: IngestOptions, recorded: dict, rule: dict) -> None:
    """Refuse, before anything is written, a sync that would rebuild the collection under another id rule when
    ``--max-delete`` does not allow deleting every point of the source, or when the new id column repeats a value
    (its rows would collapse into fewer points)."""
    points = store.count(source_filter(options.source_name))
    limit = options.delete_limit
    if points and not limit.allows(points, points):
        raise UsageError(
            f"--sync would rebuild collection {store.collection!r} with point ids {describe_id_rule(rule)} (they are "
            f"made {describe_id_rule(recorded)}), deleting all {points:,} points of source {options.source_name!r}: "
            f"more than --max-delete {limit.spec} allows. Pass --max-delete all to rebuild it, or keep the rule "
            "(the same --id-col)")
    if rule.get("rule") == "column":
        check_unique_ids(source, rule["column"])


def check_unique_ids(source: Source, column: str) -> None:
    """UsageError naming the file and row of the first value of ``column`` that an earlier row already holds
    (values are compared as point ids: 20 and 20.0 are one id). Files that cannot be read are the run's to report."""
    seen: set[int] = set()
    for path in source.files:
        try:
            parquet = open_rows(source.filesystem, path)  # a Parquet file or an Arrow shard
            keys = (key for batch in parquet.iter_batches(batch_size=65536, columns=[column])
                    for key in batch.column(0).to_pylist()) if column in parquet.schema_arrow.names else ()
            for row, key in enumerate(keys):
                number = uuid.UUID(point_id_from_key(key)).int if id_problem(key) is None else None
                if number in seen:
                    raise UsageError(
                        f"--id-col {column!r} does not name each row once: the value {key!r} is held by an earlier "
                        "row too, so a rebuild under it would store fewer points than rows (the last row with an id "
                        "wins); choose a column whose values are unique", file=source.display(path), row=row)
                if number is not None:
                    seen.add(number)
        except (OSError, pa.ArrowException):
            continue


def _renamed_id_column(source: Source, store: Store, recorded: dict, rule: dict, sample: int = 256) -> bool:
    """Whether this run's id column holds the recorded one's values under a new name (a renamed column).

    Decided on the first rows: if at least half of their ids are points already, the ids are the
    same and nothing would be stored twice.
    """
    if recorded.get("rule") != "column" or rule.get("rule") != "column":
        return False
    for source_batch in source.batches(sample):
        if source_batch.batch is None:
            continue
        keys = source_batch.batch.column(source.mapping.id).to_pylist()
        ids = list(dict.fromkeys(point_id_from_key(k) for k in keys if id_problem(k) is None))
        return bool(ids) and 2 * len(store.retrieve(ids)) >= len(ids)
    return False


def _model_changes(meta: dict[str, Any], encoder: Encoder) -> dict[str, Any]:
    """What to record of this run's model: where it was loaded from; the name and fingerprint once.

    The name a collection shows stays the one it was made with, even when a copy of the folder
    under another name is used later (the fingerprint says it is the same model).
    """
    recorded = encoder.recorded()
    changes = {}
    if meta.get("model_path") != recorded["model_path"]:
        changes["model_path"] = recorded["model_path"]
    if not meta.get("model_fingerprint") and recorded["model_fingerprint"]:
        changes["model_fingerprint"] = recorded["model_fingerprint"]
        changes["model"] = recorded["model"]  # a collection from before fingerprints recorded a path here
    if recorded["text_model"] and meta.get("text_model_path") != recorded["text_model_path"]:
        changes["text_model_path"] = recorded["text_model_path"]
    for key in ("model", "text_model"):  # a Hub id's cache snapshot, once: later runs check it (check_hub_revision)
        revision = recorded.get(f"{key}_revision")
        if revision and not meta.get(f"{key}_revision") and meta.get(key) in (None, recorded[key]):
            changes[f"{key}_revision"] = revision
    return changes


def finish_source(store: Store, summary: IngestSummary, options: IngestOptions, run: IngestRun,
                  on_stage: Callable[[str], None] | None, rule_change: dict | None) -> None:
    """After a complete run: count the source's stale points and, with sync, delete them.

    A run that skipped files or lost rows of a file did not see its whole source, so it counts and deletes
    nothing; a sync with too many rejected rows deletes nothing either. A sync that would delete more of the
    source's points than ``options.max_delete`` allows deletes none (``summary.delete_refused`` says why, and the
    run fails with it): an input that is empty today, a glob that matches fewer files or a changed id column must
    not empty the collection. Every check comes before the first delete.
    """
    if not _saw_whole_source(summary, options, run):
        return
    found = stale_points(store, options.source_name, run, _unsure_files(store, summary, rule_change)) \
        if store.exists() else Stale([], 0, {})
    summary.stale = len(found.ids)
    for file, count in sorted(found.kept.items()):
        summary.warnings.insert(0, (
            f"{count:,} point(s) of {file} kept although no row of this run produced them: rows of that file were "
            "rejected before their point id could be known (ids from image and caption content), so which points "
            "they are cannot be told; they go once those rows are read or removed"))
    if not options.sync:
        return
    limit = options.delete_limit
    if not limit.allows(len(found.ids), found.points):
        summary.delete_refused = delete_refusal(len(found.ids), found.points, options, summary.read)
        return
    if options.dry_run:
        summary.deleted = len(found.ids)
        return
    if found.ids and on_stage:
        on_stage(f"deleting {len(found.ids):,} point(s) whose rows are gone from the inputs")
    for start in range(0, len(found.ids), DELETE_BATCH):
        chunk = found.ids[start:start + DELETE_BATCH]
        store.delete(chunk)
        summary.deleted += len(chunk)
    summary.stale = 0
    changes: dict[str, Any] = {}
    if rule_change is not None:
        changes["id_rule"] = rule_change
    meta = store.metadata() or {}
    sources = dict(meta.get("sources", {}))
    sources[options.source_name] = {**sources.get(options.source_name, {}), "synced_at": utc_now()}
    changes["sources"] = sources
    store.update_metadata(changes)


def _saw_whole_source(summary: IngestSummary, options: IngestOptions, run: IngestRun) -> bool:
    """Whether the run read every input in full and rejected few enough rows to tell what is stale."""
    incomplete = sorted(run.lost_files | {f["file"] for f in summary.skipped_files})
    if incomplete:
        if options.sync:
            summary.warnings.insert(0, f"--sync deleted nothing: {len(incomplete)} input file(s) could not be read "
                                       f"in full ({', '.join(incomplete[:3])}{' …' if len(incomplete) > 3 else ''})")
        return False
    if options.sync and summary.read and summary.reject_rate > options.max_reject_rate:
        summary.warnings.insert(0, f"--sync deleted nothing: {summary.rejected:,} of {summary.read:,} rows were "
                                   f"rejected ({summary.reject_rate:.1%}, over --max-reject-rate "
                                   f"{options.max_reject_rate:.1%}); an unreachable image store must not empty "
                                   "the collection")
        return False
    return True


def delete_refusal(deleting: int, points: int, options: IngestOptions, read: int | None = None) -> str:
    """The one line a sync that would delete more than ``--max-delete`` allows fails with."""
    limit = options.delete_limit
    share = f"{deleting / points:.0%}" if points else "all"
    why = (" (this run read no row: is the input empty, or a folder not mounted?)" if read == 0 else
           " (fewer files than before, an emptied file, or another --id-col?)")
    return (f"--sync deleted nothing: it would delete {deleting:,} of the {points:,} points of source "
            f"{options.source_name!r} ({share}), more than --max-delete {limit.spec} allows ({limit.most(points):,})"
            f"{why}; if those rows are really gone, run again with --max-delete all (or --max-delete {deleting})")


@dataclass
class Stale:
    """A source's stale points: ``ids`` to delete, the source's ``points`` in all, and the stale points ``kept``
    per file (their rows were rejected before their ids were known)."""

    ids: list[str]
    points: int
    kept: dict[str, int]


def _unsure_files(store: Store, summary: IngestSummary, rule_change: dict | None) -> set[str]:
    """Files with rows rejected before their point id was known, when ids come from content (with an id column, a
    rejected row's point is kept by its id, and a row without an id never had a point)."""
    rule = rule_change or ((store.metadata() or {}).get("id_rule") if store.exists() else None)
    if (rule or {}).get("rule") != "content":
        return set()
    return {r.file for r in summary.rejections if r.stage == "read" and r.id is None}


def stale_points(store: Store, source_name: str, run: IngestRun, unsure_files: Sequence[str] = (),
                 page: int = 8192) -> Stale:
    """The points recorded under ``source_name`` that this run neither produced nor rejected, less those recorded
    from ``unsure_files`` (kept: a rejected row of the file may be theirs)."""
    kept: dict[str, int] = {}
    keep: set[int] = set()
    for file in sorted(unsure_files):
        query = {"must": source_filter(source_name)["must"] + [{"key": "_source.file", "match": {"value": file}}]}
        for point_id in _ids(store, query, page):
            if uuid.UUID(point_id).int not in run.seen:
                keep.add(uuid.UUID(point_id).int)
                kept[file] = kept.get(file, 0) + 1
    stale, points = [], 0
    for point_id in _ids(store, source_filter(source_name), page):
        points += 1
        number = uuid.UUID(point_id).int
        if number not in run.seen and number not in keep:
            stale.append(point_id)
    return Stale(stale, points, kept)


def _ids(store: Store, query: dict[str, Any], page: int) -> Iterator[str]:
    offset = None
    while True:
        points, offset = store.scroll(query, limit=page, offset=offset, with_payload=False)
        yield from (p.id for p in points)
        if offset is None:
            return


INDEX_KINDS = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")


def index_plan(source: Source, fields: Sequence[str]) -> dict[str, str]:
    """Payload key → index type for ``--index-fields``: payload keys, the columns they come from, or fields
    below them named as ``--where`` names them (``meta.y``, ``items.price``), each indexed at the key the
    ``--where`` compiler filters on (``records.payload_types`` records them)."""
    mapping = source.mapping
    columns = {mapping.payload_key(column): column for column in mapping.payload}
    types = payload_types(source.schema, mapping.payload, mapping.payload_key)
    plan = {}
    for item in fields:
        name, _, kind = item.rpartition(":")
        if not name or item in columns or item in mapping.payload:
            name, kind = item, ""  # a field whose name has a colon in it
        if kind and kind not in INDEX_KINDS:
            raise UsageError(f"--index-fields {item!r}: {kind!r} is not an index type "
                             f"(types: {', '.join(INDEX_KINDS)})")
        if name == CAPTION_KEY and mapping.caption:
            plan[name] = kind or "text"
            continue
        if name not in columns and name in mapping.payload:
            name = mapping.payload_key(name)
        path, inferred, held = _index_target(name, types, columns)
        if kind and inferred and kind != inferred and (inferred, kind) != ("keyword", "text"):
            raise UsageError(f"--index-fields {item!r}: {name!r} holds {inferred} values, which an index of type "
                             f"{kind} would not serve; leave the type out, or give {name}:{inferred}")
        if not (kind or inferred):
            raise UsageError(f"--index-fields {name!r}: cannot index a field of type {held}; "
                             "give a type as NAME:keyword|integer|float|bool|datetime|text")
        plan[path] = kind or inferred
    return plan


def _index_target(name: str, types: dict[str, str], columns: dict[str, str]) -> tuple[str, str | None, str]:
    """Where ``name`` is indexed (a payload key, or a path such as ``"meta".y``), its type, and what it holds."""
    try:
        field = resolve_field(name, False, types)
    except FilterError as error:
        if name in columns:  # a whole struct or list of lists: only with a type given
            return name, None, types.get(name, "?")
        if "." in name or "[" in name:
            raise UsageError(f"--index-fields {name!r}: {error}".replace(" in:  (", " (")) from None
        raise UsageError(f"--index-fields {name!r} is not a payload field "
                         f"(payload: {', '.join(columns) or 'none'})") from None
    return field.recorded, field.type, types.get(field.recorded, "?")
