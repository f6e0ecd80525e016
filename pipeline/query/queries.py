"""Queries as ``mmindex query`` runs them, for the CLI and the Python API alike: texts and image files → vectors
(the fast torch-free path when the model's query bundle holds, else the full one) → one search each.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.connectors.queries import OVERSAMPLING
from mmindex.errors import InputError, UsageError
from mmindex.keys import TRUNCATED_KEY
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.ingest.images import RejectedImage, decode_image
from mmindex.pipeline.ingest.records import id_problem, point_id_from_key
from mmindex.pipeline.models.encoder import Runtime, encoder_for
from mmindex.pipeline.models.backend import blank_text
from mmindex.pipeline.models.identity import ModelChoice
from mmindex.pipeline.models.quick import quick_encoder_for
from mmindex.pipeline.query.filters import load_raw_filter
from mmindex.pipeline.query.keywords import keyword_query
from mmindex.pipeline.query.plan import KEYWORD_EXAMPLES, SearchOptions, check_threshold
from mmindex.pipeline.query.search import (
    FUSION_DEPTH,
    Hit,
    check_fusion_depth,
    check_oversampling,
    check_page,
    check_target,
    search,
)


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
    oversampling: float = OVERSAMPLING
    fields: Sequence[str] | None = None
    mode: str = "dense"
    fusion: str | None = None
    like: Sequence[str] = ()
    unlike: Sequence[str] = ()
    not_texts: Sequence[str] = ()
    strategy: str = "average_vector"
    diversity: float | None = None
    pool: int | None = None
    boost: str | None = None
    group_by: str | None = None
    group_size: int = 1
    cutoff: str | None = None
    fusion_depth: int = FUSION_DEPTH
    collapse_duplicates: bool = False

    def __post_init__(self) -> None:
        for name in ("texts", "image_paths", "like", "unlike", "not_texts"):
            if isinstance(getattr(self, name), str):  # one query as a plain string is one query, not its letters
                object.__setattr__(self, name, (getattr(self, name),))
        check_page(self.limit, self.offset)
        check_target(self.target, self.score_threshold)
        if not self.texts and not self.image_paths and not self.like:
            raise UsageError("give a TEXT to search for, --image FILE, or --like EXAMPLE")
        for name, label in (("texts", "a TEXT to search for"), ("like", "a --like example"),
                            ("unlike", "an --unlike example"), ("not_texts", "a --not text")):
            if any(blank_text(item) for item in getattr(self, name)):
                raise UsageError(f"{label} is empty")
        check_threshold(self.options(), self.target, self.score_threshold)
        if self.mode == "keyword" and self.target != "image":
            raise UsageError("--target chooses the dense vectors searched; keyword mode searches the keyword vector "
                             "(the caption and --text-fields): leave --target out, or use --mode hybrid")
        if self.mode == "keyword" and (self.like or self.unlike or self.not_texts):
            raise UsageError(KEYWORD_EXAMPLES)  # before the examples are embedded: check_options sees them later
        check_fusion_depth(self.fusion_depth)
        check_oversampling(self.oversampling)

    def options(self, **found: Any) -> SearchOptions:
        """The ranking options of this request; ``found`` adds what the store and model give (example vectors,
        the keyword vector, the parsed boost)."""
        return SearchOptions(mode=self.mode, fusion=self.fusion, strategy=self.strategy, diversity=self.diversity,
                             pool=self.pool, group_by=self.group_by, group_size=self.group_size,
                             cutoff=self.cutoff, collapse_duplicates=self.collapse_duplicates, **found)


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
    found = resolve_examples(store, request, encoder, spec)
    if not queries:  # examples alone: "more like these"
        queries, vectors = [("like", ", ".join(request.like))], [None]
    result = QueryAnswers(model=encoder.name, text_model=encoder.text_name, raw_filter=raw_filter)
    for query, vector in zip(queries, vectors):
        keywords = keyword_vector(query, request.mode, meta, store.collection)
        hits = search(store, vector, target=request.target, where=request.where, filter_json=raw_filter,
                      limit=request.limit, offset=request.offset, score_threshold=request.score_threshold,
                      exact=request.exact, hnsw_ef=request.hnsw_ef, oversampling=request.oversampling,
                      fusion_depth=request.fusion_depth, options=request.options(keywords=keywords, **found))
        result.answers.append((query, hits))
    return result


def keyword_vector(query: tuple[str, str], mode: str, meta: dict[str, Any] | None, collection: str | None = None):
    """The BM25 query vector of a text query in keyword or hybrid mode (None otherwise)."""
    if mode == "dense" or query[0] != "text":
        return None
    return keyword_query(query[1], meta or {}, collection)


def resolve_examples(store: Store, request: QueryRequest, encoder, spec: CollectionSpec) -> dict[str, Any]:
    """``--like``, ``--unlike`` and ``--not`` as example vectors, and ``--boost`` as a formula (``example_kind``
    says what each example is). A stored point gives its vector of the searched target (``image`` for ``both``)
    and is never returned. UsageError for an id the collection does not hold or a file that does not exist."""
    found: dict[str, Any] = {}
    meta = store.metadata() if (request.like or request.unlike) else None
    using = "text" if request.target == "text" else "image"
    ids: list[str] = []
    given = [("positives", item, True) for item in request.like] + [
        ("negatives", item, True) for item in request.unlike] + [("negatives", item, False) for item in request.not_texts]
    vectors: dict[str, list] = {"positives": [], "negatives": []}
    for name, item, resolve in given:
        kind, value = example_kind(item, store, meta) if resolve else ("text", item)
        if kind == "id":
            vectors[name].append(stored_vector(store, value, using, item))
            ids.append(value)
        elif kind == "image":
            vectors[name].append(encoder.encode_images([read_image(value, encoder)])[0])
        else:
            vectors[name].append(encoder.encode_texts([value])[0])
    for name, listed in vectors.items():
        if listed:
            found[name] = tuple(tuple(float(x) for x in vector) for vector in listed)
    if ids:
        found["exclude_ids"] = tuple(dict.fromkeys(ids))
    if request.boost is not None:
        from mmindex.pipeline.query.rescore import parse_boost  # the formula parser, only with --boost

        found["boost"] = parse_boost(request.boost, spec.payload_types)
    return found


EXAMPLE_PREFIXES = ("id:", "image:", "text:")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic")


def example_kind(item: str, store: Store, meta: dict[str, Any] | None, files: bool = True) -> tuple[str, str]:
    """What a ``--like`` / ``--unlike`` example is: ``("id", point id)``, ``("image", path)`` or ``("text", text)``.

    ``id:VALUE``, ``image:PATH`` and ``text:TEXT`` say it outright (``id:`` takes a point id or an id column's value;
    UsageError when no stored point has it, or no file is there). Otherwise: a UUID is a point id; an existing
    file is an image (``files``: not for the HTTP service, which reads no file a client names); a value of the
    collection's id column that names a stored point is that point; something written as a path (with a ``/``
    or an image file's suffix) that is no file is a UsageError; anything else is a text.
    """
    prefix = next((p for p in EXAMPLE_PREFIXES if item.startswith(p)), None)
    if prefix == "id:":
        point_id = as_point_id(item[3:], store, meta)
        if point_id is None:
            raise UsageError(f"no point with id {item[3:]!r} in collection {store.collection!r} (an id: example "
                             "is a point id or a value of the collection's id column)")
        return "id", point_id
    if prefix == "image:" and files:
        if not os.path.isfile(item[6:]):
            raise UsageError(f"{item[6:]}: no such image file (an image: example)")
        return "image", item[6:]
    if prefix == "text:":
        return "text", item[5:]
    try:
        return "id", str(uuid.UUID(item.strip()))
    except ValueError:
        pass
    if files and os.path.isfile(item):
        return "image", item
    point_id = as_point_id(item, store, meta)
    if point_id is not None:
        return "id", point_id
    if files and ("/" in item or item.lower().endswith(IMAGE_SUFFIXES)):
        raise UsageError(f"{item}: no such image file (an example written as a path must exist; text:{item} "
                         "searches for the words)")
    return "text", item


def as_point_id(item: str, store: Store | None = None, meta: dict[str, Any] | None = None) -> str | None:
    """``item`` as a point id: written as one (a UUID, as results show), or — with ``store`` and a collection that
    makes ids from an id column (``meta``'s ``id_rule``) — a value of that column that names a stored point.
    None otherwise (then the item is an image file or a text)."""
    try:
        return str(uuid.UUID(item.strip()))
    except ValueError:
        pass
    if store is None or ((meta or {}).get("id_rule") or {}).get("rule") != "column":
        return None
    keys: list[Any] = [item]
    if item.strip().lstrip("-").isdigit():
        keys.append(int(item))  # an integer id column: its values are numbers
    candidates = [point_id_from_key(key) for key in keys if not id_problem(key)]
    found = {point.id for point in store.retrieve(candidates)} if candidates else set()
    return next((candidate for candidate in candidates if candidate in found), None)


def stored_vector(store: Store, point_id: str, using: str, given: str) -> list[float]:
    """The ``using`` vector of a stored point; UsageError when the collection has no such point."""
    points = store.retrieve([point_id], with_vectors=True)
    if not points or not points[0].vectors or using not in points[0].vectors:
        raise UsageError(f"no point with id {given!r} in collection {store.collection!r} (an example given as an "
                         "id must be a stored point; `mmindex query --json` shows ids)")
    return list(points[0].vectors[using])


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
