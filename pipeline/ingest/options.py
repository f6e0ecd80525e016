"""Everything an ingest run is told besides its inputs, store and model: ``IngestOptions``, one field per option of
``mmindex ingest`` that the run itself reads (columns, batch size, limits, rejects file, sync…)."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from mmindex.errors import UsageError
from mmindex.pipeline.ingest.images import DEFAULT_MAX_PIXELS

MISSING_CAPTION_POLICIES = ("image-only", "reject")
ON_DUPLICATE_CHOICES = ("keep", "skip", "link")


DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_DELETE = "10%"


@dataclass(frozen=True)
class DeleteLimit:
    """How many of a source's points one ``--sync`` may delete: ``--max-delete`` as given (``10%``, ``250``, ``all``).

    ``percent`` (of the source's points before the run) or ``count``; neither: no limit. Whole numbers are compared
    exactly (``Fraction``), so ``10%`` of 60 points allows 6 and refuses 7.
    """

    spec: str
    percent: Fraction | None = None
    count: int | None = None

    def allows(self, deleting: int, points: int) -> bool:
        """Whether deleting ``deleting`` of a source's ``points`` stays within the limit."""
        if self.count is not None:
            return deleting <= self.count
        if self.percent is not None:
            return deleting * 100 <= self.percent * points
        return True

    def most(self, points: int) -> int | None:
        """The most points of ``points`` the limit lets go (None: no limit)."""
        if self.count is not None:
            return self.count
        return None if self.percent is None else math.floor(self.percent * points / 100)


def parse_max_delete(value: str | int) -> DeleteLimit:
    """``--max-delete``: ``N%`` (0-100, of the source's points), a count ``N``, or ``all``. UsageError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UsageError(f"--max-delete must be N%, a count N or all, not {value!r}")
    text = str(value).strip().lower()
    try:
        if text == "all":
            return DeleteLimit("all")
        if text.endswith("%"):
            percent = Fraction(text[:-1].strip())
            if 0 <= percent <= 100:
                return DeleteLimit(f"{text[:-1].strip()}%", percent=percent)
        elif text.isdigit():
            return DeleteLimit(str(int(text)), count=int(text))
    except (ValueError, ZeroDivisionError):
        pass
    raise UsageError(f"--max-delete must be a percentage of the source's points (0%-100%, e.g. 10%), a count of "
                     f"points (e.g. 500) or all, not {value!r}")


@dataclass
class IngestOptions:
    """Everything an ingest run needs besides its inputs, store and model (``mmindex ingest``'s options of the same
    names)."""

    image_col: str | None = None
    """Image column (bytes, a {bytes, path} struct, or a path); detected when None."""
    caption_col: str | None = None
    """Caption column; detected when None (caption, text, txt…)."""
    id_col: str | None = None
    """Id column: point ids are UUIDv5 of its values; detected when None (id, key), else ids come from content."""
    payload_cols: Sequence[str] | None = None
    """Columns stored as payload (default: every other column)."""
    split: str | None = None
    """The split of a Hugging Face ``datasets`` input to read (``--split``; ``"all"``: every one, its name in the
    payload field ``split``); needed when an input holds several (``pipeline/ingest/hf_layout.py``)."""
    index_fields: Sequence[str] = ()
    """Payload fields to index for fast filtering, as NAME or NAME:TYPE."""
    text_fields: Sequence[str] | None = None
    """Payload fields whose text joins the caption in each point's keyword vector (BM25, ``query/keywords.py``):
    strings or lists of strings, nested names as ``--where`` takes them (``meta.title``). None: the fields the
    collection records (none for a new one); other fields than recorded are refused (``mmindex keywords`` re-does
    them)."""
    batch_size: int = 64
    """Rows per forward pass (halved automatically after a CUDA out-of-memory error)."""
    workers: int = 4
    """Threads that decode and preprocess images while the model runs."""
    devices: Sequence[str] = ()
    """One model replica per device; empty: the encoder's own device."""
    pipelined: bool = True
    """Run decode, embed and write at once; False: the single-threaded reference path."""
    decode: str = "auto"
    """auto, cpu or gpu: who decodes JPEGs (``gpu_decode.choose_decoder``)."""
    decode_device: str | None = None
    """Run the torchvision decode on another device than the model's (tests and benchmarks: "cpu"); not a CLI option."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images with more pixels are rejected (decompression bombs)."""
    optimize: bool = True
    """Build the vector index at the end (embedded store)."""
    rejects_path: str | None = None
    """Parquet file for rejected rows (file, row, id, stage, reason); None: none is written."""
    image_root: str | None = None
    """Image paths must stay inside this folder."""
    missing_caption: str = "image-only"
    """Rows with a null or empty caption: "image-only" (store the image vector only) or "reject"."""
    skip_bad_files: bool = False
    """Report unreadable Parquet files and go on, instead of stopping."""
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    """Rows whose payload is larger than this as JSON (bytes) are rejected."""
    stop: threading.Event | None = None
    """Set it (e.g. on SIGTERM) to finish the batches in flight and stop."""
    thumbnails: int = 0
    """Above 0: keep a JPEG thumbnail of this many pixels (longest side) in the payload, for the web page."""
    source_name: str | None = None
    """Recorded in each point's ``_source.name``; None: the inputs (``Source.default_name``)."""
    sync: bool = False
    """After a complete run, delete this source's points that no input row produced."""
    dry_run: bool = False
    """Read and compare only: count what would be embedded, updated and deleted; write nothing."""
    max_reject_rate: float = 0.05
    """A sync whose run rejected more than this fraction of its rows deletes nothing."""
    max_delete: str = DEFAULT_MAX_DELETE
    """The most of its source's points a sync may delete: ``N%`` of them, a count ``N``, or ``all``. A sync that
    would delete more deletes nothing and fails (an input that vanished must not empty the collection)."""
    on_duplicate: str = "keep"
    """Rows that are exact or near duplicates (``duplicates.evidence``, default thresholds) of a point already stored
    or of an earlier row of the run: ``keep`` (store them, no check), ``skip`` (leave them out; counted in
    ``skipped_duplicates``, listed in the rejects file with the id they duplicate) or ``link`` (store them with
    ``duplicate_of`` and ``duplicate_tier`` in the payload). Not ``keep``: every image is decoded by Pillow (its
    duplicate signals need it) and ``_pixels`` is indexed. ``skip`` and ``link`` are refused with ``sync``
    (UsageError): a sync could delete the stored point a skipped row duplicates."""
    labelers: Sequence[Any] = ()
    """Predicted labels written with each embedded point (``--labels``): ``(field, top_k, labeler)`` entries, where
    a labeler is a ``classify.predictions.Labeler`` or a function of the run's ``Encoder`` that makes one (zero-shot
    labels embed their prompts with the run's text model). Each writes ``field``, ``field_score``, ``field_top`` and
    ``field_top_scores`` from the row's fresh image vector, as ``mmindex label`` does from the stored one
    (``classify.predictions.label_fields``). Local engine only."""

    def __post_init__(self) -> None:
        for name in ("payload_cols", "index_fields", "devices", "text_fields"):  # a plain string is one name
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        if self.index_fields is None:
            self.index_fields = ()
        self.max_delete = self.delete_limit.spec  # refused here when it is not a limit
        if self.on_duplicate not in ON_DUPLICATE_CHOICES:
            raise UsageError(f"--on-duplicate must be one of {', '.join(ON_DUPLICATE_CHOICES)}, not "
                             f"{self.on_duplicate!r}")
        if self.sync and self.on_duplicate != "keep":
            # A row skipped (or linked) as a duplicate of a stored point whose own row left the inputs would lose
            # its only copy (or its link's target) when this sync deletes that point as stale.
            loss = ("skipped as a duplicate of a stored point that the sync then deletes as stale (its row left the "
                    "inputs) would leave no stored copy of the photo" if self.on_duplicate == "skip" else
                    "linked to a stored point that the sync then deletes as stale (its row left the inputs) would "
                    "keep a duplicate_of naming a point that is gone")
            raise UsageError(
                f"--sync cannot be combined with --on-duplicate {self.on_duplicate}: a row {loss}. Run the sync with "
                "--on-duplicate keep (the default), then find the duplicates with `mmindex duplicates -c NAME`; or "
                f"ingest new rows with --on-duplicate {self.on_duplicate} without --sync")

    @property
    def delete_limit(self) -> DeleteLimit:
        return parse_max_delete(self.max_delete)
