"""``mmindex label``: zero-shot labels from a labels file written into each point's payload, from the stored image
vectors, resumable; and the ``--labels`` options ``mmindex ingest`` shares."""
from __future__ import annotations

import json

import click
from click.core import ParameterSource

from mmindex.pipeline.classify.evaluate import DEFAULT_HOLDOUT, evaluate_classifiers
from mmindex.pipeline.classify.labelled import train_probe
from mmindex.pipeline.classify.labels_file import check_templates, read_labels
from mmindex.pipeline.classify.plot import plot_legend, save_confusion_png
from mmindex.pipeline.classify.probe import load_probe
from mmindex.pipeline.classify.predictions import NO_IMAGE_VECTOR, LabelReport, label_collection
from mmindex.pipeline.classify.zero_shot import labeler_from_encoder, zero_shot_labeler
from mmindex.pipeline.cli.format import SectionedCommand, display_width
from mmindex.pipeline.cli.options import (STORE_PARAMS, STORE_SECTION, device_option, friendly_errors,
                                          progress_interval_option, store_options)
from mmindex.pipeline.cli.progress import ResumedProgress
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.models.encoder import Runtime
from mmindex.pipeline.query.filters import compile_filter

SECTIONS = [("Labels", ["collection", "labels_path", "probe_path", "templates", "field", "top_k", "where", "filter_json"]),
            ("Running", ["model", "text_model", "device", "page_size", "restart", "as_json", "quiet",
                         "progress_interval"]), STORE_SECTION]

# A labels or probe file that is not there (or not readable, or a folder) is a bad option value: exit 2, naming
# the option and the path (docs/reliability.md, "Exit codes").
INPUT_FILE = click.Path(exists=True, dir_okay=False, readable=True)
MODEL_HELP = ("With --labels: where to load the collection's model from when its recorded folder has moved (it must be "
              "the same model: its weights' fingerprint is checked, as `query --model` does), e.g. "
              "--model /models/shapes-clip.")
TEXT_MODEL_HELP = ("With --labels: the text model that embeds the label prompts, as `query --text-model` takes it "
                   "(the collection's separate text model from a new folder, or another trained into its image "
                   "space). Default: the collection's text model, else its model. E.g. --text-model /models/text.")
TEMPLATE_HELP = ("Prompt template, with {} where the label goes; repeat it to average several, as CLIP's authors do "
                 "(default CLIP's \"a photo of a {}.\"). E.g. --template \"{}\" --template \"a {}\" (the demo "
                 "model).")


@click.command("label", cls=SectionedCommand, sections=SECTIONS)
@store_options
@click.option("--labels", "labels_path", default=None, type=INPUT_FILE, metavar="FILE",
              help="Labels file: one label per line (blank lines and # comments skipped), e.g. --labels animals.txt.")
@click.option("--probe", "probe_path", default=None, type=INPUT_FILE, metavar="FILE",
              help="Instead of --labels: a linear probe saved by `mmindex train --task classify` (it writes the "
                   "field it was trained for unless --field is given), e.g. --probe shape-probe.json.")
@click.option("--template", "templates", multiple=True, metavar="TEXT", help=TEMPLATE_HELP)
@click.option("--field", default="label", show_default=True,
              help="Payload field to write: FIELD (best label), FIELD_score, FIELD_top, FIELD_top_scores. "
                   "E.g. --field shape_guess.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1),
              help="Labels kept in FIELD_top, best first. E.g. --top-k 5.")
@click.option("--where", "-w", default=None,
              help="Label only the points this filter matches, as `query --where` filters, e.g. "
                   "--where \"year >= 2020\".")
@click.option("--filter-json", default=None, help="A raw Qdrant filter as JSON (ANDed with --where).")
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@click.option("--text-model", default=None, help=TEXT_MODEL_HELP)
@device_option("embed the label prompts")
@click.option("--page-size", default=256, show_default=True, type=click.IntRange(1),
              help="Points read (with their vectors) and written per request.")
@click.option("--restart", is_flag=True, help="Start over even when a stopped run with these labels could continue.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines.")
@progress_interval_option
@friendly_errors
def label_command(store, labels_path, probe_path, templates, field, top_k, where, filter_json, model, text_model,
                  device, page_size, restart, as_json, quiet, progress_interval):
    """Write zero-shot labels into each point's payload, from its stored image vector.

    Each label of --labels is put in the prompt --template(s) and embedded by the
    collection's own text model; each point gets the label whose vector is closest to its
    stored image vector (softmax of the scaled cosine similarities, as CLIP classifies):
    FIELD, FIELD_score (its probability), FIELD_top and FIELD_top_scores. No image is read
    and no image is embedded again. FIELD is indexed, so --where and facets use it.
    With --probe FILE, a linear probe saved by `mmindex train --task classify` predicts
    instead (its probabilities are those of the logistic regression).

    A stopped run continues where it stopped when run again with the same labels; other
    labels or templates replace the field on every point.

    \b
    Examples:
      mmindex label -c photos --labels animals.txt --template "a photo of a {}."
      mmindex query -c photos "dog" --where "label = cat"
      mmindex facets -c photos label
      mmindex label -c shapes --labels shapes.txt --field shape_guess --top-k 2 --where "year >= 2020"
      mmindex label -c shapes --probe shape-probe.json --where "shape is null"
    """
    labels, probe = labels_or_probe(labels_path, templates, probe_path)
    check_model_options(model, text_model, labels_path)
    templates, field = check_templates(templates), probe_field(field, probe)
    place = store.place

    def work(opened, on_progress):
        spec = require_collection(opened, place)
        query_filter = compile_filter(where, filter_json, field_types=spec.payload_types, origin="--filter-json")
        labeler = probe or zero_shot_labeler(opened, labels, templates, Runtime(device=device), place=place,
                                             model=model, text_model=text_model)
        return label_collection(opened, labeler, field, top_k, query_filter, page=page_size, on_progress=on_progress,
                                resume=not restart, place=place)

    report = run_with_progress(store, "label", quiet or as_json, progress_interval, work)
    echo_report(report, as_json, print_report)


def run_with_progress(store, verb: str, quiet: bool, interval: float, work):
    """Open ``store``, run ``work(opened, on_progress)`` under a progress display of points (``verb`` names the
    step), and close both whatever happens; returns what ``work`` returns."""
    opened = store.open()
    try:
        on_progress = ResumedProgress(verb, "points", quiet=quiet, interval=interval)
        try:
            return work(opened, on_progress)
        finally:
            on_progress.close()
    finally:
        opened.close()


def echo_report(report, as_json: bool, printer) -> None:
    """``report.to_dict()`` as one JSON line with --json, else ``printer(report)``."""
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        printer(report)


def print_report(report: LabelReport) -> None:
    """What a run did, then the points per label, most first."""
    resumed = f", resumed at point {report.resumed_from}" if report.resumed_from else ""
    click.echo(f"{report.labelled:,} of {report.points:,} points of collection {report.collection!r} labelled in "
               f"{report.field!r} ({report.kind}, {len(report.classes)} labels, top {report.top_k}) in "
               f"{report.seconds:.1f}s{resumed}")
    missing = report.skipped.get(NO_IMAGE_VECTOR)
    if missing:
        click.echo(f"  {missing:,} points have no image vector: left without labels")
    if report.cleared:
        click.echo(f"  {report.cleared:,} points outside the filter lost the field's earlier labels")
    width = max((display_width(name) for name in report.classes), default=0)
    for name, count in sorted(report.counts.items(), key=lambda item: -item[1]):
        click.echo(f"  {pad(name, width)}  {count:>8,}")


def ingest_labelers(labels_path: str | None, templates: tuple[str, ...], field: str, top_k: int,
                    engine: str = "local") -> list:
    """``ingest --labels FILE [--template T]... [--label-field] [--label-top-k]`` as ``IngestOptions.labelers``
    entries (the labeler is made with the run's model once it has loaded); [] without --labels."""
    if not labels_path:
        if templates:
            raise click.UsageError("--template goes with --labels FILE")
        return []
    if engine != "local":
        raise click.UsageError("--labels runs on the local engine (the labels are made with the run's model): "
                               "ingest with --engine ray first, then run `mmindex label`")
    labels, templates = read_labels(labels_path), check_templates(templates)
    return [(field, top_k, lambda encoder: labeler_from_encoder(encoder, labels, templates))]


# --- train --task classify and eval --task classify: the linear probe and the article's metrics (models.py
# dispatches on --task; the options are declared here so the commands keep one list each).

CLASSIFY = "classify"
TRAIN_CLASSIFY_TAKES = {"task", "output", "seed", "as_json", "progress_interval", *STORE_PARAMS}
TRAIN_CLASSIFY_ONLY = {"label_col", "field", "where", *STORE_PARAMS}
EVAL_CLASSIFY_TAKES = {"task", "as_json", "model", "text_model", "device", "backend", "model_threads", *STORE_PARAMS}
EVAL_CLASSIFY_ONLY = {"label_col", "labels_path", "templates", "probe_path", "holdout", "seed", "plot", "where"}
LABEL_COL_HELP = "With --task classify: the payload column holding the labels to learn, e.g. --label-col shape."
WHERE_HELP = ("With --task classify: only the points this filter matches, as `query --where` filters, e.g. "
              "--where \"year >= 2020\".")


def train_task_options(function):
    """``train``'s --task and the options of ``train --task classify`` (with the store options)."""
    function = store_options(function, collection_required=False,
                             collection_help="With --task classify: the collection whose stored image vectors and "
                                             "labels the probe learns from, e.g. -c shapes.")
    for decorator in reversed([
        click.option("--task", type=click.Choice(["contrastive", CLASSIFY]), default="contrastive",
                     show_default=True,
                     help="contrastive: fine-tune a CLIP on image–caption pairs in INPUTS; classify: fit a linear "
                          "probe on a collection's labelled points (no INPUTS). E.g. --task classify -c shapes "
                          "--label-col shape -o probe.json."),
        click.option("--label-col", default=None, help=LABEL_COL_HELP),
        click.option("--field", default=None,
                     help="With --task classify: the payload field the predictions go to (and FIELD_score, "
                          "FIELD_top, FIELD_top_scores); default COL_predicted. E.g. --field shape_guess."),
        click.option("--where", "-w", default=None, help=WHERE_HELP),
    ]):
        function = decorator(function)
    return function


def eval_task_options(function):
    """``eval``'s --task and the options of ``eval --task classify``."""
    for decorator in reversed([
        click.option("--task", type=click.Choice(["retrieval", CLASSIFY]), default="retrieval", show_default=True,
                     help="retrieval: rank image–caption pairs of INPUTS; classify: score zero-shot labels and a "
                          "linear probe against a collection's label column (no INPUTS). E.g. --task classify "
                          "-c shapes --label-col shape --labels shapes.txt."),
        click.option("--label-col", default=None, help=LABEL_COL_HELP),
        click.option("--labels", "labels_path", default=None, type=INPUT_FILE, metavar="FILE",
                     help="With --task classify: also score zero-shot labels from this labels file (one per line), "
                          "e.g. --labels shapes.txt."),
        click.option("--template", "templates", multiple=True, metavar="TEXT", help="With --labels: " + TEMPLATE_HELP),
        click.option("--probe", "probe_path", default=None, type=INPUT_FILE, metavar="FILE",
                     help="With --task classify: score this saved probe instead of one fitted on the training side, "
                          "e.g. --probe probe.json."),
        click.option("--holdout", default=DEFAULT_HOLDOUT, show_default=True, type=click.FloatRange(0, 1, min_open=True,
                                                                                                    max_open=True),
                     help="With --task classify: share of the points held out for scoring, chosen by point id (the "
                          "probe learns from the rest). E.g. --holdout 0.3."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="With --task classify: seed of the held-out split. E.g. --seed 1."),
        click.option("--plot", default=None, type=click.Path(dir_okay=False), metavar="PNG",
                     help="With --task classify: draw the confusion matrices, side by side, into this PNG, e.g. "
                          "--plot confusion.png."),
        click.option("--where", "-w", default=None, help=WHERE_HELP),
    ]):
        function = decorator(function)
    return function


def _option_name(param: click.Parameter) -> str:
    return "INPUTS" if isinstance(param, click.Argument) else max(param.opts, key=len)


def check_task(task: str, takes: set[str], only: set[str]) -> bool:
    """True for --task classify. UsageError naming the first option given on the command line that the task does not
    take (``takes`` and ``only`` are what classify takes; ``only`` nothing else takes), INPUTS with classify, no
    INPUTS without it, and no --label-col with it."""
    ctx = click.get_current_context()
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        if task == CLASSIFY and param.name not in takes | only:
            if isinstance(param, click.Argument):
                raise click.UsageError("INPUTS do not go with --task classify: it reads the collection's stored "
                                       "vectors and labels (-c NAME --label-col COL)")
            raise click.UsageError(f"{_option_name(param)} does not go with --task classify")
        if task != CLASSIFY and param.name in only:
            raise click.UsageError(f"{_option_name(param)} goes with --task classify")
    if task != CLASSIFY:
        if not ctx.params.get("inputs"):
            raise click.UsageError("Missing argument 'INPUTS...'.")
        return False
    if not ctx.params.get("label_col"):
        raise click.UsageError("--task classify needs --label-col COL: the payload column holding the labels")
    if not ctx.params.get("collection"):
        raise click.UsageError("--task classify reads a collection: give -c NAME")
    return True


def train_classify(output, seed, as_json, progress_interval, store, label_col, field, where) -> None:
    """``train --task classify``: ``labelled.train_probe`` and its report."""
    report = run_with_progress(store, "predict", as_json, progress_interval,
                               lambda opened, on_progress: train_probe(opened, label_col, output, field, where, seed,
                                                                       on_progress=on_progress, place=store.place))
    echo_report(report, as_json, print_probe_report)


def print_probe_report(report) -> None:
    """What ``train --task classify`` learnt and predicted: the chosen C, the file, the counts per class."""
    chosen = next((row for row in report.selection if row["c"] == report.c), None)
    validation = f", validation accuracy {chosen['accuracy']:.3f}" if chosen else ""
    click.echo(f"linear probe of {report.label_col!r} on {report.labelled:,} labelled points of "
               f"{report.points:,} in collection {report.collection!r}: {len(report.classes)} classes, "
               f"C={report.c:g}{validation}; saved to {report.output}")
    predicted = report.predictions
    if not predicted:
        click.echo(f"  every point carries a {report.label_col!r}: nothing to predict")
        return
    click.echo(f"  {predicted['labelled']:,} points without a label got {report.field!r} (and "
               f"{report.field}_score, its probability) in {report.seconds:.1f}s")
    width = max(display_width(name) for name in report.classes)
    for name in report.classes:
        click.echo(f"  {pad(name, width)}  trained on {report.counts.get(name, 0):>6,}  "
                   f"predicted {predicted['counts'].get(name, 0):>6,}")


def eval_classify(store, as_json, device, backend, model_threads, label_col, labels_path, templates, probe_path,
                  holdout, seed, plot, where, model=None, text_model=None) -> None:
    """``eval --task classify``: ``evaluate.evaluate_classifiers``, as a table or JSON, and the plot."""
    if templates and not labels_path:
        raise click.UsageError("--template goes with --labels FILE")
    check_model_options(model, text_model, labels_path)
    labels = read_labels(labels_path) if labels_path else None
    templates = check_templates(templates) if labels else None
    probe = load_probe(probe_path) if probe_path else None
    opened = store.open()
    try:
        evaluation = evaluate_classifiers(opened, label_col, labels, templates, probe, holdout, seed, where,
                                          Runtime(device, backend, model_threads), place=store.place, model=model,
                                          text_model=text_model)
    finally:
        opened.close()
    results = [result.to_dict() for result in evaluation.results]
    legend = plot_legend(results) if plot else {}
    if plot:
        save_confusion_png(results, plot)
    if as_json:
        numbered = {str(number): name for number, name in legend.items()}
        click.echo(json.dumps({**evaluation.to_dict(), "plot": plot, "plot_legend": numbered}, ensure_ascii=False))
        return
    click.echo(f"collection {evaluation.collection!r}, label column {evaluation.label_col!r}: "
               f"{evaluation.points:,} points; {evaluation.heldout_points:,} held out for scoring "
               f"(--holdout {evaluation.holdout:g}, seed {evaluation.seed}), {evaluation.train_points:,} "
               + ("not used (--probe is scored as saved)" if probe_path else "to fit the probe"))
    for result in results:
        print_scores(result)
    if plot:
        click.echo(f"confusion matrices drawn to {plot}")
    if legend:
        click.echo(f"  warning: no font here can draw {len(legend)} class name(s), so the plot numbers them: "
                   + ", ".join(f"#{number} = {name}" for number, name in legend.items())
                   + " (install a font that covers them, e.g. Noto Sans CJK, to see the names)", err=True)


def print_scores(result: dict) -> None:
    """One classifier: accuracy and the F1 averages, the per-class table, the confusion matrix (columns numbered
    as the rows)."""
    click.echo(f"{result['classifier']}: accuracy {result['accuracy']:.3f}  macro F1 {result['macro_f1']:.3f}  "
               f"weighted F1 {result['weighted_f1']:.3f}  ({result['examples']:,} points)")
    for warning in result["warnings"]:
        click.echo(f"  warning: {warning}", err=True)
    names = [str(label) for label in result["labels"]]
    width = max(max(display_width(name) for name in names), 5)
    click.echo(f"  {'class':<{width}}  precision  recall      F1  support")
    for row in result["classes"]:
        click.echo(f"  {pad(str(row['label']), width)}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  "
                   f"{row['f1']:>6.3f}  {row['support']:>7,}")
    cell = max(4, len(str(max(max(row) for row in result["confusion"]))) + 1)
    click.echo("  confusion (rows: true class; columns: predicted, numbered as the rows):")
    click.echo(f"  {'':<{width + 4}}" + "".join(f"{j + 1:>{cell}}" for j in range(len(names))))
    for i, (name, row) in enumerate(zip(names, result["confusion"])):
        click.echo(f"  {i + 1:>2}. {pad(name, width)}" + "".join(f"{count:>{cell}}" for count in row))


def pad(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` screen columns (a wide CJK character takes two: ``display_width``)."""
    return text + " " * max(width - display_width(text), 0)


def labels_or_probe(labels_path: str | None, templates: tuple[str, ...], probe_path: str | None):
    """``label``: (the labels, None) for --labels, (None, the probe) for --probe; UsageError for both or neither,
    and for --template with --probe."""
    if bool(labels_path) == bool(probe_path):
        raise click.UsageError("give one of --labels FILE (zero-shot labels) or --probe FILE (a saved linear probe)")
    if probe_path and templates:
        raise click.UsageError("--template goes with --labels, not with --probe")
    return (read_labels(labels_path), None) if labels_path else (None, load_probe(probe_path))


def check_model_options(model: str | None, text_model: str | None, labels_path: str | None) -> None:
    """UsageError for --model or --text-model without --labels: only zero-shot labels load a model (a probe reads
    the stored image vectors alone)."""
    for option, value in (("--model", model), ("--text-model", text_model)):
        if value is not None and not labels_path:
            raise click.UsageError(f"{option} goes with --labels FILE: it loads the text model that embeds the "
                                   "labels (a probe needs no model)")


def probe_field(field: str, probe) -> str:
    """The field to write: --field when given on the command line, else the one the probe was trained to write."""
    ctx = click.get_current_context()
    if probe is not None and probe.field and ctx.get_parameter_source("field") != ParameterSource.COMMANDLINE:
        return probe.field
    return field


def probe_labelers(probe_path: str | None, top_k: int, engine: str = "local", field: str | None = None) -> list:
    """``ingest --probe FILE`` as an ``IngestOptions.labelers`` entry writing ``field`` (default: the field the
    probe was trained to write, else ``predicted``); [] without --probe."""
    if not probe_path:
        return []
    if engine != "local":
        raise click.UsageError("--probe runs on the local engine: ingest with --engine ray first, then run "
                               "`mmindex label --probe FILE`")
    probe = load_probe(probe_path)
    return [(field or probe.field or "predicted", top_k, probe)]


def given_label_field(labels_path: str | None, probe_path: str | None, label_field: str) -> str | None:
    """``ingest``: --label-field when it was given (command line, config file or environment), else None.
    UsageError for --label-field or --label-top-k given without --labels or --probe (they would do nothing)."""
    ctx = click.get_current_context()
    given = {name: ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
             for name in ("label_field", "label_top_k")}
    if not labels_path and not probe_path:
        for name, option in (("label_field", "--label-field"), ("label_top_k", "--label-top-k")):
            if given[name]:
                raise click.UsageError(f"{option} goes with --labels FILE or --probe FILE")
    return label_field if given["label_field"] else None
