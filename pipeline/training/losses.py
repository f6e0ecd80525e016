"""The contrastive losses ``mmindex train`` can minimise: symmetric InfoNCE (the CLIP loss) and a triplet loss.

Both take a batch of B caption vectors and the B image vectors they describe (row i of each is a pair) and treat the
batch's other items as negatives, in both directions: a caption ranks the batch's images (text→image) and an image
ranks the batch's captions (image→text); the loss is the mean of the two directions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mmindex.errors import UsageError

LOSSES = ("infonce", "triplet")
DISTANCES = ("cosine", "euclidean")
MININGS = ("all", "semi-hard", "hardest")
DEFAULT_MARGIN = 0.2
DEFAULT_DISTANCE = "cosine"
DEFAULT_MINING = "semi-hard"
TRIPLET_ONLY = ("margin", "distance", "mining")


@dataclass(frozen=True)
class LossSpec:
    """Which loss to train with, its settings resolved (``margin``, ``distance``, ``mining``: triplet only)."""

    name: str = "infonce"
    margin: float | None = None
    distance: str | None = None
    mining: str | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if value is not None}

    def describe(self) -> str:
        """One line for the model card, e.g. ``triplet loss (margin 0.2, cosine distance, semi-hard negatives)``."""
        if self.name == "infonce":
            return "symmetric InfoNCE over in-batch negatives, learned temperature"
        return (f"triplet loss, margin {self.margin:g} on {self.distance} distance, {self.mining} in-batch "
                "negatives, both directions")


def loss_spec(name: str = "infonce", margin: float | None = None, distance: str | None = None,
              mining: str | None = None) -> LossSpec:
    """Check the loss settings and fill the triplet loss's defaults.

    Raises ``UsageError`` for an unknown loss, distance or mining, for a triplet-only setting given with
    ``infonce`` (named as its CLI option, e.g. ``--margin``), and for a margin that is not a finite number > 0.
    """
    if name not in LOSSES:
        raise UsageError(f"--loss {name!r} is not a loss mmindex knows; choose from {', '.join(LOSSES)}")
    given = {"margin": margin, "distance": distance, "mining": mining}
    if name == "infonce":
        for option, value in given.items():
            if value is not None:
                raise UsageError(f"--{option} applies only to --loss triplet (InfoNCE has no {option}); "
                                 "drop it or add --loss triplet")
        return LossSpec("infonce")
    margin = DEFAULT_MARGIN if margin is None else margin
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin <= 0:
        raise UsageError(f"--margin must be a finite number > 0, got {margin!r}")
    distance = distance or DEFAULT_DISTANCE
    mining = mining or DEFAULT_MINING
    if distance not in DISTANCES:
        raise UsageError(f"--distance {distance!r}: choose from {', '.join(DISTANCES)}")
    if mining not in MININGS:
        raise UsageError(f"--mining {mining!r}: choose from {', '.join(MININGS)}")
    return LossSpec("triplet", float(margin), distance, mining)


def info_nce_loss(text, image, logit_scale):
    """Symmetric InfoNCE over in-batch negatives, the CLIP loss; a scalar tensor.

    ``text`` and ``image``: (B, D) tensors, row i of each a pair (L2-normalised here); ``logit_scale``: the log of
    the inverse temperature, so sim(q, k) = exp(logit_scale) · cos(q, k). For each query q (a caption, then an
    image) with its positive k⁺ among the batch's B keys k_i:

        L = −log exp(sim(q, k⁺)) / Σᵢ exp(sim(q, kᵢ))      (= −log softmax, i.e. cross-entropy)

    averaged over the B queries, then over the two directions. Sources: van den Oord et al. 2018, "Representation
    Learning with Contrastive Predictive Coding" (InfoNCE); Radford et al. 2021, "Learning Transferable Visual
    Models From Natural Language Supervision" (CLIP: symmetric, learned temperature).
    """
    # torch takes seconds to import: only code that runs a model loads it
    import torch
    import torch.nn.functional as F  # (torch, as above)

    text = F.normalize(text.float(), dim=-1)
    image = F.normalize(image.float(), dim=-1)
    logits = logit_scale.exp() * text @ image.T
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def pairwise_distances(queries, keys, distance: str = "cosine"):
    """(B, B') distances between L2-normalised rows of ``queries`` (B, D) and ``keys`` (B', D), in float32 or wider.

    cosine: d = 1 − cos(q, k), in [0, 2]. euclidean: d = ‖q − k‖ = √(2 − 2 cos(q, k)), in [0, 2], not squared:
    on unit vectors the squared distance is exactly 2 × the cosine distance (only a rescaled margin), while the
    plain distance is what Hermans et al. 2017 ("In Defense of the Triplet Loss for Person Re-Identification")
    found trains more stably. The square root's argument is kept ≥ 1e-12 so that identical vectors have a finite
    gradient.
    """
    # torch takes seconds to import: only code that runs a model loads it
    import torch
    import torch.nn.functional as F  # (torch, as above)

    # at least float32 (autocast's halves are too coarse for a margin), float64 kept
    dtype = torch.promote_types(torch.promote_types(queries.dtype, keys.dtype), torch.float32)
    cosine = F.normalize(queries.to(dtype), dim=-1) @ F.normalize(keys.to(dtype), dim=-1).T
    if distance == "cosine":
        return 1 - cosine
    if distance == "euclidean":
        return (2 - 2 * cosine).clamp_min(1e-12).sqrt()
    raise UsageError(f"--distance {distance!r}: choose from {', '.join(DISTANCES)}")


def triplet_from_distances(distances, margin: float, mining: str, negatives=None):
    """The triplet loss of one direction from a (B, B) distance matrix: row i is anchor i, d[i, i] its positive.

    ``negatives``: an optional (B, B) bool tensor, True where key j may serve as a negative of anchor i (the
    diagonal is never one). Each triplet costs

        L(a, p, n) = max(0, d(a, p) − d(a, n) + margin)        (Schroff et al. 2015, "FaceNet")

    - ``all``: every (anchor, negative) triplet; the mean over the active ones (L > 0), as in "batch all" of
      Hermans et al. 2017: a mean over all of them would shrink as most triplets become easy. No active
      triplet: 0.
    - ``hardest``: each anchor's closest negative (VSE++'s max of hinges, Faghri et al. 2018, "VSE++: Improving
      Visual-Semantic Embeddings with Hard Negatives").
    - ``semi-hard``: each anchor's closest negative farther than its positive, d(a, p) < d(a, n) (FaceNet; with
      the margin only those within d(a, p) + margin cost anything). An anchor with no such negative (all its
      negatives are closer than its positive, ties included) takes its farthest negative instead, the least hard
      one, as TensorFlow Addons' ``triplet_semihard_loss`` does: FaceNet warns that the hardest negatives can
      collapse a model early in training.

    ``hardest`` and ``semi-hard`` average over the anchors that have at least one negative (a batch of one pair
    has none: the loss is 0, still attached to the graph). Returns a scalar tensor.
    """
    return triplet_terms(distances, margin, mining, negatives)[0]


def triplet_terms(distances, margin: float, mining: str, negatives=None):
    """``triplet_from_distances``'s loss with what it was made of: (loss, anchors that had at least one negative,
    active triplets: those with L > 0 that count, i.e. every one for ``all``, each anchor's chosen one otherwise).
    The two counts are ints; an anchor with no negative (a batch of one pair, or only duplicates of its caption)
    teaches nothing."""
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    size = distances.shape[0]
    valid = ~torch.eye(size, dtype=torch.bool, device=distances.device)
    if negatives is not None:
        valid = valid & negatives
    positive = distances.diagonal().unsqueeze(1)  # (B, 1): d(a, p) for each anchor
    zero = distances.sum() * 0  # keeps the graph when nothing counts
    has_negative = valid.any(dim=1)
    anchors = int(has_negative.sum())
    if mining == "all":
        hinge = (positive - distances + margin).clamp_min(0)
        active = valid & (hinge > 0)
        return (hinge[active].mean() if active.any() else zero), anchors, int(active.sum())
    if not has_negative.any():
        return zero, 0, 0
    inf = torch.full_like(distances, math.inf)
    if mining == "hardest":
        chosen = torch.where(valid, distances, inf).min(dim=1).values
    elif mining == "semi-hard":
        farther = valid & (distances > positive)
        closest_farther = torch.where(farther, distances, inf).min(dim=1).values
        farthest = torch.where(valid, distances, -inf).max(dim=1).values
        chosen = torch.where(farther.any(dim=1), closest_farther, farthest)
    else:
        raise UsageError(f"--mining {mining!r}: choose from {', '.join(MININGS)}")
    hinge = (positive.squeeze(1) - chosen + margin).clamp_min(0)[has_negative]
    return hinge.mean(), anchors, int((hinge > 0).sum())


@dataclass
class NegativeCounts:
    """What a run's batches gave the loss to learn from, summed over batches and both directions: ``anchors``
    (2 per pair), ``with_negative`` (anchors with at least one in-batch negative: an item that is not a caption
    of the same text), ``active`` (triplets with a loss > 0; the triplet loss only, 0 for InfoNCE)."""

    anchors: int = 0
    with_negative: int = 0
    active: int = 0

    def add(self, other: "NegativeCounts") -> None:
        self.anchors += other.anchors
        self.with_negative += other.with_negative
        self.active += other.active


def triplet_loss(text, image, margin: float = DEFAULT_MARGIN, distance: str = DEFAULT_DISTANCE,
                 mining: str = DEFAULT_MINING, same=None, counts: NegativeCounts | None = None):
    """Symmetric triplet loss over in-batch negatives; a scalar tensor.

    ``text``, ``image``: (B, D) tensors, row i of each a pair (L2-normalised here). Text→image: each caption is an
    anchor, its image the positive, the batch's other images the negatives; image→text the other way round; the
    loss is the mean of the two (see ``triplet_from_distances`` for the formula, the mining and the mean).
    ``same``: an optional (B, B) bool tensor, True where pairs i and j are known to match (e.g. the same caption
    text): such a j is no negative of i in either direction. ``counts``: where to add the batch's anchors, those
    with a negative and the active triplets (``NegativeCounts``).
    """
    negatives = None if same is None else ~same
    distances = pairwise_distances(text, image, distance)
    text_to_image, anchors, active = triplet_terms(distances, margin, mining, negatives)
    image_to_text, anchors_back, active_back = triplet_terms(distances.T, margin, mining,
                                                             None if negatives is None else negatives.T)
    if counts is not None:
        counts.add(NegativeCounts(2 * len(distances), anchors + anchors_back, active + active_back))
    return (text_to_image + image_to_text) / 2


def same_tokens(input_ids, attention):
    """(B, B) bool: True where two captions of a batch have the same tokens (the same text, as the model reads it)."""
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    tokens = torch.where(attention.bool(), input_ids, torch.full_like(input_ids, -1))
    return (tokens.unsqueeze(1) == tokens.unsqueeze(0)).all(dim=-1)


def tower_output(output):
    """A tower's vectors: the tensor itself, or ``pooler_output`` of a transformers output object."""
    return output if hasattr(output, "shape") else output.pooler_output


def clip_loss(clip, pixels, input_ids, attention, image_features=None, spec: LossSpec | None = None,
              counts: NegativeCounts | None = None):
    """The loss of one batch of a transformers CLIP-style model: InfoNCE (the default) or the triplet loss.

    ``pixels``: (B, 3, H, W) preprocessed images, or ``image_features`` (B, D), the image tower's output computed
    beforehand (a frozen tower); ``input_ids``, ``attention``: (B, T) tokens. Each image's caption is its positive,
    the batch's others negatives. The triplet loss does not use ``clip.logit_scale`` (it compares distances with
    a margin), and two captions of identical text are not each other's negatives there: a duplicate is always the
    hardest negative, and pushing identical texts apart is impossible.

    ``counts``: where to add the batch's ``NegativeCounts``. InfoNCE keeps duplicates as negatives in its loss, but
    counts an anchor as having a negative only where the batch holds a caption of other text: a batch of one
    caption text teaches it nothing either (its loss stays at log B whatever the images are).
    """
    spec = spec or LossSpec()
    image = image_features if image_features is not None else tower_output(clip.get_image_features(pixel_values=pixels))
    text = tower_output(clip.get_text_features(input_ids=input_ids, attention_mask=attention))
    same = same_tokens(input_ids, attention)
    if spec.name == "triplet":
        return triplet_loss(text, image, spec.margin, spec.distance, spec.mining, same, counts)
    if counts is not None:
        counts.add(NegativeCounts(2 * len(same), 2 * int((~same).any(dim=1).sum())))
    return info_nce_loss(text, image, clip.logit_scale)
