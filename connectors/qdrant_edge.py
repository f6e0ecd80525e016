"""Qdrant Edge: the embedded default store, the Qdrant engine in-process.

Each collection is a folder under the data directory holding one Edge shard (``shard/``)
and ``collection.json``, which records the model, vector size and payload types. Aliases
live in ``aliases.json`` in the data directory, replaced atomically on each change; a store
opened by an alias follows a switch on its next search.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from mmindex.connectors.base import (
    VECTOR_NAMES,
    CollectionInfo,
    CollectionOptions,
    CollectionSpec,
    FacetCount,
    LayoutOnce,
    PointRecord,
    ScoredPoint,
    SearchRequest,
    StoredPoint,
    chunk_by_bytes,
)
from mmindex.connectors.edge_query import edge_filter, edge_params, edge_prefetch, edge_query, edge_vector
from mmindex.connectors.queries import KEYWORDS
from mmindex.errors import FilterError, StoreError
from mmindex.keys import field_of_key, qdrant_path

METADATA_FILE = "collection.json"
ALIASES_FILE = "aliases.json"
SHARD_DIR = "shard"
# The engine writes through memory maps: on a full disk the OS kills the process (SIGBUS) instead
# of returning an error. So writes stop, with a clear error, while this much space is still free.
DEFAULT_MIN_FREE_BYTES = 100 * 1024 * 1024
# A file's mtime has the resolution of the kernel's coarse clock (a few ms; seconds on some file
# systems), so two alias switches close together can leave aliases.json with the same mtime. Only a
# file older than this is trusted to be unchanged when its mtime is unchanged (git's "racy" rule).
SETTLED_NS = 2_000_000_000


class _OpenShards:
    """The Edge shards open in this process, shared by every store object on the same folder.

    The engine locks a shard folder per handle, so a second handle in one process (``serve``
    reaching a collection by its name and by an alias) would be refused as "another process".
    Each store takes a reference; the last one to let go flushes and closes the shard.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.shards: dict[str, list] = {}  # real path → [shard, references]

    def take(self, folder: Path, load) -> Any:
        key = os.path.realpath(folder)
        with self.lock:
            entry = self.shards.get(key)
            if entry is None:
                entry = self.shards[key] = [load(), 0]
            entry[1] += 1
            return entry[0]

    def release(self, folder: Path, flush) -> None:
        key = os.path.realpath(folder)
        with self.lock:
            entry = self.shards.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self.shards[key]
        try:
            flush(entry[0])
        finally:
            entry[0].close()


_OPEN = _OpenShards()


def _edge():
    # Imported lazily so that `import mmindex` stays light.
    import qdrant_edge

    return qdrant_edge


class QdrantEdgeStore(LayoutOnce):
    """A collection stored as a Qdrant Edge shard on local disk."""

    kind = "qdrant-edge"

    def __init__(self, collection: str, data_dir: str | os.PathLike = "mmindex_data",
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES, options: CollectionOptions | None = None):
        check_name(collection)
        self.collection = collection
        self.data_dir = Path(data_dir)
        self.min_free_bytes = min_free_bytes
        self.options = options or CollectionOptions()
        self._shard = None
        # Shards of collections the alias pointed to before a switch, by collection: a search may
        # still run on one, and a switch back takes it up again (a second load would hit its lock).
        self._retired: dict[str, Any] = {}  # collection → its shard
        self._lock = threading.RLock()  # searches in several threads (serve) share this store
        self._wrote = False
        self._aliases_seen: int | None = None
        self.alias_of = self.aliases().get(collection)
        self.folder = self.data_dir / (self.alias_of or collection)

    # -- lifecycle -------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.folder / METADATA_FILE).is_file()

    def spec(self) -> CollectionSpec | None:
        self._follow_alias()
        meta = self._metadata()
        if meta is None:
            return None
        return CollectionSpec.from_metadata(meta)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        self._wrote = True
        existing = self.spec()
        if existing is not None:
            spec.check_matches(existing, self.collection)
            self._open()  # the one-writer lock first: a refused run must leave the metadata as it was
            merged = spec.merged_payload_types(existing)
            if merged != existing.payload_types:
                self.update_metadata({"payload_types": merged})
            return
        config = edge_config(spec.dim, self.options)
        self.folder.mkdir(parents=True, exist_ok=True)
        if (self.folder / SHARD_DIR).exists():
            # A create that was killed before it recorded collection.json: no point was ever
            # written to it (writes start after the metadata exists), so start it again.
            shutil.rmtree(self.folder / SHARD_DIR)
        self._check_space("create the collection")
        self._shard = _OPEN.take(self.folder, lambda: self._engine(
            "create the collection", _edge().EdgeShard.create, str(self.folder / SHARD_DIR), config))
        self._save_metadata({
            "format": 1, "model": spec.model, "model_fingerprint": spec.fingerprint, "dim": int(spec.dim),
            "distance": "cosine", "vectors": list(VECTOR_NAMES), "payload_types": dict(spec.payload_types),
            "indexed_fields": {}, "options": self.options.to_dict(), **spec.text_model_record(),
            "sparse_vectors": [KEYWORDS],
        })

    def close(self) -> None:
        retired, self._retired = self._retired, {}
        held = [self.data_dir / name for name in retired]
        if self._shard is not None:
            self._shard = None
            held.append(self.folder)
        for folder in held:
            _OPEN.release(folder, lambda shard: self._engine("flush", shard.flush))

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
        """Index the payload key ``field_name`` (a dotted name is one key), or a field below one recorded as
        ``payload_types`` records it (``"meta".y``, ``"items"[].price``: ``keys.qdrant_path``)."""
        qe = _edge()
        schema = getattr(qe.PayloadSchemaType, kind.capitalize())
        self._update(qe.UpdateOperation.create_field_index(qdrant_path(field_name), schema))
        meta = self._metadata() or {}
        self.update_metadata({"indexed_fields": {**meta.get("indexed_fields", {}), field_name: kind}})

    def upsert(self, points: Sequence[PointRecord]) -> None:
        qe = _edge()
        for chunk in chunk_by_bytes(points):
            edge_points = [
                qe.Point(
                    id=point.id,
                    vector={name: edge_vector(vector) for name, vector in point.vectors.items()},
                    payload=point.payload,
                )
                for point in chunk
            ]
            self._update(qe.UpdateOperation.upsert_points(edge_points))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._update(_edge().UpdateOperation.delete_points(list(ids)))
            self._engine("flush", self._open().flush)

    def overwrite_payloads(self, payloads: Sequence[tuple[str, dict[str, Any]]]) -> None:
        qe = _edge()
        for point_id, payload in payloads:
            self._update(qe.UpdateOperation.overwrite_payload([point_id], payload))

    def _update(self, operation) -> None:
        self._wrote = True
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
        self._follow_alias()
        records = self._engine("read", self._open().retrieve, list(ids), with_payload=True, with_vector=with_vectors)
        return [StoredPoint.from_engine(r, with_vectors) for r in records]

    def scroll(self, filter: dict[str, Any] | None = None, limit: int = 256, offset: str | None = None,
               with_payload: bool = True, with_vectors: bool = False) -> tuple[list[StoredPoint], str | None]:
        qe = _edge()
        request = qe.ScrollRequest(offset=offset, limit=limit, filter=edge_filter(filter), with_payload=with_payload,
                                   with_vector=with_vectors)
        records, next_offset = self._engine("read", self._open().scroll, request)
        points = [StoredPoint.from_engine(r, with_vectors) for r in records]
        return points, (None if next_offset is None else str(next_offset))

    def search(self, request: SearchRequest) -> list[ScoredPoint]:
        """Run ``request``'s query (``connectors/queries.py``) over its prefetch legs, all inside the engine."""
        qe = _edge()
        self._follow_alias()
        quantized = bool(self._layout().get("quantization"))
        params = request.params()
        query = qe.QueryRequest(
            limit=request.limit,
            offset=request.offset or None,
            query=edge_query(request.top()),
            prefetches=[edge_prefetch(leg, params, quantized) for leg in request.prefetch] or None,
            filter=edge_filter(request.filter),
            score_threshold=request.score_threshold,
            with_payload=request.with_payload,
            with_vector=request.with_vectors,
            params=edge_params(params, quantized),
        )
        results = self._engine("search", self._open().query, query)
        return [ScoredPoint.from_engine(r, request.with_vectors) for r in results]

    def update_vectors(self, vectors: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Set these named vectors of each (id, {name: vector}), keeping the point's other vectors and payload."""
        qe = _edge()
        for start in range(0, len(vectors), 256):
            chunk = vectors[start:start + 256]
            self._update(qe.UpdateOperation.update_vectors([
                qe.PointVectors(point_id, {name: edge_vector(v) for name, v in named.items()})
                for point_id, named in chunk]))

    def add_keywords_vector(self) -> None:
        """Give a collection made before keyword search the sparse ``keywords`` vector (BM25 with IDF); a no-op
        when it has it. Points gain their keyword vectors with ``update_vectors``."""
        meta = self._metadata() or {}
        if KEYWORDS in meta.get("sparse_vectors", []):
            return
        qe = _edge()
        self._update(qe.UpdateOperation.create_sparse_vector(KEYWORDS, modifier=qe.Modifier.Idf))
        self._engine("flush", self._open().flush)
        self.update_metadata({"sparse_vectors": [*meta.get("sparse_vectors", []), KEYWORDS]})

    def count(self, filter: dict[str, Any] | None = None) -> int:
        qe = _edge()
        self._follow_alias()
        return self._engine("count", self._open().count, qe.CountRequest(exact=True, filter=edge_filter(filter)))

    def facet(self, key: str, filter: dict[str, Any] | None = None, limit: int = 10,
              exact: bool = True) -> list[FacetCount]:
        """The engine's value counts of ``key`` among the points ``filter`` matches (``Store.facet``)."""
        qe = _edge()
        self._follow_alias()
        request = qe.FacetRequest(key=key, limit=limit, exact=exact, filter=edge_filter(filter))
        response = self._engine(f"count the values of {key}", self._open().facet, request)
        return FacetCount.ordered(FacetCount(hit.value, int(hit.count)) for hit in response.hits)

    def info(self) -> CollectionInfo:
        self._follow_alias()
        meta = self._metadata()
        if meta is None:
            raise StoreError(f"collection {self.collection!r} does not exist under {self.folder.parent}")
        shard_info = self._open().info()
        indexed = {field_of_key(name): str(info.data_type).split(".")[-1].lower()
                   for name, info in shard_info.payload_schema.items()}
        return CollectionInfo.from_metadata(self.collection, self.kind, str(self.folder), shard_info.points_count, meta,
                                            indexed, self.alias_of)

    # -- metadata and aliases ----------------------------------------------------------
    def metadata(self) -> dict[str, Any] | None:
        return self._metadata()

    def update_metadata(self, changes: dict[str, Any]) -> None:
        meta = self._metadata()
        if meta is None:
            raise StoreError(f"collection {self.collection!r} does not exist under {self.data_dir}")
        meta.update(changes)
        self._save_metadata({k: v for k, v in meta.items() if v is not None})

    def aliases(self) -> dict[str, str]:
        path = self.data_dir / ALIASES_FILE
        try:
            stat = path.stat()
            settled = time.time_ns() - stat.st_mtime_ns > SETTLED_NS
            self._aliases_seen = stat.st_mtime_ns if settled else None  # None: read it again next time
            return json.loads(path.read_text())
        except FileNotFoundError:
            self._aliases_seen = 0
            return {}
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read the aliases of {self.data_dir} ({path}): {error}") from error

    def set_alias(self, alias: str, collection: str) -> str | None:
        check_name(alias)
        if alias == collection:
            raise StoreError(f"an alias cannot point to itself ({alias!r})")
        if (self.data_dir / alias / METADATA_FILE).exists():
            raise StoreError(f"{alias!r} is a collection under {self.data_dir}; an alias needs a name of its own")
        if not (self.data_dir / collection / METADATA_FILE).exists():
            raise StoreError(f"collection {collection!r} does not exist under {self.data_dir}"
                             + (" (it is an alias; point the new alias at a collection)"
                                if collection in self.aliases() else ""))
        with self._aliases_lock():
            aliases = self.aliases()
            before = aliases.get(alias)
            aliases[alias] = collection
            self._save_aliases(aliases)
        return before

    def delete_alias(self, alias: str) -> str | None:
        with self._aliases_lock():
            aliases = self.aliases()
            before = aliases.pop(alias, None)
            if before is not None:
                self._save_aliases(aliases)
        return before

    @contextlib.contextmanager
    def _aliases_lock(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / (ALIASES_FILE + ".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _save_aliases(self, aliases: dict[str, str]) -> None:
        tmp = self.data_dir / (ALIASES_FILE + ".tmp")
        tmp.write_text(json.dumps(dict(sorted(aliases.items())), indent=2))
        os.replace(tmp, self.data_dir / ALIASES_FILE)

    def _follow_alias(self) -> None:
        """A reader opened by an alias moves to the alias's new collection after a switch.

        The old shard stays open until ``close`` (a search on it may still be running) and is taken
        up again if the alias switches back; a store that has written never moves, so one run's
        writes all land in one collection.
        """
        if self._wrote or self.alias_of is None:
            return
        path = self.data_dir / ALIASES_FILE
        try:
            seen = path.stat().st_mtime_ns
        except FileNotFoundError:
            seen = 0
        if seen == self._aliases_seen:
            return
        with self._lock:
            target = self.aliases().get(self.collection)
            if target is None or target == self.alias_of:
                return
            if self._shard is not None:
                self._retired[self.alias_of] = self._shard
            self._shard, self._layout_options = self._retired.pop(target, None), None
            self.alias_of, self.folder = target, self.data_dir / target

    # -- internals -------------------------------------------------------------------
    def _open(self):
        shard = self._shard
        if shard is not None:
            return shard
        with self._lock:  # two threads' first reads must not both load the shard (its lock refuses the second)
            if self._shard is None:
                self._shard = _OPEN.take(self.folder, self._load)
            return self._shard

    def _load(self):
        if not self.exists():
            raise StoreError(f"collection {self.collection!r} does not exist under {self.folder.parent}")
        qe = _edge()
        try:
            return qe.EdgeShard.load(str(self.folder / SHARD_DIR))
        except Exception as error:
            if "WouldBlock" in str(error) or "lock" in str(error).lower():
                raise StoreError(
                    f"collection {self.collection!r} at {self.folder} is open in another process"
                    f"{lock_holder(self.folder / SHARD_DIR / 'wal')}; "
                    "an embedded store has one writer at a time (stop the other mmindex process, "
                    "or use a Qdrant server with --url)"
                ) from error
            raise StoreError(f"cannot open collection at {self.folder}: {error}") from error

    def _metadata(self) -> dict[str, Any] | None:
        path = self.folder / METADATA_FILE
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read {path}: {error}") from error
        if not isinstance(meta, dict) or "model" not in meta or "dim" not in meta:
            raise StoreError(f"{path} is not a collection record of mmindex (no model or vector size in it)")
        return meta

    def _save_metadata(self, meta: dict[str, Any]) -> None:
        tmp = self.folder / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, self.folder / METADATA_FILE)


def lock_holder(path: Path) -> str:
    """`` (pid N: its command line)`` of the process holding the engine's lock on ``path``, as Linux's /proc/locks
    tells; empty where it does not (another system, another PID namespace)."""
    try:
        stat = os.stat(path)
        wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
        with open("/proc/locks") as handle:
            pids = [parts[4] for parts in map(str.split, handle) if len(parts) > 5 and parts[5] == wanted]
        if not pids:
            return ""
        with open(f"/proc/{pids[0]}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, ValueError):
        return ""
    return f" (pid {pids[0]}: {command[:120] + ('…' if len(command) > 120 else '')})"


def check_name(name: str) -> None:
    """A collection or alias name that is one folder name under the data directory."""
    if name in (ALIASES_FILE, ALIASES_FILE + ".lock", ALIASES_FILE + ".tmp"):
        raise StoreError(f"{name!r} is reserved in the data directory (it holds the aliases); choose another name")
    if (not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name
            or len(name.encode()) > 200):
        raise StoreError(f"invalid collection name {name!r} (one folder name: no '/', not starting with '.', "
                         "at most 200 bytes)")


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
                         sparse_vectors={KEYWORDS: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
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
