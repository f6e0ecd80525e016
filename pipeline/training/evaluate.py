"""Retrieval quality of a model on image–caption pairs: Recall@K, MRR and median rank; precision, recall and F1 at
K, mAP and nDCG at K (``pipeline/training/metrics.py``).

Computed exactly (all vectors in memory) and, when a collection is given, through the store's own search, so the
two can be compared. Rows that share an image (the same bytes) or a group (``--group-col``) count as correct (relevant)
answers for each other.
"""
from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from mmindex.connectors.base import ScoredPoint, SearchRequest, Store
from mmindex.errors import InputError, UsageError
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.ingest.images import RejectedImage, decode_image
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.rows import SourceRow, read_rows
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.source import CAPTION_KEY, Source, open_source
from mmindex.pipeline.ingest.summary import IngestSummary
from mmindex.pipeline.models.encoder import Encoder, Runtime, encoder_for
from mmindex.pipeline.models.identity import ModelChoice
from mmindex.connectors.queries import Fusion
from mmindex.pipeline.query.keywords import keyword_query
from mmindex.pipeline.query.plan import SearchOptions, build_request
from mmindex.pipeline.query.ranking import FUSED_TOLERANCE, ranking, ranking_to_end
from mmindex.pipeline.query.search import search
from mmindex.pipeline.training.metrics import (
    average_precision,
    f1_at,
    flags_from_positions,
    ndcg_at,
    pessimistic_positions,
    precision_at,
    recall_at,
)

KS = (1, 5, 10)
# Ranks measured: average precision counts the relevant items in the first DEPTH ranks (as trec_eval does over a
# run of 1,000), and the store is asked for that many documents.
DEPTH = 1000


@dataclass
class RetrievalMetrics:
    """How well one direction (text→image or image→text) ranks the right answers.

    ``recall``: Recall@K as CLIP papers report it, the share of queries with a relevant answer in the first K (a hit
    rate). ``precision``, ``recall_all`` and ``f1`` at K, ``map`` (mean average precision) and ``ndcg`` at K count
    every relevant answer of each query (``metrics.py``), averaged over queries; empty when computed from first
    ranks only (``metrics_from_ranks``).
    """

    direction: str
    queries: int
    recall: dict[int, float]
    mrr: float
    median_rank: float
    precision: dict[int, float] = field(default_factory=dict)
    recall_all: dict[int, float] = field(default_factory=dict)
    f1: dict[int, float] = field(default_factory=dict)
    map: float | None = None
    ndcg: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        every = {f"{name}@{k}": round(v, 4) for name, values in (
            ("precision", self.precision), ("recall_all", self.recall_all), ("f1", self.f1), ("ndcg", self.ndcg))
            for k, v in values.items()}
        return {
            "direction": self.direction,
            "queries": self.queries,
            **{f"recall@{k}": round(v, 4) for k, v in self.recall.items()},
            "mrr": round(self.mrr, 4),
            "median_rank": self.median_rank if math.isfinite(self.median_rank) else None,
            **every,
            **({"map": round(self.map, 4)} if self.map is not None else {}),
        }


def metrics_from_ranks(direction: str, ranks: Sequence[float], ks: Sequence[int] = KS) -> RetrievalMetrics:
    """Metrics from the 1-based rank of the first correct answer of each query (inf: not found)."""
    if not ranks:
        return RetrievalMetrics(direction, 0, {k: 0.0 for k in ks}, 0.0, math.inf)
    count = len(ranks)
    recall = {k: sum(1 for r in ranks if r <= k) / count for k in ks}
    mrr = sum(1.0 / r for r in ranks) / count
    return RetrievalMetrics(direction, count, recall, mrr, float(statistics.median(ranks)))


def metrics_from_positions(direction: str, positions: Sequence[Sequence[float]], totals: Sequence[int],
                           ks: Sequence[int] = KS, depth: int = DEPTH) -> RetrievalMetrics:
    """Every metric from each query's 1-based ranks of its relevant answers (ascending) and its number of relevant
    answers in all; ranks past ``depth`` count as not found for precision, recall, F1, AP and nDCG."""
    metrics = metrics_from_ranks(direction, [p[0] if len(p) else math.inf for p in positions], ks)
    if not positions:
        return metrics
    lists = [(flags_from_positions(p, depth), total) for p, total in zip(positions, totals)]

    def mean(measure: Callable[..., float], *k: int) -> float:
        return float(np.mean([measure(flags, *k, total) for flags, total in lists]))

    metrics.precision = {k: float(np.mean([precision_at(flags, k) for flags, _ in lists])) for k in ks}
    metrics.recall_all = {k: mean(recall_at, k) for k in ks}
    metrics.f1 = {k: mean(f1_at, k) for k in ks}
    metrics.map = mean(average_precision)
    metrics.ndcg = {k: mean(ndcg_at, k) for k in ks}
    return metrics


TIE_TOLERANCE = 1e-6  # scores this close count as equal: float32 sums differ in the last bits between engines


def exact_positions(queries: np.ndarray, documents: np.ndarray, query_groups: np.ndarray,
                    document_groups: np.ndarray, chunk: int = 1024) -> tuple[list[list[int]], list[int]]:
    """Each query's ranks of its relevant documents over all documents (``metrics.pessimistic_positions``: wrong
    documents scoring at least a relevant one's score, less ``TIE_TOLERANCE``, rank before it), and how many
    relevant documents each query has. ``queries``: (q, d), ``documents``: (n, d), both L2-normalised; groups: (q,)
    and (n,); a document is relevant to a query of its group."""
    positions: list[list[int]] = []
    for start in range(0, len(queries), chunk):
        scores = (queries[start:start + chunk] @ documents.T).astype(np.float64)
        correct = query_groups[start:start + chunk, None] == document_groups[None, :]
        for row, relevant in zip(scores, correct):
            positions.append(pessimistic_positions(row[relevant], row[~relevant], TIE_TOLERANCE))
    sizes = Counter(document_groups.tolist())
    return positions, [sizes[group] for group in query_groups.tolist()]


def exact_ranks(queries: np.ndarray, documents: np.ndarray, query_groups: np.ndarray,
                document_groups: np.ndarray, chunk: int = 1024) -> list[float]:
    """Rank of the best-scoring correct document for each query, over all documents.

    rank = 1 + the number of wrong documents scoring at least the best correct score (less
    ``TIE_TOLERANCE``): ties with wrong documents count against the query (pessimistic), so a
    model that maps everything to one point does not score well, and the rank depends on
    scores only — never on ids or on the order an engine returns equal scores in.
    ``queries``: (q, d), ``documents``: (n, d), both L2-normalised; groups: (q,) and (n,).
    """
    positions, _ = exact_positions(queries, documents, query_groups, document_groups, chunk)
    return [float(p[0]) if p else math.inf for p in positions]


def positions_in(hits: Sequence[ScoredPoint], is_relevant: Callable[[Any], bool],
                 key: Callable[[ScoredPoint], Any]) -> list[int]:
    """``exact_positions``' rule on a ranked list of scored points: the points of one ``key`` are one document
    (scored by its best point), relevant when ``is_relevant(key)``; returns the relevant documents' ranks."""
    best: dict[Any, float] = {}
    for hit in hits:
        document = key(hit)
        best[document] = max(best.get(document, -math.inf), hit.score)
    relevant = [score for document, score in best.items() if is_relevant(document)]
    others = [score for document, score in best.items() if not is_relevant(document)]
    return pessimistic_positions(relevant, others, TIE_TOLERANCE)


@dataclass
class EvalPairs:
    """Embedded evaluation data: unique images, every caption, and who matches whom."""

    image_vectors: np.ndarray
    image_groups: np.ndarray
    image_rows: list[SourceRow]
    text_vectors: np.ndarray
    text_groups: np.ndarray
    text_rows: list[SourceRow]
    summary: IngestSummary
    skipped: dict[str, int] = field(default_factory=dict)
    image_of_point: dict[str, str] = field(default_factory=dict)  # point id → digest of its image bytes


def collect_rows(source: Source, model: str, summary: IngestSummary,
                 on_progress: Callable[[int], None] | None = None) -> list[SourceRow]:
    """Every readable row of ``source``, in order (unreadable ones are counted in ``summary``)."""
    rows: list[SourceRow] = []
    for batch in source.batches(256):
        rows.extend(read_rows(source, batch, model, summary))
        if on_progress:
            on_progress(batch.batch.num_rows)
    return rows


def embed_pairs(source: Source, encoder: Encoder, group_cols: Sequence[str] = (),
                on_progress: Callable[[int], None] | None = None) -> EvalPairs:
    """Read, decode and embed every row of ``source``."""
    if not source.mapping.caption:
        raise UsageError("evaluation needs a caption column; name it with --caption-col")
    keys = [group_key(source.mapping, column) for column in group_cols]
    missing = [c for c, key in zip(group_cols, keys) if key is None]
    if missing:
        fields = [source.mapping.caption, *source.mapping.payload]
        raise UsageError(f"--group-col {', '.join(missing)} is not a column of the input "
                         f"(columns: {', '.join(filter(None, fields))})")
    summary = IngestSummary(collection="(eval)", files=len(source.files))
    return embed_rows(collect_rows(source, encoder.name, summary, on_progress), encoder, keys, summary)


def group_key(mapping: Any, column: str) -> str | None:
    """The payload key holding ``column``'s values: the caption column's text is under 'caption'."""
    if column == mapping.caption or (column == CAPTION_KEY and mapping.caption):
        return CAPTION_KEY
    if column in mapping.payload:
        return mapping.payload_key(column)
    return None


def embed_rows(rows: Sequence[SourceRow], encoder: Encoder, group_cols: Sequence[str] = (),
               summary: IngestSummary | None = None) -> EvalPairs:
    """Embed rows for evaluation; identical images are embedded once."""
    summary = summary or IngestSummary(collection="(eval)")
    group_ids: dict[Any, int] = {}
    image_index: dict[str, int] = {}
    images, image_groups, image_rows = [], [], []
    texts, text_groups, text_rows = [], [], []
    skipped = {"no caption": 0}
    image_of_point: dict[str, str] = {}
    for row in rows:
        digest = hashlib.sha256(row.image.data).hexdigest()
        image_of_point[row.id] = digest
        key = tuple(row.payload.get(c) for c in group_cols) if group_cols else ("image", digest)
        if digest not in image_index:
            try:
                image = decode_image(row.image.data, encoder.image_size, center_crop=encoder.center_crop)
            except RejectedImage as error:
                summary.rejected += 1
                summary.warnings.append(f"{row.file} row {row.row}: {error.message}")
                continue
            image_index[digest] = len(images)
            images.append(image)
            image_groups.append(group_ids.setdefault(key, len(group_ids)))
            image_rows.append(row)
        if not row.caption:
            skipped["no caption"] += 1
            continue
        texts.append(row.caption)
        text_groups.append(group_ids.setdefault(key, len(group_ids)))
        text_rows.append(row)
    if not images or not texts:
        raise InputError("no usable image–caption pairs to evaluate")
    image_vectors, image_failures = encoder.encode_each(images)
    text_vectors, text_failures = encoder.encode_each(texts)
    if image_failures or text_failures:  # set aside what the model fails on, and the pairs left without an image
        failed_images = {image_of_point[image_rows[i].id] for i in image_failures}
        for failures, kind, kept in ((image_failures, "image", image_rows), (text_failures, "caption", text_rows)):
            for index, reason in sorted(failures.items()):
                summary.rejected += 1
                summary.warnings.append(f"{kept[index].file} row {kept[index].row}: the model failed on its "
                                        f"{kind}: {reason}")
        keep_images = [i for i in range(len(images)) if i not in image_failures]
        keep_texts = [i for i in range(len(texts))
                      if i not in text_failures and image_of_point[text_rows[i].id] not in failed_images]
        image_vectors, image_groups = image_vectors[keep_images], [image_groups[i] for i in keep_images]
        image_rows = [image_rows[i] for i in keep_images]
        text_vectors, text_groups = text_vectors[keep_texts], [text_groups[i] for i in keep_texts]
        text_rows = [text_rows[i] for i in keep_texts]
        if not image_rows or not text_rows:
            raise InputError("no usable image–caption pairs to evaluate: the model failed on them all "
                             f"({(image_failures or text_failures)[min(image_failures or text_failures)]})")
    return EvalPairs(
        image_vectors, np.asarray(image_groups), image_rows,
        text_vectors, np.asarray(text_groups), text_rows, summary, skipped, image_of_point,
    )


def exact_metrics(pairs: EvalPairs, ks: Sequence[int] = KS) -> list[RetrievalMetrics]:
    """text→image and image→text metrics, all vectors compared in memory."""
    t2i = exact_positions(pairs.text_vectors, pairs.image_vectors, pairs.text_groups, pairs.image_groups)
    i2t = exact_positions(pairs.image_vectors, pairs.text_vectors, pairs.image_groups, pairs.text_groups)
    return [metrics_from_positions("text→image", *t2i, ks), metrics_from_positions("image→text", *i2t, ks)]


def store_metrics(pairs: EvalPairs, store: Store, limit: int = DEPTH, ks: Sequence[int] = KS,
                  where: dict | None = None) -> tuple[list[RetrievalMetrics], int]:
    """The same metrics through the store's search; returns them and how many rows it lacked.

    Each query reads the store's ranking (``search.ranking``: exact past ties) until it holds ``limit`` documents
    (text→image: points of one image are one document, as in memory) or the whole collection.
    """
    text_group = {row.id: int(g) for row, g in zip(pairs.text_rows, pairs.text_groups)}
    image_of_point = pairs.image_of_point
    image_group = {image_of_point[row.id]: int(g) for row, g in zip(pairs.image_rows, pairs.image_groups)}
    rows = list(dict.fromkeys([row.id for row in pairs.text_rows] + [row.id for row in pairs.image_rows]))
    present = {p.id for i in range(0, len(rows), 256) for p in store.retrieve(rows[i:i + 256])}
    missing = len(set(rows) - present)
    limit = max(1, min(limit, store.count()))
    image_totals, text_totals = Counter(pairs.image_groups.tolist()), Counter(pairs.text_groups.tolist())

    def positions(vector, using, group, collapse_images):
        if collapse_images:  # the same image stored under several caption rows is one document, as in memory
            key, groups = (lambda hit: image_of_point.get(hit.id, hit.id)), image_group
        else:
            key, groups = (lambda hit: hit.id), text_group
        hits = documents(store, lambda size: SearchRequest(vector=vector, using=using, filter=where, limit=size,
                                                           with_payload=False), limit, key)
        return positions_in(hits, lambda document: groups.get(document) == group, key)

    t2i = [positions(v, "image", int(g), True) for v, g in zip(pairs.text_vectors, pairs.text_groups)]
    i2t = [positions(v, "text", int(g), False) for v, g in zip(pairs.image_vectors, pairs.image_groups)]
    return [metrics_from_positions("text→image", t2i, [image_totals[int(g)] for g in pairs.text_groups], ks),
            metrics_from_positions("image→text", i2t, [text_totals[int(g)] for g in pairs.image_groups], ks)], missing


def documents(store: Store, request: Callable[[int], SearchRequest], depth: int,
              key: Callable[[ScoredPoint], Any]) -> list[ScoredPoint]:
    """``search.ranking`` deep enough to hold ``depth`` distinct ``key``s (documents), or every point it finds."""
    size = depth
    while True:
        hits, ended = ranking_to_end(store, request, size)
        if ended or len({key(hit) for hit in hits}) >= depth:
            return hits
        size *= 2


def evaluate(inputs: Sequence[str] | Source, encoder: Encoder, group_cols: Sequence[str] = (),
             store: Store | None = None, image_col: str | None = None, caption_col: str | None = None,
             id_col: str | None = None, compare: Sequence[str] = (), split: str | None = None) -> dict[str, Any]:
    """Evaluate ``encoder`` on image–caption pairs; through ``store`` too when given, and in each search mode of
    ``compare`` (``compare_modes``; needs ``store``: UsageError otherwise)."""
    if compare and store is None:
        raise UsageError("--compare ranks through a collection: give --collection (and --ingest to fill it)")
    source = inputs if isinstance(inputs, Source) else open_source(list(inputs), image_col, caption_col, id_col,
                                                                   split=split)
    pairs = embed_pairs(source, encoder, group_cols)
    report: dict[str, Any] = {
        "model": encoder.name,
        "text_model": encoder.text_name,
        "images": len(pairs.image_rows),
        "captions": len(pairs.text_rows),
        "groups": int(len(set(pairs.image_groups.tolist()) | set(pairs.text_groups.tolist()))),
        "rejected": pairs.summary.rejected,
        "warnings": pairs.summary.warnings[:20],
        "exact": [m.to_dict() for m in exact_metrics(pairs)],
    }
    if store is not None:
        through_store, missing = store_metrics(pairs, store)
        report["collection"] = store.collection
        report["store"] = [m.to_dict() for m in through_store]
        report["rows_missing_from_collection"] = missing
    if compare:
        report["compare"] = compare_modes(pairs, store, compare)
    return report


def evaluate_models(inputs: Sequence[str], store: Store | None, models: ModelChoice = ModelChoice(),
                    runtime: Runtime = Runtime(), group_cols: Sequence[str] = (), columns: IngestOptions = IngestOptions(),
                    ingest_first: bool = False, place: str = "", compare: Sequence[str] = ()) -> dict[str, Any]:
    """``mmindex eval``: load the models (the collection's, unless given, checked against it before loading) and
    ``evaluate`` them on ``inputs``, through ``store``'s collection too when given.

    ``columns``: the image, caption and id columns (``IngestOptions.image_col``…). ``ingest_first``: ingest
    ``inputs`` into the collection before measuring (unchanged rows are skipped). ``place``: where the store looks
    (``StoreSettings.place``), for messages. ``compare``: search modes to rank the captions in, side by side
    (``compare_modes``). Raises StoreError for a collection that does not exist without
    ``ingest_first`` (before any model loads), and what ``encoder_for`` raises for a wrong model.
    """
    spec = store.spec() if store is not None else None
    if store is not None and spec is None and not ingest_first:
        require_collection(store, place, remedy="add --ingest to create it")
    collection = store.collection if store is not None else None
    encoder = encoder_for(store.metadata() if spec else None, models.model, collection, text_model=models.text_model,
                          device=runtime.device, backend=runtime.backend, precision=models.precision,
                          threads=runtime.threads)
    if store is not None and ingest_first:
        ingest(list(inputs), store, encoder, IngestOptions(image_col=columns.image_col,
                                                           caption_col=columns.caption_col, id_col=columns.id_col,
                                                           split=columns.split))
    return evaluate(list(inputs), encoder, group_cols, store, columns.image_col, columns.caption_col,
                    columns.id_col, compare, columns.split)


# -- eval --compare: search modes side by side on the same text queries, through the collection -----------------
# Each mode is a way `mmindex query` ranks (dense, keyword, hybrid, hybrid-rrf, both, diverse, and cutoff: dense
# with --cutoff auto). Every caption queries the collection's images in each mode with the evaluation's own
# relevance, so the rows of the table differ only by how the engine ranked.

@dataclass(frozen=True)
class Mode:
    """One row of the comparison: the target searched and the ranking options (keywords filled per query)."""

    target: str
    options: SearchOptions


MODES: dict[str, Mode] = {
    "dense": Mode("image", SearchOptions()),
    "keyword": Mode("image", SearchOptions(mode="keyword")),
    "hybrid": Mode("image", SearchOptions(mode="hybrid")),
    "hybrid-rrf": Mode("image", SearchOptions(mode="hybrid", fusion="rrf")),
    "both": Mode("both", SearchOptions()),
    "diverse": Mode("image", SearchOptions(diversity=0.5)),
    "cutoff": Mode("image", SearchOptions(cutoff="auto")),
}


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """``dense,hybrid`` → the modes, in order, without repeats; UsageError naming an unknown one."""
    names = [n.strip() for part in ([text] if isinstance(text, str) else text) for n in part.split(",") if n.strip()]
    unknown = [name for name in names if name not in MODES]
    if unknown or not names:
        raise UsageError(f"--compare: unknown mode {', '.join(map(repr, unknown)) or '(none given)'}; modes: "
                         f"{', '.join(MODES)}")
    return list(dict.fromkeys(names))


def compare_modes(pairs: EvalPairs, store: Store, modes: Sequence[str], ks: Sequence[int] = KS) -> list[dict]:
    """Text→image metrics of each mode (``evaluate.RetrievalMetrics.to_dict()`` plus ``mode``); the ``cutoff``
    row also has ``precision@cutoff``, ``recall@cutoff``, ``f1@cutoff`` (averaged over queries) and ``hits``
    (the mean number returned). Rows of the collection's images that the evaluation data lacks count as wrong."""
    meta = store.metadata() or {}
    image_group = {pairs.image_of_point[row.id]: int(g) for row, g in zip(pairs.image_rows, pairs.image_groups)}
    totals = Counter(pairs.image_groups.tolist())

    def document(hit):  # points of one image are one document, as in the evaluation
        return pairs.image_of_point.get(hit.id, hit.id)

    rows = []
    for name in modes:
        mode = MODES[name]
        positions, cut = [], []
        for row, vector, group in zip(pairs.text_rows, pairs.text_vectors, pairs.text_groups):
            options = mode.options
            if options.mode != "dense":
                options = SearchOptions(**{**options.__dict__, "keywords": keyword_query(row.caption, meta,
                                                                                      store.collection)})
            hits = ranked(store, vector, mode.target, options)
            relevant = (lambda doc, g=int(group): image_group.get(doc) == g)
            if options.diversity is not None:  # MMR's order is its choice, not its hits' similarity scores
                order = list(dict.fromkeys(map(document, hits)))
                positions.append([rank for rank, doc in enumerate(order, start=1) if relevant(doc)])
            else:
                positions.append(positions_in(hits, relevant, document))
            if options.cutoff:
                found = sum(1 for doc in dict.fromkeys(map(document, hits)) if relevant(doc))
                cut.append((found, len(dict.fromkeys(map(document, hits))), totals[int(group)]))
        metrics = metrics_from_positions("text→image", positions, [totals[int(g)] for g in pairs.text_groups], ks)
        rows.append({"mode": name, **metrics.to_dict(), **(at_cutoff(cut) if cut else {})})
    return rows


def ranked(store: Store, vector: np.ndarray, target: str, options: SearchOptions) -> list:
    """The hits of one query in this mode: the whole ranking to DEPTH (MMR: its pool) or, with a cutoff, the hits
    judged relevant — as ``search`` pages them, without reading payloads."""
    if options.cutoff:
        return search(store, vector, target=target, limit=DEPTH, options=options)
    if options.diversity is not None:
        return search(store, vector, target=target, limit=100, options=options)
    request = build_request(vector, target, options, None, 1, DEPTH, {})
    tolerance = FUSED_TOLERANCE if isinstance(request.top(), Fusion) else 0.0
    size = min(DEPTH, max(1, store.count()))
    return ranking(store, lambda n: build_request(vector, target, options, None, n, DEPTH, {"with_payload": False}),
                   size, tolerance=tolerance)


def at_cutoff(counts: Sequence[tuple[int, int, int]]) -> dict[str, float]:
    """Precision, recall and F1 of the answers a cutoff returned, averaged over queries, from (relevant returned,
    returned, relevant in all) per query; an empty answer has precision 1 (it claims nothing), and F1 1 only when
    the query has no relevant answer."""
    precision, recall, f1 = [], [], []
    for found, returned, total in counts:
        p = found / returned if returned else 1.0
        r = found / total if total else 1.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"precision@cutoff": round(float(np.mean(precision)), 4), "recall@cutoff": round(float(np.mean(recall)), 4),
            "f1@cutoff": round(float(np.mean(f1)), 4), "hits": round(float(np.mean([c[1] for c in counts])), 2)}
