"""Contrastive fine-tuning of a sentence-transformers CLIP on image–caption Parquet.

The loss (``pipeline/training/losses.py``): symmetric InfoNCE over in-batch negatives with a learned temperature
(the CLIP loss, the default) or a triplet loss with in-batch negative mining.
A deterministic validation split is evaluated after every epoch with the same metrics as
``mmindex eval``; the best epoch is saved. Training can start from a pretrained model or
from a fresh small CLIP (``from_scratch``), which needs no download. A tower can be frozen
and new characters given tokens of their own, to teach a trained model another language.
"""
from __future__ import annotations

import copy
import json
import math
import random
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mmindex.errors import InputError, ModelError, UsageError
from mmindex.pipeline.ingest.images import RejectedImage, decode_image
from mmindex.pipeline.ingest.rows import SourceRow
from mmindex.pipeline.ingest.source import open_source
from mmindex.pipeline.ingest.summary import IngestSummary
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.training.evaluate import collect_rows, embed_rows, exact_metrics
from mmindex.pipeline.training.losses import LossSpec, NegativeCounts, clip_loss, loss_spec, tower_output
from mmindex.pipeline.training.scratch import build_scratch_model


@dataclass
class TrainOptions:
    """How to train; the defaults suit a small model on a few thousand pairs."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 0
    device: str | None = None
    group_cols: Sequence[str] = ()
    from_scratch: str | None = None
    save_half: bool = False
    freeze: Sequence[str] = ()  # towers that keep their weights: "image", "text"
    add_char_tokens: bool = False  # give new characters of the captions tokens of their own
    image_col: str | None = None
    caption_col: str | None = None
    id_col: str | None = None
    split: str | None = None  # the split of a Hugging Face datasets input (pipeline/ingest/hf_layout.py)
    loss: str = "infonce"  # or "triplet" (pipeline/training/losses.py)
    margin: float | None = None  # triplet only; None: the loss's default (0.2)
    distance: str | None = None  # triplet only: "cosine" (default) or "euclidean"
    mining: str | None = None  # triplet only: "all", "semi-hard" (default) or "hardest"

    def loss_spec(self) -> LossSpec:
        """The loss with its defaults filled; ``UsageError`` for settings that do not fit it (see ``loss_spec``)."""
        return loss_spec(self.loss, self.margin, self.distance, self.mining)


@dataclass
class EpochReport:
    """One epoch: its mean training loss, time (s), validation metrics and score; what its batches gave the loss
    (``anchors``, ``anchors_with_negative``, ``active_triplets``: ``NegativeCounts``, both directions) and a
    ``warning`` when no anchor had a negative (nothing was learnt: the epoch's optimiser steps were skipped)."""

    epoch: int
    train_loss: float
    seconds: float
    validation: list[dict[str, Any]]
    score: float
    anchors: int = 0
    anchors_with_negative: int = 0
    active_triplets: int | None = None  # the triplet loss only
    warning: str | None = None


@dataclass
class TrainReport:
    output: str
    start_model: str
    train_rows: int
    validation_rows: int
    rejected: int
    baseline: list[dict[str, Any]]
    baseline_score: float
    epochs: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = 0.0
    frozen: list[str] = field(default_factory=list)
    added_tokens: list[str] = field(default_factory=list)
    loss: dict[str, Any] = field(default_factory=lambda: LossSpec().to_dict())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_rows(rows: Sequence[SourceRow], val_fraction: float) -> tuple[list[SourceRow], list[SourceRow]]:
    """A deterministic split by point id: the same row always lands on the same side."""
    train, val = [], []
    for row in rows:
        bucket = uuid.UUID(row.id).int % 10_000
        (val if bucket < val_fraction * 10_000 else train).append(row)
    return train, val


def score_of(metrics) -> float:
    """The number training maximises: mean Recall@1 of both directions."""
    return sum(m.recall[1] for m in metrics) / len(metrics)


def train(
    inputs: Sequence[str],
    output: str | Path,
    model: str | None = None,
    options: TrainOptions | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    command: str = "",
) -> TrainReport:
    """Train on ``inputs``; the best epoch's model is written to ``output``."""
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    options = options or TrainOptions()
    spec = options.loss_spec()
    if not model and not options.from_scratch:
        raise ModelError("give a model to start from (--model) or --from-scratch SIZE")
    random.seed(options.seed)
    torch.manual_seed(options.seed)
    source = open_source(list(inputs), options.image_col, options.caption_col, options.id_col, split=options.split)
    if not source.mapping.caption:
        raise UsageError("training needs a caption column; name it with --caption-col")
    summary = IngestSummary(collection="(train)", files=len(source.files))
    rows = [r for r in collect_rows(source, "train", summary) if r.caption]
    train_rows, val_rows = split_rows(rows, options.val_fraction)
    if len(train_rows) < 2 or not val_rows:
        raise InputError(f"too few pairs to train: {len(train_rows)} for training, {len(val_rows)} for validation")

    with tempfile.TemporaryDirectory() as scratch_dir:
        start = model
        if options.from_scratch:
            start = build_scratch_model(Path(scratch_dir) / "start", size=options.from_scratch,
                                        texts=[r.caption for r in train_rows], seed=options.seed)
        encoder = Encoder(start, device=options.device, batch_size=256, half=False)
        if encoder.model is None or len(encoder.model) != 1:
            raise ModelError(f"model {start!r} is a {encoder.backend.kind} model; mmindex train fine-tunes "
                             "sentence-transformers / transformers CLIP-style folders (open_clip has its own "
                             "training code: open_clip_train)")
        clip = encoder.model[0].auto_model
        for needed in ("get_image_features", "get_text_features", "logit_scale"):
            if not hasattr(clip, needed):
                raise ModelError(f"model {start!r} is not a CLIP-style dual encoder (no {needed}); cannot train it")
        if options.add_char_tokens and "text" in options.freeze:
            raise UsageError("new tokens are learnt by the text tower: do not freeze it with --add-char-tokens")
        added = add_char_tokens(encoder, clip, [r.caption for r in train_rows]) if options.add_char_tokens else []
        frozen = freeze_towers(clip, options.freeze)
        baseline = exact_metrics(embed_rows(val_rows, encoder, options.group_cols))
        report = TrainReport(str(output), f"scratch:{options.from_scratch}" if options.from_scratch else str(model),
                             len(train_rows), len(val_rows), summary.rejected,
                             [m.to_dict() for m in baseline], score_of(baseline), frozen=frozen, added_tokens=added,
                             loss=spec.to_dict())
        report.best_score = report.baseline_score
        _fit(encoder, clip, train_rows, val_rows, options, report, Path(output), on_step, on_epoch, command)
    return report


TOWERS = {
    "image": ("vision_model", "visual_projection"),
    "text": ("text_model", "text_projection"),
}


def freeze_towers(clip, towers: Sequence[str]) -> list[str]:
    """Stop training the named towers; returns their names, sorted."""
    if set(towers) >= set(TOWERS):
        raise UsageError("--freeze image and --freeze text together leave nothing to train: freezing both towers "
                         "leaves nothing to train")
    for tower in towers:
        if tower not in TOWERS:
            raise InputError(f"cannot freeze {tower!r}; choose from {', '.join(TOWERS)}")
        for name in TOWERS[tower]:
            if not hasattr(clip, name):
                raise ModelError(f"cannot freeze the {tower} tower: the model has no {name}")
            getattr(clip, name).requires_grad_(False)
    return sorted(set(towers))


def add_char_tokens(encoder, clip, captions: Sequence[str]) -> list[str]:
    """Give each non-ASCII character of ``captions`` that is not in the vocabulary a token of its own.

    A byte-level BPE tokenizer trained on English spends two to four byte tokens on each
    Chinese character (its vocabulary holds bytes, so every such character is added), and
    the text tower has few positions. Each new embedding starts at the mean of the
    embeddings of the pieces it replaces. Returns the characters added.
    """
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    tokenizer = encoder.model[0].processor.tokenizer
    vocabulary = tokenizer.get_vocab()
    new = sorted({c for text in captions for c in text if ord(c) > 127 and not c.isspace()} - set(vocabulary))
    if not new:
        return []
    pieces = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in new]
    old = clip.text_model.embeddings.token_embedding
    tokenizer.add_tokens(new)
    grown = torch.nn.Embedding(len(tokenizer), old.embedding_dim, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        grown.weight[:old.num_embeddings] = old.weight
        for char, ids in zip(new, pieces):
            grown.weight[tokenizer.convert_tokens_to_ids(char)] = old.weight[ids].mean(dim=0)
    clip.text_model.embeddings.token_embedding = grown
    clip.config.text_config.vocab_size = len(tokenizer)
    return new


def _fit(encoder, clip, train_rows, val_rows, options, report, output: Path, on_step, on_epoch, command):
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    device = torch.device(encoder.device)
    # A frozen image tower gives each image the same features in every epoch: compute them once.
    cached = _image_features(encoder, clip, train_rows, options) if "image" in report.frozen else None
    loader = _loader(encoder, train_rows, options, cached)
    steps = max(1, len(loader) * options.epochs)
    spec = options.loss_spec()
    # The triplet loss compares distances, not scaled similarities: the temperature stays as it was (and is saved so).
    trainable = [p for name, p in clip.named_parameters()
                 if p.requires_grad and not (spec.name == "triplet" and name == "logit_scale")]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=options.weight_decay)
    warmup = max(1, int(options.warmup_fraction * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))
    )
    autocast_dtype = None
    if device.type == "cuda":
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    step = 0
    for epoch in range(1, options.epochs + 1):
        clip.train()
        started, total, batches = time.perf_counter(), 0.0, 0
        counts = NegativeCounts()
        for images, input_ids, attention in loader:
            before = counts.with_negative
            loss = _step(clip, spec, device, autocast_dtype, (images, input_ids, attention), cached is not None,
                         (optimizer, scaler, trainable), counts)
            if counts.with_negative > before:  # the optimiser stepped: so does the schedule
                schedule.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            step += 1
            total += loss
            batches += 1
            if on_step:
                on_step(step, total / batches)
        clip.eval()
        metrics = exact_metrics(embed_rows(val_rows, encoder, options.group_cols))
        epoch_report = EpochReport(epoch, total / max(1, batches), time.perf_counter() - started,
                                   [m.to_dict() for m in metrics], score_of(metrics), counts.anchors,
                                   counts.with_negative, counts.active if spec.name == "triplet" else None,
                                   None if counts.with_negative else nothing_learnt(spec, epoch))
        report.epochs.append(epoch_report)
        learnt = counts.with_negative > 0
        if learnt and (epoch_report.score > report.best_score or report.best_epoch == 0):
            report.best_epoch, report.best_score = epoch, epoch_report.score
            _save(encoder, output, report, options, command)
        if on_epoch:
            on_epoch(epoch_report)
    if not any(e.anchors_with_negative for e in report.epochs):
        raise InputError(f"nothing was learnt in {len(report.epochs)} epoch(s): every batch's captions were all the "
                         "same text, so no anchor had a negative; train on pairs whose captions differ (or a larger "
                         "--batch-size); no model was saved")


def nothing_learnt(spec: LossSpec, epoch: int) -> str:
    """The warning for an epoch in which no anchor had a negative."""
    what = "triplet" if spec.name == "triplet" else "caption"
    return (f"no {what} had a negative in epoch {epoch}: captions in a batch are all the same; nothing was learnt "
            "(its steps were skipped)")


def _step(clip, spec, device, autocast_dtype, batch, cached: bool, optimiser, counts: NegativeCounts) -> float:
    """One batch: the loss (its value returned), its ``NegativeCounts`` added to ``counts``, and an optimiser step
    unless no anchor had a negative (the loss then holds no signal, and a step would only decay the weights)."""
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    optimizer, scaler, trainable = optimiser
    images, input_ids, attention = (part.to(device, non_blocking=True) for part in batch)
    found = NegativeCounts()
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        if cached:
            loss = clip_loss(clip, None, input_ids, attention, image_features=images, spec=spec, counts=found)
        else:
            loss = clip_loss(clip, images, input_ids, attention, spec=spec, counts=found)
    counts.add(found)
    if found.with_negative:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


class PairDataset:
    """Decodes and preprocesses one pair at a time (in DataLoader workers when asked)."""

    def __init__(self, rows: Sequence[SourceRow], image_processor, target_size: int | None):
        self.rows = rows
        self.image_processor = image_processor
        self.target_size = target_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = self.rows[index]
        try:
            image = decode_image(row.image.data, self.target_size)
        except RejectedImage:
            return None
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixels, row.caption


def _image_features(encoder, clip, rows, options) -> list:
    """Each row's image features (None for an image that does not decode), from the frozen image tower."""
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    module = encoder.model[0]
    dataset = PairDataset(rows, module.processor.image_processor, encoder.image_size)
    indexed = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=options.workers, collate_fn=list)
    features: list = []
    clip.eval()
    with torch.inference_mode():
        for items in indexed:
            good = [pixels for pixels, _ in filter(None, items)]
            vectors = iter(tower_output(clip.get_image_features(pixel_values=torch.stack(good).to(encoder.device)))
                           if good else [])
            features.extend(None if item is None else next(vectors).float().cpu().clone() for item in items)
    return features


class FeatureDataset:
    """Precomputed image features and their captions (rows whose image did not decode are None)."""

    def __init__(self, rows: Sequence[SourceRow], features: Sequence):
        self.rows = rows
        self.features = features

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        vector = self.features[index]
        return None if vector is None else (vector, self.rows[index].caption)


def _loader(encoder, rows, options, cached=None):
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    module = encoder.model[0]
    tokenizer = module.processor.tokenizer
    max_length = encoder.max_text_tokens or tokenizer.model_max_length

    def collate(items):
        items = [item for item in items if item is not None]
        tokens = tokenizer([caption for _, caption in items], padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt")
        return torch.stack([images for images, _ in items]), tokens["input_ids"], tokens["attention_mask"]

    if cached is None:
        dataset = PairDataset(rows, module.processor.image_processor, encoder.image_size)
    else:
        dataset = FeatureDataset(rows, cached)
    workers = options.workers if cached is None else 0  # nothing left to decode
    return torch.utils.data.DataLoader(
        dataset, batch_size=min(options.batch_size, len(rows)), shuffle=True, drop_last=len(rows) > options.batch_size,
        num_workers=workers, collate_fn=collate, pin_memory=encoder.device.startswith("cuda"),
        generator=torch.Generator().manual_seed(options.seed), persistent_workers=workers > 0,
    )


def _save(encoder, output: Path, report: TrainReport, options: TrainOptions, command: str) -> None:
    model = encoder.model
    if options.save_half:
        model = copy.deepcopy(model).half()
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    (output / "mmindex_training.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (output / "README.md").write_text(model_card(report, command))


def model_card(report: TrainReport, command: str = "") -> str:
    """A short model card: where the model came from and what it measured on validation."""
    best = next((e for e in report.epochs if e.epoch == report.best_epoch), None)
    rows = best.validation if best else report.baseline
    table = "\n".join(
        f"| {m['direction']} | {m['queries']} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['recall@10']:.3f} "
        f"| {m['mrr']:.3f} | {m['median_rank']} |"
        for m in rows
    )
    extras = ""
    if report.frozen:
        extras += f"- frozen: the {' and '.join(report.frozen)} tower{'s' if len(report.frozen) > 1 else ''}\n"
    if report.added_tokens:
        extras += f"- {len(report.added_tokens)} characters added as tokens: {''.join(report.added_tokens)}\n"
    return f"""# {Path(report.output).name}

A CLIP-style dual encoder for mmindex (sentence-transformers format), trained with
`mmindex train`.

- loss: {LossSpec(**report.loss).describe()}
- started from: `{report.start_model}`
- pairs: {report.train_rows} for training, {report.validation_rows} held out for validation
{extras}- best epoch: {report.best_epoch} (of {len(report.epochs)} so far)

## Validation metrics at the best epoch (measured by `mmindex train`)

| direction | queries | R@1 | R@5 | R@10 | MRR | median rank |
|---|---|---|---|---|---|---|
{table}

## How it was made

```
{command or "mmindex train ..."}
```
"""
