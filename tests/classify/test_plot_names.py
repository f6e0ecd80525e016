"""Class names the plot's fonts cannot draw (CJK without a CJK font): written as their numbers in the PNG, with the
legend in `eval --task classify`'s output and JSON; the text table padded by display width."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.classify import all_payloads, open_store
from PIL import ImageFont

from mmindex import IngestOptions, ingest
from mmindex.pipeline.classify import plot
from mmindex.pipeline.classify.plot import can_draw, choose_font, draw_confusion, plot_legend
from mmindex.pipeline.cli.format import display_width


@pytest.fixture
def pillow_font_only(monkeypatch):
    """Only Pillow's own font (Latin): the same outcome on a machine with CJK fonts installed."""
    monkeypatch.setattr(plot, "FONT_CANDIDATES", ())
    choose_font.cache_clear()
    yield
    choose_font.cache_clear()


def result(labels, classifier="probe"):
    size = len(labels)
    confusion = [[3 if i == j else 1 for j in range(size)] for i in range(size)]
    return {"classifier": classifier, "labels": labels, "confusion": confusion, "accuracy": 0.5, "macro_f1": 0.5}


@pytest.mark.parametrize("text", ["cat", "Hexagon 2", "a-b_c"])
def test_latin_names_draw_with_pillows_font(text):
    assert can_draw(ImageFont.load_default(), text)


@pytest.mark.parametrize("text", ["猫", "cat 狗", "한국어", "ねこ"])
def test_cjk_is_missing_from_pillows_font(text):
    assert not can_draw(ImageFont.load_default(), text)


def test_a_system_font_draws_what_pillows_cannot(monkeypatch):
    fonts = plot._fonts()
    if len(fonts) == 1:
        pytest.skip("no system font here")
    choose_font.cache_clear()
    names = ("cat", "γάτα")
    font, missing = choose_font(names)
    assert not can_draw(ImageFont.load_default(), "γάτα") and can_draw(font, "γάτα")
    assert missing == frozenset() and plot_legend([result(list(names))]) == {}
    choose_font.cache_clear()


def test_names_no_font_draws_are_their_numbers_in_the_png(pillow_font_only):
    results = [result(["cat", "猫", "dog"]), result(["cat", "猫", "dog", "狗"], "zero-shot")]
    assert plot_legend(results) == {2: "猫", 4: "狗"}
    drawn, _ = draw_confusion(results)
    numbered, _ = draw_confusion([result(["cat", "#2", "dog"]), result(["cat", "#2", "dog", "#4"], "zero-shot")])
    assert np.array_equal(np.asarray(drawn), np.asarray(numbered))
    assert plot_legend([result(["cat", "dog"])]) == {}


@pytest.fixture
def chinese_store(tmp_path, encoder, sample_dir):
    store = open_store("edge", "shapes", tmp_path / "store")
    ingest([str(sample_dir)], store, encoder, IngestOptions(source_name="sample", pipelined=False))
    names = {"circle": "圆形", "square": "正方形"}
    store.overwrite_payloads([(i, {**p, "shape": names.get(p["shape"], p["shape"])})
                              for i, p in all_payloads(store).items()])
    store.close()
    return tmp_path / "store"


def test_eval_gives_the_legend_and_pads_the_table_by_display_width(cli, chinese_store, pillow_font_only):
    store = ("-c", "shapes", "--data-dir", chinese_store, "--label-col", "shape")
    result = cli("eval", "--task", "classify", *store, "--plot", "cm.png", "--json")
    assert result.exit_code == 0, result.output
    legend = json.loads(result.stdout)["plot_legend"]
    assert sorted(legend.values()) == ["圆形", "正方形"]
    table = cli("eval", "--task", "classify", *store, "--plot", "cm.png")
    assert table.exit_code == 0
    warning = [line for line in table.stderr.splitlines() if "no font here can draw 2 class name" in line]
    assert len(warning) == 1 and all(f"#{k} = {v}" in warning[0] for k, v in legend.items())
    lines = table.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("  class "))
    end = display_width(lines[header][:lines[header].index("precision") + len("precision")])
    rows = lines[header + 1:header + 1 + 8]  # the per-class rows (the sample's 8 shapes), CJK names among them
    assert sum("圆形" in row or "正方形" in row for row in rows) == 2
    for row in rows:
        precision = re.search(r"\d\.\d{3}", row)
        assert display_width(row[:precision.end()]) == end, row  # the numbers start in one screen column
