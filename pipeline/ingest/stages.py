"""The ingest stages, and the threads that run them at the same time.

prepare (decode + preprocess into model-ready tensors, in a pool of workers) → embed (one
thread per model replica, forward passes only) → write (one thread, in input order).
Bounded queues between the stages give back-pressure, so memory stays bounded however
large the input, and a failure in any stage stops the others and is raised to the caller.
``cancel`` (on SIGTERM/SIGINT) lets the forward passes under way finish and be written, and
hands every job not yet embedded back through ``skip``, in order, so nothing is half-done.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from mmindex.connectors.base import PointRecord
from mmindex.pipeline.duplicates.signals import signals_of
from mmindex.pipeline.ingest.gpu_decode import GpuDecoder, JpegBatch
from mmindex.pipeline.ingest.images import THUMBNAIL_KEY, RejectedImage, decode_image, thumbnail
from mmindex.pipeline.models.backend import batch_size_of, isolate, part_of, slice_features
from mmindex.pipeline.models.encoder import Encoder

HASH_KEY = "_hash"
_DONE = object()


@dataclass
class Job:
    """Rows of one source batch that need embedding, numbered in input order."""

    seq: int
    rows: list  # of ingestion.SourceRow
    source_rows: int = 0  # rows of the source batch, for progress
    thumbnail: int = 0  # > 0: store a thumbnail of this size (px) in each row's payload


@dataclass
class Prepared:
    """A job decoded and preprocessed: tensors ready for the model, and the rejected rows."""

    seq: int
    rows: list
    images: dict[str, Any] | JpegBatch | None  # a JpegBatch: JPEGs for the model's thread to decode (--decode gpu)
    texts: dict[str, Any] | None
    captioned: list[int]
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    source_rows: int = 0


@dataclass
class Embedded:
    """A job with its vectors, ready to write."""

    seq: int
    rows: list
    image_vectors: np.ndarray
    text_vectors: np.ndarray
    captioned: list[int]
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    source_rows: int = 0
    failed: list[tuple[Any, str]] = field(default_factory=list)  # rows whose forward pass raised (stage embed)

    def points(self) -> list[PointRecord]:
        """One point per embedded row; rows without a caption get an image vector only."""
        text_by_row = dict(zip(self.captioned, self.text_vectors))
        points = []
        for index, row in enumerate(self.rows):
            vectors = {"image": self.image_vectors[index]}
            if index in text_by_row:
                vectors["text"] = text_by_row[index]
            points.append(PointRecord(row.id, vectors, {**row.payload, HASH_KEY: row.hash}))
        return points

    def keeping(self, keep: Sequence[int]) -> "Embedded":
        """The job with only the rows at positions ``keep`` (ascending), their vectors and caption positions."""
        text_of = dict(zip(self.captioned, self.text_vectors))
        texts = [text_of[old] for old in keep if old in text_of]
        width = self.text_vectors.shape[1] if self.text_vectors.ndim == 2 else 0
        return replace(self, rows=[self.rows[i] for i in keep],
                       image_vectors=self.image_vectors[np.asarray(keep, dtype=np.int64)],
                       text_vectors=np.stack(texts) if texts else np.zeros((0, width), dtype=np.float32),
                       captioned=[new for new, old in enumerate(keep) if old in text_of])


def decode_rows(job: Job, target_size: int | None, max_pixels: int, center_crop: bool = False):
    """Decode every row of a job; returns the good rows, their images and the rejections (``decode_image``).

    Each good row's payload gains the image's duplicate signals (``duplicates.signals``: ``_pixels``, ``_width``,
    ``_height``, ``_print``), computed from the image as decoded here."""
    rows, images, rejected = [], [], []
    for row in job.rows:
        try:
            image = decode_image(row.image.data, target_size, max_pixels, center_crop)
        except RejectedImage as error:
            rejected.append((row, error.message))
            continue
        if job.thumbnail:
            row.payload[THUMBNAIL_KEY] = thumbnail(image, job.thumbnail)
        row.payload.update(signals_of(image).to_payload())
        images.append(image)
        rows.append(row)
    return rows, images, rejected


def prepare(job: Job, encoder: Encoder, max_pixels: int, decoder: GpuDecoder | None = None) -> Prepared:
    """Worker stage: decode images and turn images and captions into model inputs.

    With a ``decoder`` (``--decode gpu``) JPEGs stay encoded here, for the model's thread to decode;
    a job that keeps thumbnails is decoded by Pillow, which the thumbnails need anyway.
    """
    if decoder is not None and not job.thumbnail:
        rows, pixels, rejected = decoder.read_rows(job.rows, encoder)
    else:
        rows, images, rejected = decode_rows(job, encoder.image_size, max_pixels, encoder.center_crop)
        pixels = encoder.preprocess(images) if images else None
    captioned = [i for i, row in enumerate(rows) if row.caption]
    return Prepared(
        job.seq, rows, pixels,
        encoder.preprocess([rows[i].caption for i in captioned]) if captioned else None,
        captioned, rejected, job.source_rows,
    )


def embed(prepared: Prepared, encoder: Encoder, decoder: GpuDecoder | None = None) -> Embedded:
    """Model stage: forward passes on ready tensors (JPEGs are decoded first, on the device, by ``decoder``).

    A forward pass that raises (for any reason but memory, which ``Encoder.forward`` handles by
    halving) is split in two, and so on, down to the rows that fail: those are returned in
    ``failed`` with the error, and the other rows are embedded as usual (CocoIndex's way with a
    poison row). A row fails if its image or its caption fails. Captions are split as text and
    tokenized again, since a part of an already padded batch keeps the batch's length.
    """
    empty = np.zeros((0, encoder.dim), dtype=np.float32)
    pixels, decode_errors = prepared.images, {}
    if isinstance(pixels, JpegBatch):
        pixels, decode_errors = decoder.features(pixels, encoder)
    images, image_errors = (isolate(encoder.forward, pixels, batch_size_of(pixels), slice_features,
                                    encoder.dim) if pixels is not None else (empty, {}))
    captions = [prepared.rows[i].caption for i in prepared.captioned]

    def embed_captions(part: list[str]) -> np.ndarray:
        return encoder.forward(prepared.texts if part is captions else encoder.preprocess(part))

    texts, text_errors = (isolate(embed_captions, captions, len(captions), part_of, encoder.dim)
                          if prepared.texts is not None else (empty, {}))
    return _assemble(prepared.seq, prepared.rows, images, texts, prepared.captioned, prepared.rejected,
                     prepared.source_rows, image_errors, text_errors, decode_errors)


def embed_reference(job: Job, encoder: Encoder, max_pixels: int) -> Embedded:
    """The single-threaded reference: decode, then ``Encoder.encode_images``/``encode_texts`` (poison rows isolated too)."""
    rows, images, rejected = decode_rows(job, encoder.image_size, max_pixels, encoder.center_crop)
    captioned = [i for i, row in enumerate(rows) if row.caption]
    captions = [rows[i].caption for i in captioned]
    image_vectors, image_errors = encoder.encode_each(images)
    text_vectors, text_errors = encoder.encode_each(captions)
    return _assemble(job.seq, rows, image_vectors, text_vectors, captioned, rejected, job.source_rows, image_errors,
                     text_errors)


def _assemble(seq: int, rows: list, images: np.ndarray, texts: np.ndarray, captioned: list[int], rejected: list,
              source_rows: int, image_errors: dict[int, str], text_errors: dict[int, str],
              decode_errors: dict[int, str] | None = None) -> Embedded:
    """An ``Embedded`` without the rows whose image or caption the model failed on (those go to ``failed``) or
    whose image no decoder could read on the model's side (``decode_errors``: added to ``rejected``)."""
    decode_errors = decode_errors or {}
    if not image_errors and not text_errors and not decode_errors:
        return Embedded(seq, rows, images, texts, captioned, rejected, source_rows)
    errors = {**image_errors, **decode_errors}
    for position, reason in text_errors.items():
        errors.setdefault(captioned[position], f"caption: {reason}")
    keep = [i for i in range(len(rows)) if i not in errors]
    text_of = dict(zip(captioned, texts))
    kept_captioned = [new for new, old in enumerate(keep) if old in text_of]
    text_rows = [text_of[old] for old in keep if old in text_of]
    empty = np.zeros((0, images.shape[1] if images.ndim == 2 else 0), dtype=np.float32)
    return Embedded(seq, [rows[i] for i in keep], images[keep], np.stack(text_rows) if text_rows else empty,
                    kept_captioned, rejected + [(rows[i], decode_errors[i]) for i in sorted(decode_errors)],
                    source_rows, [(rows[i], f"the model failed on this row: {errors[i]}") for i in sorted(errors)
                                  if i not in decode_errors])


@dataclass
class Skipped:
    """A job handed back unprocessed because the pipeline was cancelled."""

    seq: int
    job: Job


class PipelineStopped(Exception):
    """Raised in the submitting thread when another stage has failed."""


class Pipeline:
    """Runs prepare → embed → write concurrently; ``submit`` blocks while the stages are full."""

    def __init__(self, encoders: Sequence[Encoder], workers: int, write: Callable[[Embedded], None],
                 max_pixels: int, depth: int | None = None, skip: Callable[[Job], None] | None = None,
                 decoder: GpuDecoder | None = None):
        self.encoders = list(encoders)
        self.decoder = decoder
        self.write = write
        self.skip = skip
        self.cancelled = threading.Event()
        self.max_pixels = max_pixels
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mmindex-prepare")
        # Enough prepared batches in flight to keep every worker busy, and no more.
        self.depth = depth or max(1, workers) + len(self.encoders)
        self.embed_queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self.write_queue: queue.Queue = queue.Queue(maxsize=2 * len(self.encoders))
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.high_water = {"embed": 0, "write": 0, "pending_writes": 0}
        self.threads = [
            threading.Thread(target=self._embed_loop, args=(encoder,), name=f"mmindex-embed-{i}", daemon=True)
            for i, encoder in enumerate(self.encoders)
        ]
        self.threads.append(threading.Thread(target=self._write_loop, name="mmindex-write", daemon=True))
        for thread in self.threads:
            thread.start()

    def submit(self, job: Job) -> None:
        future = self.pool.submit(prepare, job, self.encoders[0], self.max_pixels, self.decoder)
        self._put(self.embed_queue, (job.seq, future, job), "embed")

    def cancel(self) -> None:
        """Finish the forward passes under way; hand the jobs not yet embedded to ``skip``."""
        self.cancelled.set()

    def close(self) -> None:
        """Wait for every submitted job to be written; raise the first error of any stage."""
        try:
            for _ in self.encoders:
                self._put(self.embed_queue, _DONE, "embed")
        except PipelineStopped:
            pass
        for thread in self.threads:
            thread.join()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.errors:
            raise self.errors[0]

    def abort(self, error: BaseException) -> None:
        """Stop every stage because the submitting side failed; ``close`` then raises ``error``."""
        self._fail(error)

    # -- stage loops ---------------------------------------------------------------------
    def _embed_loop(self, encoder: Encoder) -> None:
        try:
            while True:
                item = self._get(self.embed_queue)
                if item is _DONE or item is None:
                    break
                seq, future, job = item
                if self.cancelled.is_set():
                    future.cancel()
                    self._put(self.write_queue, Skipped(seq, job), "write")
                    continue
                prepared = _result(future, self.stop)
                if prepared is None:
                    break
                self._put(self.write_queue, embed(prepared, encoder, self.decoder), "write")
        except PipelineStopped:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            self._fail(error)
        finally:
            try:
                self._put(self.write_queue, _DONE, "write")
            except PipelineStopped:
                pass

    def _write_loop(self) -> None:
        pending: dict[int, Embedded] = {}
        next_seq, finished = 0, 0
        try:
            while finished < len(self.encoders):
                item = self._get(self.write_queue)
                if item is None:
                    return
                if item is _DONE:
                    finished += 1
                    continue
                pending[item.seq] = item
                self.high_water["pending_writes"] = max(self.high_water["pending_writes"], len(pending))
                # Replicas finish out of order; write in input order so "last wins" holds.
                while next_seq in pending:
                    done = pending.pop(next_seq)
                    if isinstance(done, Skipped):
                        if self.skip is not None:
                            self.skip(done.job)
                    else:
                        self.write(done)
                    next_seq += 1
        except BaseException as error:  # noqa: BLE001
            self._fail(error)

    # -- plumbing ------------------------------------------------------------------------
    def _put(self, target: queue.Queue, item: Any, name: str) -> None:
        while True:
            if self.stop.is_set():
                raise PipelineStopped()
            try:
                target.put(item, timeout=0.05)
                self.high_water[name] = max(self.high_water[name], target.qsize())
                return
            except queue.Full:
                continue

    def _get(self, source: queue.Queue):
        while True:
            if self.stop.is_set():
                return None
            try:
                return source.get(timeout=0.05)
            except queue.Empty:
                continue

    def _fail(self, error: BaseException) -> None:
        if not self.errors:
            self.errors.append(error)
        self.stop.set()


def _result(future: Future, stop: threading.Event):
    while True:
        if stop.is_set():
            return None
        try:
            return future.result(timeout=0.05)
        except FutureTimeout:
            continue
