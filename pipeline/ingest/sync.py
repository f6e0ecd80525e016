"""Keeping a collection equal to its source: the id rule and model record a collection keeps, payload indexes,
each point's source, stale points and the ``--sync`` deletes."""
from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.errors import CollectionMismatchError, InputError
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.records import id_problem, index_kind, payload_types, point_id_from_key
from mmindex.pipeline.ingest.source import CAPTION_KEY, Source
from mmindex.pipeline.ingest.summary import IngestSummary, utc_now
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.query.filters import source_filter

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
    indexes = _index_plan(source, options.index_fields)
    spec = replace(encoder.spec(),
                   payload_types=payload_types(source.schema, source.mapping.payload, source.mapping.payload_key))
    meta = store.metadata() if store.exists() else None
    rule = id_rule(source)
    rule_change = None
    renamed = False
    if meta is not None:
        spec.check_matches(CollectionSpec.from_metadata(meta), store.collection)
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
    if options.dry_run:
        return rule_change
    store.ensure_collection(spec)
    changes = _model_changes(meta or {}, encoder)
    if meta is None or meta.get("id_rule") is None or renamed:
        changes["id_rule"] = rule
    sources = dict((meta or {}).get("sources", {}))
    if options.source_name not in sources:
        sources[options.source_name] = {"inputs": list(source.inputs)}
        changes["sources"] = sources
    if changes:
        store.update_metadata(changes)
    for name, kind in indexes.items():
        store.create_payload_index(name, kind)
    store.begin_load()
    return rule_change


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
    return changes


def finish_source(store: Store, summary: IngestSummary, options: IngestOptions, run: IngestRun,
                  on_stage: Callable[[str], None] | None, rule_change: dict | None) -> None:
    """After a complete run: count the source's stale points and, with sync, delete them.

    A run that skipped files or lost rows of a file did not see its whole source, so it
    counts and deletes nothing.
    """
    incomplete = sorted(run.lost_files | {f["file"] for f in summary.skipped_files})
    if incomplete:
        if options.sync:
            summary.warnings.insert(0, f"--sync deleted nothing: {len(incomplete)} input file(s) could not be read "
                                       f"in full ({', '.join(incomplete[:3])}{' …' if len(incomplete) > 3 else ''})")
        return
    if options.sync and summary.read and summary.reject_rate > options.max_reject_rate:
        summary.warnings.insert(0, f"--sync deleted nothing: {summary.rejected:,} of {summary.read:,} rows were "
                                   f"rejected ({summary.reject_rate:.1%}, over --max-reject-rate "
                                   f"{options.max_reject_rate:.1%}); an unreachable image store must not empty "
                                   "the collection")
        return
    stale = stale_points(store, options.source_name, run) if store.exists() else []
    summary.stale = len(stale)
    if not options.sync or options.dry_run:
        if options.dry_run and options.sync:
            summary.deleted = len(stale)
        return
    if stale and on_stage:
        on_stage(f"deleting {len(stale):,} point(s) whose rows are gone from the inputs")
    for start in range(0, len(stale), DELETE_BATCH):
        chunk = stale[start:start + DELETE_BATCH]
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


def stale_points(store: Store, source_name: str, run: IngestRun, page: int = 8192) -> list[str]:
    """Ids of the points recorded under ``source_name`` that this run neither produced nor rejected."""
    stale = []
    offset = None
    while True:
        points, offset = store.scroll(source_filter(source_name), limit=page, offset=offset, with_payload=False)
        stale.extend(p.id for p in points if uuid.UUID(p.id).int not in run.seen)
        if offset is None:
            return stale


INDEX_KINDS = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")


def _index_plan(source: Source, fields: Sequence[str]) -> dict[str, str]:
    """Payload key → index type for ``--index-fields`` (payload keys, or the columns they come from)."""
    mapping = source.mapping
    columns = {mapping.payload_key(column): column for column in mapping.payload}
    plan = {}
    for item in fields:
        name, _, kind = item.rpartition(":")
        if not name or item in columns or item in mapping.payload:
            name, kind = item, ""  # a field whose name has a colon in it
        if kind and kind not in INDEX_KINDS:
            raise InputError(f"--index-fields {item!r}: {kind!r} is not an index type "
                             f"(types: {', '.join(INDEX_KINDS)})")
        if name == CAPTION_KEY and mapping.caption:
            plan[name] = kind or "text"
            continue
        if name not in columns and name in mapping.payload:
            name = mapping.payload_key(name)
        if name not in columns:
            raise InputError(f"--index-fields {name!r} is not a payload field "
                             f"(payload: {', '.join(columns) or 'none'})")
        arrow_type = source.schema.field(columns[name]).type
        inferred = index_kind(arrow_type)
        if kind and inferred and kind != inferred and (inferred, kind) != ("keyword", "text"):
            raise InputError(f"--index-fields {item!r}: {name!r} holds {inferred} values, which an index of type "
                             f"{kind} would not serve; leave the type out, or give {name}:{inferred}")
        if not (kind or inferred):
            raise InputError(f"cannot index {name!r} of type {arrow_type}; "
                             "give a type as NAME:keyword|integer|float|bool|datetime|text")
        plan[name] = kind or inferred
    return plan
