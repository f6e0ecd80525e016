"""``label_collection`` (``mmindex label``) and ``label_fields``: the fields written from stored image vectors on
both stores, resumed after a kill, replaced by other labels, limited by a filter, and the bad inputs refused in one
line with nothing written; ``ingest`` with labelers writes the same fields."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers.classify import COLORS, SHAPES, all_payloads, open_store

from mmindex import IngestOptions, ingest
from mmindex.connectors.base import PointRecord
from mmindex.errors import CollectionMismatchError, InputError, UsageError
from mmindex.pipeline.classify.predictions import (LABELS_KEY, NO_IMAGE_VECTOR, label_collection, label_fields,
                                                   model_record)
from mmindex.pipeline.classify.zero_shot import ZeroShotLabeler, labeler_from_encoder
from mmindex.pipeline.query.facets import facets
from mmindex.pipeline.query.filters import compile_filter

KEYS = ("label", "label_score", "label_top", "label_top_scores")


def labeler_for(store, encoder, labels=SHAPES, templates=("a {}",)):
    return labeler_from_encoder(encoder, labels, list(templates), model_record(store.spec()))


def label_part(payload, name="label"):
    return {key: payload[key] for key in (name, f"{name}_score", f"{name}_top", f"{name}_top_scores")
            if key in payload}


def test_label_fields_against_a_plain_oracle():
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c", "d"]
    vectors = rng.normal(size=(30, 5)).astype(np.float32)
    vectors[0] = 0.0  # no direction: every class equally likely, ties broken in the classes' order
    labeler = ZeroShotLabeler(classes, ["{}"], np.eye(4, 5, dtype=np.float32), 10.0, {"model": "m"})
    rows = label_fields(labeler, vectors, "guess", top_k=3)
    probabilities = labeler.predict_proba(vectors)
    for row, p in zip(rows, probabilities):
        ranked = sorted(range(4), key=lambda i: (-p[i], i))[:3]
        assert row == {"guess": classes[ranked[0]], "guess_score": round(p[ranked[0]], 6),
                       "guess_top": [classes[i] for i in ranked],
                       "guess_top_scores": [round(p[i], 6) for i in ranked]}
    assert rows[0]["guess_top"] == ["a", "b", "c"]
    assert label_fields(labeler, vectors[:2], "guess", top_k=99)[0]["guess_top"].__len__() == 4
    assert label_fields(labeler, np.zeros((0, 5), np.float32)) == []


def labelled_and_checked(store, encoder) -> dict:
    """Label ``store`` (pages of 7) and check every point against the oracle, the payload kept, the facet counts,
    a --where on the field and the recorded types; returns the payloads."""
    before = all_payloads(store)
    report = label_collection(store, labeler_for(store, encoder), page=7)
    after = all_payloads(store)
    stored, _ = store.scroll(limit=100, with_vectors=True)
    oracle = label_fields(labeler_for(store, encoder), np.array([p.vectors["image"] for p in stored]))
    assert {p.id: label_part(after[p.id]) for p in stored} == dict(zip([p.id for p in stored], oracle))
    assert all({k: v for k, v in after[i].items() if k not in KEYS} == before[i] for i in before)
    assert report.labelled == report.points == 60 and sum(report.counts.values()) == 60
    counted = facets(store, ["label"], limit=20)[0]
    assert {v.value: v.count for v in counted.values} == {k: v for k, v in report.counts.items() if v}
    meta = store.metadata()
    assert meta["payload_types"]["label"] == "keyword" and meta["payload_types"]["label_score"] == "float"
    assert meta[LABELS_KEY]["label"]["progress"] is None
    some = next(name for name, count in report.counts.items() if count)
    assert store.count(compile_filter(f"label = {some!r}", field_types=meta["payload_types"])) == report.counts[some]
    return after


def test_labels_come_from_the_stored_vectors(collection, encoder):
    labelled_and_checked(collection, encoder)


@pytest.mark.slow  # two ingests; each store alone is checked by the test above
def test_labels_from_stored_vectors_on_both_stores_agree(tmp_path, encoder, sample_dir):
    answers = {}
    for kind in ("edge", "memory"):
        store = open_store(kind, "shapes", tmp_path / kind)
        try:
            ingest([str(sample_dir)], store, encoder, IngestOptions(source_name="sample", pipelined=False))
            answers[kind] = labelled_and_checked(store, encoder)
        finally:
            store.close()
    assert {i: label_part(p) for i, p in answers["edge"].items()} == {
        i: label_part(p) for i, p in answers["memory"].items()}


def test_a_killed_run_resumes_after_its_last_page(collection, encoder):
    label_collection(collection, labeler_for(collection, encoder), page=16)  # a clean run
    expected = {i: label_part(p) for i, p in all_payloads(collection).items()}
    label_collection(collection, labeler_for(collection, encoder, COLORS), page=16)  # other labels over it
    assert {i: label_part(p) for i, p in all_payloads(collection).items()} != expected
    writes = []
    real = collection.overwrite_payloads
    collection.overwrite_payloads = lambda items: (writes.append([i for i, _ in items]), real(items))[1]

    def stop_after_first_page(done, total):
        if done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        label_collection(collection, labeler_for(collection, encoder), page=16, on_progress=stop_after_first_page)
    mark = collection.metadata()[LABELS_KEY]["label"]["progress"]
    assert mark["done"] == 16 and mark["labelled"] == 16 and mark["next"] is not None
    report = label_collection(collection, labeler_for(collection, encoder), page=16)
    assert report.resumed_from == mark["next"] and report.labelled == 60 and sum(report.counts.values()) == 60
    written = [i for page in writes for i in page]
    assert sorted(written) == sorted(set(written)) and len(written) == 60  # every point written once
    assert {i: label_part(p) for i, p in all_payloads(collection).items()} == expected
    assert collection.metadata()[LABELS_KEY]["label"]["progress"] is None


def test_other_labels_replace_the_fields_everywhere(collection, encoder):
    label_collection(collection, labeler_for(collection, encoder), top_k=5)
    colours = labeler_for(collection, encoder, COLORS)
    report = label_collection(collection, colours, top_k=2)
    assert report.replaced and report.labelled == 60
    for payload in all_payloads(collection).values():
        assert payload["label"] in COLORS and set(payload["label_top"]) <= set(COLORS)
        assert len(payload["label_top"]) == len(payload["label_top_scores"]) == 2
    assert collection.metadata()[LABELS_KEY]["label"]["labeler"]["labels"] == COLORS


def test_a_filter_labels_only_its_points_and_clears_other_labels_outside(collection, encoder):
    label_collection(collection, labeler_for(collection, encoder))
    types = collection.spec().payload_types
    recent = compile_filter("year >= 2021", field_types=types)
    inside = set(all_payloads(collection, recent))
    assert 0 < len(inside) < 60
    report = label_collection(collection, labeler_for(collection, encoder, COLORS), filter=recent)
    assert report.points == report.labelled == len(inside) and report.cleared == 60 - len(inside)
    for point_id, payload in all_payloads(collection).items():
        if point_id in inside:
            assert payload["label"] in COLORS
        else:
            assert not set(KEYS) & set(payload)
    # the same labels on the rest: the field now covers every point, the first part kept
    rest = label_collection(collection, labeler_for(collection, encoder, COLORS), filter={"must_not": [recent]})
    assert rest.cleared == 0 and rest.labelled == 60 - len(inside)
    assert all(p["label"] in COLORS for p in all_payloads(collection).values())


def test_points_without_an_image_vector_are_counted(collection, encoder):
    spec = collection.spec()
    lone = PointRecord("00000000-0000-4000-8000-000000000001", {"text": np.ones(spec.dim, np.float32)},
                       {"caption": "text only"})
    collection.upsert([lone])
    report = label_collection(collection, labeler_for(collection, encoder))
    assert report.skipped == {NO_IMAGE_VECTOR: 1} and report.labelled == 60 and report.points == 61
    assert "label" not in all_payloads(collection)[lone.id]


@pytest.fixture
def text_only(kind, tmp_path, encoder):
    store = open_store(kind, "texts", tmp_path)
    store.ensure_collection(encoder.spec())
    store.upsert([PointRecord(f"00000000-0000-4000-8000-00000000000{i}", {"text": np.ones(encoder.dim, np.float32)},
                              {"caption": f"text {i}"}) for i in range(3)])
    yield store
    store.close()


def test_a_collection_without_image_vectors_is_one_line_and_nothing_written(text_only, encoder):
    before, meta = all_payloads(text_only), text_only.metadata()
    with pytest.raises(InputError, match="collection 'texts' has no image vector in its 3 points") as caught:
        label_collection(text_only, labeler_for(text_only, encoder))
    assert "\n" not in str(caught.value)
    assert all_payloads(text_only) == before and text_only.metadata() == meta


def test_a_labeler_of_another_model_is_one_line_and_nothing_written(collection, encoder):
    before, meta = all_payloads(collection), collection.metadata()
    other = labeler_from_encoder(encoder, SHAPES, ["{}"], {"model": "other-clip", "fingerprint": "f" * 64,
                                                            "dim": encoder.dim})
    with pytest.raises(CollectionMismatchError, match="made for image vectors of model 'other-clip'") as caught:
        label_collection(collection, other)
    assert "\n" not in str(caught.value)
    assert all_payloads(collection) == before and collection.metadata() == meta


def test_a_labeler_of_the_same_name_but_other_weights_says_what_differs(collection, encoder):
    """Same model name and size, other weights or precision: the message names the difference, not the same model
    twice."""
    spec = collection.spec()
    before = all_payloads(collection)
    for changed, words in (({"fingerprint": "e" * 64}, f"weights {'e' * 64}"), ({"precision": "int8"}, "int8 vectors")):
        record = {"model": spec.model, "fingerprint": spec.fingerprint, "dim": spec.dim, "precision": spec.precision,
                  **changed}
        with pytest.raises(CollectionMismatchError, match=re.escape(words)) as caught:
            label_collection(collection, labeler_from_encoder(encoder, SHAPES, ["{}"], record))
        message = str(caught.value)
        assert message.split(";")[0] != message.split(";")[1].replace(f" collection {collection.collection!r} holds", "")
    assert all_payloads(collection) == before


def test_a_field_holding_the_collections_data_is_refused(collection, encoder):
    before = all_payloads(collection)
    for field, why in (("color", "payload field 'color' \\(keyword\\) holds the collection's own data"),
                       ("year", "'year' \\(integer\\) holds"), ("caption", "'caption' holds"),
                       ("size", "'size' \\(keyword\\) holds"), ("bad.name", "a plain name"), ("_x", "a plain name")):
        with pytest.raises(UsageError, match=f"--field '?{re.escape(field)}'?: .*{why}") as caught:
            label_collection(collection, labeler_for(collection, encoder), field=field)
        assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="--top-k"):
        label_collection(collection, labeler_for(collection, encoder), top_k=0)
    assert all_payloads(collection) == before


def test_ingest_with_labels_writes_what_label_writes(tmp_path, kind, encoder, sample_dir):
    at_ingest = open_store(kind, "at_ingest", tmp_path)
    later = open_store(kind, "later", tmp_path)
    try:
        entry = ("label", 3, lambda model: labeler_from_encoder(model, SHAPES, ["a {}"]))
        ingest([str(sample_dir)], at_ingest, encoder, IngestOptions(source_name="s", labelers=[entry]))
        ingest([str(sample_dir)], later, encoder, IngestOptions(source_name="s"))
        label_collection(later, labeler_for(later, encoder))
        fresh, stored = all_payloads(at_ingest), all_payloads(later)
        assert fresh.keys() == stored.keys()
        for point_id in fresh:
            a, b = label_part(fresh[point_id]), label_part(stored[point_id])
            assert (a["label"], a["label_top"]) == (b["label"], b["label_top"])
            np.testing.assert_allclose(a["label_top_scores"], b["label_top_scores"], atol=2e-6)
        record = at_ingest.metadata()[LABELS_KEY]["label"]
        assert record["written_by"] == "ingest" and not record["partial"]
        assert record["sha"] == later.metadata()[LABELS_KEY]["label"]["sha"]
        assert at_ingest.metadata()["payload_types"]["label"] == "keyword"
        # an ingest again, unchanged rows: the labels stay, nothing is rewritten
        again = ingest([str(sample_dir)], later, encoder, IngestOptions(source_name="s"))
        assert again.unchanged == 60 and again.payload_updated == 0
        assert all_payloads(later) == stored
    finally:
        at_ingest.close()
        later.close()


def test_ingest_refuses_a_label_field_that_is_an_input_column(tmp_path, encoder, sample_dir):
    store = open_store("memory", "clash", tmp_path)
    entry = ("color", 3, lambda model: labeler_from_encoder(model, COLORS, None))
    with pytest.raises(UsageError, match="^--label-field color: payload field 'color' holds the collection's own data"):
        ingest([str(sample_dir)], store, encoder, IngestOptions(source_name="s", labelers=[entry]))
    assert store.count() == 0 if store.exists() else True
    store.close()


def with_new_images(sample_dir, folder, per_file=5):
    """A copy of the sample whose first ``per_file`` rows of each file have another image (flipped): their ids."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    folder.mkdir()
    changed = []
    for path in sorted(sample_dir.glob("*.parquet")):
        table = pq.read_table(path)
        images = table.column("image").to_pylist()
        for i in range(per_file):
            buffer = io.BytesIO()
            Image.open(io.BytesIO(images[i])).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, format="PNG")
            images[i] = buffer.getvalue()
        changed += table.column("id").to_pylist()[:per_file]
        pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary())),
                       folder / path.name)
    return changed


def test_a_reingest_that_embeds_changed_images_again_says_they_lost_their_labels(collection, encoder, sample_dir,
                                                                                 tmp_path):
    label_collection(collection, labeler_for(collection, encoder))
    label_collection(collection, labeler_for(collection, encoder, COLORS), field="hue")
    before = all_payloads(collection)
    changed = with_new_images(sample_dir, tmp_path / "changed")
    entry = ("hue", 3, lambda model: labeler_from_encoder(model, COLORS, ["a {}"]))  # this run writes 'hue' again
    summary = ingest([str(tmp_path / "changed")], collection, encoder,
                     IngestOptions(source_name="sample", pipelined=False, labelers=[entry]))
    assert summary.embedded == 10
    lost = [w for w in summary.warnings if "embedded again" in w]
    assert lost == ["10 points embedded again no longer carry the 'label' fields (their image or caption changed): "
                    "run `mmindex label -c shapes --field label --labels FILE` again"]
    after = all_payloads(collection)
    dropped = {i for i, p in after.items() if "label" not in p}
    assert len(dropped) == 10 and all(set(KEYS).isdisjoint(after[i]) for i in dropped)
    assert all(label_part(after[i]) == label_part(before[i]) for i in after if i not in dropped)
    assert all("hue" in p for p in after.values())  # the field this run writes: every point has it
    record = collection.metadata()[LABELS_KEY]
    assert record["label"]["partial"] is True and record["hue"]["partial"] is False  # the same labels: whole
    label_collection(collection, labeler_for(collection, encoder))  # labelled again: whole
    assert collection.metadata()[LABELS_KEY]["label"]["partial"] is False
    assert all("label" in p for p in all_payloads(collection).values()) and len(changed) == 10


# --- one field never holds two labelers' fields (review: a stopped run or a partial ingest, then --where) ------

def stopped_after(pages: int, page: int):
    def stop(done, total):
        if pages is not None and done >= pages * page and done < total:
            raise KeyboardInterrupt
    return stop


def check_one_labeler(store) -> None:
    """The invariant: while the record says the field is whole (no run under way, not partial), every point holding
    it holds the recorded labeler's labels, and after a run over every point, every point holds it."""
    entry = store.metadata()[LABELS_KEY]["label"]
    if entry["partial"] or entry["progress"] is not None:
        return  # a stopped run: the record says the field is not whole, and the next run treats it so
    labels = set(entry["labeler"]["labels"])
    payloads = all_payloads(store)
    held = [p for p in payloads.values() if "label" in p]
    assert all(p["label"] in labels and set(p["label_top"]) <= labels for p in held), entry["labeler"]["labels"]
    if not entry["partial"] and entry["progress"] is None and entry["filter"] is None:
        assert len(held) == len(payloads)


def test_same_labels_after_a_stopped_run_under_another_filter_clear_outside(collection, encoder):
    label_collection(collection, labeler_for(collection, encoder, COLORS))  # a whole field of colours
    with pytest.raises(KeyboardInterrupt):  # shapes over it, stopped after one page: the rest still holds colours
        label_collection(collection, labeler_for(collection, encoder), page=16, on_progress=stopped_after(1, 16))
    recent = compile_filter("year >= 2021", field_types=collection.spec().payload_types)
    inside = set(all_payloads(collection, recent))
    report = label_collection(collection, labeler_for(collection, encoder), filter=recent)
    assert not report.replaced and report.cleared > 0
    check_one_labeler(collection)
    assert {i for i, p in all_payloads(collection).items() if "label" in p} == inside


def test_same_labels_over_a_field_an_ingest_left_partial_clear_outside(collection, encoder, sample_dir, tmp_path):
    label_collection(collection, labeler_for(collection, encoder, COLORS))
    entry = ("label", 3, lambda model: labeler_from_encoder(model, SHAPES, ["a {}"]))
    summary = ingest([str(sample_dir)], collection, encoder,  # nothing changed: nothing embedded, record now shapes
                     IngestOptions(source_name="sample", pipelined=False, labelers=[entry]))
    assert summary.embedded == 0 and any("keep their earlier 'label'" in w for w in summary.warnings)
    assert collection.metadata()[LABELS_KEY]["label"]["partial"] is True
    recent = compile_filter("year >= 2021", field_types=collection.spec().payload_types)
    report = label_collection(collection, labeler_for(collection, encoder), filter=recent)
    assert report.cleared == 60 - report.labelled
    check_one_labeler(collection)


def test_an_ingest_with_the_same_labels_on_a_partial_field_says_the_rest_lack_them(collection, encoder, sample_dir,
                                                                                   tmp_path):
    with pytest.raises(KeyboardInterrupt):
        label_collection(collection, labeler_for(collection, encoder), page=16, on_progress=stopped_after(1, 16))
    entry = ("label", 3, lambda model: labeler_from_encoder(model, SHAPES, ["a {}"]))
    summary = ingest([str(sample_dir)], collection, encoder,
                     IngestOptions(source_name="sample", pipelined=False, labelers=[entry]))
    assert [w for w in summary.warnings if "not on every point" in w] == [
        "the 'label' field is not on every point (an earlier run stopped, or points were embedded again without it), "
        "and this run labels only the points it embeds: `mmindex label -c shapes --field label …` labels the rest"]


OPERATIONS = st.lists(st.tuples(st.sampled_from(["shapes", "colours"]),
                                st.sampled_from([None, "year >= 2021", "year < 2021", "shape = 'circle'"]),
                                st.sampled_from([None, 1, 2, "first write"]), st.booleans()), min_size=1, max_size=5)


class LostConnection(Exception):
    pass


def failing_first_write(store):
    """``store`` whose next ``overwrite_payloads`` raises (a connection lost in the middle of a page's write)."""
    real = store.overwrite_payloads

    def fail(items):
        store.overwrite_payloads = real
        raise LostConnection
    store.overwrite_payloads = fail
    return real


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_any_sequence_of_runs_keeps_one_labeler_per_field(collection, encoder, operations):
    """Property: whatever runs (labels, filters, stopped after some pages, --restart) follow one another, every point
    holding the field holds the recorded labeler's labels, and a finished unfiltered run leaves it on every point."""
    labelers = {"shapes": labeler_for(collection, encoder), "colours": labeler_for(collection, encoder, COLORS)}
    label_collection(collection, labelers["colours"], page=32)  # each example starts from a whole field
    check_one_labeler(collection)
    types = collection.spec().payload_types
    for which, where, pages, restart in operations:
        query_filter = compile_filter(where, field_types=types) if where else None
        real = failing_first_write(collection) if pages == "first write" else None
        try:
            label_collection(collection, labelers[which], filter=query_filter, page=8, resume=not restart,
                             on_progress=stopped_after(None if real else pages, 8))
            assert collection.metadata()[LABELS_KEY]["label"]["progress"] is None  # finished: whole again
        except (KeyboardInterrupt, LostConnection):
            pass
        finally:
            collection.overwrite_payloads = real or collection.overwrite_payloads
        check_one_labeler(collection)


def test_a_run_stopped_in_its_first_write_leaves_the_field_unfinished(collection, encoder):
    label_collection(collection, labeler_for(collection, encoder, COLORS))
    failing_first_write(collection)
    with pytest.raises(LostConnection):
        label_collection(collection, labeler_for(collection, encoder), page=256)  # one page: the whole run
    assert collection.metadata()[LABELS_KEY]["label"]["progress"] is not None  # not "whole"
    recent = compile_filter("year >= 2021", field_types=collection.spec().payload_types)
    report = label_collection(collection, labeler_for(collection, encoder), filter=recent)
    assert report.cleared == 60 - report.labelled
    check_one_labeler(collection)
