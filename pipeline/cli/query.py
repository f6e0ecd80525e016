"""``mmindex query``: text and image queries against a collection, printed for people or as JSON lines."""
from __future__ import annotations

import json

import click

from mmindex.connectors.queries import OVERSAMPLING
from mmindex.pipeline.cli.format import SectionedCommand, display_width, field_order, fields_line, short, terminal_width
from mmindex.pipeline.cli.options import STORE_SECTION, device_option, friendly_errors, inference_options, store_options
from mmindex.pipeline.models.encoder import Runtime
from mmindex.pipeline.models.identity import ModelChoice, model_display_name
from mmindex.pipeline.query.queries import QueryAnswers, QueryRequest, run_queries

QUERY_SECTIONS = [
    ("Query", ["image_paths", "collection", "target", "where", "filter_json", "limit", "offset", "fields", "as_json",
               "model", "text_model", "device", "backend", "model_precision", "model_threads", "trust_model_code"]),
    ("Ranking", ["mode", "fusion", "fusion_depth", "like", "unlike", "not_texts", "strategy", "diversity", "pool", "boost",
                 "group_by", "group_size", "cutoff", "collapse_duplicates"]),
    ("Search tuning", ["score_threshold", "exact", "hnsw_ef", "oversampling"]),
    STORE_SECTION,
]


@click.command(cls=SectionedCommand, sections=QUERY_SECTIONS)
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
@click.option("--oversampling", default=OVERSAMPLING, show_default=True, type=click.FloatRange(1),
              help="Quantized collections: candidates per result rescored with the full vectors. On int8 at 1M points "
                   "4 reaches Recall@10 0.998 at the latency of 2, which stops at 0.995 (bench/README.md §5).")
@click.option("--mode", default="dense", show_default=True, type=click.Choice(["dense", "keyword", "hybrid"]),
              help="dense: CLIP vectors (meaning); keyword: BM25 over the caption and --text-fields (exact words, "
                   "part numbers, names); hybrid: both, fused by the engine. E.g. --mode hybrid \"XJ-9000 red\".")
@click.option("--fusion", default=None, type=click.Choice(["rrf", "dbsf"]),
              help="How --target both and --mode hybrid fuse their rankings: reciprocal rank (rrf; the default "
                   "for --target both) or distribution-based score fusion (dbsf; the default for --mode hybrid, "
                   "whose BM25 scores tie often).")
@click.option("--fusion-depth", default=100, show_default=True, type=int,
              help="Candidates each leg of a fused (--target both, --mode hybrid) or --boost ranking brings; pages "
                   "must end within them. Larger pages deeper and costs more (up to 10000).")
@click.option("--like", multiple=True, metavar="EXAMPLE",
              help="Search near this example too (repeatable): a stored point id, an image file or a text. "
                   "Alone it is \"more like this\" (the point itself is never returned): --like 3f2c…")
@click.option("--unlike", multiple=True, metavar="EXAMPLE",
              help="Search away from this example (repeatable): a point id, an image file or a text.")
@click.option("--not", "not_texts", multiple=True, metavar="TEXT",
              help="Search away from this text (repeatable): \"a dog\" --not \"a cartoon\".")
@click.option("--strategy", default="average_vector", show_default=True,
              type=click.Choice(["average_vector", "best_score", "sum_scores"]),
              help="How examples combine (Qdrant's recommendation strategies): average_vector searches near "
                   "2·mean(likes) − mean(unlikes); best_score and sum_scores score each point against every example.")
@click.option("--diversity", default=None, type=float, metavar="λ",
              help="0–1: trade relevance for variety with MMR (0: plain ranking), choosing among --pool "
                   "candidates; 0.2–0.3 spreads near-duplicates at little cost in relevance (docs/retrieval-quality.md"
                   ", Diversity). E.g. --diversity 0.3 --pool 200.")
@click.option("--pool", default=None, type=int,
              help="Candidates --diversity chooses from, per leg (default 100); pages must end within them.")
@click.option("--boost", default=None, metavar="EXPR",
              help="Rescore by payload: e.g. \"score + 0.1 * popularity\" or \"score + 0.3 * "
                   "exp_decay(taken_at, target=now, scale=30d)\" (docs/where-language.md, Rescoring).")
@click.option("--group-by", default=None, metavar="FIELD",
              help="At most --group-size hits per value of FIELD (one per album, per product…); --limit and "
                   "--offset count groups. E.g. --group-by album --group-size 2.")
@click.option("--group-size", default=1, show_default=True, type=int, help="Hits per group with --group-by.")
@click.option("--cutoff", default=None, type=click.Choice(["auto"]),
              help="auto: return only the hits judged relevant to this query (zero included), --limit at most.")
@click.option("--collapse-duplicates", is_flag=True,
              help="One hit per group of exact or near duplicates (the best scoring; the others' ids listed under "
                   "it), so copies of one photo do not fill the page; --limit and --offset count the hits shown. "
                   "E.g. mmindex query \"a beach\" -c photos --collapse-duplicates.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per hit, one per line, with the query it answers and its rank.")
@friendly_errors
def query(texts, image_paths, target, store, model, text_model, device, backend, model_precision, model_threads, where, filter_json, limit, offset, fields, score_threshold,
          exact, hnsw_ef, oversampling, mode, fusion, fusion_depth, like, unlike, not_texts, strategy, diversity, pool, boost,
          group_by, group_size, cutoff, collapse_duplicates, as_json):
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
      mmindex query "XJ-9000 bracket" -c parts --mode hybrid        # exact words and meaning
      mmindex query --like 3f2c5e9a-0b1d-5c7e-9a4f-2d6b8e1c0a37 -c photos   # more like this point
      mmindex query "a dog on a beach" --not "a cartoon" --diversity 0.5 --group-by album
      mmindex query "海滩上的狗" -c photos --text-model sentence-transformers/clip-ViT-B-32-multilingual-v1
    """
    chosen = list(dict.fromkeys(name.strip() for name in fields.split(",") if name.strip())) if fields else None
    request = QueryRequest(texts, image_paths, target or "image", where, filter_json, limit, offset, score_threshold,
                           exact, hnsw_ef, oversampling, chosen, mode=mode, fusion=fusion, like=like, unlike=unlike,
                           not_texts=not_texts, strategy=strategy, diversity=diversity, pool=pool, boost=boost,
                           group_by=group_by, group_size=group_size, cutoff=cutoff, fusion_depth=fusion_depth,
                           collapse_duplicates=collapse_duplicates)
    settings = store
    collection = settings.collection
    store = settings.open()
    try:
        result = run_queries(store, request, ModelChoice(model, text_model, model_precision),
                             Runtime(device, backend, model_threads), settings.place)
        # shown first under each hit; read only for a person's view that picks no --fields
        indexed = [] if as_json or chosen else list(store.info().indexed_fields)
    finally:
        store.close()
    if as_json:
        print_json_lines(result, offset, chosen)
    else:
        print_answers(result, request, collection, indexed)


def print_json_lines(result: QueryAnswers, offset: int, chosen: list[str] | None) -> None:
    """One JSON object per hit: the query, the rank and the hit (its payload cut to ``chosen`` fields)."""
    for (kind, value), hits in result.answers:
        for rank, hit in enumerate(hits, start=offset + 1):
            answer = hit.to_dict()
            if chosen:
                answer["payload"] = {k: v for k, v in answer["payload"].items() if k in chosen}
            click.echo(json.dumps({"query": {kind: value}, "rank": rank, **answer}, default=str, ensure_ascii=False))


def print_answers(result: QueryAnswers, request: QueryRequest, collection: str, indexed: list[str]) -> None:
    """Each query's header (the query, what it searched, the model, the filter) and its hits, cut to the terminal."""
    where, offset, chosen = request.where, request.offset, request.fields
    raw_filter = result.raw_filter
    searched = {"image": "images", "text": "captions", "both": "images and captions"}[request.target]
    searched = {"dense": searched, "keyword": "keywords (BM25)", "hybrid": f"{searched} and keywords"}[request.mode]
    width = terminal_width()
    for number, ((kind, value), hits) in enumerate(result.answers):
        if number:
            click.echo()
        conditions = " and ".join(filter(None, [f"where {where}" if where else "",
                                                "a raw filter" if raw_filter else ""]))
        text_model = (f", text model {model_display_name(result.text_model)}"
                      if kind == "text" and result.text_model else "")
        rest = (f" → {searched} of {collection!r} (model {model_display_name(result.model)}{text_model})"
                + (f", {conditions}" if conditions else "")
                + f": {len(hits)} hit{'s' if len(hits) != 1 else ''}"
                + (f" from rank {offset + 1}" if offset else ""))
        room = max(width - display_width(rest) - 8, 12)  # the query itself is cut first
        label = repr(short(value, room)) if kind == "text" else f"{kind} {short(value, room)}"
        click.echo(label + rest)
        group = object()
        for rank, hit in enumerate(hits, start=offset + 1):
            if request.group_by and hit.group != group:
                group = hit.group
                click.echo(f"  {request.group_by} = {group!r}")
            shown = {**hit.payload, "caption": hit.caption} if chosen and "caption" in chosen else hit.payload
            names = field_order(list(shown), indexed, chosen)
            click.echo(f"{rank:>3}. {hit.score:.4f}  {short(hit.caption or '(no caption)', width - 14)}")
            line = fields_line(shown, names, width - 6, explicit=bool(chosen))
            click.echo(f"      {line}" if line else f"      point {hit.id}")
            if hit.duplicates:
                click.echo(f"      + {len(hit.duplicates)} duplicate{'s' if len(hit.duplicates) != 1 else ''}: "
                           + short(", ".join(hit.duplicates), width - 24))
