"""Retrieval quality of a model on image–caption pairs: Recall@K, MRR and median rank.

Computed exactly (all vectors in memory) and, when a collection is given, through the
store's own search, so the two can be compared. Rows that share an image (the same bytes)
or a group (``--group-col``) count as correct answers for each other.
"""
from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from mmindex.connectors.base import SearchRequest, Store
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
from mmindex.pipeline.query.search import ranking

KS = (1, 5, 10)


@dataclass
class RetrievalMetrics:
    """How well one direction (text→image or image→text) ranks the right answers."""

    direction: str
    queries: int
    recall: dict[int, float]
    mrr: float
    median_rank: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "queries": self.queries,
            **{f"recall@{k}": round(v, 4) for k, v in self.recall.items()},
            "mrr": round(self.mrr, 4),
            "median_rank": self.median_rank if math.isfinite(self.median_rank) else None,
        }


def metrics_from_ranks(direction: str, ranks: Sequence[float], ks: Sequence[int] = KS) -> RetrievalMetrics:
    """Metrics from the 1-based rank of the first correct answer of each query (inf: not found)."""
    if not ranks:
        return RetrievalMetrics(direction, 0, {k: 0.0 for k in ks}, 0.0, math.inf)
    count = len(ranks)
    recall = {k: sum(1 for r in ranks if r <= k) / count for k in ks}
    mrr = sum(1.0 / r for r in ranks) / count
    return RetrievalMetrics(direction, count, recall, mrr, float(statistics.median(ranks)))


TIE_TOLERANCE = 1e-6  # scores this close count as equal: float32 sums differ in the last bits between engines


def exact_ranks(queries: np.ndarray, documents: np.ndarray, query_groups: np.ndarray,
                document_groups: np.ndarray, chunk: int = 1024) -> list[float]:
    """Rank of the best-scoring correct document for each query, over all documents.

    rank = 1 + the number of wrong documents scoring at least the best correct score (less
    ``TIE_TOLERANCE``): ties with wrong documents count against the query (pessimistic), so a
    model that maps everything to one point does not score well, and the rank depends on
    scores only — never on ids or on the order an engine returns equal scores in.
    ``queries``: (q, d), ``documents``: (n, d), both L2-normalised; groups: (q,) and (n,).
    """
    ranks: list[float] = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ documents.T
        correct = query_groups[start:start + chunk, None] == document_groups[None, :]
        best = np.where(correct, scores, -np.inf).max(axis=1)
        wrong_at_least = ((scores >= best[:, None] - TIE_TOLERANCE) & ~correct).sum(axis=1)
        for has_answer, above in zip(np.isfinite(best), wrong_at_least):
            ranks.append(float(above + 1) if has_answer else math.inf)
    return ranks


def rank_in(hits: Sequence[Any], is_correct: Callable[[Any], bool], key: Callable[[Any], Any]) -> float:
    """``exact_ranks``' rule on a ranked list of scored points (all points scoring at least the best correct one
    included): 1 + the distinct ``key``s of wrong points scoring at least the best correct score; inf if none is
    correct."""
    best = max((hit.score for hit in hits if is_correct(hit)), default=None)
    if best is None:
        return math.inf
    wrong = {key(hit) for hit in hits if hit.score >= best - TIE_TOLERANCE and not is_correct(hit)}
    return float(len(wrong) + 1)


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
    t2i = exact_ranks(pairs.text_vectors, pairs.image_vectors, pairs.text_groups, pairs.image_groups)
    i2t = exact_ranks(pairs.image_vectors, pairs.text_vectors, pairs.image_groups, pairs.text_groups)
    return [metrics_from_ranks("text→image", t2i, ks), metrics_from_ranks("image→text", i2t, ks)]


def store_metrics(pairs: EvalPairs, store: Store, limit: int = 1000, ks: Sequence[int] = KS,
                  where: dict | None = None) -> tuple[list[RetrievalMetrics], int]:
    """The same metrics through the store's search; returns them and how many rows it lacked."""
    group_of_point = {row.id: int(g) for row, g in zip(pairs.text_rows, pairs.text_groups)}
    for row, group in zip(pairs.image_rows, pairs.image_groups):
        group_of_point.setdefault(row.id, int(group))
    image_of_point = pairs.image_of_point
    present = {p.id for i in range(0, len(group_of_point), 256)
               for p in store.retrieve(list(group_of_point)[i:i + 256])}
    missing = len(set(group_of_point) - present)
    limit = max(1, min(limit, store.count()))

    def rank(vector, using, group, collapse_images):
        hits = ranking(store, lambda size: SearchRequest(vector=vector, using=using, filter=where, limit=size,
                                                         with_payload=False), limit)
        key = (lambda hit: image_of_point.get(hit.id, hit.id)) if collapse_images else (lambda hit: hit.id)
        # the same image stored under several caption rows counts once, as in memory
        return rank_in(hits, lambda hit: group_of_point.get(hit.id) == group, key)

    t2i = [rank(v, "image", int(g), True) for v, g in zip(pairs.text_vectors, pairs.text_groups)]
    i2t = [rank(v, "text", int(g), False) for v, g in zip(pairs.image_vectors, pairs.image_groups)]
    return [metrics_from_ranks("text→image", t2i, ks), metrics_from_ranks("image→text", i2t, ks)], missing


def evaluate(inputs: Sequence[str] | Source, encoder: Encoder, group_cols: Sequence[str] = (),
             store: Store | None = None, image_col: str | None = None, caption_col: str | None = None,
             id_col: str | None = None) -> dict[str, Any]:
    """Evaluate ``encoder`` on image–caption pairs; through ``store`` too when given."""
    source = inputs if isinstance(inputs, Source) else open_source(list(inputs), image_col, caption_col, id_col)
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
    return report


def evaluate_models(inputs: Sequence[str], store: Store | None, models: ModelChoice = ModelChoice(),
                    runtime: Runtime = Runtime(), group_cols: Sequence[str] = (), columns: IngestOptions = IngestOptions(),
                    ingest_first: bool = False, place: str = "") -> dict[str, Any]:
    """``mmindex eval``: load the models (the collection's, unless given, checked against it before loading) and
    ``evaluate`` them on ``inputs``, through ``store``'s collection too when given.

    ``columns``: the image, caption and id columns (``IngestOptions.image_col``…). ``ingest_first``: ingest
    ``inputs`` into the collection before measuring (unchanged rows are skipped). ``place``: where the store looks
    (``StoreSettings.place``), for messages. Raises StoreError for a collection that does not exist without
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
                                                           caption_col=columns.caption_col, id_col=columns.id_col))
    return evaluate(list(inputs), encoder, group_cols, store, columns.image_col, columns.caption_col,
                    columns.id_col)
