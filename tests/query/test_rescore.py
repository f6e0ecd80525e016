"""The --boost language (pipeline/query/rescore.py): random expressions, written out as a user would write them,
compiled and run by both engines, against a plain-Python evaluation of the same expression tree; every syntax form
compiled to the formula Qdrant documents; every kind of mistake one clear line naming the column."""
from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers.rescoring import TwoEngines, assert_matches_oracle, close
from mmindex.connectors.edge_formula import edge_formula
from mmindex.connectors.server_formula import server_formula
from mmindex.errors import FilterError
from mmindex.pipeline.query.rescore import parse_boost, usable_fields

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NOW_TEXT = "2024-06-01T12:00:00Z"
DIM = 4
POINTS = 8
TYPES = {"pop": "integer", "likes": "float", "rate": "float", "taken_at": "datetime", "seen_at": "datetime",
         "meta": "struct<y: double>", '"meta".y': "float", "dot.key": "integer", "color": "keyword",
         "tags": "keyword", '"tags"[]': "keyword", "counts": "integer", '"counts"[]': "integer",
         "blank": "null", "score": "float"}
UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
MISSING = object()


class EngineFails(ArithmeticError):
    """What both engines do: fail the whole query."""


# -- random payloads --------------------------------------------------------------------------------------------
def _moment(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


moments = st.integers(946684800, 1893456000).map(_moment)  # 2000 … 2030, as ingest writes them
maybe_float = st.one_of(st.none(), st.just(MISSING), st.floats(-100, 100).map(lambda x: round(x, 3)))
maybe_moment = st.one_of(st.none(), st.just(MISSING), moments)


@st.composite
def payloads(draw) -> list[dict]:
    rows = []
    for _ in range(POINTS):
        row = {"pop": draw(st.integers(-5, 1000)), "likes": draw(st.floats(-50, 50).map(lambda x: round(x, 2))),
               "rate": draw(maybe_float), "taken_at": draw(moments), "seen_at": draw(maybe_moment),
               "meta": {"y": draw(st.floats(0, 10).map(lambda x: round(x, 3)))}, "dot.key": draw(st.integers(0, 9)),
               "color": "red", "tags": ["a", "b"], "counts": [1, 2], "score": 7.0}
        rows.append({k: v for k, v in row.items() if v is not MISSING})
    return rows


# -- random expressions: a tree, its text, its value ------------------------------------------------------------
numbers = st.floats(-10, 10).map(lambda x: round(x, 3)) | st.integers(0, 5).map(float)
scales = st.sampled_from([0.1, 0.5, 1.0, 2.0, 10.0])
midpoints = st.sampled_from([0.1, 0.5, 0.9])
datetime_sources = st.sampled_from([("taken_at",), ("seen_at", "2020-01-01"), ("seen_at", "now")]) | st.just(("seen_at",))
targets = st.sampled_from([("now",), ("date", "2023-01-01T00:00:00Z"), ("ago", 7.0, "d")])  # text last
leaves = st.one_of(
    numbers.map(lambda v: ("num", v)),
    st.just(("score",)),
    st.sampled_from(["pop", "likes", "meta.y", "`dot.key`", "`score`"]).map(lambda f: ("field", f)),
    numbers.map(lambda d: ("default", "rate", d)),
    st.just(("field", "rate")),  # may be null or missing on some point: both engines must then fail
    st.tuples(st.just("age"), datetime_sources, st.sampled_from(sorted(UNITS))),
    st.tuples(st.just("tdecay"), st.sampled_from(["exp", "gauss", "lin"]), datetime_sources, targets,
              st.sampled_from([(30, "d"), (12, "h"), (90, "m"), (3600, "s")]), midpoints),
)


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "/"]), children, children),
        st.tuples(st.just("neg"), children),
        st.tuples(st.just("paren"), children),
        st.tuples(st.just("fn"), st.sampled_from(["abs", "exp", "ln", "log10", "sqrt"]), children),
        st.tuples(st.just("safe"), st.sampled_from(["ln", "log10", "sqrt"]), children),  # f(1 + abs(x))
        st.tuples(st.just("pow"), children, children),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=1, max_size=3)),
        st.tuples(st.just("div"), children, children, numbers),
        st.tuples(st.just("decay"), st.sampled_from(["exp", "gauss", "lin"]), children,
                  st.none() | numbers | st.just("score"), st.none() | scales, st.none() | midpoints),
    )


trees = st.recursive(leaves, _extend, max_leaves=8)
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3}


def render(node) -> tuple[str, int]:
    """The expression text of ``node`` with only the parentheses precedence needs, and its precedence."""
    kind = node[0]
    if kind == "num":
        return repr(node[1]), (3 if node[1] < 0 or str(node[1]).startswith("-") else 4)
    if kind == "score":
        return "score", 4
    if kind == "field":
        return node[1], 4
    if kind == "default":
        return f"{node[1]}(default={node[2]!r})", 4
    if kind in ("+", "-", "*", "/"):
        left, left_precedence = render(node[1])
        right, right_precedence = render(node[2])
        p = PRECEDENCE[kind]
        left = f"({left})" if left_precedence < p else left
        right = f"({right})" if right_precedence <= p else right
        return f"{left} {kind} {right}", p
    if kind == "neg":
        inner, p = render(node[1])
        return "-" + (f"({inner})" if p < 3 else inner), 3
    if kind == "paren":
        return f"({render(node[1])[0]})", 4
    return _render_call(node), 4


def _render_call(node) -> str:
    kind = node[0]
    if kind == "fn":
        return f"{node[1]}({render(node[2])[0]})"
    if kind == "safe":
        return f"{node[1]}(1 + abs({render(node[2])[0]}))"
    if kind == "pow":
        return f"pow({render(node[1])[0]}, {render(node[2])[0]})"
    if kind in ("min", "max"):
        return f"{kind}({', '.join(render(child)[0] for child in node[1])})"
    if kind == "div":
        return f"div({render(node[1])[0]}, {render(node[2])[0]}, by_zero={node[3]!r})"
    if kind == "age":
        return f"(now - {_source_text(node[1])}) / 1{node[2]}"
    if kind == "decay":
        _, shape, x, target, scale, midpoint = node
        keywords = [f"target={target if isinstance(target, str) else repr(target)}"] if target is not None else []
        keywords += [f"scale={scale!r}"] if scale is not None else []
        keywords += [f"midpoint={midpoint!r}"] if midpoint is not None else []
        return f"{shape}_decay({', '.join([render(x)[0], *keywords])})"
    _, shape, source, target, (amount, unit), midpoint = node
    written = f"now - {target[1]:g}{target[2]}" if target[0] == "ago" else target[-1]
    return f"{shape}_decay({_source_text(source)}, target={written}, scale={amount}{unit}, midpoint={midpoint})"


def _source_text(source: tuple) -> str:
    return source[0] if len(source) == 1 else f"{source[0]}(default={source[1]})"


def _timestamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=UTC).timestamp()


def _read(row: dict, name: str, default=None):
    name = name.strip("`")
    value = row.get("meta", {}).get("y") if name == "meta.y" else row.get(name)
    if value is None:
        if default is None:
            raise EngineFails(f"{name} is null or missing")
        return default
    return float(value) if not isinstance(value, str) else value


def _instant(source: tuple, row: dict) -> float:
    default = None if len(source) == 1 else (NOW.timestamp() if source[1] == "now" else _timestamp(source[1]))
    value = _read(row, source[0], default)
    return value if isinstance(value, float) else _timestamp(value)


def _decay(shape: str, x: float, target: float, scale: float, midpoint: float) -> float:
    """Qdrant's decays (docs: "score boosting"; qdrant-client's local mode computes the same)."""
    if shape == "lin":
        return max(0.0, 1.0 - (1.0 - midpoint) / scale * abs(x - target))
    if shape == "exp":
        return math.exp(math.log(midpoint) / scale * abs(x - target))
    return math.exp(math.log(midpoint) / (scale * scale) * (x - target) ** 2)


def evaluate(node, row: dict, score: float) -> float:
    """The value of ``node`` for one point, as Qdrant defines each operation (f64, zero factors and zero
    numerators short-circuit); ``EngineFails`` where the engines fail."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "score":
        return score
    if kind == "field":
        return _read(row, node[1])
    if kind == "default":
        return _read(row, node[1], node[2])
    if kind in ("+", "-"):
        left, right = evaluate(node[1], row, score), evaluate(node[2], row, score)
        return left + right if kind == "+" else left - right
    if kind == "*":
        left = evaluate(node[1], row, score)
        return left if left == 0.0 else left * evaluate(node[2], row, score)
    if kind in ("/", "div"):
        left = evaluate(node[1], row, score)
        if left == 0.0:
            return left
        right = evaluate(node[2], row, score)
        if right == 0.0 and kind == "div":
            return node[3]
        return _finite(left / right if right else math.inf)
    if kind == "neg":
        return -evaluate(node[1], row, score)
    if kind == "paren":
        return evaluate(node[1], row, score)
    return _evaluate_call(node, row, score)


def _evaluate_call(node, row: dict, score: float) -> float:
    kind = node[0]
    if kind in ("fn", "safe"):
        x = evaluate(node[2], row, score)
        x = 1.0 + abs(x) if kind == "safe" else x
        return _function(node[1], x)
    if kind == "pow":
        base, exponent = evaluate(node[1], row, score), evaluate(node[2], row, score)
        try:
            return _finite(math.pow(base, exponent))
        except (OverflowError, ValueError):
            raise EngineFails("pow") from None
    if kind in ("min", "max"):
        values = [evaluate(child, row, score) for child in node[1]]
        return min(values) if kind == "min" else max(values)
    if kind == "age":
        elapsed = NOW.timestamp() - _instant(node[1], row)
        return elapsed if elapsed == 0.0 else elapsed / UNITS[node[2]]
    if kind == "decay":
        _, shape, x, target, scale, midpoint = node
        target_value = 0.0 if target is None else score if target == "score" else target
        return _decay(shape, evaluate(x, row, score), target_value, scale or 1.0, midpoint or 0.5)
    _, shape, source, target, (amount, unit), midpoint = node
    moment = NOW.timestamp() - target[1] * UNITS[target[2]] if target[0] == "ago" else (
        NOW.timestamp() if target[0] == "now" else _timestamp(target[-1]))
    return _decay(shape, _instant(source, row), moment, amount * UNITS[unit], midpoint)


def _function(name: str, x: float) -> float:
    if name == "abs":
        return abs(x)
    if name == "exp":
        try:
            return math.exp(x)
        except OverflowError:
            raise EngineFails("exp") from None
    if name == "sqrt":
        if x < 0:
            raise EngineFails("sqrt")
        return math.sqrt(x)
    if x <= 0:
        raise EngineFails(name)
    return math.log(x) if name == "ln" else math.log10(x)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise EngineFails(str(value))
    return value


# -- the engines ------------------------------------------------------------------------------------------------
def _vectors() -> list[list[float]]:
    rng = np.random.default_rng(7)
    return [list(map(float, v / np.linalg.norm(v))) for v in rng.normal(size=(POINTS, DIM)).astype(np.float32)]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    both = TwoEngines(tmp_path_factory.mktemp("rescore"), DIM)
    yield both
    both.close()


def _put(engines: TwoEngines, rows: list[dict]) -> None:
    engines.put([(i + 1, vector, row) for i, (vector, row) in enumerate(zip(_vectors(), rows))])


query_vectors = st.lists(st.floats(-0.5, 0.5), min_size=DIM, max_size=DIM).map(lambda v: [v[0] + 1.0, *v[1:]])


def _check(engines, tree, rows, query) -> None:
    _put(engines, rows)
    text = render(tree)[0]
    boost = parse_boost(text, TYPES, now=NOW)
    outcome = assert_matches_oracle(engines, query, boost.formula, lambda i, s: evaluate(tree, rows[i - 1], s),
                                    context=f"for {text!r} → {json.dumps(boost.formula)}")
    event(f"both engines {outcome}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, rows=payloads(), query=query_vectors)
def test_random_boosts_score_as_the_oracle_on_both_engines(engines, tree, rows, query):
    _check(engines, tree, rows, query)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, rows=payloads(), query=query_vectors)
def test_random_boosts_score_as_the_oracle_on_both_engines_at_length(engines, tree, rows, query):
    _check(engines, tree, rows, query)


def test_the_comparison_catches_a_wrong_precedence_or_a_lost_default(engines):
    """The differential test is no tautology: a formula that groups or defaults otherwise than the text fails it."""
    rows = [{"pop": i + 2, "likes": 0.5 * i, "rate": None if i % 2 else 1.0} for i in range(POINTS)]
    _put(engines, rows)
    query = [0.5, 0.5, 0.0, 0.1]
    regrouped = parse_boost("score - (pop - likes)", TYPES, now=NOW).formula
    as_written = ("-", ("-", ("score",), ("field", "pop")), ("field", "likes"))
    with pytest.raises(AssertionError):
        assert_matches_oracle(engines, query, regrouped, lambda i, s: evaluate(as_written, rows[i - 1], s))
    other_default = parse_boost("rate(default=2)", TYPES, now=NOW).formula
    with pytest.raises(AssertionError):
        assert_matches_oracle(engines, query, other_default,
                              lambda i, s: evaluate(("default", "rate", 3.0), rows[i - 1], s))
    assert_matches_oracle(engines, query, other_default, lambda i, s: evaluate(("default", "rate", 2.0), rows[i - 1], s))


def test_precedence_and_association_are_what_arithmetic_says():
    row = {"pop": 3, "likes": 2.0}
    compiled = {text: parse_boost(text, TYPES, now=NOW).formula for text in
                ("score - pop - likes", "score - (pop - likes)", "pop / likes / 2", "-pop * likes", "1 + 2 * pop")}
    assert compiled["score - pop - likes"] == {"sum": ["$score", {"neg": "pop"}, {"neg": "likes"}]}
    assert compiled["score - (pop - likes)"] == {"sum": ["$score", {"neg": {"sum": ["pop", {"neg": "likes"}]}}]}
    assert compiled["pop / likes / 2"] == {"div": {"left": {"div": {"left": "pop", "right": "likes"}}, "right": 2.0}}
    assert compiled["-pop * likes"] == {"mult": [{"neg": "pop"}, "likes"]}
    assert compiled["1 + 2 * pop"] == {"sum": [1.0, {"mult": [2.0, "pop"]}]}
    assert evaluate(("-", ("-", ("score",), ("field", "pop")), ("field", "likes")), row, 1.0) == -4.0


# -- every syntax form ------------------------------------------------------------------------------------------
FORMS = [
    ("score", "$score"),
    ("0.5", 0.5),
    ("score + 0.2 * pop", {"sum": ["$score", {"mult": [0.2, "pop"]}]}),
    ("score+0.2*pop", {"sum": ["$score", {"mult": [0.2, "pop"]}]}),
    ("score - 2", {"sum": ["$score", -2.0]}),
    ("score - -2", {"sum": ["$score", 2.0]}),
    ("-score", {"neg": "$score"}),
    ("score / likes", {"div": {"left": "$score", "right": "likes"}}),
    ("(score + 1) * 2", {"mult": [{"sum": ["$score", 1.0]}, 2.0]}),
    ("1e-3 * pop + .5", {"sum": [{"mult": [0.001, "pop"]}, 0.5]}),
    ("score * (1 + 0.1 * ln(1 + likes))", {"mult": ["$score", {"sum": [1.0, {"mult": [0.1, {"ln": {"sum": [1.0, "likes"]}}]}]}]}),
    ("log10(pop) + sqrt(likes) + exp(score) + abs(likes)",
     {"sum": [{"log10": "pop"}, {"sqrt": "likes"}, {"exp": "$score"}, {"abs": "likes"}]}),
    ("pow(score, 2)", {"pow": {"base": "$score", "exponent": 2.0}}),
    ("max(score, 0.5) + min(pop, likes, 3)", {"sum": [{"max": ["$score", 0.5]}, {"min": ["pop", "likes", 3.0]}]}),
    ("div(pop, likes, by_zero=0)", {"div": {"left": "pop", "right": "likes", "by_zero_default": 0.0}}),
    ("meta.y + `dot.key` + `score`", {"sum": ["meta.y", '"dot.key"', "score"]}),
    ("30d + 12h + 90m + 45s + 1.5d", {"sum": [2592000.0, 43200.0, 5400.0, 45.0, 129600.0]}),
    ("(now - taken_at) / 1d", {"div": {"left": {"sum": [{"datetime": NOW_TEXT}, {"neg": {"datetime_key": "taken_at"}}]},
                                       "right": 86400.0}}),
    ("score + 0.3 * exp_decay(taken_at, target=now, scale=30d, midpoint=0.5)",
     {"sum": ["$score", {"mult": [0.3, {"exp_decay": {"x": {"datetime_key": "taken_at"},
                                                      "target": {"datetime": NOW_TEXT}, "scale": 2592000.0,
                                                      "midpoint": 0.5}}]}]}),
    ("gauss_decay(taken_at, target=2024-01-01, scale=1h)",
     {"gauss_decay": {"x": {"datetime_key": "taken_at"}, "target": {"datetime": "2024-01-01T00:00:00Z"},
                      "scale": 3600.0}}),
    ("lin_decay(taken_at, target=2024-01-01T12:00:00+02:00, scale=1d, midpoint=0)",
     {"lin_decay": {"x": {"datetime_key": "taken_at"}, "target": {"datetime": "2024-01-01T10:00:00Z"},
                    "scale": 86400.0, "midpoint": 0.0}}),
    ("exp_decay(taken_at, target=now - 7d, scale=1d)",
     {"exp_decay": {"x": {"datetime_key": "taken_at"}, "target": {"sum": [{"datetime": NOW_TEXT}, -604800.0]},
                    "scale": 86400.0}}),
    ("gauss_decay(score)", {"gauss_decay": {"x": "$score"}}),
    ("lin_decay(pop, target=10, scale=5)", {"lin_decay": {"x": "pop", "target": 10.0, "scale": 5.0}}),
    ("rate(default=0.5)", {"sum": [{"mult": [{"is_empty": {"key": "rate"}}, 0.5]},
                                   {"mult": [{"must_not": [{"is_empty": {"key": "rate"}}]}, "rate"]}]}),
    ("rate(default=-1)", {"sum": [{"mult": [{"is_empty": {"key": "rate"}}, -1.0]},
                                  {"mult": [{"must_not": [{"is_empty": {"key": "rate"}}]}, "rate"]}]}),
    ("exp_decay(seen_at(default=2020-01-01), target=now, scale=1d)",
     {"exp_decay": {"x": {"sum": [{"mult": [{"is_empty": {"key": "seen_at"}}, {"datetime": "2020-01-01T00:00:00Z"}]},
                                  {"mult": [{"must_not": [{"is_empty": {"key": "seen_at"}}]},
                                            {"datetime_key": "seen_at"}]}]},
                    "target": {"datetime": NOW_TEXT}, "scale": 86400.0}}),
    ("max(taken_at, 2020-01-01) - taken_at",
     {"sum": [{"max": [{"datetime_key": "taken_at"}, {"datetime": "2020-01-01T00:00:00Z"}]},
              {"neg": {"datetime_key": "taken_at"}}]}),
]


@pytest.mark.parametrize("text, formula", FORMS, ids=[text for text, _ in FORMS])
def test_every_form_compiles_to_the_documented_formula(text, formula):
    boost = parse_boost(text, TYPES, now=NOW)
    assert boost.formula == formula
    assert boost.defaults == {} and boost.now == NOW_TEXT
    edge_formula(boost.formula, boost.defaults)  # both translations take it
    server_formula(boost.formula, boost.defaults)


def test_every_form_scores_the_same_on_both_engines(engines):
    rows = [{"pop": i + 1, "likes": 1.5 * (i + 1), "rate": None if i % 3 == 0 else 0.25 * i,
             "taken_at": _moment(1700000000 + 86400 * i), "meta": {"y": 0.5 * i}, "dot.key": i, "score": 2.0,
             **({"seen_at": _moment(1710000000 - 3600 * i)} if i % 2 else {})} for i in range(POINTS)]
    _put(engines, rows)
    query = [0.3, -0.2, 0.9, 0.1]
    for text, _ in FORMS:
        formula = parse_boost(text, TYPES, now=NOW).formula
        edge, memory = (engines.rescore(engine, query, formula) for engine in ("edge", "memory"))
        assert len(edge) == POINTS and dict(edge).keys() == dict(memory).keys(), text
        assert all(close(score, dict(memory)[point]) for point, score in edge), (text, edge, memory)


def test_a_missing_or_null_field_takes_its_default_on_both_engines(engines):
    rows = [{"rate": 2.0, "taken_at": _moment(1700000000)}, {"rate": None, "taken_at": _moment(1700000000)},
            {"taken_at": _moment(1700000000)}] + [{"rate": 1.0, "taken_at": _moment(1700000000)}] * (POINTS - 3)
    _put(engines, rows)
    boost = parse_boost("rate(default=-3) * 10 + 0 * score", TYPES, now=NOW)
    for engine in ("edge", "memory"):
        scores = dict(engines.rescore(engine, [1, 0, 0, 0], boost.formula))
        assert [scores[i] for i in (1, 2, 3, 4)] == [20.0, -30.0, -30.0, 10.0], engine
    bare = parse_boost("rate * 10", TYPES, now=NOW)
    assert bare.required == ("rate",) and "rate" in bare.failure_hint()
    for engine in ("edge", "memory"):
        with pytest.raises(Exception):
            engines.rescore(engine, [1, 0, 0, 0], bare.formula)


def test_recency_decay_on_a_datetime_field_on_both_engines(engines):
    days_old = [0, 1, 7, 30, 90, 365, 3650, 2]
    rows = [{"taken_at": _moment(int(NOW.timestamp()) - 86400 * d)} for d in days_old]
    _put(engines, rows)
    boost = parse_boost("exp_decay(taken_at, target=now, scale=30d, midpoint=0.5)", TYPES, now=NOW)
    expected = {i + 1: 0.5 ** (d / 30) for i, d in enumerate(days_old)}
    for engine in ("edge", "memory"):
        got = engines.rescore(engine, [1, 0, 0, 0], boost.formula)
        assert [point for point, _ in got] == sorted(expected, key=lambda p: -expected[p]), engine
        assert all(close(score, expected[point]) for point, score in got), (engine, got)


def test_now_is_the_current_utc_second_by_default():
    before = dt.datetime.now(UTC).replace(microsecond=0)
    boost = parse_boost("(now - taken_at) / 1d", TYPES)
    after = dt.datetime.now(UTC)
    stamped = dt.datetime.fromisoformat(boost.now.replace("Z", "+00:00"))
    assert before <= stamped <= after and boost.now.endswith("Z") and "." not in boost.now


# -- mistakes ---------------------------------------------------------------------------------------------------
FIELDS = "numeric and datetime fields: `dot.key`, likes, meta.y, pop, rate, score, seen_at, taken_at"
ERRORS = [
    ("score + 0.2 * pop)", "--boost: unexpected ')' at column 18"),
    ("score * (1 + pop", "--boost: expected ')' to close the '(' at column 9, found the end of the expression at "
                         "column 17"),
    ("score +", "--boost: expected a number, a field, score, now or '(', found the end of the expression at column 8"),
    ("score % 2", "--boost: unexpected '%' at column 7"),
    ("score pop", "--boost: unexpected 'pop' at column 7"),
    ("lnn(likes)", "--boost: unknown function lnn (functions: abs, div, exp, exp_decay, gauss_decay, lin_decay, ln, "
                   "log10, max, min, pow, sqrt) at column 1"),
    ("score + popularity", f"--boost: unknown field popularity at column 9 ({FIELDS})"),
    ("score + color", f"--boost: color at column 9 holds keyword values, not numbers or datetimes ({FIELDS})"),
    ("score + blank", f"--boost: blank at column 9 holds only nulls so far, not numbers or datetimes ({FIELDS})"),
    ("score + tags", f"--boost: tags at column 9 is a list; a boost needs one value per point ({FIELDS})"),
    ("counts * 2", f"--boost: counts at column 1 is a list; a boost needs one value per point ({FIELDS})"),
    ("meta * 2", f"--boost: cannot boost by meta at column 1 ({FIELDS})"),
    ("exp_decay(taken_at, target=now, scale=30x)", "--boost: bad duration '30x' at column 39 (a number and one of "
                                                   "d, h, m, s: 30d, 12h, 90m, 45s)"),
    ("score + 2024-13-01", "--boost: 2024-13-01 is not a date at column 9"),
    ("1e999", "--boost: the number 1e999 is out of range at column 1"),
    ("", "--boost: the expression is empty (e.g. score + 0.2 * popularity)"),
    ("score + `likes", "--boost: a field name opened with ` is never closed at column 9"),
    ("taken_at", "--boost: the expression is a datetime, not a score; score by its distance to a moment instead, "
                 "e.g. exp_decay(taken_at, target=now, scale=30d)"),
    ("taken_at * 2", "--boost: a datetime cannot be used with '*': only instant − instant (seconds) and instant ± "
                     "seconds are defined (e.g. (now - taken_at) / 1d) at column 10"),
    ("taken_at + now", "--boost: cannot add two datetimes (instant − instant is seconds: e.g. (now - taken_at) / 1d) "
                       "at column 10"),
    ("exp_decay(taken_at, scale=1d)", "--boost: exp_decay of a datetime needs target= (e.g. target=now) at column 1"),
    ("exp_decay(taken_at, target=now)", "--boost: exp_decay of a datetime needs scale= (a duration, e.g. scale=30d) "
                                        "at column 1"),
    ("exp_decay(taken_at, target=3, scale=1d)", "--boost: target= is a number, but exp_decay's first argument is a "
                                                "datetime at column 21"),
    ("exp_decay(score, midpoint=1)", "--boost: midpoint= must lie in (0, 1), exclusive at column 18"),
    ("lin_decay(score, midpoint=1.5)", "--boost: midpoint= must lie in [0, 1] at column 18"),
    ("gauss_decay(score, scale=0)", "--boost: scale= must be > 0 at column 20"),
    ("gauss_decay(score, scale=score)", "--boost: scale= takes a number or a duration (e.g. scale=30d), not an "
                                        "expression at column 20"),
    ("gauss_decay(score, width=2)", "--boost: gauss_decay takes target=, scale=, midpoint=, not width= at column 20"),
    ("gauss_decay(score, scale=1, scale=2)", "--boost: scale= given twice at column 29"),
    ("gauss_decay(scale=1, score)", "--boost: a plain argument after a name= one in gauss_decay() at column 22"),
    ("ln(score, 2)", "--boost: ln() takes 1 argument(s), got 2 at column 1"),
    ("ln(score; 2)", "--boost: unexpected ';' at column 9"),
    ("pop(2)", "--boost: a field takes only (default=…), found '2' at column 5"),
    ("rate(default=now)", "--boost: rate holds numbers: its default is a number, e.g. rate(default=0) at column 6"),
    ("seen_at(default=3) - now", "--boost: seen_at holds datetimes: its default is a date or now, e.g. "
                                 "seen_at(default=2000-01-01) at column 9"),
    ("(" * 40 + "score" + ")" * 40, "--boost: nested deeper than 32 levels at column 33"),
]


@pytest.mark.parametrize("text, message", ERRORS, ids=[text[:40] for text, _ in ERRORS])
def test_each_mistake_is_one_line_naming_where(text, message):
    with pytest.raises(FilterError) as caught:
        parse_boost(text, TYPES, now=NOW)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_http_names_its_own_field_and_long_input_is_refused():
    with pytest.raises(FilterError, match=r"^boost: unexpected '\)' at column 6$"):
        parse_boost("score)", TYPES, source="boost")
    with pytest.raises(FilterError, match="at most 4000"):
        parse_boost("score + " * 600 + "1", TYPES)


def test_the_usable_fields_leave_out_lists_structs_and_text():
    types = {**TYPES, "m": "map<string, int64>", '"m".*': "integer", "it": "list<struct<p: double>>",
             '"it"[]': "struct<p: double>", '"it"[].p': "float", "shot on": "float"}
    assert usable_fields(types) == ["`dot.key`", "`shot on`", "likes", "m.KEY", "meta.y", "pop", "rate", "score",
                                    "seen_at", "taken_at"]
    assert parse_boost("m.anything + `shot on`", types).formula == {"sum": ["m.anything", '"shot on"']}
