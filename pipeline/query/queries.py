"""Queries as ``mmindex query`` runs them, for the CLI and the Python API alike: texts and image files → vectors
(the fast torch-free path when the model's query bundle holds, else the full one) → one search each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.errors import InputError, UsageError
from mmindex.keys import TRUNCATED_KEY
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.ingest.images import RejectedImage, decode_image
from mmindex.pipeline.models.encoder import Runtime, encoder_for
from mmindex.pipeline.models.identity import ModelChoice
from mmindex.pipeline.models.quick import quick_encoder_for
from mmindex.pipeline.query.filters import load_raw_filter
from mmindex.pipeline.query.search import Hit, check_page, check_target, search


@dataclass(frozen=True)
class QueryRequest:
    """One or more queries against one collection: ``texts`` and ``image_paths`` (files) run one query each.

    ``filter_json``: a raw Qdrant filter as JSON text, ANDed with ``where``. ``fields``: the payload fields the
    caller will show (checked against the collection; None: all). The rest is ``search``'s.
    """

    texts: Sequence[str] = ()
    image_paths: Sequence[str] = ()
    target: str = "image"
    where: str | None = None
    filter_json: str | None = None
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    exact: bool = False
    hnsw_ef: int | None = None
    oversampling: float = 2.0
    fields: Sequence[str] | None = None

    def __post_init__(self) -> None:
        for name in ("texts", "image_paths"):  # one query given as a plain string is one query, not its letters
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))
        check_page(self.limit, self.offset)
        check_target(self.target, self.score_threshold)
        if not self.texts and not self.image_paths:
            raise UsageError("give a TEXT to search for, or --image FILE")
        if any(not text.strip() for text in self.texts):
            raise UsageError("a TEXT to search for is empty")


@dataclass
class QueryAnswers:
    """Each query as (kind, value) with its hits, in the order given, and what the model was."""

    answers: list[tuple[tuple[str, str], list[Hit]]] = field(default_factory=list)
    model: str = ""
    text_model: str | None = None
    raw_filter: dict[str, Any] | None = None


def run_queries(store: Store, request: QueryRequest, models: ModelChoice = ModelChoice(),
                runtime: Runtime = Runtime(), place: str = "") -> QueryAnswers:
    """Embed each query and search ``store``'s collection; ``place`` says where it was looked for
    (``StoreSettings.place``), for the error when it is not there.

    Returns each query's hits (``Hit``: id, cosine score, caption, payload) in the order given. Raises StoreError
    for a collection (or alias target) that does not exist, UsageError for an unknown field in ``fields``
    (``QueryRequest`` itself refuses an empty query or page), InputError for an image file that cannot be read,
    FilterError for a bad filter, and CollectionMismatchError for a model that is not the collection's (before it
    loads).
    """
    spec = require_collection(store, place)
    check_fields(spec, request.fields, store.collection)
    meta = store.metadata()
    # The fast path (ONNX Runtime + tokenizers from the model's query bundle, no torch), else the full one.
    encoder = quick_encoder_for(meta, models.model, models.text_model, models.precision, runtime.backend,
                                runtime.device, runtime.threads, images=bool(request.image_paths))
    if encoder is None:
        encoder = encoder_for(meta, models.model, store.collection, text_model=models.text_model,
                              device=runtime.device, backend=runtime.backend, precision=models.precision,
                              threads=runtime.threads)
    raw_filter = load_raw_filter(request.filter_json)
    vectors = list(encoder.encode_texts(list(request.texts))) if request.texts else []
    vectors += [encoder.encode_images([read_image(path, encoder)])[0] for path in request.image_paths]
    queries = [("text", text) for text in request.texts] + [("image", path) for path in request.image_paths]
    result = QueryAnswers(model=encoder.name, text_model=encoder.text_name, raw_filter=raw_filter)
    for query, vector in zip(queries, vectors):
        hits = search(store, vector, target=request.target, where=request.where, filter_json=raw_filter,
                      limit=request.limit, offset=request.offset, score_threshold=request.score_threshold,
                      exact=request.exact, hnsw_ef=request.hnsw_ef, oversampling=request.oversampling)
        result.answers.append((query, hits))
    return result


def check_fields(spec: CollectionSpec, fields: Sequence[str] | None, collection: str) -> None:
    """Refuse payload fields the collection does not have (UsageError naming them and the ones it has)."""
    if not fields:
        return
    known = {key for key in spec.payload_types if not key.startswith('"')} | {"caption", TRUNCATED_KEY}
    unknown = [name for name in fields if name not in known]
    if unknown:
        raise UsageError(f"--fields: no field {', '.join(map(repr, unknown))} in collection {collection!r} "
                         f"(fields: {', '.join(sorted(known))})")


def read_image(path: str, encoder) -> Any:
    """An image file as the model takes it; InputError naming the file when it is not a readable image."""
    try:
        with open(path, "rb") as handle:
            return decode_image(handle.read(), encoder.image_size, center_crop=encoder.center_crop)
    except RejectedImage as error:
        raise InputError(f"{path}: {error.message}") from error
    except OSError as error:  # missing, a folder, unreadable
        raise InputError(f"{path}: cannot read the image file ({error.strerror or error})") from error
