"""The training losses against plain-Python oracles: the triplet loss for every mining × distance (ties, one pair,
known duplicates), its gradients, and InfoNCE unchanged by the move out of train.py."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmindex.errors import UsageError
from mmindex.pipeline.training.losses import (
    DISTANCES,
    MININGS,
    LossSpec,
    clip_loss,
    info_nce_loss,
    loss_spec,
    pairwise_distances,
    same_tokens,
    NegativeCounts,
    triplet_from_distances,
    triplet_loss,
    triplet_terms,
)

COMBINATIONS = [(mining, distance) for mining in MININGS for distance in DISTANCES]


# ---- the oracle: loops over anchors and negatives, plain floats ----

def oracle_distance(q: list[float], k: list[float], distance: str) -> float:
    qn, kn = math.sqrt(sum(x * x for x in q)), math.sqrt(sum(x * x for x in k))
    cosine = sum(a * b for a, b in zip(q, k)) / (qn * kn)
    return 1 - cosine if distance == "cosine" else math.sqrt(max(2 - 2 * cosine, 1e-12))


def oracle_direction(d: list[list[float]], margin: float, mining: str, negative: list[list[bool]]) -> float:
    """One direction: anchor i, positive d[i][i], negatives j ≠ i allowed by ``negative``."""
    hinge = lambda i, j: max(0.0, d[i][i] - d[i][j] + margin)  # noqa: E731
    if mining == "all":
        active = [hinge(i, j) for i in range(len(d)) for j in range(len(d)) if i != j and negative[i][j]
                  if hinge(i, j) > 0]
        return sum(active) / len(active) if active else 0.0
    per_anchor = []
    for i in range(len(d)):
        negatives = [d[i][j] for j in range(len(d)) if j != i and negative[i][j]]
        if not negatives:
            continue
        if mining == "hardest":
            chosen = min(negatives)
        else:
            farther = [x for x in negatives if x > d[i][i]]
            chosen = min(farther) if farther else max(negatives)
        per_anchor.append(max(0.0, d[i][i] - chosen + margin))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def oracle_triplet(text, image, margin, distance, mining, same=None) -> float:
    size = len(text)
    negative = [[not (same and same[i][j]) for j in range(size)] for i in range(size)]
    d = [[oracle_distance(t, v, distance) for v in image] for t in text]
    transposed = [[d[j][i] for j in range(size)] for i in range(size)]
    negative_t = [[negative[j][i] for j in range(size)] for i in range(size)]
    return (oracle_direction(d, margin, mining, negative) + oracle_direction(transposed, margin, mining, negative_t)) / 2


def clear_of_ties(d: list[list[float]], offset: float, gap: float = 1e-4) -> bool:
    """No d(a, p) − d(a, n) + offset within ``gap`` of 0: float32 rounding cannot flip a choice there (semi-hard's
    "farther than the positive" with offset 0, "all"'s "active" with offset = margin)."""
    return all(abs(d[i][i] - d[i][j] + offset) > gap for i in range(len(d)) for j in range(len(d)) if i != j)


vector = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=3, max_size=3).filter(
    lambda v: math.sqrt(sum(x * x for x in v)) > 0.1)
batch = st.integers(1, 6).flatmap(lambda n: st.tuples(st.lists(vector, min_size=n, max_size=n),
                                                     st.lists(vector, min_size=n, max_size=n)))


@pytest.mark.parametrize("mining,distance", COMBINATIONS)
@settings(max_examples=60, deadline=None)
@given(pairs=batch, margin=st.sampled_from([0.05, 0.2, 0.5, 1.0]))
def test_triplet_loss_matches_the_oracle(mining, distance, pairs, margin):
    text, image = pairs
    d = [[oracle_distance(t, v, distance) for v in image] for t in text]
    transposed = [list(row) for row in zip(*d)]
    offset = {"semi-hard": 0.0, "all": margin}.get(mining)
    assume(offset is None or (clear_of_ties(d, offset) and clear_of_ties(transposed, offset)))
    got = triplet_loss(torch.tensor(text, dtype=torch.float64), torch.tensor(image, dtype=torch.float64), margin,
                       distance, mining)
    assert got.item() == pytest.approx(oracle_triplet(text, image, margin, distance, mining), abs=1e-9)


@given(pairs=batch, distance=st.sampled_from(DISTANCES))
@settings(max_examples=60, deadline=None)
def test_pairwise_distances_match_the_oracle(pairs, distance):
    text, image = pairs
    wide = pairwise_distances(torch.tensor(text, dtype=torch.float64), torch.tensor(image, dtype=torch.float64),
                              distance)
    narrow = pairwise_distances(torch.tensor(text), torch.tensor(image), distance)
    assert narrow.dtype == torch.float32 and wide.dtype == torch.float64
    for i, t in enumerate(text):
        for j, v in enumerate(image):
            want = oracle_distance(t, v, distance)
            assert wide[i, j].item() == pytest.approx(want, abs=1e-9)
            # in float32, the euclidean distance near 0 is a square root of rounding: compare squares
            power = 2 if distance == "euclidean" else 1
            assert narrow[i, j].item() ** power == pytest.approx(want ** power, abs=1e-5)


# Distances on a grid of quarters: ties everywhere (positive = negative, hinge exactly 0), and all sums exact.
grid_matrix = st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.integers(0, 8).map(lambda q: q / 4), min_size=n, max_size=n), min_size=n, max_size=n),
    st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=n, max_size=n)))


@pytest.mark.parametrize("mining", MININGS)
@settings(max_examples=150, deadline=None)
@given(matrix=grid_matrix, margin=st.sampled_from([0.25, 0.5, 1.0]), masked=st.booleans())
def test_mining_with_ties_matches_the_oracle(mining, matrix, margin, masked):
    d, allowed = matrix
    negative = allowed if masked else [[True] * len(d) for _ in d]
    got = triplet_from_distances(torch.tensor(d, dtype=torch.float64), margin, mining,
                                 torch.tensor(negative) if masked else None)
    assert got.item() == pytest.approx(oracle_direction(d, margin, mining, negative), abs=1e-12)


@pytest.mark.parametrize("mining,distance", COMBINATIONS)
def test_one_pair_has_no_negative_and_costs_nothing(mining, distance):
    text = torch.tensor([[0.3, -0.2, 0.9]], requires_grad=True)
    image = torch.tensor([[-0.5, 0.1, 0.4]], requires_grad=True)
    loss = triplet_loss(text, image, 0.2, distance, mining)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(text.grad).all() and torch.isfinite(image.grad).all()


@pytest.mark.parametrize("mining,distance", COMBINATIONS)
def test_gradients_are_finite_even_for_identical_vectors(mining, distance):
    generator = torch.Generator().manual_seed(3)
    text = torch.randn(8, 16, generator=generator)
    image = torch.randn(8, 16, generator=generator)
    text[1], image[2], image[3] = text[0], image[0], text[0]  # equal rows: zero distances, exact ties
    text.requires_grad_(True)
    image.requires_grad_(True)
    loss = triplet_loss(text, image, 0.2, distance, mining)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(text.grad).all() and torch.isfinite(image.grad).all()
    assert text.grad.abs().sum() > 0


def test_semi_hard_falls_back_to_the_farthest_negative():
    # anchor 0: positive at 0.9, negatives at 0.2 and 0.5 (both closer): the least hard, 0.5, is taken.
    # anchor 1: positive at 0.3, negatives at 0.3 (a tie: not farther) and 0.4: 0.4 is semi-hard.
    d = torch.tensor([[0.9, 0.2, 0.5], [0.3, 0.3, 0.4], [1.0, 1.0, 0.0]], dtype=torch.float64)
    loss = triplet_from_distances(d, 0.2, "semi-hard")
    assert loss.item() == pytest.approx(((0.9 - 0.5 + 0.2) + (0.3 - 0.4 + 0.2) + 0) / 3)
    assert triplet_from_distances(d, 0.2, "hardest").item() == pytest.approx(((0.9 - 0.2 + 0.2) + 0.2 + 0) / 3)
    # "all": the mean over the active triplets only (4 of 6 here; anchor 2's cost nothing).
    active = [0.9 - 0.2 + 0.2, 0.9 - 0.5 + 0.2, 0.2, 0.1]
    assert triplet_from_distances(d, 0.2, "all").item() == pytest.approx(sum(active) / len(active))


def test_known_duplicates_are_not_negatives():
    # Two pairs with the same caption text: without the mask each is the other's hardest negative.
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[0.9, 0.1], [0.8, 0.3], [0.1, 1.0]])
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    for mining in MININGS:
        masked = triplet_loss(text, image, 0.2, "cosine", mining, same).item()
        rows = [list(map(float, r)) for r in text.tolist()], [list(map(float, r)) for r in image.tolist()]
        assert masked == pytest.approx(oracle_triplet(*rows, 0.2, "cosine", mining, same.tolist()), abs=1e-6)
        assert masked < triplet_loss(text, image, 0.2, "cosine", mining).item()


def oracle_counts(d, margin, mining, negative) -> tuple[int, int]:
    """Plain Python: (anchors with a negative, active triplets) of one direction, as ``oracle_direction`` picks."""
    anchors, active = 0, 0
    for i in range(len(d)):
        negatives = [j for j in range(len(d)) if j != i and negative[i][j]]
        anchors += bool(negatives)
        if mining == "all":
            active += sum(d[i][i] - d[i][j] + margin > 0 for j in negatives)
        elif negatives:
            values = [d[i][j] for j in negatives]
            farther = [x for x in values if x > d[i][i]]
            chosen = min(values) if mining == "hardest" else (min(farther) if farther else max(values))
            active += d[i][i] - chosen + margin > 0
    return anchors, active


@settings(max_examples=150, deadline=None)
@given(data=st.data(), mining=st.sampled_from(MININGS))
def test_triplet_counts_match_the_oracle(data, mining):
    size = data.draw(st.integers(1, 6))
    d = [[data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1.5])) for _ in range(size)] for _ in range(size)]
    negative = [[data.draw(st.booleans()) for _ in range(size)] for _ in range(size)]
    loss, anchors, active = triplet_terms(torch.tensor(d, dtype=torch.float64), 0.3, mining, torch.tensor(negative))
    assert (anchors, active) == oracle_counts(d, 0.3, mining, negative)
    assert loss.item() == pytest.approx(oracle_direction(d, 0.3, mining, negative), abs=1e-9)


def test_identical_captions_leave_no_anchor_a_negative_for_either_loss(tiny_model):
    from mmindex.pipeline.models.encoder import Encoder

    encoder = Encoder(tiny_model, device="cpu", half=False)
    clip = encoder.model[0].auto_model
    features = torch.randn(4, clip.config.projection_dim, generator=torch.Generator().manual_seed(0))
    for captions, want in ((["a red circle"] * 4, 0), (["a red circle"] * 3 + ["a blue square"], 8)):
        tokens = encoder.model[0].processor.tokenizer(captions, padding=True, return_tensors="pt")
        for spec in (loss_spec("infonce"), loss_spec("triplet", mining="all"), loss_spec("triplet")):
            counts = NegativeCounts()
            clip_loss(clip, None, tokens["input_ids"], tokens["attention_mask"], image_features=features, spec=spec,
                      counts=counts)
            assert (counts.anchors, counts.with_negative) == (8, want), (captions, spec)
            assert counts.active <= (12 if spec.mining == "all" else 8) and (want or counts.active == 0)


def test_same_tokens_ignores_padding():
    input_ids = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 9], [5, 6, 7, 0], [5, 6, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    same = same_tokens(input_ids, attention)
    assert same.tolist() == [[True, False, True, False], [False, True, False, False],
                             [True, False, True, False], [False, False, False, True]]


# ---- InfoNCE: unchanged ----

def old_clip_loss(text, image, logit_scale):
    """The formula of train.py's clip_loss before the losses moved (commit before issue 26)."""
    import torch.nn.functional as F

    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    logits = logit_scale.exp() * text @ image.T
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def oracle_info_nce(text, image, scale) -> float:
    def normalised(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    text, image = [normalised(v) for v in text], [normalised(v) for v in image]
    sim = [[scale * sum(a * b for a, b in zip(t, v)) for v in image] for t in text]

    def direction(s):
        return sum(-s[i][i] + math.log(sum(math.exp(x) for x in s[i])) for i in range(len(s))) / len(s)

    return (direction(sim) + direction([list(r) for r in zip(*sim)])) / 2


@settings(max_examples=60, deadline=None)
@given(pairs=batch, log_scale=st.floats(0, math.log(100)))
def test_info_nce_is_the_old_formula_and_the_oracle(pairs, log_scale):
    text, image = torch.tensor(pairs[0]), torch.tensor(pairs[1])
    scale = torch.tensor(log_scale)
    got = info_nce_loss(text, image, scale)
    assert torch.equal(got, old_clip_loss(text, image, scale))
    assert got.item() == pytest.approx(oracle_info_nce(*pairs, math.exp(log_scale)), rel=1e-4, abs=1e-4)


def test_clip_loss_defaults_to_info_nce_and_triplet_ignores_the_temperature(tiny_model):
    from mmindex.pipeline.models.encoder import Encoder

    encoder = Encoder(tiny_model, device="cpu", half=False)
    clip = encoder.model[0].auto_model
    tokens = encoder.model[0].processor.tokenizer(["a red circle", "a blue square", "a red circle"],
                                                  padding=True, return_tensors="pt")
    features = torch.randn(3, clip.config.projection_dim, generator=torch.Generator().manual_seed(0))
    ids, attention = tokens["input_ids"], tokens["attention_mask"]
    text = clip.get_text_features(input_ids=ids, attention_mask=attention)
    text = text if hasattr(text, "shape") else text.pooler_output
    with torch.no_grad():
        assert torch.equal(clip_loss(clip, None, ids, attention, image_features=features),
                           old_clip_loss(text, features, clip.logit_scale))
    triplet = clip_loss(clip, None, ids, attention, image_features=features, spec=loss_spec("triplet"))
    triplet.backward()
    assert clip.logit_scale.grad is None  # not in the graph: the temperature cannot drift
    # captions 0 and 2 are the same text: not each other's negatives
    same = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
    assert triplet.item() == pytest.approx(triplet_loss(text, features, same=same).item(), abs=1e-6)


# ---- settings ----

def test_the_model_card_names_the_loss():
    from mmindex.pipeline.training.train import TrainOptions, TrainReport, model_card

    report = TrainReport("models/m", "scratch:tiny", 10, 2, 0, [], 0.0)
    assert "- loss: symmetric InfoNCE over in-batch negatives" in model_card(report)
    report.loss = TrainOptions(loss="triplet", mining="all", margin=0.5).loss_spec().to_dict()
    card = model_card(report)
    assert "- loss: triplet loss, margin 0.5 on cosine distance, all in-batch negatives" in card
    assert "InfoNCE" not in card


def test_loss_spec_defaults_and_description():
    assert loss_spec() == LossSpec("infonce")
    spec = loss_spec("triplet")
    assert (spec.margin, spec.distance, spec.mining) == (0.2, "cosine", "semi-hard")
    assert "triplet" in spec.describe() and "semi-hard" in spec.describe()
    assert "InfoNCE" in LossSpec().describe()
    assert LossSpec(**spec.to_dict()) == spec


@pytest.mark.parametrize("option,value", [("margin", 0.3), ("distance", "euclidean"), ("mining", "hardest")])
def test_triplet_settings_with_info_nce_are_refused(option, value):
    with pytest.raises(UsageError, match=f"--{option} applies only to --loss triplet"):
        loss_spec("infonce", **{option: value})


@pytest.mark.parametrize("margin", [0, -0.1, math.nan, math.inf, -math.inf])
def test_margin_must_be_finite_and_positive(margin):
    with pytest.raises(UsageError, match="--margin must be a finite number > 0"):
        loss_spec("triplet", margin=margin)


def test_unknown_names_are_refused():
    for kwargs, named in [({"name": "contrastive"}, "--loss"), ({"name": "triplet", "distance": "manhattan"},
                                                                "--distance"),
                          ({"name": "triplet", "mining": "easy"}, "--mining")]:
        with pytest.raises(UsageError, match=named):
            loss_spec(**kwargs)
