"""The linear probe (``train --task classify``): its probabilities against scikit-learn's on the same fit, the probe
file's round trip and its refusals, the predictions written on both stores into exactly the points without a label
(checked against the saved probe applied to their stored vectors), ``label --probe`` and ``ingest --probe``, and each
bad input refused in one line with nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.classify import SHAPES, all_payloads, open_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex import IngestOptions, ingest
from mmindex.errors import CollectionMismatchError, InputError, UsageError
from mmindex.pipeline.classify.labelled import train_probe
from mmindex.pipeline.classify.predictions import label_collection
from mmindex.pipeline.classify.probe import C_GRID, LinearProbe, fit_probe, load_probe

UNLABELLED_EVERY = 3  # every third point (in id order) loses its shape


def blobs(seed: int, classes: int, n: int = 60, dim: int = 6):
    rng = np.random.default_rng(seed)
    labels = [f"class {i % classes}" for i in range(n)]
    centres = rng.normal(size=(classes, dim)) * 2
    return centres[np.arange(n) % classes] + rng.normal(size=(n, dim)), labels


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 5), c=st.sampled_from([0.1, 1.0, 30.0]))
def test_probabilities_are_scikit_learns_on_the_same_fit(seed, classes, c):
    from sklearn.linear_model import LogisticRegression

    vectors, labels = blobs(seed, classes)
    probe = fit_probe(vectors, labels, {"model": "m", "dim": 6}, c=c)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    oracle = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(unit, labels)
    assert probe.classes == list(oracle.classes_) and probe.c == c and probe.selection == []
    fresh = np.random.default_rng(seed + 1).normal(size=(7, 6))
    np.testing.assert_allclose(probe.predict_proba(fresh), oracle.predict_proba(fresh / np.linalg.norm(
        fresh, axis=1, keepdims=True)), atol=1e-9)
    assert probe.counts == {name: labels.count(name) for name in probe.classes}


def test_c_is_chosen_on_a_validation_share_and_the_fit_is_deterministic():
    vectors, labels = blobs(4, 3, n=120)
    ids = [f"point-{i}" for i in range(120)]
    probe = fit_probe(vectors, labels, {"model": "m"}, ids=ids)
    again = fit_probe(vectors[::-1], labels[::-1], {"model": "m"}, ids=ids[::-1])  # another order, same split
    assert [row["c"] for row in probe.selection] == list(C_GRID)
    best = max(probe.selection, key=lambda row: (row["accuracy"], -row["log_loss"], -row["c"]))
    assert probe.c == best["c"] == again.c
    np.testing.assert_allclose(probe.predict_proba(vectors), again.predict_proba(vectors), atol=1e-7)


NAMES = st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=6, unique=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=NAMES, seed=st.integers(0, 1000))
def test_a_saved_probe_loads_as_it_was(tmp_path, names, seed):
    rng = np.random.default_rng(seed)
    probe = LinearProbe(names, rng.normal(size=(len(names), 4)), rng.normal(size=len(names)),
                        {"model": "m", "dim": 4, "fingerprint": "f", "precision": "fp32"}, "kind of thing", "guess",
                        {name: i for i, name in enumerate(names)}, 3.5, created="2026-01-01T00:00:00+00:00")
    loaded = load_probe(probe.save(tmp_path / "probe.json"))
    assert loaded.to_dict() == probe.to_dict() and loaded.describe() == probe.describe()
    vectors = rng.normal(size=(5, 4))
    assert np.array_equal(loaded.predict_proba(vectors), probe.predict_proba(vectors))


def probe_text(**changes):
    probe = LinearProbe(["a", "b"], np.zeros((2, 3)), np.zeros(2), {"model": "m", "dim": 3})
    return json.dumps({**probe.to_dict(), **changes})


@pytest.mark.parametrize("text, says", [
    ("not json {", "is not a probe file (not JSON)"),
    ("[1, 2]", "is not a probe file"),
    (json.dumps({"format": "something else"}), "is not a probe file"),
    (probe_text(version=2), "is of version 2; this mmindex reads version 1"),
    (probe_text(coef=[[0, 0, 0]]), "is damaged: weights of shape (1, 3)"),
    (probe_text(classes=["a", "a"]), "is damaged: a class is named twice"),
    (probe_text(model={"model": "m", "dim": 5}), "is damaged: weights for 3-d vectors"),
    (probe_text(coef=[[0, 0, "x"], [0, 0, 0]]), "is damaged"),
    (json.dumps({key: value for key, value in json.loads(probe_text()).items() if key != "model"}),
     "is damaged: it has no 'model' entry"),
])
def test_a_file_that_is_not_a_probe_is_one_line(tmp_path, text, says):
    path = tmp_path / "probe.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=None) as error:
        load_probe(path)
    assert says in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(InputError, match="cannot read probe file"):
        load_probe(tmp_path / "missing.json")


def unlabel(store, every=UNLABELLED_EVERY):
    """Remove ``shape`` from every ``every``-th point (id order); returns their ids."""
    payloads = all_payloads(store)
    chosen = sorted(payloads)[::every]
    store.overwrite_payloads([(i, {k: v for k, v in payloads[i].items() if k != "shape"}) for i in chosen])
    return set(chosen)


def stored_vectors(store, ids):
    return {p.id: p.vectors["image"] for p in store.retrieve(sorted(ids), with_vectors=True)}


def test_the_probe_predicts_exactly_the_points_without_a_label(collection, tmp_path):
    unlabelled = unlabel(collection)
    before = all_payloads(collection)
    report = train_probe(collection, "shape", tmp_path / "probe.json", seed=0)
    after = all_payloads(collection)
    probe = load_probe(tmp_path / "probe.json")
    assert report.field == probe.field == "shape_predicted" and report.labelled == 60 - len(unlabelled)
    assert report.predictions["labelled"] == len(unlabelled) and probe.label_col == "shape"
    assert probe.counts == {s: sum(p.get("shape") == s for p in before.values()) for s in probe.classes}
    assert {i for i, p in after.items() if "shape_predicted" in p} == unlabelled
    assert all(after[i] == before[i] for i in after if i not in unlabelled)  # labelled points untouched
    vectors = stored_vectors(collection, unlabelled)
    for point_id in unlabelled:
        probabilities = probe.predict_proba(np.asarray([vectors[point_id]]))[0]
        assert after[point_id]["shape_predicted"] == probe.classes[int(np.argmax(probabilities))]
        assert after[point_id]["shape_predicted_score"] == pytest.approx(probabilities.max(), abs=1e-6)
        assert {k: v for k, v in after[point_id].items() if not k.startswith("shape_predicted")} == before[point_id]


def test_a_probe_file_is_written_as_json_without_pickle(collection, tmp_path):
    unlabel(collection)
    train_probe(collection, "shape", tmp_path / "probe.json", field="guess")
    data = json.loads((tmp_path / "probe.json").read_text(encoding="utf-8"))
    assert data["format"] == "mmindex-probe" and data["version"] == 1 and data["field"] == "guess"
    assert data["model"] == {"model": collection.spec().model, "fingerprint": collection.spec().fingerprint,
                             "dim": collection.spec().dim, "precision": collection.spec().precision}
    assert len(data["coef"]) == len(data["classes"]) and set(data["classes"]) <= set(SHAPES)


@pytest.mark.parametrize("column, where, error_type, says", [
    ("kind", None, UsageError, "--label-col kind: collection 'shapes' has no payload field 'kind'"),
    ("shape", "shape = circle", InputError, "only one class ('circle')"),
    ("shape", "shape is null", InputError, "no labels in --label-col shape"),
    ("tags", None, InputError, "a label column holds one value per point"),
])
def test_bad_label_columns_are_one_line_and_write_nothing(collection, tmp_path, column, where, error_type, says):
    unlabel(collection)
    before, meta = all_payloads(collection), collection.metadata()
    with pytest.raises(error_type) as error:
        train_probe(collection, column, tmp_path / "probe.json", where=where)
    assert says in str(error.value) and "\n" not in str(error.value)
    assert all_payloads(collection) == before and collection.metadata() == meta
    assert not (tmp_path / "probe.json").exists()


def test_a_field_holding_the_collections_data_is_refused_before_the_fit(collection, tmp_path):
    unlabel(collection)
    with pytest.raises(UsageError, match="--field color"):
        train_probe(collection, "shape", tmp_path / "probe.json", field="color")
    assert not (tmp_path / "probe.json").exists()


def test_a_probe_of_another_model_writes_nothing(collection, tmp_path):
    unlabel(collection)
    train_probe(collection, "shape", tmp_path / "probe.json")
    probe = load_probe(tmp_path / "probe.json")
    probe.model = {**probe.model, "model": "another-model", "fingerprint": "0" * 16}
    before, meta = all_payloads(collection), collection.metadata()
    with pytest.raises(CollectionMismatchError) as error:
        label_collection(collection, probe, "shape_predicted")
    assert "probe labeler was made for image vectors of model 'another-model'" in str(error.value)
    assert "\n" not in str(error.value)
    assert all_payloads(collection) == before and collection.metadata() == meta


@pytest.fixture
def edge_dir(tmp_path, encoder, sample_dir):
    """The sample in collection 'shapes' of an embedded store under tmp_path/store, every third shape removed,
    closed again for the CLI."""
    store = open_store("edge", "shapes", tmp_path / "store")
    ingest([str(sample_dir)], store, encoder, IngestOptions(source_name="sample", pipelined=False))
    unlabel(store)
    store.close()
    return tmp_path / "store"


def test_train_task_classify_then_label_with_the_probe(cli, edge_dir):
    store = ("-c", "shapes", "--data-dir", edge_dir)
    trained = cli("train", "--task", "classify", *store, "--label-col", "shape", "-o", "probe.json", "--json")
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)
    assert report["predictions"]["labelled"] == 20 and report["field"] == "shape_predicted"
    labelled = cli("label", *store, "--probe", "probe.json", "--where", "shape is not null", "--json")
    assert labelled.exit_code == 0, labelled.output
    assert json.loads(labelled.stdout)["labelled"] == 40 and json.loads(labelled.stdout)["kind"] == "probe"
    text = cli("train", "--task", "classify", *store, "--label-col", "shape", "-o", "probe.json")
    assert text.stdout.startswith("linear probe of 'shape' on 40 labelled points of 60"), text.output


@pytest.mark.slow
def test_ingest_with_a_probe_writes_its_prediction(cli, edge_dir, tmp_path, tiny_model, sample_dir):
    store = open_store("edge", "shapes", edge_dir)
    try:
        train_probe(store, "shape", tmp_path / "probe.json")
    finally:
        store.close()
    fresh = cli("ingest", sample_dir, "-c", "fresh", "--data-dir", edge_dir, "--model", tiny_model, "--probe",
                "probe.json", "--quiet", "--json")
    assert fresh.exit_code == 0, fresh.output
    probe, opened = load_probe(tmp_path / "probe.json"), open_store("edge", "fresh", edge_dir)
    try:
        payloads = all_payloads(opened)
        vectors = stored_vectors(opened, payloads)
    finally:
        opened.close()
    assert all(payloads[i]["shape_predicted"] == probe.predict(np.asarray([vectors[i]]))[0] for i in payloads)


@pytest.mark.parametrize("args, says", [
    (("--task", "classify", "--label-col", "shape", "--loss", "triplet"), "--loss does not go with --task classify"),
    (("--task", "classify", "--label-col", "shape", "data/"), "INPUTS do not go with --task classify"),
    (("--task", "classify", "--label-col", "shape", "--epochs", "3"), "--epochs does not go with --task classify"),
    (("--task", "classify"), "--task classify needs --label-col COL"),
    (("--label-col", "shape", "data/"), "--label-col goes with --task classify"),
    (("-c", "shapes", "data/", "--model", "m"), "--collection goes with --task classify"),
    (("--model", "m",), "Missing argument 'INPUTS...'"),
])
def test_train_refuses_options_of_the_other_task(cli, args, says):
    result = cli("train", "-o", "probe.json", *args)
    assert result.exit_code == 2 and says in result.output, result.output


def test_label_needs_labels_or_a_probe_and_a_probe_file(cli, edge_dir, tmp_path):
    store = ("-c", "shapes", "--data-dir", edge_dir)
    neither = cli("label", *store)
    assert neither.exit_code == 2 and "give one of --labels FILE" in neither.output
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    bad = cli("label", *store, "--probe", tmp_path / "bad.json")
    assert bad.exit_code == 1 and "is not a probe file" in bad.output and len(bad.output.splitlines()) == 1


def test_ingest_with_a_probe_writes_the_label_field_given(cli, edge_dir, tmp_path, tiny_model, sample_dir):
    store = ("-c", "shapes", "--data-dir", edge_dir)
    assert cli("train", "--task", "classify", *store, "--label-col", "shape", "-o", "probe.json").exit_code == 0
    fresh = cli("ingest", sample_dir, "-c", "fresh", "--data-dir", edge_dir, "--model", tiny_model, "--probe",
                "probe.json", "--label-field", "guess", "--label-top-k", "2", "--quiet", "--json")
    assert fresh.exit_code == 0, fresh.output
    opened = open_store("edge", "fresh", edge_dir)
    try:
        payloads = all_payloads(opened)
    finally:
        opened.close()
    assert all(len(p["guess_top"]) == 2 and "shape_predicted" not in p for p in payloads.values())


@pytest.mark.parametrize("option", [("--label-field", "guess"), ("--label-top-k", "2")])
def test_ingest_label_options_without_labels_or_a_probe_are_refused(cli, tmp_path, tiny_model, sample_dir, option):
    result = cli("ingest", sample_dir, "-c", "fresh", "--data-dir", tmp_path / "none", "--model", tiny_model, *option)
    assert result.exit_code == 2 and f"{option[0]} goes with --labels FILE or --probe FILE" in result.output
    assert not (tmp_path / "none").exists()
