"""What a label column's values mean as classes (``labelled.label_text``, ``check_blank_labels``): text as it is,
numbers and true/false as text, and a label that is empty or only spaces refused by ``train --task classify`` and
``eval --task classify`` in one line, before anything is written."""
from __future__ import annotations

import math

import pytest
from helpers.classify import all_payloads
from hypothesis import given
from hypothesis import strategies as st

from mmindex.errors import InputError
from mmindex.pipeline.classify.evaluate import evaluate_classifiers
from mmindex.pipeline.classify.labelled import is_blank, label_text, train_probe

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=8))


def oracle(value):
    """The class name a payload value stands for, written out case by case."""
    if value is None:
        return None
    if value is True or value is False:
        return {True: "true", False: "false"}[value]
    if isinstance(value, float):
        return repr(value)  # Python's shortest round-trip text, as str() writes it
    if isinstance(value, int):
        return "%d" % value
    return value


@given(SCALARS)
def test_a_scalar_is_its_class_name_as_text(value):
    if isinstance(value, float) and not math.isfinite(value):
        with pytest.raises(InputError, match="which is no class"):
            label_text(value, "shape", "p1")
        return
    assert label_text(value, "shape", "p1") == oracle(value)


@given(st.one_of(st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_a_list_or_an_object_is_no_label(value):
    with pytest.raises(InputError, match="a label column holds one value per point"):
        label_text(value, "shape", "p1")


@given(st.text(alphabet=" \t\n\u3000\u00a0x", max_size=6))
def test_blank_is_empty_or_only_spaces(text):
    assert is_blank(text) == (text.strip() == "")


def blank_some(store, value, count=5):
    payloads = all_payloads(store)
    chosen = sorted(payloads)[:count]
    store.overwrite_payloads([(i, {**payloads[i], "shape": value}) for i in chosen])
    return chosen


@pytest.mark.parametrize("value, says", [
    ("", "5 of the 60 points in scope hold an empty label (''; e.g. point "),
    ("  ", "5 of the 60 points in scope hold an empty label (empty or only spaces; e.g. point "),
])
def test_train_refuses_empty_labels_and_writes_nothing(collection, tmp_path, value, says):
    blank_some(collection, value)
    before, meta = all_payloads(collection), collection.metadata()
    with pytest.raises(InputError) as error:
        train_probe(collection, "shape", tmp_path / "probe.json")
    message = str(error.value)
    assert says in message and "set those values to null" in message and "\n" not in message
    assert all_payloads(collection) == before and collection.metadata() == meta
    assert not (tmp_path / "probe.json").exists()
    with pytest.raises(InputError, match="hold an empty label"):
        evaluate_classifiers(collection, "shape")


def test_the_where_the_refusal_gives_leaves_the_empty_labels_out(collection, tmp_path):
    chosen = blank_some(collection, "")
    with pytest.raises(InputError) as error:
        evaluate_classifiers(collection, "shape")
    where = str(error.value).split('--where "')[1].rstrip('"')
    assert where == "`shape` != ''"
    assert evaluate_classifiers(collection, "shape", where=where).points == 55
    report = train_probe(collection, "shape", tmp_path / "probe.json", where=where)
    assert report.labelled == 55 and "" not in report.classes
    assert all("shape_predicted" not in all_payloads(collection)[i] for i in chosen)
