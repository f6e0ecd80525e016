"""The duplicate benchmarks' own bookkeeping (bench/duplicates.py, bench/duplicate_signals.py): the planted copies
and the whole-set pairs they score against, checked against plain counts, so a figure in bench/README.md §11–12
cannot come from a miscount."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import duplicate_signals  # noqa: E402
import duplicates  # noqa: E402
from helpers.duplicate_data import make_duplicate_set  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 400), share=st.floats(0, 0.4), seed=st.integers(0, 5))
def test_plan_plants_the_share_of_copies_of_originals(size, share, seed):
    plan = duplicates.Plan(size, seed, share)
    copies = np.flatnonzero(plan.source != np.arange(size))
    assert len(copies) == int(round(share * size))
    assert all(plan.source[plan.source[c]] == plan.source[c] for c in copies)  # a copy copies an original
    groups = plan.groups()
    assert sum(len(m) - 1 for m in groups.values()) == len(copies)
    assert all(2 <= len(m) <= 4 for m in groups.values())


def test_score_counts_whole_groups_joined_pairs_and_wrong_members():
    plan = duplicates.Plan(300, 0, 0.2)
    planted = list(plan.groups().values())
    perfect = duplicates.score(planted, plan)
    assert (perfect["groups_whole"], perfect["pairs_joined"], perfect["members_wrong"]) == (
        len(planted), sum(len(m) - 1 for m in planted), 0)
    split = [planted[0][:1], planted[0][1:], *planted[1:]]  # the first group found in two pieces
    merged = [planted[0] + planted[1], *planted[2:]]  # two groups found as one
    assert duplicates.score(split, plan)["groups_whole"] == len(planted) - 1
    assert duplicates.score(split, plan)["pairs_joined"] == perfect["pairs_joined"] - (len(planted[0]) - 1)
    assert duplicates.score(merged, plan)["members_wrong"] == min(len(planted[0]), len(planted[1]))
    assert duplicates.score([], plan)["pairs_joined"] == 0


def test_fields_are_the_same_image_whichever_chunk_makes_them():
    together = duplicates.fields([3, 7, 11], seed=0)
    assert np.array_equal(duplicates.fields([7], seed=0)[0], together[1])
    assert not np.array_equal(together[0], together[1])


def test_whole_set_holds_every_labelled_pair_once_with_its_truth():
    data = make_duplicate_set(4, seed=0)
    pairs = duplicate_signals.whole_set(data)
    keys = [frozenset((a, b)) for a, b, _, _ in pairs]
    assert len(keys) == len(set(keys))
    assert all(truth == data.truth(a, b) for a, b, truth, _ in pairs)
    by_group: dict[str, list[str]] = {}
    for image_id, group in data.group.items():
        by_group.setdefault(group, []).append(image_id)
    within = {frozenset(p) for ids in by_group.values() for p in itertools.combinations(ids, 2)}
    assert within <= set(keys)
    assert {frozenset((p.left, p.right)) for p in data.pairs} <= set(keys)
    assert sum(1 for _, _, truth, _ in pairs if truth == "similar") == sum(
        np.prod([len(by_group[group]) for group in pair]) for pair in data.similar_groups)


def test_originals_and_exact_copies_keep_their_pixels_and_near_copies_change_them():
    from PIL import Image

    image = Image.fromarray(duplicates.fields([1], seed=0)[0])
    rng = np.random.default_rng(0)
    for kind in ("original", "exact"):
        assert np.array_equal(np.asarray(duplicates.transformed(image, kind, rng)), np.asarray(image))
    for kind in duplicates.NEAR_KINDS:
        copy = np.asarray(duplicates.transformed(image, kind, rng))
        assert copy.shape != np.asarray(image).shape or not np.array_equal(copy, np.asarray(image)), kind
    with pytest.raises(ValueError, match="sepia"):
        duplicates.transformed(image, "sepia", rng)
