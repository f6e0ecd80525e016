"""What ``mmindex serve`` is told: the store, the models, who may call, and the limits every request is held to."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mmindex.pipeline.config import StoreSettings

log = logging.getLogger("mmindex.serve")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Sizes in characters (texts, filters), pixels and counts."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = 2_000  # a CLIP reads 77 tokens (~300 characters); longer is cut by the model anyway
    max_filter_chars: int = 4_000  # a where expression, or a raw filter as JSON text
    max_filter_depth: int = 8  # nesting of must/should/must_not (a where expression's parentheses compile to it)
    max_filter_conditions: int = 64  # the store checks each one on every candidate point
    body_timeout: float = 30.0  # seconds to receive a request body before 408
    max_embed_texts: int = 64
    max_embed_images: int = 16
    max_query_pixels: int = 16_777_216  # 4096 × 4096; ingest's --max-pixels is 89 M
    max_decode_bytes: int = 128 * 1024 * 1024  # what decoding one query image may hold: 4096² RGBA and its resize
    header_timeout: float = 10.0  # seconds from a connection's start (or its last answer) to a request's headers
    max_window: int = 1_000  # offset + limit, any target; "both" fuses this many candidates per vector
    store_timeout: float = 10.0  # seconds a store call may take before the request gets 503
    max_duplicates_points: int = 5_000  # /duplicates runs on collections of at most this many points
    duplicates_timeout: float = 60.0  # seconds one /duplicates run may take before 503


@dataclass
class ServeSettings:
    """What the service needs: where collections live, which it may serve, the model, limits and access."""

    store: StoreSettings = field(default_factory=StoreSettings)
    collections: tuple[str, ...] = ()  # more collections clients may name (the store's collection always)
    model: str | None = None  # default: the model of the default collection
    text_model: str | None = None  # default: the text model the collection records (if any)
    backend: str = "auto"  # torch, onnx or auto (Encoder)
    precision: str | None = None  # default: the collection's
    threads: int | None = None  # the model's intra-op threads
    device: str = "auto"
    api_key: str | None = None  # required on every route but health when set
    cors_origins: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    batch_window_ms: float = 5.0
    max_batch: int = 64
    image_root: str | None = None  # thumbnails of path images are read from under this folder only

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.store.collection, *self.collections)))
