"""``mmindex serve``: search and embedding over HTTP, for stacks that do not import Python.

Routes (JSON in and out; OpenAPI at /openapi.json, docs at /docs), in ``routes.py``:
  POST /search            text or base64 image → hits (target image | text | both, filter, paging)
  POST /search/upload     the same with a multipart image upload
  POST /embed             texts and/or images → normalised vectors, with model name and dimension
  GET  /collections/{name} count, model, dims, payload schema, layout
  GET|POST /facets        points per value of payload fields under a filter (``serve/facets.py``)
  GET  /thumbnails/{id}   a result's thumbnail (from the payload, or the image source under --image-root)
  GET  /healthz  /readyz  liveness (no work at all); readiness (model loaded, store open and answering)
  GET  /metrics           Prometheus: requests, latency, encode vs search time, batch sizes
  GET  /                  a search page

Every request is bounded (``Limits``): the body whatever its transfer encoding
(``serve_guard.py``), text and filter sizes, /embed counts, query-image pixels (checked from the
header, before decoding), and ``offset + limit``. The event loop never waits on the model or the
store: encoders batch in their own threads (one per modality), store calls run in a thread pool
with a timeout, image decoding in another. Clients reach only the collections the service was
given; each request resolves its collection (an alias: the collection it points to at that
moment) and that collection's model once, together (``Service.resolve``). Errors are JSON
``{"error": {"code", "message"}}``, 4xx for anything the caller can fix, and never show a server
path.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from mmindex.connectors.base import CollectionSpec, model_mismatch
from mmindex.errors import EncodeError, MmindexError, StoreError
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.models.encoder import encoder_for
from mmindex.pipeline.serve.errors import ApiError
from mmindex.pipeline.serve.settings import ServeSettings

log = logging.getLogger("mmindex.serve")


class Batcher:
    """Collects encode requests from concurrent callers into one forward pass per window."""

    def __init__(self, encode, window_ms: float, max_batch: int, observe=None):
        self.encode, self.window, self.max_batch, self.observe = encode, window_ms / 1000.0, max_batch, observe
        self.pending: list[tuple[Any, Future]] = []
        self.lock = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="mmindex-batcher")
        self.thread.start()

    def submit(self, items: list) -> list[Future]:
        futures = []
        with self.lock:
            for item in items:
                future: Future = Future()
                self.pending.append((item, future))
                futures.append(future)
            self.lock.notify()
        return futures

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.closed:
                    self.lock.wait()
                if self.closed and not self.pending:
                    return
            time.sleep(self.window)  # let concurrent requests join this batch
            with self.lock:
                batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
            try:
                vectors = self.encode([item for item, _ in batch])
                for (_, future), vector in zip(batch, vectors):
                    future.set_result(vector)
                if self.observe:
                    self.observe(len(batch))
            except EncodeError as error:  # only the requests the model failed on fail; their batch-mates do not
                for index, (item, future) in enumerate(batch):
                    if index in error.failures:
                        future.set_exception(EncodeError({0: error.failures[index]}, None, [item],
                                                         "text" if isinstance(item, str) else "image"))
                    else:
                        future.set_result(error.vectors[index])
            except BaseException as error:  # noqa: BLE001 - handed to each waiting caller
                for _, future in batch:
                    future.set_exception(error)


class Model:
    """A loaded model and its batchers: texts and images queue apart, and so do search queries and
    /embed requests (up to 64 items each), so a large /embed never holds a search back."""

    def __init__(self, encoder, settings: ServeSettings, observe=None):
        self.encoder = encoder
        window, size = settings.batch_window_ms, settings.max_batch
        self.texts = Batcher(encoder.encode_texts, window, size, observe)
        self.images = Batcher(encoder.encode_images, window, size, observe)
        self.bulk_texts = Batcher(encoder.encode_texts, window, size, observe)
        self.bulk_images = Batcher(encoder.encode_images, window, size, observe)

    def batchers(self) -> list[Batcher]:
        return [self.texts, self.images, self.bulk_texts, self.bulk_images]

    def close(self) -> None:
        for batcher in self.batchers():
            batcher.close()


@dataclass(frozen=True)
class Target:
    """One request's collection and model, resolved together (``Service.resolve``)."""

    name: str  # as the client gave it (or the service's default)
    collection: str  # the collection ``name`` is, or the one its alias points to for this request
    store: Any  # ``collection``'s store
    spec: CollectionSpec
    model: Model


def missing(store, place: str = "", remedy: str = "run `mmindex ingest` first") -> str:
    """What ``require_collection`` says of a collection (or an alias's target) that does not exist; ``place`` (where
    it was looked for) only for the server's log and the command line, never in an answer."""
    try:
        require_collection(store, place, remedy)
    except StoreError as error:
        return error.message
    return f"collection {store.collection!r} did not exist a moment ago"  # it was created since


class Service:
    """The model, the stores and the worker pools behind the routes.

    Only the collections in ``settings.allowed`` are ever opened, and the collections their aliases
    point to. When the service's collection is an alias switched to a collection of another model
    (a model upgrade), the first request after the switch loads that model (unless ``--model``
    pinned one); the old one stays loaded, for requests still under way and a switch back.
    """

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.stores: dict[str, Any] = {}  # the allowed names, as clients give them (an alias follows its switches)
        self.targets: dict[str, Any] = {}  # collections allowed aliases point to, opened by their own names
        self.store_lock = threading.Lock()
        self.model_lock = threading.Lock()
        self.models: list[Model] = []
        self.observe = None
        # Store calls may block for as long as the server takes; they get their own threads, so a
        # slow store never holds back decoding or the event loop.
        self.store_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mmindex-store")
        # Query images and /embed images decode in pools of their own: /embed never delays a search.
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mmindex-decode")
        self.bulk_decode_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmindex-decode-embed")
        for name in settings.allowed[1:]:
            if self.lookup(name)[1] is None:  # a name no collection can have is refused here, not on each request
                log.warning("collection %r (--allow-collection) does not exist %s yet; it is 404 until it does",
                            name, settings.store.place)
        store, spec = self.lookup(settings.store.collection)
        if spec is None:
            self._start_without_collection(store)
        self.current = self._load(store.metadata() if spec else None)

    @property
    def encoder(self):
        return self.current.encoder

    def set_observer(self, observe) -> None:
        """Report each forward pass's batch size (the /metrics histogram)."""
        self.observe = observe
        for model in self.models:
            for batcher in model.batchers():
                batcher.observe = observe

    async def call(self, function, *args):
        """Run a store call in the store pool; 503 when it takes longer than the store timeout."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.store_pool, functools.partial(function, *args))
        try:
            return await asyncio.wait_for(future, self.settings.limits.store_timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, "store_timeout", f"the vector store did not answer within "
                                                 f"{self.settings.limits.store_timeout:g} s") from None

    async def decode(self, function, *args, bulk: bool = False):
        """Run image decoding in its own small pool (CPU-bound, bounded in pixels); /embed's in another."""
        pool = self.bulk_decode_pool if bulk else self.decode_pool
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(function, *args))

    def _load(self, meta: dict[str, Any] | None) -> Model:
        """Load the models of the collection ``meta`` records (or --model / --text-model), checked against it.

        Raises CollectionMismatchError when a --model given is not the collection's: the service
        would otherwise start, say it is ready, and answer every search with 409.
        """
        settings = self.settings
        # The model's threads are given (one per core unless --model-threads says otherwise) so that ONNX Runtime's
        # idle threads sleep instead of spinning: the HTTP server and the store need the same cores between
        # forward passes (bench/serve_load.py, 16 clients on 2 cores: 326 req/s against 204 with spinning).
        encoder = encoder_for(meta, settings.model, settings.store.collection, text_model=settings.text_model,
                              device=settings.device, backend=settings.backend, precision=settings.precision,
                              threads=settings.threads or os.cpu_count())
        model = Model(encoder, self.settings, self.observe)
        self.models.append(model)
        return model

    def lookup(self, name: str):
        """The open store of an allowed collection ``name`` and its spec (None: it does not exist yet).

        A name the service was not given is 404 and never opened.
        """
        if name not in self.settings.allowed:
            raise ApiError(404, "unknown_collection", f"collection {name!r} is not served here")
        with self.store_lock:
            store = self.stores.get(name)
            if store is None:
                store = self.stores[name] = replace(self.settings.store, collection=name).open()
        return store, store.spec()

    def locate(self, name: str) -> tuple[str, Any, CollectionSpec]:
        """The collection ``name`` is now (itself, or the one its alias points to), that collection's own store (which
        never follows a later switch) and its spec. ApiError 404 for a name not served here or a collection (or
        alias target) that does not exist."""
        named, _ = self.lookup(name)
        collection = named.aliases().get(name, name)
        store = named if collection == name else self._store_of(collection)
        spec = store.spec()
        if spec is None:
            raise ApiError(404, "unknown_collection", missing(named))
        return collection, store, spec

    def resolve(self, name: str) -> Target:
        """What a search on ``name`` reaches, resolved once (``locate``) with the loaded model that fills it.

        Every part of one request uses this one answer, so an alias switched while it runs can never pair the
        query vector of one collection's model with a search in another collection. ApiError 404 (``locate``),
        409 for a collection of another model.
        """
        collection, store, spec = self.locate(name)
        return Target(name, collection, store, spec, self.model_for(name, store, spec))

    def checked(self, name: str):
        """The store and the loaded model of collection ``name`` as ``resolve`` finds them, together."""
        target = self.resolve(name)
        return target.store, target.model

    def _store_of(self, collection: str):
        """The open store of ``collection``, a collection an allowed alias points to (opened by its own name)."""
        with self.store_lock:
            store = self.targets.get(collection)
            if store is None:
                store = self.targets[collection] = replace(self.settings.store, collection=collection).open()
        return store

    def model_for(self, name: str, store, spec) -> Model:
        """The loaded model that fills ``spec`` (collection ``name``, or the collection its alias points to); loads
        it when the service's own alias moved to a collection of another model.

        Raises ApiError 409 for a collection of another model than the service's.
        """
        for model in [self.current, *self.models]:
            if self._fills(model, spec):
                if name == self.settings.store.collection:
                    self.current = model  # /embed and /readyz follow the service's alias too
                return model
        if name != self.settings.store.collection or self.settings.model:
            raise ApiError(409, "model_mismatch", model_mismatch(spec, self.encoder.spec(), name))
        with self.model_lock:
            loaded = next((model for model in self.models if self._fills(model, spec)), None)
            if loaded is None:
                log.info("collection %r now holds model %s; loading it", name, spec.model)
                loaded = self._load(store.metadata())
            self.current = loaded
        return loaded

    def embedding_model(self) -> Model:
        """The model /embed answers with: the one of the service's collection as it resolves now, or the model
        loaded at start while that collection is missing or unreachable."""
        try:
            return self.resolve(self.settings.store.collection).model
        except (ApiError, MmindexError):
            return self.current

    def _start_without_collection(self, store) -> None:
        """The service's collection is missing at start: with --model it starts (saying so, and /readyz says so
        until the collection exists); without, no model can be chosen, so it refuses to start."""
        settings = self.settings
        if not settings.model:
            raise StoreError(missing(store, settings.store.place, "ingest into it first, or give --model to start "
                                                                  "the service before it exists"))
        log.warning("%s; serving with --model %s: /readyz answers 503 and searches 404 until it exists",
                    missing(store, settings.store.place, "ingest into it"), settings.model)

    def _fills(self, model: Model, spec) -> bool:
        """Whether ``model`` made ``spec``'s vectors (with --text-model, only the image model must agree)."""
        ours = model.encoder.spec()
        return ours.same_image_model(spec) if self.settings.text_model else ours.same_model(spec)

    def close(self) -> None:
        for model in self.models:
            model.close()
        for pool in (self.store_pool, self.decode_pool, self.bulk_decode_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        for store in [*self.stores.values(), *self.targets.values()]:
            try:
                store.close()
            except StoreError as error:
                log.warning("closing a store: %s", error)


