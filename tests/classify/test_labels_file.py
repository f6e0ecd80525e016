"""The labels file (one label per line, blanks and # comments skipped, no repeats) and the prompt templates."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.errors import InputError, UsageError
from mmindex.pipeline.classify.labels_file import DEFAULT_TEMPLATES, check_templates, prompts, read_labels

# A label: printable text with no line break, not blank, not starting with # once stripped (invisible format
# characters, category Cf, are stripped at the ends: test_invisible_marks_at_the_ends_never_join_a_label).
LABEL = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf")), min_size=1, max_size=20).map(
    str.strip).filter(lambda text: text and not text.startswith("#"))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def distinct(labels: list[str]) -> list[str]:
    seen, kept = set(), []
    for label in labels:
        if label.casefold() not in seen:
            seen.add(label.casefold())
            kept.append(label)
    return kept


@SETTINGS
@given(labels=st.lists(LABEL, min_size=2, max_size=12).map(distinct).filter(lambda kept: len(kept) >= 2), noise=st.lists(
    st.sampled_from(["", "   ", "# a comment", "  # indented comment"]), max_size=12), spaces=st.sampled_from(["", " ", "\t"]))
def test_labels_round_trip_through_a_file(tmp_path, labels, noise, spaces):
    lines = []
    for i, label in enumerate(labels):
        lines += noise[i:i + 1] + [f"{spaces}{label}{spaces}"]
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(lines + noise[len(labels):]), encoding="utf-8")
    assert read_labels(path) == labels


@SETTINGS
@given(labels=st.lists(LABEL, min_size=1, max_size=10).map(distinct), data=st.data())
def test_a_repeated_label_is_named_with_both_lines(tmp_path, labels, data):
    first = data.draw(st.integers(0, len(labels) - 1))
    at = data.draw(st.integers(first + 1, len(labels)))
    again = data.draw(st.sampled_from([variant for variant in (labels[first], labels[first].upper(),
                                                                 labels[first].lower())
                                       if variant.casefold() == labels[first].casefold()]))
    lines = labels[:at] + [again] + labels[at:]
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_labels(path)
    message = str(caught.value)
    assert f"line {first + 1}" in message and f"line {at + 1}" in message and repr(again) in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["", "\n\n  \n", "# only\n  # comments\n"])
def test_an_empty_labels_file_is_one_line_naming_it(tmp_path, text):
    path = tmp_path / "empty.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="empty.txt: the labels file holds no label") as caught:
        read_labels(path)
    assert "\n" not in str(caught.value)


def test_unreadable_labels_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="missing.txt: cannot read the labels file"):
        read_labels(tmp_path / "missing.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin.txt: the labels file is not UTF-8"):
        read_labels(tmp_path / "latin.txt")


def test_braces_in_a_label_stay_as_written(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("set {a, b}\n{}\n", encoding="utf-8")
    labels = read_labels(path)
    assert labels == ["set {a, b}", "{}"]
    assert prompts(labels[0], ["a photo of a {}.", "{} here"]) == ["a photo of a set {a, b}.", "set {a, b} here"]


def test_templates_need_one_placeholder():
    assert check_templates(None) == list(DEFAULT_TEMPLATES) == ["a photo of a {}."]
    assert check_templates(("{}", "a {}", "{}")) == ["{}", "a {}"]
    for bad in ("a photo", "{} and {}", "a {0}"):
        with pytest.raises(UsageError, match="must hold \\{\\} exactly once") as caught:
            check_templates(["{}", bad])
        assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("mark", ["\ufeff", "\u200b", "\u200e", "\u2060"])
def test_invisible_marks_at_the_ends_never_join_a_label(tmp_path, mark):
    """A byte-order mark (Notepad, Excel) at the start of the file, or a zero-width character at either end of a line
    (Unicode category Cf), is stripped like a space: the label is the visible text that --where matches."""
    path = tmp_path / "labels.txt"
    path.write_text(f"{mark}circle\nsquare{mark}\n{mark} star \n", encoding="utf-8")
    assert read_labels(path) == ["circle", "square", "star"]
    path.write_bytes("\ufeffcircle\r\nsquare\r\n".encode("utf-8"))
    assert read_labels(path) == ["circle", "square"]
    path.write_text(f"circle\n{mark}Circle\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1 .*line 2"):
        read_labels(path)


@pytest.mark.parametrize("line", ["\x01", "cat\x01", "dog\x00bone", "cat\x7f", "caf\udce9"])
def test_a_label_with_control_characters_or_bad_bytes_is_refused_naming_its_line(tmp_path, line):
    """Embedded as cleaned text ("\\x01" → "") but stored as written: one label would mean two things (a reviewer got
    an invisible label on half the points). Refused, naming the line."""
    path = tmp_path / "labels.txt"
    path.write_bytes(f"circle\n{line}\nsquare\n".encode("utf-8", "surrogatepass"))
    if "\udce9" in line:  # not UTF-8 at all: refused as such before any label is read
        with pytest.raises(InputError, match="not UTF-8"):
            read_labels(path)
        return
    with pytest.raises(InputError, match="line 2 .*control characters"):
        read_labels(path)
