"""What users see of a point: ``Hit``, made from an engine's id, score and payload."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS


@dataclass
class Hit:
    """One search result as users see it."""

    id: str
    score: float
    caption: str | None
    payload: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    has_thumbnail: bool = False  # a thumbnail is stored with the point (ingest --thumbnails)
    group: Any = None  # with --group-by: the value of the group this hit is shown in
    duplicates: list[str] | None = None  # with --collapse-duplicates: ids of the copies collapsed into this hit

    def to_dict(self) -> dict[str, Any]:
        shown = {"id": self.id, "score": self.score, "caption": self.caption,
                 "payload": self.payload, "source": self.source}
        if self.group is not None:
            shown["group"] = self.group
        if self.duplicates is not None:
            shown["duplicates"] = self.duplicates
        return shown


def hit_from(point_id: str, score: float, payload: dict[str, Any] | None) -> Hit:
    """A point as users see it: mmindex's own keys (hash, duplicate signals, thumbnail, source, caption) taken out
    of the payload."""
    payload = dict(payload or {})
    payload.pop("_hash", None)
    for key in SIGNAL_KEYS:
        payload.pop(key, None)
    has_thumbnail = payload.pop("_thumbnail", None) is not None
    source = payload.pop("_source", None) or {}
    caption = payload.pop("caption", None)
    return Hit(point_id, score, caption, payload, source, has_thumbnail)
