"""Commands about models: ``eval`` (retrieval quality), ``train`` (contrastive fine-tuning), ``init-model``."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from mmindex.pipeline.cli.classify import (EVAL_CLASSIFY_ONLY, EVAL_CLASSIFY_TAKES, TRAIN_CLASSIFY_ONLY,
                                           TRAIN_CLASSIFY_TAKES, check_task, eval_classify, eval_task_options,
                                           train_classify, train_task_options)
from mmindex.pipeline.cli.options import (
    column_options,
    device_option,
    friendly_errors,
    inference_options,
    progress_interval_option,
    split_values,
    store_options,
    trust_option,
)
from mmindex.pipeline.cli.progress import open_progress
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.source import open_source
from mmindex.pipeline.models.encoder import Runtime
from mmindex.pipeline.models.identity import ModelChoice, model_display_name
from mmindex.errors import UsageError
from mmindex.pipeline.training.evaluate import evaluate_models, parse_modes
from mmindex.pipeline.training.scratch import build_scratch_model
from mmindex.pipeline.training.train import TrainOptions, train


_EVERY_RELEVANT = (("P@10", "precision@10"), ("R@10 all", "recall_all@10"), ("F1@10", "f1@10"), ("mAP", "map"),
                   ("nDCG@10", "ndcg@10"))  # measures that count every relevant answer (training/metrics.py)


def _print_metrics(title: str, metrics: list[dict[str, Any]]) -> None:
    click.echo(title)
    every = [(name, key) for name, key in _EVERY_RELEVANT if metrics and key in metrics[0]]
    click.echo(f"  {'direction':<12} {'queries':>7} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'median rank':>11}"
               + "".join(f" {name:>8}" for name, _ in every))
    for m in metrics:
        median = "-" if m["median_rank"] is None else f"{m['median_rank']:g}"
        click.echo(f"  {m['direction']:<12} {m['queries']:>7} {m['recall@1']:>6.3f} {m['recall@5']:>6.3f} "
                   f"{m['recall@10']:>6.3f} {m['mrr']:>6.3f} {median:>11}"
                   + "".join(f" {m[key]:>8.3f}" for _, key in every))


@click.command("eval")
@click.argument("inputs", nargs=-1, required=False)
@click.option("--model", "-m", default=None,
              help="Model to evaluate (default: the collection's model with --collection, else clip-ViT-B-32). "
                   "With --task classify --labels: where to load the collection's model from when its folder has "
                   "moved (its fingerprint is checked).")
@click.option("--text-model", default=None,
              help="Text model for captions, trained into --model's space (default: the collection's, if any).")
@store_options(collection_required=False,
               collection_help="Also measure through this collection's own search (its ANN index), for comparison; "
                               "with --task classify, the collection scored, e.g. -c shapes.")
@click.option("--ingest/--no-ingest", "do_ingest", default=False, show_default=True,
              help="With --collection: ingest INPUTS into it first (unchanged rows are skipped).")
@click.option("--group-col", multiple=True,
              help="Column(s) whose equal values mark rows as matching each other (e.g. an image id "
                   "for several captions per image). Comma-separated for a combined key.")
@column_options
@device_option("run the model")
@inference_options
@click.option("--compare", default=None, metavar="MODE,MODE,…",
              help="With --collection: rank every caption's images in each search mode, side by side "
                   "(dense, keyword, hybrid, hybrid-rrf, both, diverse, cutoff). E.g. --compare dense,hybrid.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@eval_task_options
@friendly_errors
def evaluate_command(inputs, model, text_model, store, do_ingest, group_col, image_col, caption_col,
                     id_col, split, device, backend, model_precision, model_threads, compare, as_json, task, **classify):
    """Measure retrieval quality on image–caption pairs in INPUTS.

    Reports Recall@1/5/10 (a relevant answer in the first K), MRR and median rank, and
    precision, recall and F1 at 10, mAP and nDCG@10 (counting every relevant answer; --json
    has them at 1, 5 and 10) for text→image and image→text, computed exactly in memory
    and, with --collection, through the collection's own search, so you can see whether
    indexing loses anything. Rows with identical image bytes (or equal --group-col values)
    count as correct (relevant) answers for each other.

    With --task classify (no INPUTS): accuracy, per-class precision/recall/F1, macro and
    weighted F1 and the confusion matrix of zero-shot --labels and of a linear probe on a
    held-out share of a collection's points, against its --label-col.

    \b
    Examples:
      mmindex eval heldout/ --model demo/shapes-clip
      mmindex eval heldout/ --model demo/shapes-clip --caption-col short_caption --group-col color,shape
      mmindex eval coco_val.parquet --group-col image_id -c coco --ingest --json
      mmindex eval --task classify -c shapes --label-col shape --labels shapes.txt --plot confusion.png
    """
    if check_task(task, EVAL_CLASSIFY_TAKES, EVAL_CLASSIFY_ONLY):  # docs/classify.md, "Measuring"
        return eval_classify(store, as_json, device, backend, model_threads, model=model, text_model=text_model,
                             **classify)
    settings = store
    modes = parse_modes(compare) if compare is not None else []
    if modes and not settings.collection:
        raise UsageError("--compare ranks through a collection: give --collection (and --ingest to fill it)")
    store = settings.open() if settings.collection else None
    try:
        report = evaluate_models(list(inputs), store, ModelChoice(model, text_model, model_precision),
                                 Runtime(device, backend, model_threads), split_values(group_col) or [],
                                 IngestOptions(image_col=image_col, caption_col=caption_col, id_col=id_col,
                                               split=split), do_ingest,
                                 settings.place, modes)
    finally:
        if store is not None:
            store.close()
    if as_json:
        click.echo(json.dumps(report))
        return
    text_model = f" + text model {model_display_name(report['text_model'])}" if report.get("text_model") else ""
    click.echo(f"model {model_display_name(report['model'])}{text_model}: {report['images']:,} images, "
               f"{report['captions']:,} captions, "
               f"{report['groups']:,} groups" + (f", {report['rejected']} rejected" if report["rejected"] else ""))
    for warning in report.get("warnings", [])[:5]:
        click.echo(f"  warning: {warning}", err=True)
    _print_metrics("exact (in memory):", report["exact"])
    if "store" in report:
        _print_metrics(f"through collection {report['collection']!r}:", report["store"])
        if report["rows_missing_from_collection"]:
            click.echo(f"  note: {report['rows_missing_from_collection']} rows are not in the collection "
                       "(add --ingest)")
    if report.get("compare"):
        print_comparison(report["compare"])


def print_comparison(rows: list[dict[str, Any]]) -> None:
    """``eval --compare``: one line per search mode, text→image, on the same queries."""
    click.echo("search modes, text→image through the collection:")
    click.echo(f"  {'mode':<12} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'P@10':>6} {'mAP':>6} {'nDCG@10':>7}"
               f"  {'at the cutoff: P / R / F1 (hits)'}")
    for row in rows:
        cut = (f"  {row['precision@cutoff']:.3f} / {row['recall@cutoff']:.3f} / {row['f1@cutoff']:.3f} "
               f"({row['hits']:g})" if "f1@cutoff" in row else "")
        click.echo(f"  {row['mode']:<12} {row['recall@1']:>6.3f} {row['recall@5']:>6.3f} {row['recall@10']:>6.3f} "
                   f"{row['mrr']:>6.3f} {row.get('precision@10', 0):>6.3f} {row.get('map', 0):>6.3f} "
                   f"{row.get('ndcg@10', 0):>7.3f}{cut}")


@click.command("train")
@click.argument("inputs", nargs=-1, required=False)
@click.option("--output", "-o", required=True, type=click.Path(),
              help="Folder for the best model (a sentence-transformers folder that --model accepts); with --task "
                   "classify, the probe's JSON file, e.g. -o shape-probe.json.")
@click.option("--model", "-m", default=None, help="Pretrained sentence-transformers CLIP to start from.")
@click.option("--from-scratch", type=click.Choice(["tiny", "small", "base"]), default=None,
              help="Start from a fresh CLIP of this size instead (no download).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1),
              help="Passes over the training rows.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(2),
              help="Pairs per step; the other pairs in a batch are the negatives.")
@click.option("--lr", "learning_rate", default=5e-4, show_default=True, type=float,
              help="Peak learning rate (use ~1e-5 when fine-tuning a pretrained model).")
@click.option("--weight-decay", default=0.1, show_default=True, type=float,
              help="AdamW weight decay.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0.01, 0.5),
              help="Share of rows held out for validation, chosen by id (stable across runs).")
@click.option("--group-col", multiple=True, help="Columns marking rows that match each other, for validation.")
@click.option("--seed", default=0, show_default=True, help="Seed for the initial weights and the batch order (the split is by id).")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="Data loading processes.")
@device_option("train")
@click.option("--save-half", is_flag=True, help="Save weights in fp16 (half the size on disk).")
@click.option("--freeze", multiple=True, type=click.Choice(["image", "text"]),
              help="Keep this tower's weights as they are (image: its vectors stay valid for collections "
                   "ingested before; its features are computed once, so epochs are much faster).")
@click.option("--add-char-tokens", is_flag=True,
              help="Give every non-ASCII character of the training captions (e.g. Chinese) that has no token "
                   "of its own a new one, instead of several byte pieces; for teaching a model a new language.")
@click.option("--loss", type=click.Choice(["infonce", "triplet"]), default="infonce", show_default=True,
              help="infonce: symmetric InfoNCE, the CLIP loss; triplet: max(0, d(a,p) - d(a,n) + margin) over "
                   "in-batch negatives, both directions. E.g. --loss triplet --mining hardest.")
@click.option("--margin", type=float, default=None,
              help="Triplet only: the margin, a finite number > 0 (default 0.2, as VSE++ on cosine distance and "
                   "FaceNet on unit vectors). E.g. --loss triplet --margin 0.1.")
@click.option("--distance", type=click.Choice(["cosine", "euclidean"]), default=None,
              help="Triplet only: 1 - cosine (default) or the Euclidean distance of the L2-normalised vectors. "
                   "E.g. --loss triplet --distance euclidean.")
@click.option("--mining", type=click.Choice(["all", "semi-hard", "hardest"]), default=None,
              help="Triplet only: which in-batch negatives count: every one (mean over those with a loss), the "
                   "closest one farther than the positive (FaceNet; the default), or the closest (VSE++). "
                   "E.g. --loss triplet --mining hardest.")
@column_options
@trust_option
@click.option("--json", "as_json", is_flag=True, help="Print the training report as JSON.")
@progress_interval_option
@train_task_options
@friendly_errors
def train_command(inputs, output, model, from_scratch, epochs, batch_size, learning_rate, weight_decay, val_fraction,
                  group_col, seed, workers, device, save_half, freeze, add_char_tokens, loss, margin, distance, mining,
                  image_col, caption_col, id_col, split, as_json, progress_interval, task, **classify):
    """Fine-tune a CLIP contrastively on image–caption pairs in INPUTS.

    Symmetric InfoNCE (the CLIP loss) over in-batch negatives, or with --loss triplet a
    triplet loss (--margin, --distance, --mining). A fixed share of rows
    (--val-fraction, chosen by id) is held out and evaluated after every epoch with the
    metrics of `mmindex eval`; the best epoch is saved to --output with its metrics.

    With --task classify (no INPUTS): a linear probe (logistic regression) on the stored
    image vectors of a collection's points that carry --label-col, saved to --output as
    JSON; the points without a label get its prediction in COL_predicted (--field).

    \b
    Examples:
      mmindex train data/ --model clip-ViT-B-32 --lr 1e-5 --epochs 3 -o models/my-clip
      mmindex sample train --rows 6000 --caption-style mixed && \\
        mmindex train train --from-scratch small --epochs 30 -o models/shapes
      mmindex sample zh --rows 6000 --caption-style mixed --caption-lang mixed && \\
        mmindex train zh --model demo/shapes-clip --freeze image --add-char-tokens -o models/shapes-zh
      mmindex train train --from-scratch small --loss triplet --mining semi-hard --margin 0.2 -o models/shapes-t
      mmindex train --task classify -c shapes --label-col shape -o shape-probe.json
    """
    if check_task(task, TRAIN_CLASSIFY_TAKES, TRAIN_CLASSIFY_ONLY):  # docs/classify.md, "Linear probe"
        return train_classify(output, seed, as_json, progress_interval, **classify)
    if Path(output).is_file():
        raise click.UsageError(f"--output {output}: a file is there; the model is written to a folder")
    if bool(model) == bool(from_scratch):
        raise click.UsageError("give exactly one of --model or --from-scratch")
    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
        val_fraction=val_fraction, seed=seed, workers=workers, device=device, group_cols=split_values(group_col) or (),
        from_scratch=from_scratch, save_half=save_half, freeze=freeze, add_char_tokens=add_char_tokens,
        image_col=image_col, caption_col=caption_col, id_col=id_col, split=split,
        loss=loss, margin=margin, distance=distance, mining=mining,
    )
    try:
        options.loss_spec()  # refuse settings that do not fit the loss before anything is read
    except UsageError as error:
        raise UsageError(error.message + setting_origin(("margin", "distance", "mining", "loss"))) from None
    bar = open_progress("train", "steps", interval=progress_interval)

    def on_step(step, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    def on_epoch(epoch):
        t2i, i2t = epoch.validation
        bar.write(f"epoch {epoch.epoch}: loss {epoch.train_loss:.4f}  val R@1 text→image {t2i['recall@1']:.3f} "
                  f"image→text {i2t['recall@1']:.3f}  ({epoch.seconds:.0f}s)")
        if epoch.warning:
            bar.write(f"  warning: {epoch.warning}")

    command = "mmindex train " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "mmindex train"
    with bar:
        report = train(list(inputs), output, model, options, on_step, on_epoch, command=command)
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=str))
        return
    _print_metrics("validation before training:", report.baseline)
    best = next((e for e in report.epochs if e.epoch == report.best_epoch), None)
    if best:
        _print_metrics(f"validation at the best epoch ({best.epoch}):", best.validation)
        click.echo(f"saved to {output}")
    else:
        click.echo("no epoch beat the starting model; saved the starting model to " + str(output))


@click.command("init-model")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--size", type=click.Choice(["tiny", "small", "base"]), default="tiny", show_default=True,
              help="tiny and small: seconds on a CPU; base: the shape of CLIP ViT-B/32.")
@click.option("--texts-from", multiple=True, help="Parquet inputs whose captions train the tokenizer.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@friendly_errors
def init_model(output, size, texts_from, seed):
    """Create an UNTRAINED CLIP model folder at OUTPUT, offline.

    Its weights are random: search results are not meaningful. It exists to try the whole
    flow without a download, and for tests and benchmarks (`base` has the shape of
    CLIP ViT-B/32). For real use pass --model clip-ViT-B-32 (or any sentence-transformers
    CLIP) to ingest and query.
    """
    texts: list[str] = []
    if texts_from:
        source = open_source(list(texts_from))
        if source.mapping.caption:
            for batch in source.batches(4096):
                column = batch.batch.column(batch.batch.schema.get_field_index(source.mapping.caption))
                texts.extend(t for t in column.to_pylist() if t)
    build_scratch_model(output, size=size, texts=texts, seed=seed)
    click.echo(f"wrote an untrained {size} CLIP model to {output} (random weights: results are not meaningful)")


def setting_origin(names: tuple[str, ...]) -> str:
    """" (…: set in the config file / by MMINDEX_X)" for the first of ``names`` not typed on the command line, so a
    message about a setting says where it came from; "" when every one given was typed or none was given."""
    ctx = click.get_current_context()
    for name in names:
        source = ctx.get_parameter_source(name)
        if source == ParameterSource.DEFAULT_MAP:
            return f" (--{name} was set in the config file)"
        if source == ParameterSource.ENVIRONMENT:
            param = next(p for p in ctx.command.params if p.name == name)
            names = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
            variable = next((v for v in names if v and v in os.environ), None) or names[0]
            return f" (--{name} was set by {variable})"
    return ""
