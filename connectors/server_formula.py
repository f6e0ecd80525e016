"""Qdrant's formula expression (REST JSON, as ``pipeline/query/rescore.py`` compiles a ``--boost``) → qdrant-client's
``FormulaQuery``, the form the server store (and ``:memory:``) sends."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from qdrant_client import models  # ~0.5 s: server_query.py imports this module only for a rescoring request

from mmindex.errors import FilterError


def server_formula(formula: Any, defaults: dict[str, Any] | None = None):
    """A formula (REST JSON) and its defaults (payload key or ``$score`` → value) as ``models.FormulaQuery``,
    validated by qdrant-client's schema; ``FilterError`` naming the first problem if it does not fit."""
    try:
        return models.FormulaQuery.model_validate({"formula": formula, "defaults": dict(defaults or {})})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise FilterError(f"not a formula Qdrant takes: {where}: {first['msg']}") from None
