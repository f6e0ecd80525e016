"""The one interface every vector store speaks, and the values that cross it.

A store is bound to one collection. Filters cross this boundary as Qdrant filter JSON
(the same dict a user passes with ``--filter-json``); each connector turns it into its
engine's own objects.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from mmindex.connectors.queries import OVERSAMPLING, Nearest, Prefetch, Query, SearchParams, SparseVector
from mmindex.errors import CollectionMismatchError

VECTOR_NAMES = ("image", "text")
# Payload index kinds, named as Qdrant names its payload schema types.
INDEX_KINDS = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")
FILTER_TYPES = ("integer", "float", "keyword", "bool", "datetime")  # payload types --where compiles for
# Qdrant rejects requests over 32 MiB; stay well under it whatever the vector size.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection must be: the model that fills it, its vector size and payload field types.

    ``model`` is the model's display name (a folder's name, a Hub id); ``fingerprint`` is the
    digest of its files (``mmindex.pipeline.models.encoder.model_fingerprint``). Two runs use the same
    model when their fingerprints are equal, wherever the folder lies; a collection recorded
    before fingerprints existed is compared by name.
    """

    model: str
    dim: int
    payload_types: dict[str, str] = field(default_factory=dict)
    fingerprint: str | None = None
    # A separate text model (``--text-model``) that embeds captions and text queries, or None.
    text_model: str | None = None
    text_fingerprint: str | None = None
    # The precision the towers ran in: fp32, or int8 (ONNX Runtime's dynamic quantisation; other vectors).
    precision: str = "fp32"

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "CollectionSpec":
        """The spec a collection's record (``Store.metadata()``) describes."""
        return cls(meta["model"], int(meta["dim"]), dict(meta.get("payload_types", {})), meta.get("model_fingerprint"),
                   meta.get("text_model"), meta.get("text_model_fingerprint"), meta.get("model_precision", "fp32"))

    def text_model_record(self) -> dict[str, Any]:
        """The record's keys for a separate text model and a precision other than fp32 (none by default)."""
        record: dict[str, Any] = {}
        if self.text_model is not None:
            record.update(text_model=self.text_model, text_model_fingerprint=self.text_fingerprint)
        if self.precision != "fp32":
            record["model_precision"] = self.precision
        return record

    def same_model(self, existing: "CollectionSpec") -> bool:
        """Whether these models made ``existing``'s vectors: the image model and the text model (if any) both."""
        if self.dim != existing.dim and self.dim >= 0:
            return False
        if self.precision != existing.precision:
            return False
        if (self.text_model is None) != (existing.text_model is None):
            return False
        if self.text_model is not None and not _same_weights(self.text_model, self.text_fingerprint,
                                                             existing.text_model, existing.text_fingerprint):
            return False
        return _same_weights(self.model, self.fingerprint, existing.model, existing.fingerprint)

    def same_image_model(self, existing: "CollectionSpec") -> bool:
        """Whether the image model is ``existing``'s (a query given its own --text-model checks only this)."""
        return (self.dim == existing.dim or self.dim < 0) and self.precision == existing.precision and _same_weights(
            self.model, self.fingerprint, existing.model, existing.fingerprint)

    def check_matches(self, existing: "CollectionSpec", collection: str) -> None:
        """Refuse, before any write, to mix two models, or two types of one payload field, in one collection.

        A field's type decides how ``--where`` compiles a comparison, so a field stored as
        integers by one run and as text by the next would answer half of each query. The one
        change that is safe is integers into a float field (they compare by value).
        """
        if not self.same_model(existing):
            raise CollectionMismatchError(model_mismatch(existing, self, collection))
        for name, kind in sorted(self.payload_types.items()):
            before = existing.payload_types.get(name)
            if before in (None, "null") or kind == "null" or before == kind or (before, kind) == ("float", "integer"):
                continue  # a column with no values yet (Arrow's null type) takes any type later
            if before not in FILTER_TYPES and kind not in FILTER_TYPES:
                continue  # neither can be filtered on (structs, binaries…): nothing to answer wrongly
            hint = (" (pandas writes an integer column with a null as float64)"
                    if {before, kind} == {"integer", "float"} else "")
            raise CollectionMismatchError(
                f"payload field {name!r} is {before} in collection {collection!r} but {kind} in these inputs"
                f"{hint}; filters on it would miss one of the two. Cast the column to {before}, or ingest into "
                "another --collection"
            )

    def merged_payload_types(self, existing: "CollectionSpec") -> dict[str, str]:
        """The field types to record after this run: new fields added, recorded ones kept (a null one typed)."""
        merged = {**self.payload_types, **existing.payload_types}
        for name, kind in self.payload_types.items():
            if merged[name] == "null":
                merged[name] = kind
        return without_unsure_lists(merged, existing.payload_types, self.payload_types)


def without_unsure_lists(merged: dict[str, str], before: dict[str, str], now: dict[str, str]) -> dict[str, str]:
    """``merged`` without the element paths (``"tags"[]``, ``"s".v[]`` and what lies below) of a field that one run
    stored as a list and another perhaps not: ``--where`` looks through them for ``is null``, which single values
    would answer wrongly. A field recorded before element paths were (``tags: keyword``) is as unsure."""
    unsure = []
    for path in merged:
        if not path.endswith("[]"):
            continue
        parent = path[:-2]
        parent = parent[1:-1] if parent.count('"') == 2 and parent[0] == parent[-1] == '"' else parent
        for kinds in (before, now):
            kind = kinds.get(parent)
            if kind not in (None, "null") and path not in kinds and not kind.startswith(_LIST_TYPES):
                unsure.append(path)
    return {name: kind for name, kind in merged.items() if not any(name.startswith(path) for path in unsure)}


_LIST_TYPES = ("list<", "large_list<", "fixed_size_list<", "list_view<", "large_list_view<")


def _same_weights(name: str, fingerprint: str | None, existing: str, existing_fingerprint: str | None) -> bool:
    if fingerprint and existing_fingerprint:
        return fingerprint == existing_fingerprint
    if not fingerprint and not existing_fingerprint:
        return name == existing  # Hub ids
    if existing_fingerprint is None and existing.startswith("/"):
        # Recorded before fingerprints existed, by absolute folder: the folder's name must agree.
        return name == existing.rstrip("/").rsplit("/", 1)[-1]
    return False  # a folder and a Hub id: nothing shows they are the same weights


def model_mismatch(existing: CollectionSpec, spec: CollectionSpec, collection: str) -> str:
    """Why ``spec``'s model cannot fill ``collection`` (which holds ``existing``'s vectors)."""
    if spec.precision != existing.precision:
        return (f"collection {collection!r} holds {existing.precision} vectors of model {existing.model!r}; this run "
                f"makes {spec.precision} ones, which lie elsewhere in the space. Use --model-precision "
                f"{existing.precision}, or another --collection")
    if spec.same_image_model(existing):  # only the text model differs
        theirs = f"text model {existing.text_model!r}" if existing.text_model else "no separate text model"
        ours = f"text model {spec.text_model!r}" if spec.text_model else "no separate text model"
        if spec.text_model and spec.text_model == existing.text_model and spec.text_fingerprint and \
                existing.text_fingerprint:
            ours += (f": the names agree but the files differ (fingerprint {spec.text_fingerprint[:12]} here, "
                     f"{existing.text_fingerprint[:12]} recorded)")
        return (f"collection {collection!r} holds caption vectors of {theirs} (beside image model "
                f"{existing.model!r}); this run uses {ours}. Pass the same --text-model as the collection's "
                "first run, or another --collection; a query may use its own --text-model")
    ours = f"model {spec.model!r}" + (f" (size {spec.dim})" if spec.dim >= 0 else "")
    if existing.model == spec.model and existing.fingerprint and spec.fingerprint:
        why = (f"; the names agree but the files differ (fingerprint {spec.fingerprint[:12]} here, "
               f"{existing.fingerprint[:12]} recorded): other weights under the same name would put new and old "
               "rows in two different vector spaces")
    else:
        why = ""
    return (f"collection {collection!r} holds vectors of model {existing.model!r} (size {existing.dim}); "
            f"this run uses {ours}{why}. Use the model the collection was made with (a moved or copied "
            "folder with the same files is accepted), or another --collection "
            "(docs/sync.md: model upgrades without downtime)")


QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class CollectionOptions:
    """How a new collection is laid out; applied when it is created and recorded with it.

    Vectors on disk, int8 scalar quantization and HNSW parameters apply to both stores;
    shards, replicas and the write consistency factor only mean something on a cluster.
    """

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    on_disk: bool = False  # vectors memory-mapped from disk instead of held in RAM
    quantization: str | None = None  # "int8": scalar quantization (4x smaller), rescored at query time
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None

    def __post_init__(self):
        if self.quantization not in (None, *QUANTIZATIONS):
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)} (or none)")
        for name in ("shard_number", "replication_factor", "write_consistency_factor", "hnsw_m",
                     "hnsw_ef_construct"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "hnsw_m" else 1):
                raise ValueError(f"{name} must be positive, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}


@dataclass
class PointRecord:
    """One point to write: a deterministic id, its vectors by name, and its payload."""

    id: str
    vectors: dict[str, np.ndarray]
    payload: dict[str, Any]


def plain_vectors(named: Any) -> dict[str, Any]:
    """An engine's named vectors as plain values: dense ones as lists of floats, sparse ones as ``SparseVector``."""
    plain = {}
    for name, vector in dict(named).items():
        if hasattr(vector, "indices") and hasattr(vector, "values"):
            plain[name] = SparseVector(tuple(int(i) for i in vector.indices), tuple(float(v) for v in vector.values))
        else:
            plain[name] = vector
    return plain


@dataclass
class StoredPoint:
    """A point read back by id."""

    id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float]] | None = None

    @classmethod
    def from_engine(cls, record: Any, with_vectors: bool = False) -> "StoredPoint":
        """From a record of either Qdrant engine (both have id, payload and vector)."""
        vectors = plain_vectors(record.vector) if with_vectors and record.vector else None
        return cls(str(record.id), dict(record.payload or {}), vectors)


@dataclass
class SearchRequest:
    """A query on the collection (``connectors/queries.py``), with an optional Qdrant filter.

    The plain form is a nearest-neighbour search: ``vector`` among the named vectors ``using``. With ``query``
    set, the engine scores points by it (fusion, recommendation, MMR, a formula) over the results of the
    ``prefetch`` legs, if any; ``filter`` then applies to every leg as well as to the final query.
    """

    vector: Sequence[float] | None = None
    using: str = "image"
    filter: dict[str, Any] | None = None
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    with_vectors: bool = False
    with_payload: bool = True  # False: ids and scores only (fusion fetches candidates this way)
    exact: bool = False  # brute force instead of HNSW (for checking recall)
    hnsw_ef: int | None = None  # search-time beam width; larger is slower and more exact
    oversampling: float = OVERSAMPLING  # with quantization: candidates fetched per result, then rescored
    query: Query | None = None
    prefetch: Sequence[Prefetch] = ()

    def top(self) -> Query:
        """The query node the engine scores by: ``query``, or the nearest neighbours of ``vector``."""
        if self.query is not None:
            return self.query
        if self.vector is None:
            raise ValueError("a search needs a vector or a query")
        return Nearest(self.vector, self.using)

    def params(self) -> SearchParams:
        return SearchParams(exact=self.exact, hnsw_ef=self.hnsw_ef, oversampling=self.oversampling)


@dataclass
class ScoredPoint:
    """One search result."""

    id: str
    score: float
    payload: dict[str, Any]
    vectors: dict[str, list[float]] | None = None

    @classmethod
    def from_engine(cls, point: Any, with_vectors: bool = False) -> "ScoredPoint":
        """From a scored point of either Qdrant engine."""
        vectors = plain_vectors(point.vector) if with_vectors and point.vector else None
        return cls(str(point.id), float(point.score), dict(point.payload or {}), vectors)


@dataclass(frozen=True)
class FacetCount:
    """How many points hold one value of a payload field (a point holding it several times in a list counts once)."""

    value: str | int | bool
    count: int

    @staticmethod
    def ordered(counts: Iterable["FacetCount"]) -> list["FacetCount"]:
        """``counts`` in the one order both stores answer in: count descending, then value ascending."""
        return sorted(counts, key=lambda c: (-c.count, type(c.value).__name__, c.value))


@dataclass
class CollectionInfo:
    """What ``mmindex info`` shows about a collection."""

    name: str
    store: str
    location: str
    points: int
    model: str
    dim: int
    distance: str = "cosine"
    payload_types: dict[str, str] = field(default_factory=dict)
    indexed_fields: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    alias_of: str | None = None  # the collection this name points to, when the name is an alias
    model_fingerprint: str | None = None
    model_path: str | None = None  # where the model was loaded from on the last run that wrote
    text_model: str | None = None  # the separate text model (--text-model) that embeds captions and queries
    text_model_fingerprint: str | None = None
    text_model_path: str | None = None
    model_precision: str = "fp32"  # int8: the towers ran quantised (ONNX Runtime)
    id_rule: dict[str, Any] | None = None  # how point ids are made: {"rule": "column", "column": …} or content
    sources: dict[str, Any] = field(default_factory=dict)  # source name → what its last run read and wrote
    sparse_vectors: list[str] = field(default_factory=list)  # ["keywords"]: the BM25 vector exists
    keywords: dict[str, Any] | None = None  # the BM25 rule and text fields the keyword vectors were made with

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias_of": self.alias_of,
            "store": self.store,
            "location": self.location,
            "points": self.points,
            "model": self.model,
            "dim": self.dim,
            "distance": self.distance,
            "vectors": list(VECTOR_NAMES),
            "payload_types": dict(sorted(self.payload_types.items())),
            "indexed_fields": dict(sorted(self.indexed_fields.items())),
            "options": dict(sorted(self.options.items())),
            "model_fingerprint": self.model_fingerprint,
            "model_path": self.model_path,
            "text_model": self.text_model,
            "text_model_fingerprint": self.text_model_fingerprint,
            "text_model_path": self.text_model_path,
            "model_precision": self.model_precision,
            "id_rule": self.id_rule,
            "sources": dict(sorted(self.sources.items())),
            "sparse_vectors": list(self.sparse_vectors),
            "keywords": self.keywords,
        }

    @classmethod
    def from_metadata(cls, name: str, store: str, location: str, points: int, meta: dict[str, Any],
                      indexed: dict[str, str], alias_of: str | None = None) -> "CollectionInfo":
        """From the metadata record both stores keep with a collection."""
        return cls(name=name, store=store, location=location, points=points, model=meta.get("model", "?"),
                   dim=int(meta.get("dim", 0)), payload_types=meta.get("payload_types", {}),
                   indexed_fields=indexed, options=meta.get("options", {}), alias_of=alias_of,
                   model_fingerprint=meta.get("model_fingerprint"), model_path=meta.get("model_path"),
                   text_model=meta.get("text_model"), text_model_fingerprint=meta.get("text_model_fingerprint"),
                   text_model_path=meta.get("text_model_path"), model_precision=meta.get("model_precision", "fp32"),
                   id_rule=meta.get("id_rule"), sources=meta.get("sources", {}),
                   sparse_vectors=list(meta.get("sparse_vectors", [])), keywords=meta.get("keywords"))


class LayoutOnce:
    """For stores: a collection's layout options, read once from its metadata (``_metadata()``).

    The layout is fixed when a collection is created, so searches need not read it again.
    """

    _layout_options: dict[str, Any] | None = None

    def _metadata(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _layout(self) -> dict[str, Any]:
        if self._layout_options is None:
            meta = self._metadata()
            if meta is None:
                return {}
            self._layout_options = meta.get("options", {})
        return self._layout_options


@runtime_checkable
class Store(Protocol):
    """A vector store bound to one collection."""

    collection: str

    def exists(self) -> bool: ...

    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Create the collection for ``spec``, or check that the existing one matches it."""

    def spec(self) -> CollectionSpec | None:
        """The model and size the collection was created for, or None if it does not exist."""

    def create_payload_index(self, field_name: str, kind: str) -> None: ...

    def upsert(self, points: Sequence[PointRecord]) -> None: ...

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]: ...

    def scroll(self, filter: dict[str, Any] | None = None, limit: int = 256, offset: str | None = None,
               with_payload: bool = True, with_vectors: bool = False) -> tuple[list[StoredPoint], str | None]:
        """One page of points in id order from ``offset`` (a point id), and the id the next page starts at."""

    def delete(self, ids: Sequence[str]) -> None:
        """Delete these points (ids that do not exist are ignored); durable when it returns."""

    def overwrite_payloads(self, payloads: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Replace the payload of each (id, payload), keeping its vectors."""

    def metadata(self) -> dict[str, Any] | None:
        """The record mmindex keeps with the collection (model, types, ids, sources), or None."""

    def update_metadata(self, changes: dict[str, Any]) -> None:
        """Set these top-level keys of the collection's record (None removes a key)."""

    def aliases(self) -> dict[str, str]:
        """Every alias of this store: alias name → collection name."""

    def set_alias(self, alias: str, collection: str) -> str | None:
        """Point ``alias`` at ``collection`` in one atomic step; returns the collection it pointed to before."""

    def delete_alias(self, alias: str) -> str | None:
        """Remove ``alias``; returns the collection it pointed to, or None if there was no such alias."""

    def search(self, request: SearchRequest) -> list[ScoredPoint]: ...

    def count(self, filter: dict[str, Any] | None = None) -> int: ...

    def facet(self, key: str, filter: dict[str, Any] | None = None, limit: int = 10,
              exact: bool = True) -> list[FacetCount]:
        """The ``limit`` most frequent values of the payload key ``key`` (a Qdrant key or path: ``color``,
        ``meta.y``, ``items[].tag``) among the points ``filter`` matches, ``FacetCount.ordered``; each element of a
        list counts. The key needs a keyword, integer, bool or uuid payload index (``create_payload_index``);
        ``exact=False`` lets the engine estimate counts. StoreError when the engine refuses."""

    def info(self) -> CollectionInfo: ...

    def begin_load(self) -> None:
        """Start a bulk load (a store may defer index building until ``finish``)."""

    def finish(self, optimize: bool = True) -> None:
        """End a load: make every write durable and, if asked, build the vector index."""

    def close(self) -> None: ...


def record_size(point: PointRecord) -> int:
    """Bytes a point takes in a JSON request, estimated from its parts."""
    floats = sum(int(np.size(v)) for v in point.vectors.values())
    # A float32 printed as JSON is about 12 characters with its separator.
    return 12 * floats + len(json.dumps(point.payload, default=str)) + 64


def chunk_by_bytes(
    points: Iterable[PointRecord], max_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_count: int = 256
) -> Iterator[list[PointRecord]]:
    """Split a write into requests bounded by size in bytes as well as by count."""
    chunk: list[PointRecord] = []
    size = 0
    for point in points:
        point_size = record_size(point)
        if chunk and (size + point_size > max_bytes or len(chunk) >= max_count):
            yield chunk
            chunk, size = [], 0
        chunk.append(point)
        size += point_size
    if chunk:
        yield chunk
