"""Hypothesis strategies of --where expressions: and / or / not trees over a module's own comparisons, each drawn
as (tree for a plain-Python oracle, the expression's text)."""
from __future__ import annotations

from typing import Callable

from hypothesis import strategies as st


def boolean_trees(comparisons: Callable[[], st.SearchStrategy]) -> Callable[..., st.SearchStrategy]:
    """A strategy factory ``expressions(depth=2)``: a comparison, or ``and`` / ``or`` / ``not`` of smaller trees."""

    @st.composite
    def expressions(draw, depth=2):
        if depth == 0 or draw(st.integers(0, 2)) == 0:
            return draw(comparisons())
        form = draw(st.sampled_from(["and", "or", "not"]))
        if form == "not":
            tree, text = draw(expressions(depth=depth - 1))
            return ("not", tree), f"not ({text})"
        left, left_text = draw(expressions(depth=depth - 1))
        right, right_text = draw(expressions(depth=depth - 1))
        return (form, left, right), f"({left_text}) {form} ({right_text})"

    return expressions
