"""``eval --task classify``: the held-out split by point id (deterministic, disjoint, independent of order), the
scores equal ``training.classification`` on the same predictions on both stores (zero-shot labels and the probe),
the CLI's JSON, table and PNG, and the bad inputs — nulls in the label column, an absent column, one class on the
training side, a probe of another model — each one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.classify import SHAPES, all_payloads, open_store
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmindex import IngestOptions, ingest
from mmindex.errors import CollectionMismatchError, InputError, UsageError
from mmindex.pipeline.classify.evaluate import SPLIT_SALT, evaluate_classifiers
from mmindex.pipeline.classify.labelled import read_labelled
from mmindex.pipeline.classify.plot import CELL, WHITE, draw_confusion, save_confusion_png, shade
from mmindex.pipeline.classify.predictions import model_record
from mmindex.pipeline.classify.probe import fit_probe
from mmindex.pipeline.classify.split import held_out
from mmindex.pipeline.classify.zero_shot import labeler_from_encoder
from mmindex.pipeline.training.classification import classification_report

IDS = st.lists(st.uuids().map(str), min_size=1, max_size=60, unique=True)


@settings(max_examples=60, deadline=None)
@given(ids=IDS, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 50), order=st.randoms(use_true_random=False))
def test_the_split_is_by_id_alone(ids, fraction, seed, order):
    side = dict(zip(ids, held_out(ids, fraction, seed)))
    shuffled = list(ids)
    order.shuffle(shuffled)
    subset = shuffled[: len(shuffled) // 2 + 1]
    assert dict(zip(subset, held_out(subset, fraction, seed))) == {i: side[i] for i in subset}
    wider = held_out(ids, min(fraction + 0.04, 0.99), seed)
    assert all(w or not s for w, s in zip(wider, side.values()))  # a larger share holds out a superset


def test_the_split_holds_out_about_its_share_and_depends_on_the_seed():
    ids = [f"point-{i}" for i in range(4000)]
    side = held_out(ids, 0.3, seed=0)
    assert abs(side.mean() - 0.3) < 0.03
    assert (side != held_out(ids, 0.3, seed=1)).sum() > 1000


def expected_results(store, encoder, labels, seed=0, holdout=0.5):
    """The oracle: the same split, a zero-shot labeler and a probe made apart, scored by classification_report."""
    points = read_labelled(store, "shape")
    side = held_out(points.ids, holdout, seed, salt=SPLIT_SALT)
    truth = [label for label, out in zip(points.labels, side) if out]
    zero_shot = labeler_from_encoder(encoder, labels, ["a {}"], model_record(store.spec()))
    probe = fit_probe(points.vectors[~side], [lab for lab, out in zip(points.labels, side) if not out],
                      model_record(store.spec()), seed=seed, ids=[i for i, out in zip(points.ids, side) if not out])
    return [classification_report(truth, labeler.predict(points.vectors[side]) if labeler is probe else
                                  [labels[i] for i in np.argmax(labeler.predict_proba(points.vectors[side]), axis=1)])
            for labeler in (zero_shot, probe)]


def test_the_scores_are_classification_reports_on_the_same_predictions(collection, encoder, monkeypatch):
    monkeypatch.setattr("mmindex.pipeline.classify.evaluate.zero_shot_labeler",  # the tiny model, not a download
                        lambda store, labels, templates, runtime, place="", **models: labeler_from_encoder(
                            encoder, labels, templates, model_record(store.spec())))
    evaluation = evaluate_classifiers(collection, "shape", SHAPES, ["a {}"], seed=3)
    zero_shot, probe = expected_results(collection, encoder, SHAPES, seed=3)
    assert [r.name for r in evaluation.results] == ["zero-shot", "probe"]
    assert evaluation.results[0].report.to_dict() == zero_shot.to_dict()
    assert evaluation.results[1].report.to_dict() == probe.to_dict()
    assert evaluation.heldout_points + evaluation.train_points == evaluation.points == 60
    assert evaluation.heldout_points == zero_shot.examples


def test_nulls_in_the_label_column_are_refused_with_the_where_that_leaves_them_out(collection):
    payloads = all_payloads(collection)
    chosen = sorted(payloads)[:7]
    collection.overwrite_payloads([(i, {k: v for k, v in payloads[i].items() if k != "shape"}) for i in chosen])
    with pytest.raises(InputError) as error:
        evaluate_classifiers(collection, "shape", where="year >= 2000")
    message = str(error.value)
    assert "7 of the 60 points in scope have no value" in message and "\n" not in message
    assert 'with --where "(year >= 2000) and shape is not null"' in message
    measured = evaluate_classifiers(collection, "shape", where="(year >= 2000) and shape is not null")
    assert measured.points == 53


@pytest.mark.parametrize("column, where, error_type, says", [
    ("kind", None, UsageError, "collection 'shapes' has no payload field 'kind'"),
    ("shape", "shape = circle", InputError, "only one class ('circle')"),
])
def test_a_missing_column_or_a_single_class_is_one_line(collection, column, where, error_type, says):
    with pytest.raises(error_type) as error:
        evaluate_classifiers(collection, column, where=where)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_a_given_probe_is_scored_and_one_of_another_model_refused(collection, tmp_path):
    points = read_labelled(collection, "shape")
    probe = fit_probe(points.vectors, points.labels, model_record(collection.spec()), c=10.0)
    measured = evaluate_classifiers(collection, "shape", probe=probe)
    assert measured.results[0].labeler["sha"] == probe.describe()["sha"]
    assert any("a saved probe (--probe), not fitted on this split" in w for w in measured.results[0].warnings)
    assert not any("saved probe" in w for w in evaluate_classifiers(collection, "shape").results[0].warnings)
    probe.model = {**probe.model, "model": "another-model", "fingerprint": "0" * 16}
    with pytest.raises(CollectionMismatchError, match="made for image vectors of model 'another-model'"):
        evaluate_classifiers(collection, "shape", probe=probe)


def test_the_plot_shades_each_cell_by_its_share_of_the_row(tmp_path):
    report = classification_report(["a"] * 4 + ["b"] * 2 + ["c"] * 3, ["a"] * 3 + ["b"] + ["b"] * 2 + ["a"] * 3)
    results = [{**report.to_dict(), "classifier": "probe"}, {**report.to_dict(), "classifier": "zero-shot"}]
    path = save_confusion_png(results, tmp_path / "plot.png")
    _, panels = draw_confusion(results)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (panels[1].left + panels[1].width, max(p.height for p in panels))
        assert panels[1].left >= panels[0].width and image.width >= 2 * 3 * CELL
        pixels = image.convert("RGB")
        for panel in panels:
            confusion = report.confusion
            for i, row in enumerate(confusion):
                for j, count in enumerate(row):
                    x, y = panel.cell_centre(i, j)
                    corner = pixels.getpixel((x - CELL // 2 + 3, y - CELL // 2 + 3))  # off the count's digits
                    assert corner == (shade(count / sum(row)) if count else WHITE)


@pytest.fixture
def edge_dir(tmp_path, encoder, sample_dir):
    store = open_store("edge", "shapes", tmp_path / "store")
    ingest([str(sample_dir)], store, encoder, IngestOptions(source_name="sample", pipelined=False))
    store.close()
    return tmp_path / "store"


def test_eval_task_classify_json_table_and_plot(cli, edge_dir, tmp_path):
    store = ("-c", "shapes", "--data-dir", edge_dir)
    result = cli("eval", "--task", "classify", *store, "--label-col", "shape", "--seed", "2", "--plot", "cm.png",
                 "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    opened = open_store("edge", "shapes", edge_dir)
    try:
        points = read_labelled(opened, "shape")
    finally:
        opened.close()
    side = held_out(points.ids, 0.5, 2, salt=SPLIT_SALT)
    probe = fit_probe(points.vectors[~side], [lab for lab, out in zip(points.labels, side) if not out], {}, seed=2,
                      ids=[i for i, out in zip(points.ids, side) if not out])
    expected = classification_report([lab for lab, out in zip(points.labels, side) if out],
                                      probe.predict(points.vectors[side])).to_dict()
    (measured,) = report["results"]
    assert {key: measured[key] for key in expected} == expected and measured["classifier"] == "probe"
    with Image.open(tmp_path / "cm.png") as image:
        assert image.format == "PNG" and image.width >= len(expected["labels"]) * CELL
    table = cli("eval", "--task", "classify", *store, "--label-col", "shape", "--seed", "2")
    assert f"probe: accuracy {expected['accuracy']:.3f}  macro F1 {expected['macro_f1']:.3f}" in table.stdout
    assert "confusion (rows: true class" in table.stdout


@pytest.mark.parametrize("args, says", [
    (("--task", "classify", "-c", "shapes", "--label-col", "shape", "--compare", "dense"),
     "--compare does not go with --task classify"),
    (("--task", "classify", "-c", "shapes", "--label-col", "shape", "data/"), "INPUTS do not go with --task"),
    (("--task", "classify", "--label-col", "shape"), "--task classify reads a collection: give -c NAME"),
    (("data/", "--holdout", "0.3"), "--holdout goes with --task classify"),
    (("--task", "classify", "-c", "shapes", "--label-col", "shape", "--template", "a {}"),
     "--template goes with --labels FILE"),
    ((), "Missing argument 'INPUTS...'"),
])
def test_eval_refuses_options_of_the_other_task(cli, args, says):
    result = cli("eval", *args)
    assert result.exit_code == 2 and says in result.output, result.output


def test_eval_with_a_corrupt_probe_file_is_one_line(cli, edge_dir, tmp_path):
    (tmp_path / "probe.json").write_text('{"format": "mmindex-probe", "version": 1, "classes": ["a"]}', "utf-8")
    result = cli("eval", "--task", "classify", "-c", "shapes", "--data-dir", edge_dir, "--label-col", "shape",
                 "--probe", "probe.json")
    assert result.exit_code == 1 and "is damaged" in result.output and len(result.output.splitlines()) == 1


def test_eval_with_a_saved_probe_says_the_training_side_is_unused(cli, edge_dir, tmp_path):
    store = ("-c", "shapes", "--data-dir", edge_dir)
    assert cli("train", "--task", "classify", *store, "--label-col", "shape", "-o", "probe.json").exit_code == 0
    result = cli("eval", "--task", "classify", *store, "--label-col", "shape", "--probe", "probe.json")
    assert result.exit_code == 0, result.output
    assert "not used (--probe is scored as saved)" in result.stdout.splitlines()[0]
    assert "warning: probe: a saved probe (--probe), not fitted on this split" in result.stderr
