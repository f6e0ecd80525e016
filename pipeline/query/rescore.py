"""The ``--boost`` language: a score built from the vector similarity and payload fields, compiled to the formula
of Qdrant's formula query (its REST JSON form) and checked against the fields the collection recorded.

    score + 0.2 * popularity
    score * (1 + 0.1 * ln(1 + likes(default=0)))
    score + 0.3 * exp_decay(taken_at, target=now, scale=30d, midpoint=0.5)

Grammar (a hand-written recursive-descent parser; nothing is ever evaluated in Python):

    boost    := sum
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/") unary)*
    unary    := "-" unary | primary
    primary  := NUMBER | DURATION | DATE | "score" | "now" | field | call | "(" sum ")"
    field    := NAME | NAME "(" "default" "=" constant ")"
    call     := FUNCTION "(" sum ("," sum)* ("," WORD "=" sum)* ")"

Values are numbers or instants (a datetime field, a date, ``now``). Both engines count an instant in seconds since
1970-01-01 UTC, so instant − instant is a number of seconds and instant ± number an instant; any other arithmetic
on an instant, and a boost that is an instant, are errors. Durations (``30d``, ``12h``, ``90m``, ``45s``) are
numbers of seconds. Both engines fail a query when a field is missing or null on a point, or not one number, unless
the field has ``default=``: formula ``defaults`` cover an absent key only (both engines fail on the null that
ingest writes for a missing value), so a default is compiled into the formula as
``is_empty(f) · d + not is_empty(f) · f`` (both engines skip the factors after a zero one).
The decay functions and their defaults are Qdrant's (documentation, "Hybrid and multi-stage queries: score
boosting"): lin = max(0, 1 − (1 − midpoint) · |x − target| / scale), exp = midpoint^(|x − target| / scale),
gauss = midpoint^((x − target)² / scale²); target 0, scale 1, midpoint 0.5.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from qdrant_client import models  # ~0.5 s: callers import this module only when a request has a boost

from mmindex.errors import FilterError
from mmindex.pipeline.query.fields import SYSTEM_FIELDS, resolve_field

NUMBER, INSTANT = "number", "instant"
DURATIONS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}  # unit → seconds
UNARY_FUNCTIONS = ("abs", "exp", "ln", "log10", "sqrt")
DECAYS = ("exp_decay", "gauss_decay", "lin_decay")
FUNCTIONS = (*UNARY_FUNCTIONS, "div", "max", "min", "pow", *DECAYS)
MAX_DEPTH = 32  # nested parentheses, calls and signs
MAX_LENGTH = 4000  # characters
_FIELD_TYPES = {"integer": NUMBER, "float": NUMBER, "datetime": INSTANT}
_KIND_NAMES = {NUMBER: "a number", INSTANT: "a datetime"}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<name>`[^`]*`?)
    | (?P<date>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?)(?![\w.:-])
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?P<unit>[^\W\d]\w*)?(?![.\d])
    | (?P<op>[-+*/(),=])
    | (?P<word>[^\W\d][\w.]*)
    | (?P<other>\S)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"exp_decay": ("target", "scale", "midpoint"), "gauss_decay": ("target", "scale", "midpoint"),
             "lin_decay": ("target", "scale", "midpoint"), "div": ("by_zero",)}
_ARITY = {**{name: (1, 1) for name in (*UNARY_FUNCTIONS, *DECAYS)}, "div": (2, 2), "pow": (2, 2),
          "max": (1, None), "min": (1, None)}


@dataclass(frozen=True)
class Boost:
    """A checked boost expression: ``formula`` is Qdrant's formula expression (REST JSON: ``"$score"`` is the
    similarity of the first prefetch leg, strings are payload keys as Qdrant's JSON paths address them) and
    ``defaults`` the formula's defaults (empty: defaults are compiled into ``formula``, see the module's
    docstring). ``fields`` are the payload keys it reads, ``required`` those read without a default (a point
    where one is null or missing fails the query); ``now`` is the UTC time ``now`` stood for (RFC 3339)."""

    expression: str
    formula: Any
    defaults: dict[str, Any]
    fields: tuple[str, ...]
    required: tuple[str, ...]
    now: str

    def failure_hint(self) -> str:
        """One line for an engine that failed to score some point by this boost (Qdrant Edge says only
        "Operation cancelled"): the causes both engines fail on."""
        missing = (f"a field without default= ({', '.join(self.required)}) is null or missing on some point, or "
                   if self.required else "")
        return (f"the boost {self.expression!r} could not be computed for every point: {missing}a function left "
                "its domain (ln and log10 need a value > 0, sqrt one >= 0, a division by 0 needs div(a, b, "
                "by_zero=…), exp and products must stay within ±3.4e38)")


@dataclass(frozen=True)
class _Token:
    kind: str  # name, date, number, duration, op, word, other, end
    text: str
    column: int  # 1-based


@dataclass(frozen=True)
class _Value:
    json: Any  # the formula expression
    kind: str  # NUMBER or INSTANT
    column: int
    constant: float | None = None  # a number literal (sign and duration applied)


def parse_boost(expression: str, payload_types: dict[str, str], *, now: dt.datetime | None = None,
                source: str = "--boost") -> Boost:
    """Compile a boost expression (grammar in the module docstring) into a checked ``Boost``.

    ``payload_types`` is the collection's ``CollectionSpec.payload_types``: every field must be recorded there as
    integer, float or datetime (not a list). ``now`` is the instant ``now`` means (default: the current UTC time,
    to the second). ``source`` names the expression in messages (``--boost`` on the CLI, ``boost`` over HTTP).
    Raises ``FilterError`` with the column and the token at fault, e.g. ``--boost: unexpected ')' at column 14``.
    """
    if not expression or not expression.strip():
        raise FilterError(f"{source}: the expression is empty (e.g. score + 0.2 * popularity)")
    if len(expression) > MAX_LENGTH:
        raise FilterError(f"{source}: the expression is {len(expression)} characters; at most {MAX_LENGTH}")
    moment = (now or dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    parser = _Parser(_tokenize(expression, source), payload_types, source, _rfc3339(moment))
    value = parser.sum()
    token = parser.peek()
    if token.kind != "end":
        raise parser.error(f"unexpected {_shown(token)}", token)
    if value.kind == INSTANT:
        raise FilterError(f"{source}: the expression is a datetime, not a score; score by its distance to a "
                          "moment instead, e.g. exp_decay(taken_at, target=now, scale=30d)")
    formula = value.json if value.constant is None else float(value.constant)
    _validate(formula, source)
    return Boost(expression, formula, {}, tuple(dict.fromkeys(parser.fields)), tuple(dict.fromkeys(parser.required)),
                 parser.now)


def _validate(formula: Any, source: str) -> None:
    """Check the formula against qdrant-client's model, the schema the server store sends it in."""
    try:
        models.FormulaQuery.model_validate({"formula": formula, "defaults": {}})
    except ValidationError as error:  # a compiler bug, not a user's mistake: say so plainly
        raise FilterError(f"{source}: compiled to a formula Qdrant's schema refuses: "
                          f"{error.errors()[0]['msg']}") from None


def _tokenize(expression: str, source: str) -> list[_Token]:
    tokens = []
    position = 0
    text = expression.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        start = match.start(match.lastgroup) + 1
        kind, raw = match.lastgroup, match.group(match.lastgroup)
        if kind == "unit":
            kind, raw = "duration", match.group("number") + match.group("unit")
            if match.group("unit") not in DURATIONS:
                raise FilterError(f"{source}: bad duration {raw!r} at column {match.start('number') + 1} "
                                  "(a number and one of d, h, m, s: 30d, 12h, 90m, 45s)")
            start = match.start("number") + 1
        elif kind == "name" and (len(raw) < 3 or not raw.endswith("`")):
            problem = "empty field name ``" if raw == "``" else "a field name opened with ` is never closed"
            raise FilterError(f"{source}: {problem} at column {start}")
        elif kind == "other":
            raise FilterError(f"{source}: unexpected {raw!r} at column {start}")
        tokens.append(_Token(kind, raw, start))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    """Recursive descent over the tokens; each rule returns a typed ``_Value``."""

    def __init__(self, tokens: list[_Token], payload_types: dict[str, str], source: str, now: str):
        self.tokens, self.position, self.depth = tokens, 0, 0
        self.payload_types, self.source, self.now = dict(payload_types or {}), source, now
        self.fields: list[str] = []
        self.required: list[str] = []

    # -- tokens -------------------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.position += 1
        return token

    def expect(self, text: str, after: str) -> _Token:
        token = self.take()
        if token.kind != "op" or token.text != text:
            raise self.error(f"expected '{text}' {after}, found {_shown(token)}", token)
        return token

    def error(self, message: str, token: _Token, detail: str = "") -> FilterError:
        """``--boost: <message> at column <n> (<detail>)``."""
        return FilterError(f"{self.source}: {message} at column {token.column}" + (f" ({detail})" if detail else ""))

    def deeper(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH} levels", token)

    # -- grammar ------------------------------------------------------------------------------------
    def sum(self) -> _Value:
        first = self.product()
        terms, kind = [first], first.kind
        while self.peek().kind == "op" and self.peek().text in "+-":
            operator = self.take()
            term = self.product()
            kind = self.sum_kind(kind, operator, term)
            terms.append(term if operator.text == "+" else _negated(term))
        if len(terms) == 1:
            return first
        return _Value({"sum": [_json(t) for t in terms]}, kind, first.column)

    def sum_kind(self, kind: str, operator: _Token, term: _Value) -> str:
        """instant ± number is an instant, instant − instant a number of seconds; nothing else mixes them."""
        if term.kind == NUMBER:
            return kind
        if operator.text == "-" and kind == INSTANT:
            return NUMBER
        if operator.text == "+" and kind == NUMBER:
            return INSTANT
        what = "add two datetimes" if operator.text == "+" else "subtract a datetime from a number"
        raise self.error(f"cannot {what} (instant − instant is seconds: e.g. (now - taken_at) / 1d)", operator)

    def product(self) -> _Value:
        first = self.unary()
        factors, result = [first], first
        while self.peek().kind == "op" and self.peek().text in "*/":
            operator = self.take()
            operand = self.unary()
            for side in (result, operand):
                self.need_number(side, f"'{operator.text}'", operator)
            if operator.text == "*":
                factors.append(operand)
                result = _Value({"mult": [_json(f) for f in factors]}, NUMBER, first.column)
            else:
                result = _Value({"div": {"left": _json(result), "right": _json(operand)}}, NUMBER, first.column)
                factors = [result]
        return result

    def unary(self) -> _Value:
        token = self.peek()
        if token.kind == "op" and token.text == "-":
            self.take()
            self.deeper(token)
            operand = self.unary()
            self.depth -= 1
            self.need_number(operand, "'-'", token)
            return _negated(_Value(operand.json, NUMBER, token.column, operand.constant))
        return self.primary()

    def primary(self) -> _Value:
        token = self.take()
        if token.kind == "number":
            return self.number(token, float(token.text))
        if token.kind == "duration":
            return self.number(token, float(token.text[:-1]) * DURATIONS[token.text[-1]])
        if token.kind == "date":
            return _Value({"datetime": self.date(token)}, INSTANT, token.column)
        if token.kind == "op" and token.text == "(":
            self.deeper(token)
            inner = self.sum()
            self.expect(")", "to close the '(' at column " + str(token.column))
            self.depth -= 1
            return _Value(inner.json, inner.kind, token.column, inner.constant)
        if token.kind == "word" and token.text == "score":
            return _Value("$score", NUMBER, token.column)
        if token.kind == "word" and token.text == "now":
            return _Value({"datetime": self.now}, INSTANT, token.column)
        called = self.peek().kind == "op" and self.peek().text == "("
        if token.kind == "word" and called and token.text in FUNCTIONS:
            return self.call(token)
        if token.kind in ("word", "name"):
            return self.field(token, called)
        expected = "a number, a field, score, now or '('"
        raise self.error(f"expected {expected}, found {_shown(token)}", token)

    def number(self, token: _Token, value: float) -> _Value:
        if not math.isfinite(value):
            raise self.error(f"the number {token.text} is out of range", token)
        return _Value(value, NUMBER, token.column, value)

    def date(self, token: _Token) -> str:
        try:
            moment = dt.datetime.fromisoformat(token.text)
        except ValueError:
            raise self.error(f"{token.text} is not a date", token) from None
        return _rfc3339(moment)

    def need_number(self, value: _Value, where: str, token: _Token) -> None:
        if value.kind != NUMBER:
            raise self.error(f"a datetime cannot be used with {where}: only instant − instant (seconds) and "
                             "instant ± seconds are defined (e.g. (now - taken_at) / 1d)", token)

    # -- fields -------------------------------------------------------------------------------------
    def field(self, token: _Token, called: bool) -> _Value:
        """A payload field (``datetime_key`` for a datetime); with ``(default=…)`` guarded by ``is_empty``."""
        name = token.text[1:-1] if token.kind == "name" else token.text
        defaulted = called and self.peek(1).text == "default" and self.peek(2).text == "="
        if called and not defaulted and token.kind == "word" and not self.known(name, token):
            raise self.error(f"unknown function {name} (functions: {', '.join(sorted(FUNCTIONS))})", token)
        key, kind = self.resolve(name, token)
        self.fields.append(key)
        reader: Any = key if kind == NUMBER else {"datetime_key": key}
        if not called:
            self.required.append(key)
            return _Value(reader, kind, token.column)
        default = self.default(name, kind)
        present = {"must_not": [{"is_empty": {"key": key}}]}
        formula = {"sum": [{"mult": [{"is_empty": {"key": key}}, _json(default)]}, {"mult": [present, reader]}]}
        return _Value(formula, kind, token.column)

    def known(self, name: str, token: _Token) -> bool:
        try:
            resolve_field(name, token.kind == "name", self.payload_types, name)
        except FilterError:
            return False
        return True

    def default(self, name: str, kind: str) -> _Value:
        opening = self.expect("(", f"after {name}")
        word = self.take()
        if word.kind != "word" or word.text != "default":
            raise self.error(f"a field takes only (default=…), found {_shown(word)}", word)
        self.expect("=", "after default")
        value = self.unary()
        self.expect(")", f"to close the '(' at column {opening.column}")
        if kind == NUMBER and value.constant is None:
            raise self.error(f"{name} holds numbers: its default is a number, e.g. {name}(default=0)", word)
        if kind == INSTANT and not (isinstance(value.json, dict) and "datetime" in value.json):
            raise self.error(f"{name} holds datetimes: its default is a date or now, e.g. "
                             f"{name}(default=2000-01-01)", word)
        return value

    def resolve(self, name: str, token: _Token) -> tuple[str, str]:
        """The field's Qdrant key and kind; ``FilterError`` for one the collection lacks or cannot boost by."""
        usable = "numeric and datetime fields: " + (", ".join(usable_fields(self.payload_types)) or "none")
        try:
            ref = resolve_field(name, token.kind == "name", self.payload_types, name)
        except FilterError as error:
            what = "unknown field" if "unknown field" in error.message else "cannot boost by"
            raise self.error(f"{what} {token.text}", token, usable) from None
        at = f"{self.source}: {token.text} at column {token.column}"
        if "[]" in ref.key or "[]" in ref.empty_key:
            raise FilterError(f"{at} is a list; a boost needs one value per point ({usable})")
        if ref.type not in _FIELD_TYPES:
            held = "only nulls so far" if ref.type == "null" else f"{ref.type or 'objects'} values"
            raise FilterError(f"{at} holds {held}, not numbers or datetimes ({usable})")
        return ref.key, _FIELD_TYPES[ref.type]

    # -- calls --------------------------------------------------------------------------------------
    def call(self, token: _Token) -> _Value:
        name = token.text
        self.deeper(token)
        opening = self.expect("(", f"after {name}")
        positional, keywords = self.arguments(name, opening)
        self.depth -= 1
        least, most = _ARITY[name]
        if len(positional) < least or (most is not None and len(positional) > most):
            count = f"{least}" if least == most else f"at least {least}"
            raise self.error(f"{name}() takes {count} argument(s), got {len(positional)}", token)
        if name in DECAYS:
            return self.decay(token, positional[0], keywords)
        if name in ("max", "min"):
            kinds = {value.kind for value in positional}
            if len(kinds) > 1:
                raise self.error(f"{name} mixes numbers and datetimes", token)
            return _Value({name: [_json(v) for v in positional]}, kinds.pop(), token.column)
        for value in positional:
            self.need_number(value, f"{name}()", token)
        if name == "pow":
            return _Value({"pow": {"base": _json(positional[0]), "exponent": _json(positional[1])}}, NUMBER,
                          token.column)
        if name == "div":
            division = {"left": _json(positional[0]), "right": _json(positional[1])}
            if "by_zero" in keywords:
                division["by_zero_default"] = self.constant(keywords["by_zero"], "by_zero")
            return _Value({"div": division}, NUMBER, token.column)
        return _Value({name: _json(positional[0])}, NUMBER, token.column)

    def arguments(self, name: str, opening: _Token) -> tuple[list[_Value], dict[str, tuple[_Token, _Value]]]:
        positional: list[_Value] = []
        keywords: dict[str, tuple[_Token, _Value]] = {}
        allowed = _KEYWORDS.get(name, ())
        while True:
            token = self.peek()
            if token.kind == "word" and self.peek(1).text == "=" and self.peek(1).kind == "op":
                if token.text not in allowed:
                    takes = f"takes {', '.join(k + '=' for k in allowed)}" if allowed else "takes no name="
                    raise self.error(f"{name} {takes}, not {token.text}=", token)
                if token.text in keywords:
                    raise self.error(f"{token.text}= given twice", token)
                self.position += 2
                keywords[token.text] = (token, self.sum())
            elif keywords:
                raise self.error(f"a plain argument after a name= one in {name}()", token)
            else:
                positional.append(self.sum())
            separator = self.take()
            if separator.kind == "op" and separator.text == ")":
                return positional, keywords
            if separator.kind != "op" or separator.text != ",":
                raise self.error(f"expected ',' or ')' in {name}() opened at column {opening.column}, found "
                                 f"{_shown(separator)}", separator)

    def decay(self, token: _Token, x: _Value, keywords: dict[str, tuple[_Token, _Value]]) -> _Value:
        """``exp_decay``, ``gauss_decay``, ``lin_decay`` (formulas in the module docstring)."""
        params: dict[str, Any] = {"x": _json(x)}
        if "target" in keywords:
            target_token, target = keywords["target"]
            if target.kind != x.kind:
                raise self.error(f"target= is {_KIND_NAMES[target.kind]}, but {token.text}'s first argument is "
                                 f"{_KIND_NAMES[x.kind]}", target_token)
            params["target"] = _json(target)
        elif x.kind == INSTANT:
            raise self.error(f"{token.text} of a datetime needs target= (e.g. target=now)", token)
        if "scale" in keywords:
            params["scale"] = self.constant(keywords["scale"], "scale")
            if params["scale"] <= 0:
                raise self.error("scale= must be > 0", keywords["scale"][0])
        elif x.kind == INSTANT:
            raise self.error(f"{token.text} of a datetime needs scale= (a duration, e.g. scale=30d)", token)
        if "midpoint" in keywords:
            midpoint = params["midpoint"] = self.constant(keywords["midpoint"], "midpoint")
            linear = token.text == "lin_decay"
            if not (0 <= midpoint <= 1 if linear else 0 < midpoint < 1):
                bounds = "[0, 1]" if linear else "(0, 1), exclusive"
                raise self.error(f"midpoint= must lie in {bounds}", keywords["midpoint"][0])
        return _Value({token.text: params}, NUMBER, token.column)

    def constant(self, keyword: tuple[_Token, _Value], name: str) -> float:
        token, value = keyword
        if value.constant is None:
            raise self.error(f"{name}= takes a number or a duration (e.g. {name}=30d), not an expression", token)
        return float(value.constant)


def usable_fields(payload_types: dict[str, str]) -> list[str]:
    """The fields a boost can read, as a boost names them: integer, float and datetime fields outside lists
    (top-level keys, fields of structs, ``m.KEY`` for a map's values)."""
    found = set()
    for path, recorded in (payload_types or {}).items():
        if recorded not in _FIELD_TYPES or "[]" in path or path in SYSTEM_FIELDS:
            continue
        if not path.startswith('"') and f'"{path}"[]' in payload_types:
            continue  # a list column (recorded with its elements' type)
        if path.startswith('"'):
            root, rest = path[1:].split('"', 1)
            if any(f'{path[:len(root) + 2]}{rest[:i]}[]' in payload_types for i in range(len(rest) + 1)):
                continue
            path = _display(root) + rest.replace(".*", ".KEY")
        else:
            path = _display(path)
        found.add(path)
    return sorted(found)


def _display(name: str) -> str:
    return name if re.fullmatch(r"[^\W\d]\w*", name) else f"`{name}`"


def _negated(value: _Value) -> _Value:
    if value.constant is not None:
        return _Value(-value.constant, value.kind, value.column, -value.constant)
    return _Value({"neg": value.json}, value.kind, value.column)


def _json(value: _Value) -> Any:
    return float(value.constant) if value.constant is not None else value.json


def _shown(token: _Token) -> str:
    return "the end of the expression" if token.kind == "end" else repr(token.text)


def _rfc3339(moment: dt.datetime) -> str:
    """A moment as UTC RFC 3339 (no offset means UTC, as both engines read it): the form both engines parse."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    moment = moment.astimezone(dt.timezone.utc)
    fraction = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"

