"""Cross-modal search: a ``--where`` expression becomes a Qdrant filter; hits come back typed.

The where language: ``field OP value`` joined by ``and`` / ``or`` (``and`` binds tighter),
with OP one of ``= != < <= > >=``, plus ``field in (v1, v2)`` and ``field not in (...)``.
Values are numbers, quoted strings, ``true``/``false``; a quoted date or timestamp compared
with ``< <= > >=`` is a datetime range.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from mmindex.connectors.base import SearchRequest, Store
from mmindex.pipeline.errors import FilterError, StoreError

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w.])
    | (?P<op><=|>=|!=|==|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][\w.\-]*)
    )""",
    re.VERBOSE,
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Hit:
    """One search result as users see it."""

    id: str
    score: float
    caption: str | None
    payload: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    has_thumbnail: bool = False  # a thumbnail is stored with the point (ingest --thumbnails)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "caption": self.caption,
                "payload": self.payload, "source": self.source}


def parse_where(expression: str, field_types: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Compile a where expression into a Qdrant filter (JSON form)."""
    if expression is None or not expression.strip():
        return None
    tokens = _tokenize(expression)
    groups: list[list[dict[str, Any]]] = [[]]
    position = 0
    while True:
        condition, position = _condition(tokens, position, field_types or {}, expression)
        groups[-1].append(condition)
        if position == len(tokens):
            break
        kind, word = tokens[position]
        if kind == "word" and word.lower() == "and":
            position += 1
        elif kind == "word" and word.lower() == "or":
            groups.append([])
            position += 1
        else:
            raise FilterError(f"expected 'and' or 'or' after a condition, found {word!r} in: {expression}")
        if position == len(tokens):
            raise FilterError(f"expression ends after '{word}': {expression}")
    if len(groups) == 1:
        return _merge(groups[0])
    return {"should": [_merge(group) for group in groups]}


def _merge(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    must = [c for c in conditions if "must_not" not in c]
    must_not = [n for c in conditions if "must_not" in c for n in c["must_not"]]
    result: dict[str, Any] = {}
    if must:
        result["must"] = must
    if must_not:
        result["must_not"] = must_not
    return result


def _tokenize(expression: str) -> list[tuple[str, Any]]:
    tokens = []
    position = 0
    text = expression.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise FilterError(f"cannot read the where expression at {text[position:]!r}: {expression}")
        kind = match.lastgroup
        raw = match.group(kind)
        if kind == "string":
            value: Any = bytes(raw[1:-1], "utf-8").decode("unicode_escape") if "\\" in raw else raw[1:-1]
        elif kind == "number":
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        else:
            value = raw
        tokens.append((kind, value))
        position = match.end()
    return tokens


def _condition(tokens, position, field_types, expression):
    def expect(kinds, wanted):
        if position_ref[0] >= len(tokens):
            raise FilterError(f"expression ends too early, expected {wanted}: {expression}")
        token = tokens[position_ref[0]]
        if token[0] not in kinds:
            raise FilterError(f"expected {wanted}, found {token[1]!r} in: {expression}")
        position_ref[0] += 1
        return token

    position_ref = [position]
    _, key = expect(("word",), "a field name")
    known = set(field_types) | {"caption"}
    if field_types and "." not in key and "[" not in key and key not in known:
        # A typo would otherwise match nothing, silently. Nested keys (a.b) are the caller's to get right.
        raise FilterError(f"unknown field {key!r} in: {expression} (fields: {', '.join(sorted(known))})")
    kind, op = expect(("op", "word"), f"an operator (= != < <= > >= in) after {key!r}")
    if kind == "word":
        negate = op.lower() == "not"
        if negate:
            _, op = expect(("word",), "'in' after 'not'")
        if op.lower() != "in":
            raise FilterError(f"expected an operator after {key!r}, found {op!r} in: {expression}")
        values = _value_list(tokens, position_ref, expression)
        if not all(isinstance(v, str) for v in values) and not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise FilterError(f"'in' needs all strings or all integers for {key!r}, got {values!r}")
        match = {"except": values} if negate else {"any": values}
        return {"key": key, "match": match}, position_ref[0]
    value_token = expect(("string", "number", "word"), f"a value after {key!r} {op}")
    value = _literal(value_token, expression)
    return _compare(key, op, value, field_types.get(key)), position_ref[0]


def _value_list(tokens, position_ref, expression):
    if position_ref[0] >= len(tokens) or tokens[position_ref[0]] != ("punct", "("):
        raise FilterError(f"'in' must be followed by a list like (1, 2): {expression}")
    position_ref[0] += 1
    values = []
    while True:
        if position_ref[0] >= len(tokens):
            raise FilterError(f"unclosed '(' in: {expression}")
        token = tokens[position_ref[0]]
        position_ref[0] += 1
        if token == ("punct", ")") and not values:
            raise FilterError(f"empty list after 'in': {expression}")
        values.append(_literal(token, expression))
        closing = tokens[position_ref[0]] if position_ref[0] < len(tokens) else None
        position_ref[0] += 1
        if closing == ("punct", ")"):
            return values
        if closing != ("punct", ","):
            raise FilterError(f"expected ',' or ')' in the list: {expression}")


def _literal(token, expression):
    kind, value = token
    if kind in ("string", "number"):
        return value
    if kind == "word" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "word":
        # A bare word is a string: lets people write color = red.
        return value
    raise FilterError(f"expected a value, found {value!r} in: {expression}")


def _compare(key: str, op: str, value: Any, field_type: str | None) -> dict[str, Any]:
    is_datetime = field_type == "datetime" or (isinstance(value, str) and _looks_like_time(value))
    if op in ("=", "=="):
        if field_type == "datetime" or (isinstance(value, str) and field_type == "datetime"):
            moment = _timestamp(value)
            return {"key": key, "range": {"gte": moment, "lte": moment}}
        if isinstance(value, float) or field_type == "float":
            return {"key": key, "range": {"gte": float(value), "lte": float(value)}}
        return {"key": key, "match": {"value": value}}
    if op == "!=":
        if isinstance(value, float) or field_type == "float":
            return {"must_not": [{"key": key, "range": {"gte": float(value), "lte": float(value)}}]}
        return {"must_not": [{"key": key, "match": {"value": value}}]}
    bound = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[op]
    if isinstance(value, bool):
        raise FilterError(f"cannot compare {key!r} {op} {value}: booleans have no order")
    if isinstance(value, str):
        if not is_datetime:
            raise FilterError(f"cannot compare {key!r} {op} {value!r}: ranges take numbers or dates/timestamps")
        return {"key": key, "range": {bound: _timestamp(value)}}
    return {"key": key, "range": {bound: value}}


def _looks_like_time(value: str) -> bool:
    return bool(_DATE.match(value) or re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", value))


def _timestamp(value: Any) -> str:
    text = str(value)
    if _DATE.match(text):
        return text + "T00:00:00Z"
    if not _looks_like_time(text):
        raise FilterError(f"{text!r} is not a date (YYYY-MM-DD) or RFC 3339 timestamp")
    return text.replace(" ", "T", 1)


def combine_filters(*filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """AND several Qdrant filters together."""
    present = [f for f in filters if f]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return {"must": present}


def load_filter_json(text: str | None) -> dict[str, Any] | None:
    """Parse a raw Qdrant filter given as JSON text."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise FilterError(f"--filter-json is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise FilterError("--filter-json must be a JSON object such as {\"must\": [...]}")
    return value


def search(
    store: Store,
    vector: Sequence[float],
    target: str = "image",
    where: str | None = None,
    filter_json: dict[str, Any] | None = None,
    limit: int = 10,
    offset: int = 0,
    score_threshold: float | None = None,
    exact: bool = False,
    hnsw_ef: int | None = None,
    oversampling: float = 2.0,
) -> list[Hit]:
    """Nearest points to ``vector`` among the collection's ``target`` vectors, filtered.

    ``target`` is ``image``, ``text``, or ``both``: both vector sets are searched and the two
    rankings fused by reciprocal rank fusion (score = Σ 1 / (60 + rank)), so a point that is
    near as an image *and* as a caption comes first. ``exact`` searches by brute force (to
    check the index's recall); ``hnsw_ef`` widens the index search; on a quantized
    collection ``oversampling`` × ``limit`` candidates are rescored with the full vectors.
    """
    if target not in TARGETS:
        raise FilterError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    spec = store.spec()
    if spec is None:
        raise StoreError(f"collection {store.collection!r} does not exist; ingest into it first")
    query_filter = combine_filters(parse_where(where, spec.payload_types) if where else None, filter_json)

    def request(using: str, size: int, skip: int) -> SearchRequest:
        return SearchRequest(vector=vector, using=using, filter=query_filter, limit=size, offset=skip,
                             score_threshold=score_threshold, exact=exact, hnsw_ef=hnsw_ef, oversampling=oversampling)

    if target != "both":
        return [_hit(point) for point in store.search(request(target, limit, offset))]
    rankings = [store.search(request(using, offset + limit, 0)) for using in ("image", "text")]
    return fuse(rankings)[offset:offset + limit]


RRF_K = 60
TARGETS = ("image", "text", "both")


def fuse(rankings: Sequence[Sequence[Any]]) -> list[Hit]:
    """Reciprocal rank fusion of several result lists of scored points."""
    scores: dict[str, float] = {}
    points: dict[str, Any] = {}
    for ranking in rankings:
        for rank, point in enumerate(ranking, start=1):
            scores[point.id] = scores.get(point.id, 0.0) + 1.0 / (RRF_K + rank)
            points.setdefault(point.id, point)
    ordered = sorted(scores, key=lambda pid: (-scores[pid], pid))
    hits = []
    for point_id in ordered:
        hit = _hit(points[point_id])
        hit.score = round(scores[point_id], 6)
        hits.append(hit)
    return hits


def _hit(point) -> Hit:
    payload = dict(point.payload)
    payload.pop("_hash", None)
    has_thumbnail = payload.pop("_thumbnail", None) is not None
    source = payload.pop("_source", None) or {}
    caption = payload.pop("caption", None)
    return Hit(point.id, point.score, caption, payload, source, has_thumbnail)
