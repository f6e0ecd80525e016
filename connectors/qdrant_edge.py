"""Qdrant Edge: the embedded default store, the Qdrant engine in-process.

Each collection is a folder under the data directory holding one Edge shard (``shard/``)
and ``collection.json``, which records the model, vector size and payload types.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

from mmindex.connectors.base import (
    VECTOR_NAMES,
    CollectionInfo,
    CollectionOptions,
    CollectionSpec,
    LayoutOnce,
    PointRecord,
    ScoredPoint,
    SearchRequest,
    StoredPoint,
    chunk_by_bytes,
)
from mmindex.pipeline.errors import FilterError, StoreError

METADATA_FILE = "collection.json"
SHARD_DIR = "shard"
# The engine writes through memory maps: on a full disk the OS kills the process (SIGBUS) instead
# of returning an error. So writes stop, with a clear error, while this much space is still free.
DEFAULT_MIN_FREE_BYTES = 100 * 1024 * 1024


def _edge():
    # Imported lazily so that `import mmindex` stays light.
    import qdrant_edge

    return qdrant_edge


class QdrantEdgeStore(LayoutOnce):
    """A collection stored as a Qdrant Edge shard on local disk."""

    kind = "qdrant-edge"

    def __init__(self, collection: str, data_dir: str | os.PathLike = "mmindex_data",
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES, options: CollectionOptions | None = None):
        if not collection or "/" in collection or collection.startswith("."):
            raise StoreError(f"invalid collection name {collection!r}")
        self.collection = collection
        self.folder = Path(data_dir) / collection
        self.min_free_bytes = min_free_bytes
        self.options = options or CollectionOptions()
        self._shard = None
        self._indexed: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.folder / METADATA_FILE).is_file()

    def spec(self) -> CollectionSpec | None:
        meta = self._metadata()
        if meta is None:
            return None
        return CollectionSpec(meta["model"], int(meta["dim"]), meta.get("payload_types", {}))

    def ensure_collection(self, spec: CollectionSpec) -> None:
        existing = self.spec()
        if existing is not None:
            spec.check_matches(existing, self.collection)
            self._open()  # the one-writer lock first: a refused run must leave the metadata as it was
            merged = spec.merged_payload_types(existing)
            if merged != existing.payload_types:
                self._write_metadata(spec.model, spec.dim, merged)
            return
        config = edge_config(spec.dim, self.options)
        self.folder.mkdir(parents=True, exist_ok=True)
        if (self.folder / SHARD_DIR).exists():
            # A create that was killed before it recorded collection.json: no point was ever
            # written to it (writes start after the metadata exists), so start it again.
            shutil.rmtree(self.folder / SHARD_DIR)
        self._check_space("create the collection")
        self._shard = self._engine("create the collection", _edge().EdgeShard.create, str(self.folder / SHARD_DIR),
                                   config)
        self._write_metadata(spec.model, spec.dim, dict(spec.payload_types), options=self.options.to_dict())

    def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            try:
                self._engine("flush", shard.flush)
            finally:
                shard.close()

    def flush(self) -> None:
        if self._shard is not None:
            self._engine("flush", self._shard.flush)

    def begin_load(self) -> None:
        """Nothing to do: Edge builds no HNSW index until ``finish`` optimizes, once."""

    def finish(self, optimize: bool = True) -> None:
        """End a load: build the HNSW index once (unless told not to) and flush to disk."""
        shard = self._open()
        if optimize:
            # Building the index writes new segments about as large as the ones it replaces.
            self._check_space("build the vector index", extra=_disk_usage(self.folder / SHARD_DIR))
            self._engine("build the index", shard.optimize)
        self._engine("flush", shard.flush)

    # -- writes ----------------------------------------------------------------------
    def create_payload_index(self, field_name: str, kind: str) -> None:
        """Index the top-level payload key ``field_name`` (a dotted name is one key, not a path)."""
        from mmindex.pipeline.where import qdrant_key

        qe = _edge()
        schema = getattr(qe.PayloadSchemaType, kind.capitalize())
        self._update(qe.UpdateOperation.create_field_index(qdrant_key(field_name), schema))
        meta = self._metadata() or {}
        indexed = {**meta.get("indexed_fields", {}), field_name: kind}
        self._write_metadata(meta["model"], meta["dim"], meta.get("payload_types", {}), indexed)

    def upsert(self, points: Sequence[PointRecord]) -> None:
        qe = _edge()
        for chunk in chunk_by_bytes(points):
            edge_points = [
                qe.Point(
                    id=point.id,
                    vector={name: vector.tolist() for name, vector in point.vectors.items()},
                    payload=point.payload,
                )
                for point in chunk
            ]
            self._update(qe.UpdateOperation.upsert_points(edge_points))

    def _update(self, operation) -> None:
        self._check_space("write")
        self._engine("write", self._open().update, operation)

    def _check_space(self, what: str, extra: int = 0) -> None:
        folder = self.folder if self.folder.exists() else self.folder.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        if free < self.min_free_bytes + extra:
            raise StoreError(
                f"cannot {what} in {self.folder}: the disk is nearly full ({free / 2**20:,.1f} MiB free; mmindex "
                f"stops at {(self.min_free_bytes + extra) / 2**20:,.1f} MiB so the store stays loadable). "
                "Free space and run again: what was written is kept and the next run skips it"
            )

    def _engine(self, what: str, function, *args, **kwargs):
        """Call the engine; its errors (plain Exception, or a Rust panic) become one clear StoreError."""
        try:
            return function(*args, **kwargs)
        except (StoreError, FilterError):
            raise
        except BaseException as error:  # pyo3 panics derive from BaseException
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            text = str(error)
            if any(marker in text for marker in ("No space left", "os error 28", "File too large", "os error 27",
                                                 "Disk quota")):
                raise StoreError(
                    f"{what} in {self.folder} failed: the disk is full ({text}); free space and run again "
                    "(what was written before is kept; the next run skips it)"
                ) from error
            raise StoreError(f"{what} in {self.folder} failed: {text}") from error

    # -- reads -----------------------------------------------------------------------
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        if not ids:
            return []
        records = self._engine("read", self._open().retrieve, list(ids), with_payload=True, with_vector=with_vectors)
        return [StoredPoint.from_engine(r, with_vectors) for r in records]

    def search(self, request: SearchRequest) -> list[ScoredPoint]:
        qe = _edge()
        quantized = bool(self._layout().get("quantization"))
        query = qe.QueryRequest(
            limit=request.limit,
            offset=request.offset or None,
            query=qe.Query.Nearest([float(x) for x in request.vector], using=request.using),
            filter=edge_filter(request.filter),
            score_threshold=request.score_threshold,
            with_payload=True,
            with_vector=request.with_vectors,
            params=qe.SearchParams(
                hnsw_ef=request.hnsw_ef, exact=request.exact,
                # Quantized vectors find candidates; the full vectors rank them.
                quantization=qe.QuantizationSearchParams(rescore=True, oversampling=request.oversampling)
                if quantized else None,
            ),
        )
        results = self._engine("search", self._open().query, query)
        return [ScoredPoint.from_engine(r, request.with_vectors) for r in results]

    def count(self, filter: dict[str, Any] | None = None) -> int:
        qe = _edge()
        return self._engine("count", self._open().count, qe.CountRequest(exact=True, filter=edge_filter(filter)))

    def info(self) -> CollectionInfo:
        meta = self._metadata()
        if meta is None:
            raise StoreError(f"collection {self.collection!r} does not exist under {self.folder.parent}")
        shard_info = self._open().info()
        from mmindex.pipeline.where import field_of_key

        indexed = {field_of_key(name): str(info.data_type).split(".")[-1].lower()
                   for name, info in shard_info.payload_schema.items()}
        return CollectionInfo(
            name=self.collection,
            store=self.kind,
            location=str(self.folder),
            points=shard_info.points_count,
            model=meta["model"],
            dim=int(meta["dim"]),
            payload_types=meta.get("payload_types", {}),
            indexed_fields=indexed,
            options=meta.get("options", {}),
        )

    # -- internals -------------------------------------------------------------------
    def _open(self):
        if self._shard is not None:
            return self._shard
        if not self.exists():
            raise StoreError(f"collection {self.collection!r} does not exist under {self.folder.parent}")
        qe = _edge()
        try:
            self._shard = qe.EdgeShard.load(str(self.folder / SHARD_DIR))
        except Exception as error:
            if "WouldBlock" in str(error) or "lock" in str(error).lower():
                raise StoreError(
                    f"collection {self.collection!r} at {self.folder} is open in another process; "
                    "an embedded store has one writer at a time (stop the other mmindex process, "
                    "or use a Qdrant server with --url)"
                ) from error
            raise StoreError(f"cannot open collection at {self.folder}: {error}") from error
        return self._shard

    def _metadata(self) -> dict[str, Any] | None:
        path = self.folder / METADATA_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def _write_metadata(self, model: str, dim: int, payload_types: dict[str, str], indexed: dict | None = None,
                        options: dict | None = None) -> None:
        old = self._metadata() or {}
        meta = {
            "format": 1,
            "model": model,
            "dim": int(dim),
            "distance": "cosine",
            "vectors": list(VECTOR_NAMES),
            "payload_types": payload_types,
            "indexed_fields": indexed if indexed is not None else old.get("indexed_fields", {}),
            "options": options if options is not None else old.get("options", {}),
        }
        tmp = self.folder / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, self.folder / METADATA_FILE)


def edge_config(dim: int, options: CollectionOptions):
    """The Edge shard configuration for vectors of size ``dim`` laid out as ``options`` say."""
    qe = _edge()
    hnsw = None
    if options.hnsw_m is not None or options.hnsw_ef_construct is not None:
        hnsw = qe.HnswIndexConfig(m=16 if options.hnsw_m is None else options.hnsw_m,
                                  ef_construct=options.hnsw_ef_construct or 100, full_scan_threshold=10_000)
    quantization = None
    if options.quantization == "int8":
        quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
    params = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, on_disk=options.on_disk or None)
    return qe.EdgeConfig(vectors={name: params for name in VECTOR_NAMES}, hnsw_config=hnsw,
                         quantization_config=quantization)


def _disk_usage(folder: Path) -> int:
    """Bytes actually allocated under ``folder`` (sparse preallocated files count what they use)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_blocks * 512
        except (OSError, AttributeError):
            continue
    return total


# -- Qdrant filter JSON → Edge objects ------------------------------------------------
def edge_filter(spec: dict[str, Any] | None):
    """Translate a Qdrant filter (REST JSON form) into qdrant_edge objects; ``FilterError`` if it cannot be.

    Filters are checked against Qdrant's schema before they get here (``pipeline/where.py``);
    what the binding still refuses becomes a ``FilterError`` too, never another exception.
    """
    try:
        return _edge_filter(spec)
    except (ValueError, TypeError, OverflowError, KeyError) as error:
        if isinstance(error, FilterError):
            raise
        raise FilterError(f"the embedded store cannot use this filter: {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}") from error


def _edge_filter(spec: dict[str, Any] | None):
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise FilterError(f"a filter must be a JSON object, got {type(spec).__name__}")
    qe = _edge()
    unknown = set(spec) - {"must", "should", "must_not", "min_should"}
    if unknown:
        raise FilterError(f"unknown filter clause(s): {', '.join(sorted(unknown))}")
    parts = {}
    for clause in ("must", "should", "must_not"):
        conditions = spec.get(clause)
        if conditions is None:
            continue
        if isinstance(conditions, dict):
            conditions = [conditions]
        parts[clause] = [_edge_condition(c) for c in conditions]
    if "min_should" in spec:
        ms = spec["min_should"]
        parts["min_should"] = qe.MinShould([_edge_condition(c) for c in ms["conditions"]], int(ms["min_count"]))
    return qe.Filter(**parts)


def _edge_condition(cond: dict[str, Any]):
    qe = _edge()
    if not isinstance(cond, dict):
        raise FilterError(f"a filter condition must be a JSON object, got {cond!r}")
    if {"must", "should", "must_not"} & set(cond):
        return _edge_filter(cond)
    if "has_id" in cond:
        return qe.HasIdCondition({_point_id(i) for i in cond["has_id"]})
    if "is_empty" in cond:
        return qe.IsEmptyCondition(cond["is_empty"]["key"])
    if "is_null" in cond:
        return qe.IsNullCondition(cond["is_null"]["key"])
    if "nested" in cond:
        return qe.NestedCondition(cond["nested"]["key"], _edge_filter(cond["nested"]["filter"]))
    if "key" not in cond:
        raise FilterError(f"unsupported filter condition: {json.dumps(cond)}")
    key = cond["key"]
    if "match" in cond:
        return qe.FieldCondition(key=key, match=_edge_match(cond["match"], key))
    if "range" in cond:
        bounds = {k: v for k, v in cond["range"].items() if v is not None}
        if not bounds or set(bounds) - {"gt", "gte", "lt", "lte"}:
            raise FilterError(f"range on {key!r} needs gt/gte/lt/lte bounds, got {cond['range']!r}")
        if any(isinstance(v, str) for v in bounds.values()):
            return qe.FieldCondition(key=key, range=qe.RangeDateTime(**{k: str(v) for k, v in bounds.items()}))
        return qe.FieldCondition(key=key, range=qe.RangeFloat(**{k: float(v) for k, v in bounds.items()}))
    if "values_count" in cond:
        return qe.FieldCondition(key=key, values_count=qe.ValuesCount(**cond["values_count"]))
    raise FilterError(f"unsupported condition on {key!r}: {json.dumps(cond)}")


def _edge_match(match: dict[str, Any], key: str):
    qe = _edge()
    if "value" in match:
        value = match["value"]
        if isinstance(value, bool):
            # qdrant-edge reads a Python bool as the integer 0 or 1 (bool is an int subclass and its
            # binding tries integers first), so `ok = true` matched nothing; numpy's bool is taken as one.
            import numpy as np

            value = np.bool_(value)
        return qe.MatchValue(value)
    if "any" in match:
        return qe.MatchAny(list(match["any"]))
    if "except" in match:
        return qe.MatchExcept(list(match["except"]))
    if "text" in match:
        return qe.MatchText(match["text"])
    if "phrase" in match:
        return qe.MatchPhrase(match["phrase"])
    raise FilterError(f"unsupported match on {key!r}: {json.dumps(match)}")


def _point_id(value: Any):
    if isinstance(value, int):
        return value
    return uuid.UUID(str(value))
