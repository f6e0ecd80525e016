"""The ``--where`` language, compiled to a Qdrant filter against each field's recorded type.

A collection records the type of every payload field (integer, float, keyword, bool,
datetime; a list column has the type of its elements). Each comparison is compiled for that
type, so a literal means the same thing whatever the column's encoding: ``zip = 10001`` on a
keyword field compares the text ``"10001"``, ``year = '2020'`` on an integer field compares
the number 2020, and ``year in (2020, 2021)`` on a float field (pandas turns an integer column
with a null into float64) compares 2020.0 and 2021.0. A literal that cannot be converted is a
``FilterError`` that says what to write.

Rules (the same on every type and in both stores; tests compare them with a plain-Python
evaluation of the same expression over the source rows):

* ``f = v`` matches when f, or any element of a list f, equals v; ``f in (a, b)`` when it
  equals any of them. A null or missing f matches neither.
* ``f != v`` is ``not (f = v)`` and ``f not in (a, b)`` is ``not (f in (a, b))``: "matches none
  of". So a null or missing f matches both, and a list ``[cat, dog]`` does not match
  ``tags != cat`` or ``tags not in (cat)``.
* ``< <= > >=`` compare numbers (integer, float) and dates/timestamps; a list matches when any
  element does; null never matches. Keyword and bool fields have no order: an error.
* ``f is null`` matches a missing or null f, or a list with no value (empty, or nulls only, at
  any depth); ``f is not null`` the rest.
* ``and`` binds tighter than ``or``; ``not`` negates what follows; parentheses group.

Literals: numbers, 'single' or "double" quoted strings (the escapes ``\\'``, ``\\"`` and
``\\\\`` are decoded; any other backslash stays as it is), bare words (``color = red``),
``true``/``false``, and dates (``2021-06-01``, ``'2021-06-01T12:00:00Z'``).

Field names: a bare name (letters of any script, digits, ``_``, ``-``); a dotted name
``exif.make`` is the top-level key ``exif.make`` when the collection has one, else a path below
a column, typed like one (``pipeline/query/fields.py``): ``meta.y`` in a struct, ``items.price``
in a list of structs, ``attrs.color`` in a map; any key can be written in backticks:
`` `exif.make` ``, `` `shot on` ``.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from mmindex.errors import FilterError
from mmindex.pipeline.query.fields import FieldRef, resolve_field

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<name>`[^`]*`)
    | (?P<date>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?)(?![\w.:-])
    | (?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
    | (?P<op><=|>=|!=|<>|==|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[^\W\d][\w.\-\[\]]*)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(['\"\\])")
_RANGE_OPS = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
_KEYWORDS = {"and", "or", "not", "in", "is", "null"}


@dataclass(frozen=True)
class Token:
    kind: str  # string, name, date, number, op, punct, word
    value: Any  # decoded text of strings and names; the text itself for the others
    text: str  # as written


def tokenize(expression: str) -> list[Token]:
    """Split ``expression`` into tokens; a ``FilterError`` points at what cannot be read."""
    tokens = []
    position = 0
    text = expression.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            rest = text[position:].lstrip()
            hint = " (close the quote)" if rest[:1] in "'\"`" else ""
            raise FilterError(f"cannot read the where expression at {rest[:30]!r}{hint}: {expression}")
        kind = match.lastgroup
        raw = match.group(kind)
        value: Any = raw
        if kind == "string":
            value = _ESCAPE.sub(r"\1", raw[1:-1])
        elif kind == "name":
            value = raw[1:-1]
            if not value:
                raise FilterError(f"empty field name `` in: {expression}")
        tokens.append(Token(kind, value, raw))
        position = match.end()
    return tokens


def parse_where(expression: str | None, field_types: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Compile a where expression into a Qdrant filter (JSON form), or None for an empty one.

    ``field_types`` maps payload keys to their recorded types (a collection's
    ``payload_types``); with it, unknown fields are errors and literals are converted to the
    field's type. Without it, types are inferred from the literals. Raises ``FilterError``.
    """
    if expression is None or not expression.strip():
        return None
    parser = _Parser(tokenize(expression), field_types, expression)
    try:
        result = parser.disjunction()
    except RecursionError:
        raise FilterError("the where expression nests too deeply (parentheses or 'not')") from None
    if parser.position != len(parser.tokens):
        token = parser.tokens[parser.position]
        raise FilterError(f"expected 'and' or 'or' after a condition, found {token.text!r} in: {expression}")
    compiled = result if _looks_like_filter(result) else {"must": [result]}
    check_filter_shape(compiled, "the where expression", max_depth=32, max_conditions=None)
    return compiled


def check_filter_shape(spec: Any, origin: str = "filter", max_depth: int = 8,
                       max_conditions: int | None = 64) -> None:
    """Refuse a filter (Qdrant JSON form) nested deeper than ``max_depth`` or with more conditions.

    The store evaluates every condition for every candidate point, so a filter's cost grows
    with its size times the collection's; these bounds keep one query's cost bounded.
    Raises ``FilterError``.
    """
    conditions = 0

    def walk(value: Any, depth: int) -> None:
        nonlocal conditions
        if depth > max_depth:
            raise FilterError(f"{origin} nests deeper than {max_depth} levels of must/should/must_not")
        if isinstance(value, dict):
            clauses = [value[k] for k in ("must", "should", "must_not") if k in value]
            if isinstance(value.get("min_should"), dict):
                clauses.append(value["min_should"].get("conditions"))
            if not clauses and ("key" in value or "has_id" in value or "is_empty" in value or "is_null" in value
                                or "nested" in value):
                conditions += 1
                if max_conditions is not None and conditions > max_conditions:
                    raise FilterError(f"{origin} has more than {max_conditions} conditions")
                nested = value.get("nested")
                if isinstance(nested, dict):
                    walk(nested.get("filter"), depth + 1)
                return
            for clause in clauses:
                walk(clause, depth + 1)
        elif isinstance(value, list):
            for item in value:
                walk(item, depth)

    try:
        walk(spec, 0)
    except RecursionError:
        raise FilterError(f"{origin} nests too deeply") from None


class _Parser:
    """Recursive descent: or_expr := and_expr (or and_expr)*; and_expr := unary (and unary)*."""

    def __init__(self, tokens: list[Token], field_types: dict[str, str] | None, expression: str):
        self.tokens, self.position, self.text = tokens, 0, expression
        self.types = dict(field_types) if field_types is not None else None

    # -- grammar ------------------------------------------------------------------------
    def disjunction(self) -> dict[str, Any]:
        parts = [self.conjunction()]
        while self.accept_word("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else {"should": parts}

    def conjunction(self) -> dict[str, Any]:
        parts = [self.unary()]
        while self.accept_word("and"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        must = [p for p in parts if not _only_must_not(p)]
        must_not = [c for p in parts if _only_must_not(p) for c in p["must_not"]]
        return {k: v for k, v in (("must", must), ("must_not", must_not)) if v}

    def unary(self) -> dict[str, Any]:
        if self.accept_word("not"):
            return {"must_not": [self.unary()]}
        if self.accept("punct", "("):
            inner = self.disjunction()
            self.expect("punct", ")", "')' to close '('")
            return inner
        return self.comparison()

    def comparison(self) -> dict[str, Any]:
        field = self.field()
        key, field_type, label = field.key, field.type, field.label
        token = self.next(f"an operator (= != < <= > >= in, not in, is null) after {label}")
        if token.kind == "op":
            op = {"==": "=", "<>": "!="}.get(token.value, token.value)
            literal = self.next(f"a value after {label} {op}")
            if op in ("=", "!="):
                condition = _equal(key, field_type, self.convert(literal, field_type, label))
                return {"must_not": [condition]} if op == "!=" else condition
            return _range(key, field_type, _RANGE_OPS[op], self.convert(literal, field_type, label, op), label)
        word = token.value.lower() if token.kind == "word" else None
        if word == "is":
            negate = self.accept_word("not")
            self.expect_word("null", f"'null' after {label} is")
            empty = {"is_empty": {"key": field.empty_key}}
            return {"must_not": [empty]} if negate else empty
        negate = word == "not"
        if negate:
            token = self.next(f"'in' after {label} not")
            word = token.value.lower() if token.kind == "word" else None
        if word != "in":
            raise FilterError(f"expected an operator (= != < <= > >= in, not in, is null) after {label}, "
                              f"found {token.text!r} in: {self.text}")
        values = [self.convert(t, field_type, label) for t in self.value_list(label)]
        condition = _any_of(key, field_type, values)
        return {"must_not": [condition]} if negate else condition

    def field(self) -> FieldRef:
        token = self.next("a field name")
        if token.kind not in ("word", "name") or (token.kind == "word" and token.value.lower() in _KEYWORDS):
            raise FilterError(f"expected a field name, found {token.text!r} in: {self.text}")
        return resolve_field(token.value, token.kind == "name", self.types, self.text)

    def value_list(self, label: str) -> list[Token]:
        self.expect("punct", "(", f"a list like (1, 2) after {label} in")
        values = []
        while True:
            token = self.next("a value or ')'")
            if token.kind == "punct" and token.value == ")" and not values:
                raise FilterError(f"empty list after {label} in: {self.text}")
            values.append(token)
            closing = self.next("',' or ')' in the list")
            if closing.kind == "punct" and closing.value == ")":
                return values
            if not (closing.kind == "punct" and closing.value == ","):
                raise FilterError(f"expected ',' or ')' in the list, found {closing.text!r} in: {self.text}")

    # -- literals -------------------------------------------------------------------------
    def convert(self, token: Token, field_type: str | None, label: str, op: str = "=") -> Any:
        if token.kind == "punct" or token.kind == "op" or token.kind == "name" or (
                token.kind == "word" and token.value.lower() in _KEYWORDS - {"null"}):
            raise FilterError(f"expected a value after {label} {op}, found {token.text!r} in: {self.text}")
        if token.kind == "word" and token.value.lower() == "null":
            raise FilterError(f"null is not a value to compare with: write {label} is null, or {label} is not null")
        if field_type == "null":  # no row holds a value, so no literal is of the wrong type
            return convert_literal(token, None, label)
        return convert_literal(token, field_type, label, op)

    # -- token helpers --------------------------------------------------------------------
    def next(self, wanted: str) -> Token:
        if self.position >= len(self.tokens):
            raise FilterError(f"expression ends too early, expected {wanted}: {self.text}")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def accept(self, kind: str, value: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position].kind == kind \
                and self.tokens[self.position].value == value:
            self.position += 1
            return True
        return False

    def accept_word(self, word: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position].kind == "word" \
                and self.tokens[self.position].value.lower() == word:
            self.position += 1
            return True
        return False

    def expect(self, kind: str, value: str, wanted: str) -> None:
        token = self.next(wanted)
        if not (token.kind == kind and token.value == value):
            raise FilterError(f"expected {wanted}, found {token.text!r} in: {self.text}")

    def expect_word(self, word: str, wanted: str) -> None:
        token = self.next(wanted)
        if not (token.kind == "word" and token.value.lower() == word):
            raise FilterError(f"expected {wanted}, found {token.text!r} in: {self.text}")


def _only_must_not(node: dict[str, Any]) -> bool:
    return set(node) == {"must_not"}


def convert_literal(token: Token, field_type: str | None, label: str, op: str = "=") -> Any:
    """A literal token as a value of ``field_type`` (inferred from the literal when None)."""
    text = token.value
    ranged = op in _RANGE_OPS
    if field_type is None:
        return _infer(token, label, op)
    if field_type == "keyword":
        if ranged:
            raise FilterError(f"{label} is a keyword field: it has no order for {op} (use = or in)")
        return str(text)
    if field_type == "bool":
        if ranged:
            raise FilterError(f"{label} is a true/false field: it has no order for {op} (use = or !=)")
        if str(text).lower() in ("true", "false"):
            return str(text).lower() == "true"
        raise FilterError(f"{label} holds true/false, not {token.text} (write {label} = true)")
    if field_type == "datetime":
        if token.kind == "number":
            raise FilterError(f"{label} holds dates and times: quote one, e.g. {label} {op} '2021-06-01'")
        return timestamp(str(text), label)
    number = _number(str(text))
    if number is None or not math.isfinite(number):
        raise FilterError(f"{label} holds {'integers' if field_type == 'integer' else 'numbers'}: "
                          f"{token.text} is not one (write e.g. {label} {op} 2020)")
    if field_type == "integer" and not ranged:
        if not float(number).is_integer():
            raise FilterError(f"{label} holds integers: {token.text} is never equal to one")
        return _beyond_int64(int(number) if isinstance(number, float) else number)
    if field_type == "integer" and ranged and abs(number) > FLOAT_EXACT:
        # The embedded store compares ranges as 64-bit floats; past 2**53 it would answer differently.
        raise FilterError(f"{label} {op} {token.text}: a range bound past 2**53 is not compared exactly; "
                          "use = or in for such values")
    if field_type == "integer" and isinstance(number, int) and not INT64_MIN <= number <= INT64_MAX:
        raise FilterError(f"{label} {op} {token.text}: beyond 64-bit integers, where Qdrant cannot compare "
                          "(such values are stored as decimal strings: compare with = or in)")
    return number if ranged else float(number)


def _beyond_int64(number: int) -> int | str:
    """Integers past 64 bits are stored as their decimal strings (see records.to_json_value): match those."""
    return number if INT64_MIN <= number <= INT64_MAX else str(number)


def _infer(token: Token, label: str, op: str) -> Any:
    """A literal for a field of unknown type (a nested path): the literal's own type."""
    ranged = op in _RANGE_OPS
    if token.kind == "number":
        number = _number(token.value)
        if number is None or not math.isfinite(number):
            raise FilterError(f"{token.text} is not a finite number")
        if isinstance(number, int) and not INT64_MIN <= number <= INT64_MAX:
            if ranged:
                raise FilterError(f"{label} {op} {token.text}: beyond 64-bit integers, where Qdrant cannot compare")
            return str(number)
        return number
    if token.kind == "date" or (ranged and isinstance(token.value, str) and _TIME_START.match(token.value)):
        return timestamp(token.value, label) if ranged else token.value
    if token.kind == "word" and token.value.lower() in ("true", "false"):
        if ranged:
            raise FilterError(f"cannot compare {label} {op} {token.text}: true/false have no order")
        return token.value.lower() == "true"
    if ranged:
        raise FilterError(f"cannot compare {label} {op} {token.text}: ranges take numbers or dates "
                          f"(quote a date: {label} {op} '2021-06-01')")
    return token.value


_TIME_START = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _number(text: str) -> int | float | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def timestamp(text: str, label: str = "the field") -> str:
    """A date or timestamp as RFC 3339 (UTC when no offset is given); ``FilterError`` if it is not one."""
    raw = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return dt.date.fromisoformat(raw).isoformat() + "T00:00:00Z"
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise FilterError(f"{label}: {text!r} is not a date (YYYY-MM-DD) or an RFC 3339 timestamp "
                          "(2021-06-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _no_value(key: str) -> dict[str, Any]:
    """A field recorded as ``null`` holds no value in any row: every comparison is false (``f is not null``)."""
    return {"must_not": [{"is_empty": {"key": key}}]}


def _equal(key: str, field_type: str | None, value: Any) -> dict[str, Any]:
    if field_type == "null":
        return _no_value(key)
    if field_type in ("float", "datetime") or isinstance(value, float):
        # Floats and moments are equal by value, not by spelling: a closed range of one point.
        bound = value if field_type == "datetime" else float(value)
        return {"key": key, "range": {"gte": bound, "lte": bound}}
    return {"key": key, "match": {"value": value}}


def _any_of(key: str, field_type: str | None, values: list[Any]) -> dict[str, Any]:
    unique = list(dict.fromkeys(values))
    if len(unique) == 1 or field_type == "null":
        return _equal(key, field_type, unique[0])
    plain = all(isinstance(v, str) for v in unique) or all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in unique)
    if plain and field_type not in ("float", "datetime"):
        return {"key": key, "match": {"any": unique}}
    return {"should": [_equal(key, field_type, v) for v in unique]}


def _range(key: str, field_type: str | None, bound: str, value: Any, label: str) -> dict[str, Any]:
    if field_type == "null":
        return _no_value(key)
    if isinstance(value, bool) or (field_type is None and not isinstance(value, (int, float, str))):
        raise FilterError(f"cannot compare {label} with {value!r}: ranges take numbers or dates")
    return {"key": key, "range": {bound: value}}


# -- raw filters (--filter-json, HTTP `filter` objects) ------------------------------------
def validate_filter(spec: Any, origin: str = "--filter-json") -> dict[str, Any] | None:
    """Check a raw Qdrant filter against qdrant-client's filter schema; returns it unchanged.

    Raises ``FilterError`` naming the clause for anything Qdrant would refuse, and for what it
    would silently accept but mean nothing by: NaN or infinite range bounds, point ids in
    ``has_id`` that are neither unsigned integers nor UUIDs.
    """
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise FilterError(f"{origin} must be a JSON object such as {{\"must\": [...]}}, not {type(spec).__name__}")
    # loaded with qdrant-client, only when a raw filter is checked
    from pydantic import ValidationError

    # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
    from qdrant_client.http import models

    check_filter_shape(spec, origin, max_depth=32, max_conditions=None)
    _check_values(spec, origin, "")
    try:
        models.Filter.model_validate(spec)
    except ValidationError as error:
        raise FilterError(f"{origin}: {_pydantic_problem(error)}") from None
    return spec  # as given: both stores read this JSON form (a dump would drop datetime offsets)


def _check_values(node: Any, origin: str, path: str) -> None:
    """What the schema lets through but no store can honour."""
    if isinstance(node, dict):
        unknown = set(node) - _FILTER_KEYS if not path or _looks_like_filter(node) else set()
        if unknown:
            raise FilterError(f"{origin}: unknown clause {sorted(unknown)[0]!r} at {path or 'the top'} "
                              "(a filter has must, should, must_not, min_should)")
        for name, child in node.items():
            where = f"{path}.{name}" if path else str(name)
            if name == "key" and isinstance(child, str) and not _JSON_PATH.fullmatch(child):
                raise FilterError(f"{origin}: {where} {json.dumps(child)} is not a payload key Qdrant can address "
                                  "(write a key with dots or spaces in double quotes: \"\\\"exif.make\\\"\")")
            if name == "range" and isinstance(child, dict):
                for bound, value in child.items():
                    if isinstance(value, bool):
                        raise FilterError(f"{origin}: {where}.{bound} is {json.dumps(value)}; a range takes numbers "
                                          "or dates")
                    if isinstance(value, float) and not math.isfinite(value):
                        raise FilterError(f"{origin}: {where}.{bound} is {value}, which matches nothing; give a "
                                          "finite number")
                    if isinstance(value, int) and abs(value) > FLOAT_EXACT:
                        raise FilterError(f"{origin}: {where}.{bound} is {value}; range bounds past 2**53 are not "
                                          "compared exactly (use match)")
            elif name == "has_id" and isinstance(child, list):
                for item in child:
                    if not _point_id(item):
                        raise FilterError(f"{origin}: {where} holds {json.dumps(item)}, which is not a point id "
                                          "(an unsigned 64-bit integer or a UUID)")
            elif name in ("value", "any", "except") and path.endswith(".match"):
                for item in child if isinstance(child, list) else [child]:
                    if isinstance(item, float) or item is None:
                        raise FilterError(f"{origin}: {where} is {json.dumps(item)}; match takes strings, "
                                          "integers or true/false (use range for a number with a fraction)")
                    if isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
                        raise FilterError(f"{origin}: {where} holds {item}, beyond 64-bit integers; mmindex stores "
                                          "such values as decimal strings: match the string")
            elif name in ("values_count", "min_should") and isinstance(child, dict):
                for bound, value in child.items():
                    if bound != "conditions" and isinstance(value, int) and not 0 <= value <= INT64_MAX:
                        raise FilterError(f"{origin}: {where}.{bound} is {value}; it counts, so it takes 0 or more")
            _check_values(child, origin, where)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _check_values(child, origin, f"{path}[{index}]")


_FILTER_KEYS = {"must", "should", "must_not", "min_should"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_EXACT = 2**53  # integers up to this have an exact 64-bit float
# Qdrant's payload key syntax (lib/segment/src/json_path): a raw or "quoted" first key, then
# .raw, ."quoted", [index] or [] parts; raw keys are letters, digits, _ and -.
_RAW_KEY = r"[\w-]+"
_QUOTED_KEY = r'"[^"\\]*"'
_JSON_PATH = re.compile(rf"(?:{_RAW_KEY}|{_QUOTED_KEY})(?:\.(?:{_RAW_KEY}|{_QUOTED_KEY})|\[\d+\]|\[\])*")


def _looks_like_filter(node: dict[str, Any]) -> bool:
    return bool(_FILTER_KEYS & set(node)) and "key" not in node


def _point_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 2**64
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return True
    return False


def _pydantic_problem(error: Any) -> str:
    """The most specific of pydantic's complaints, with the clause it is about (``must[0].range.gte``)."""
    problems = error.errors()
    best = min(problems, key=lambda p: (p["type"] in ("model_type", "union_tag_invalid"), -len(p["loc"])))
    where = "filter"
    for part in best["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif not _is_type_name(part):
            where += f".{part}"
    return f"{where.removeprefix('filter.')}: {best['msg']}"


_TYPE_NAMES = {"datetime", "date", "str", "int", "float", "bool", "list", "dict", "none"}


def _is_type_name(part: str) -> bool:
    """Parts of pydantic's error locations that name a model or a union member, not a clause."""
    return part[:1].isupper() or "[" in part or part.lower() in _TYPE_NAMES
