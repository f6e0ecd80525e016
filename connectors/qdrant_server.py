"""A Qdrant server or cluster through qdrant-client (also ``:memory:`` and local paths).

The collection's model, vector size and payload types are kept in Qdrant's collection
metadata under the key ``mmindex``, so any client can see what filled it.

Every call is retried on transient faults (connection refused or reset, timeouts, HTTP 429
and 5xx, gRPC UNAVAILABLE …) with exponential backoff and full jitter, a bounded number of
times; a rejected API key fails at once. Upserts are idempotent (ids are deterministic),
so a retried write never duplicates a point.
"""
from __future__ import annotations

import random
import ssl
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import httpx

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
from mmindex.connectors.queries import KEYWORDS
from mmindex.connectors.server_query import server_params, server_prefetch, server_query, server_vector
from mmindex.errors import FilterError, StoreError
from mmindex.keys import field_of_key, qdrant_path

METADATA_KEY = "mmindex"
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
TRANSIENT_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
AUTH_HTTP = {401, 403}
AUTH_GRPC = {"UNAUTHENTICATED", "PERMISSION_DENIED"}


@dataclass
class RetryPolicy:
    """How often and how long to retry a call that failed transiently."""

    retries: int = 5  # retries after the first attempt
    wait: float = 0.5  # first backoff, in seconds; doubles each retry
    max_wait: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, retry: int, hint: float | None = None) -> float:
        """Full jitter (uniform in [0, backoff]); a server's Retry-After is honoured up to max_wait."""
        backoff = min(self.max_wait, self.wait * 2 ** retry)
        delay = random.uniform(0, backoff)
        return min(self.max_wait, max(delay, hint or 0.0))


def classify(error: BaseException) -> tuple[str, str, float | None]:
    """('transient' | 'auth' | 'fatal', a short description, a Retry-After hint) for a client error."""
    try:
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover
        return "fatal", str(error), None

    if isinstance(error, UnexpectedResponse):
        status = error.status_code
        hint = None
        retry_after = error.headers.get("retry-after") if error.headers is not None else None
        if retry_after:
            try:
                hint = float(retry_after)
            except ValueError:
                hint = None
        detail = f"HTTP {status} {error.reason_phrase}".strip()
        body = error.content.decode("utf-8", "replace")[:200] if error.content else ""
        if body:
            detail += f": {body}"
        if status in AUTH_HTTP:
            return "auth", detail, None
        return ("transient" if status in TRANSIENT_HTTP else "fatal"), detail, hint
    if isinstance(error, ResponseHandlingException):
        source = getattr(error, "source", None)
        if isinstance(source, (httpx.TransportError, TimeoutError, ConnectionError)):
            return "transient", f"{type(source).__name__}: {source}", None
        return "fatal", str(error), None
    if isinstance(error, (httpx.TransportError, TimeoutError, ConnectionError)):
        return "transient", f"{type(error).__name__}: {error}", None
    code = getattr(error, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            name = getattr(code(), "name", str(code()))
        except Exception:  # noqa: BLE001
            name = ""
        details = error.details() if callable(getattr(error, "details", None)) else str(error)
        if name in AUTH_GRPC:
            return "auth", f"gRPC {name}: {details}", None
        if name in TRANSIENT_GRPC:
            return "transient", f"gRPC {name}: {details}", None
    return "fatal", str(error), None


class QdrantServerStore(LayoutOnce):
    """A collection on a Qdrant server, reached with qdrant-client."""

    kind = "qdrant-server"

    def __init__(
        self,
        collection: str,
        url: str = "http://localhost:6333",
        api_key: str | None = None,
        timeout: int = 60,
        client: Any = None,
        prefer_grpc: bool = False,
        parallel_writes: int = 4,
        bulk_load: bool = False,
        retry: RetryPolicy | None = None,
        options: CollectionOptions | None = None,
        ca_cert: str | None = None,
    ):
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import QdrantClient

        self.collection = collection
        self.url = url
        self.options = options or CollectionOptions()
        self.retry = retry or RetryPolicy()
        self.parallel_writes = max(1, parallel_writes)
        self.bulk_load = bulk_load
        self.local = url == ":memory:"  # qdrant-client's local mode: exact search, no search params
        if client is not None:
            self.client = client
        elif url == ":memory:":
            self.client = QdrantClient(":memory:")
            self.parallel_writes = 1  # local mode is not thread-safe
        else:
            warn_insecure_key(url, api_key)
            extra: dict[str, Any] = {}
            if ca_cert:
                # A private CA: REST verifies with it, gRPC takes it as root certificates.

                try:
                    extra["verify"] = ssl.create_default_context(cafile=ca_cert)
                    with open(ca_cert, "rb") as handle:
                        extra["grpc_options"] = {"root_certificates": handle.read()}
                except (OSError, ssl.SSLError) as error:
                    raise StoreError(f"cannot use --ca-cert {ca_cert}: {error}") from error
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
                self.client = QdrantClient(url=url, api_key=api_key, timeout=timeout, prefer_grpc=prefer_grpc,
                                           **extra)

    def exists(self) -> bool:
        return self._call("check collection", self.client.collection_exists, self.collection)

    def spec(self) -> CollectionSpec | None:
        meta = self._metadata()
        if meta is None:
            return None
        return CollectionSpec.from_metadata(meta)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        if self.exists():
            existing = self.spec()
            if existing is None:
                raise StoreError(
                    f"collection {self.collection!r} exists on {self.url} but was not made by mmindex "
                    "(no 'mmindex' metadata); choose another --collection"
                )
            spec.check_matches(existing, self.collection)
            merged = spec.merged_payload_types(existing)
            if merged != existing.payload_types:
                self.update_metadata({"payload_types": merged})
            return
        options = self.options
        params = models.VectorParams(size=spec.dim, distance=models.Distance.COSINE, on_disk=options.on_disk or None)
        hnsw = None
        if options.hnsw_m is not None or options.hnsw_ef_construct is not None:
            hnsw = models.HnswConfigDiff(m=options.hnsw_m, ef_construct=options.hnsw_ef_construct)
        quantization = None
        if options.quantization == "int8":
            quantization = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=0.99, always_ram=True))
        meta = {"format": 1, "model": spec.model, "model_fingerprint": spec.fingerprint, "dim": int(spec.dim),
                "payload_types": dict(spec.payload_types), "options": options.to_dict(), **spec.text_model_record(),
                "sparse_vectors": [KEYWORDS]}
        meta = {k: v for k, v in meta.items() if v is not None}
        self._call(
            "create collection",
            self.client.create_collection,
            self.collection,
            vectors_config={name: params for name in VECTOR_NAMES},
            sparse_vectors_config={KEYWORDS: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            shard_number=options.shard_number,
            replication_factor=options.replication_factor,
            write_consistency_factor=options.write_consistency_factor,
            hnsw_config=hnsw,
            quantization_config=quantization,
            metadata={METADATA_KEY: meta},
        )

    def create_payload_index(self, field_name: str, kind: str) -> None:
        """Index the payload key ``field_name`` (a dotted name is one key), or a field below one recorded as
        ``payload_types`` records it (``"meta".y``, ``"items"[].price``: ``keys.qdrant_path``)."""
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        schema = models.PayloadSchemaType(kind)
        with warnings.catch_warnings():
            # Local mode warns that indexes have no effect there; a server builds them.
            warnings.simplefilter("ignore", UserWarning)
            self._call("create payload index", self.client.create_payload_index,
                       self.collection, qdrant_path(field_name), schema, wait=True)
        # Recorded too, because local mode reports no payload schema.
        meta = dict(self._metadata() or {})
        self.update_metadata({"indexed_fields": {**meta.get("indexed_fields", {}), field_name: kind}})

    def upsert(self, points: Sequence[PointRecord]) -> None:
        """Write points in requests bounded by bytes, several in flight at once; each waits until stored."""
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        if not points:
            return

        def send(chunk: list[PointRecord]) -> None:
            structs = [
                models.PointStruct(
                    id=point.id,
                    vector={name: server_vector(vector) for name, vector in point.vectors.items()},
                    payload=point.payload,
                )
                for point in chunk
            ]
            self._call("upsert", self.client.upsert, self.collection, structs, wait=True)

        chunks = list(chunk_by_bytes(points))
        if self.parallel_writes == 1 or len(chunks) == 1:
            for chunk in chunks:
                send(chunk)
            return
        with ThreadPoolExecutor(max_workers=min(self.parallel_writes, len(chunks))) as pool:
            # list() re-raises the first failed request's error after all have finished.
            list(pool.map(send, chunks))

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        if not ids:
            return []
        records = self._call("retrieve", self.client.retrieve, self.collection, list(ids),
                             with_payload=True, with_vectors=with_vectors)
        return [StoredPoint.from_engine(r, with_vectors) for r in records]

    def scroll(self, filter: dict[str, Any] | None = None, limit: int = 256, offset: str | None = None,
               with_payload: bool = True, with_vectors: bool = False) -> tuple[list[StoredPoint], str | None]:
        records, next_offset = self._call("scroll", self.client.scroll, self.collection,
                                          scroll_filter=server_filter(filter), limit=limit, offset=offset,
                                          with_payload=with_payload, with_vectors=with_vectors)
        points = [StoredPoint.from_engine(r, with_vectors) for r in records]
        return points, (None if next_offset is None else str(next_offset))

    def delete(self, ids: Sequence[str]) -> None:
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        for start in range(0, len(ids), 1000):
            self._call("delete", self.client.delete, self.collection,
                       points_selector=models.PointIdsList(points=list(ids[start:start + 1000])), wait=True)

    def overwrite_payloads(self, payloads: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """One batch request per chunk (bounded by bytes like upserts), each payload to its own point."""
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        points = [PointRecord(point_id, {}, payload) for point_id, payload in payloads]
        for chunk in chunk_by_bytes(points):
            operations = [models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(
                payload=point.payload, points=[point.id])) for point in chunk]
            self._call("update payloads", self.client.batch_update_points, self.collection, operations, wait=True)

    def search(self, request: SearchRequest) -> list[ScoredPoint]:
        """Run ``request``'s query (``connectors/queries.py``) over its prefetch legs with the Query API."""
        quantized = bool(self._layout().get("quantization"))
        params = request.params()
        query, using = server_query(request.top())
        prefetch = [server_prefetch(leg, params, quantized, self.local, server_filter) for leg in request.prefetch]
        response = self._call(
            "search",
            self.client.query_points,
            self.collection,
            query=query,
            using=using,
            prefetch=prefetch or None,
            query_filter=server_filter(request.filter),
            limit=request.limit,
            offset=request.offset or None,
            score_threshold=request.score_threshold,
            search_params=server_params(params, quantized, self.local),
            with_payload=request.with_payload,
            with_vectors=request.with_vectors,
        )
        return [ScoredPoint.from_engine(p, request.with_vectors) for p in response.points]

    def update_vectors(self, vectors: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Set these named vectors of each (id, {name: vector}), keeping the point's other vectors and payload."""
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        for start in range(0, len(vectors), 256):
            points = [models.PointVectors(id=point_id, vector={name: server_vector(v) for name, v in named.items()})
                      for point_id, named in vectors[start:start + 256]]
            self._call("update vectors", self.client.update_vectors, self.collection, points, wait=True)

    def add_keywords_vector(self) -> None:
        """Give a collection made before keyword search the sparse ``keywords`` vector (BM25 with IDF); a no-op
        when it has it. Points gain their keyword vectors with ``update_vectors``."""
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        meta = dict(self._metadata() or {})
        if KEYWORDS in meta.get("sparse_vectors", []):
            return
        self._call("add the keywords vector", self.client.create_vector_name, self.collection, KEYWORDS,
                   models.SparseVectorNameConfig(sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)))
        self.update_metadata({"sparse_vectors": [*meta.get("sparse_vectors", []), KEYWORDS]})

    def count(self, filter: dict[str, Any] | None = None) -> int:
        result = self._call("count", self.client.count, self.collection,
                            count_filter=server_filter(filter), exact=True)
        return result.count

    def facet(self, key: str, filter: dict[str, Any] | None = None, limit: int = 10,
              exact: bool = True) -> list[FacetCount]:
        """The server's value counts of ``key`` among the points ``filter`` matches (``Store.facet``)."""
        response = self._call(f"count the values of {key}", self.client.facet, self.collection, key,
                              facet_filter=server_filter(filter), limit=limit, exact=exact)
        return FacetCount.ordered(FacetCount(hit.value, int(hit.count)) for hit in response.hits)

    def info(self) -> CollectionInfo:
        if not self.exists():
            raise StoreError(f"collection {self.collection!r} does not exist on {self.url}")
        description = self._call("describe collection", self.client.get_collection, self.collection)
        meta = (description.config.metadata or {}).get(METADATA_KEY, {})
        alias_of = self.aliases().get(self.collection)
        indexed = {
            field_of_key(name): str(getattr(schema.data_type, "value", schema.data_type))
            for name, schema in (description.payload_schema or {}).items()
        }
        if not indexed:
            indexed = dict(meta.get("indexed_fields", {}))
        return CollectionInfo.from_metadata(self.collection, self.kind, self.url, self.count(), meta, indexed, alias_of)

    def begin_load(self) -> None:
        """With bulk_load: stop building the HNSW index while loading (Qdrant's bulk-upload recipe)."""
        if not self.bulk_load:
            return
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        description = self._call("describe collection", self.client.get_collection, self.collection)
        current = description.config.optimizer_config.indexing_threshold
        meta = dict(self._metadata() or {})
        if current != 0 and "indexing_threshold_before_load" not in meta:
            # Kept in the collection itself, so a later run restores it even if this one dies.
            self.update_metadata({"indexing_threshold_before_load": current})
        self._call("defer indexing", self.client.update_collection, self.collection,
                   optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0))

    def finish(self, optimize: bool = True) -> None:
        """Every write already waited for the server; restore indexing if a bulk load deferred it."""
        meta = dict(self._metadata() or {})
        if "indexing_threshold_before_load" not in meta:
            return
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        threshold = meta.pop("indexing_threshold_before_load")
        self._call("restore indexing", self.client.update_collection, self.collection,
                   optimizers_config=models.OptimizersConfigDiff(indexing_threshold=threshold))
        self.update_metadata({"indexing_threshold_before_load": None})

    def close(self) -> None:
        self.client.close()

    # -- internals -------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any] | None:
        if not self.exists():
            return None
        description = self._call("describe collection", self.client.get_collection, self.collection)
        return (description.config.metadata or {}).get(METADATA_KEY)

    # -- metadata and aliases ----------------------------------------------------------
    def metadata(self) -> dict[str, Any] | None:
        return self._metadata()

    def update_metadata(self, changes: dict[str, Any]) -> None:
        meta = dict(self._metadata() or {})
        meta.update(changes)
        meta = {k: v for k, v in meta.items() if v is not None}
        self._call("update metadata", self.client.update_collection, self.collection, metadata={METADATA_KEY: meta})

    def aliases(self) -> dict[str, str]:
        response = self._call("list aliases", self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in response.aliases}

    def set_alias(self, alias: str, collection: str) -> str | None:
        """Qdrant's own alias switch: the delete and the create are one atomic request."""
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        if not alias or "/" in alias or alias != alias.strip() or len(alias.encode()) > 255:
            raise StoreError(f"invalid alias name {alias!r} (no '/', no leading or trailing spaces, at most "
                             "255 bytes)")
        aliases = self.aliases()
        if alias in self._collection_names():
            raise StoreError(f"{alias!r} is a collection on {self.url}; an alias needs a name of its own")
        if collection not in self._collection_names():
            raise StoreError(f"collection {collection!r} does not exist on {self.url}"
                             + (" (it is an alias; point the new alias at a collection)" if collection in aliases else ""))
        before = aliases.get(alias)
        operations = []
        if before is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(create_alias=models.CreateAlias(
            collection_name=collection, alias_name=alias)))
        self._call("switch alias", self.client.update_collection_aliases, change_aliases_operations=operations)
        return before

    def delete_alias(self, alias: str) -> str | None:
        # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
        from qdrant_client import models

        before = self.aliases().get(alias)
        if before is not None:
            self._call("delete alias", self.client.update_collection_aliases, change_aliases_operations=[
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))])
        return before

    def _collection_names(self) -> set[str]:
        return {c.name for c in self._call("list collections", self.client.get_collections).collections}

    def _call(self, what: str, function, *args, **kwargs):
        """Call the client; retry transient faults with backoff; turn failures into one clear StoreError."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except (StoreError, FilterError):
                raise
            except Exception as error:
                kind, detail, hint = classify(error)
                where = f"{what} on {self.url} (collection {self.collection!r})"
                if kind == "auth":
                    raise StoreError(
                        f"{where}: the server refused the credentials ({detail}); check --api-key / QDRANT_API_KEY"
                    ) from error
                if kind == "fatal":
                    raise StoreError(f"{where} failed: {detail}") from error
                if attempt >= self.retry.retries:
                    raise StoreError(
                        f"{where} failed after {attempt + 1} attempts over {time.monotonic() - started:.1f}s: "
                        f"{detail} (server unreachable or overloaded; --retries and --retry-wait set the patience)"
                    ) from error
                self.retry.sleep(self.retry.delay(attempt, hint))
                attempt += 1


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def insecure_key(url: str | None, api_key: str | None) -> str | None:
    """Why sending ``api_key`` to ``url`` is unsafe (http:// to a non-local host), or None."""
    if not url or not api_key or url == ":memory:":
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or (parts.hostname or "") in LOCAL_HOSTS:
        return None
    return (f"the API key is sent to {parts.hostname} over plain http://, readable by anyone on the path; "
            "use https:// (with --ca-cert for a private CA)")


def warn_insecure_key(url: str, api_key: str | None) -> bool:
    """Warn when an API key would cross the network in clear text."""
    message = insecure_key(url, api_key)
    if message:
        warnings.warn(message, UserWarning, stacklevel=3)
    return message is not None


def server_filter(spec: dict[str, Any] | None):
    """Validate a Qdrant filter (REST JSON form) into qdrant-client's model."""
    if not spec:
        return None
    # loaded with qdrant-client, only when a raw filter is checked
    from pydantic import ValidationError

    # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
    from qdrant_client import models

    try:
        return models.Filter.model_validate(spec)
    except ValidationError as error:
        raise FilterError(f"invalid Qdrant filter: {error.errors()[0]['msg']}") from error
