"""Qdrant's formula expression (REST JSON, as ``pipeline/query/rescore.py`` compiles a ``--boost``) → Qdrant Edge's
``Formula`` / ``Expression`` objects.

Covers every expression of qdrant-client's ``models.Expression`` except geo distances: constants, variables
(``"$score"``, payload keys), sum, mult, neg, div, pow, min, max, abs, sqrt, exp, ln, log10, acosh, datetimes and
datetime keys, the three decays, and conditions made of ``is_empty``, ``is_null`` and nested
``must``/``should``/``must_not`` filters (the conditions the boost compiler writes).
"""
from __future__ import annotations

import math
from typing import Any

import qdrant_edge  # the embedded engine: edge_query.py imports this module only for a rescoring request

from mmindex.errors import FilterError

_UNARY = {"neg": "Neg", "abs": "Abs", "sqrt": "Sqrt", "exp": "Exp", "ln": "Ln", "log10": "Log10", "acosh": "Acosh"}
_LISTS = {"sum": "Sum", "mult": "Mult", "max": "Max", "min": "Min"}
_DECAYS = {"lin_decay": "Lin", "exp_decay": "Exp", "gauss_decay": "Gauss"}
_CLAUSES = ("must", "should", "must_not")


def edge_formula(formula: Any, defaults: dict[str, Any] | None = None):
    """A formula (REST JSON) and its defaults (payload key or ``$score`` → value) as Edge's ``Formula``.

    Raises ``FilterError`` for an expression Edge cannot take, naming it.
    """
    try:
        return qdrant_edge.Formula(_expression(formula), dict(defaults) if defaults else None)
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # a malformed expression's parts
        raise FilterError(f"not a formula expression: {type(error).__name__}: {error}") from None


def _expression(node: Any):
    """One formula expression (REST JSON) as Edge's ``Expression``; ``FilterError`` for one it cannot take."""
    expression = qdrant_edge.Expression
    if isinstance(node, bool) or node is None:
        raise FilterError(f"a formula has no value {node!r}")
    if isinstance(node, (int, float)):
        if not math.isfinite(node):
            raise FilterError(f"a formula constant must be finite, not {node}")
        return expression.Constant(float(node))
    if isinstance(node, str):
        return expression.Variable(node)
    if not isinstance(node, dict) or not node or (len(node) != 1 and not set(node) <= set(_CLAUSES)):
        raise FilterError(f"not a formula expression: {node!r}")
    if set(node) & set(_CLAUSES) or "is_empty" in node or "is_null" in node:
        return expression.Condition(_condition(node))
    (name, value), = node.items()
    if name in _UNARY:
        return getattr(expression, _UNARY[name])(_expression(value))
    if name in _LISTS:
        return getattr(expression, _LISTS[name])([_expression(item) for item in value])
    if name == "div":
        return expression.Div(_expression(value["left"]), _expression(value["right"]),
                              _optional_float(value.get("by_zero_default")))
    if name == "pow":
        return expression.Pow(_expression(value["base"]), _expression(value["exponent"]))
    if name == "datetime":
        return expression.Datetime(str(value))
    if name == "datetime_key":
        return expression.DatetimeKey(str(value))
    if name in _DECAYS:
        target = value.get("target")
        return expression.Decay(getattr(qdrant_edge.DecayKind, _DECAYS[name]), _expression(value["x"]),
                                None if target is None else _expression(target),
                                _optional_float(value.get("midpoint")), _optional_float(value.get("scale")))
    raise FilterError(f"the embedded store cannot use the formula expression {name!r}")


def _condition(node: dict[str, Any]):
    """A condition (``is_empty``, ``is_null``, or a filter of them) as Edge's condition object."""
    if "is_empty" in node:
        return qdrant_edge.IsEmptyCondition(node["is_empty"]["key"])
    if "is_null" in node:
        return qdrant_edge.IsNullCondition(node["is_null"]["key"])
    unknown = set(node) - set(_CLAUSES)
    if unknown:
        raise FilterError(f"the embedded store's formulas take is_empty, is_null and must/should/must_not "
                          f"conditions, not {', '.join(sorted(unknown))}")
    parts = {}
    for clause in _CLAUSES:
        if node.get(clause) is not None:
            items = node[clause] if isinstance(node[clause], list) else [node[clause]]
            parts[clause] = [_condition(item) for item in items]
    return qdrant_edge.Filter(**parts)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
