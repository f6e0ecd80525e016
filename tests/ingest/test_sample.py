"""Synthetic samples: deterministic for a seed, the same scenes in English and Chinese."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.ingest.sample import COLORS_ZH, SHAPES_ZH, SIZES_ZH, write_sample


def _rows(folder):
    return pq.read_table(folder / "part-00000.parquet").to_pylist()


def test_a_seed_gives_the_same_rows_every_time(tmp_path):
    write_sample(tmp_path / "a", rows=40, seed=3, width=32, height=32, caption_style="mixed")
    write_sample(tmp_path / "b", rows=40, seed=3, width=32, height=32, caption_style="mixed")
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")


def test_english_captions_of_a_seed_are_pinned(tmp_path):
    # The README's demo sample (seed 7): row 3 is the image its image → text query uses.
    write_sample(tmp_path / "s", rows=5, seed=7, width=32, height=32)
    row = _rows(tmp_path / "s")[3]
    assert row["caption"] == "a large purple ring at the top on a dark background"
    assert row["short_caption"] == "a purple ring"
    assert "caption_zh" not in row


@pytest.mark.parametrize("style", ["full", "mixed"])
def test_chinese_captions_describe_the_same_scenes(tmp_path, style):
    write_sample(tmp_path / "en", rows=60, seed=5, width=32, height=32, caption_style=style)
    write_sample(tmp_path / "both", rows=60, seed=5, width=32, height=32, caption_style=style, caption_lang="both")
    write_sample(tmp_path / "zh", rows=60, seed=5, width=32, height=32, caption_style=style, caption_lang="zh")
    english, both, chinese = _rows(tmp_path / "en"), _rows(tmp_path / "both"), _rows(tmp_path / "zh")
    for en, bi, zh in zip(english, both, chinese):
        # Adding Chinese changes nothing else: same images, same English captions, same payload.
        assert {k: v for k, v in bi.items() if not k.endswith("_zh")} == en
        assert zh["image"] == en["image"] and zh["caption"] == bi["caption_zh"]
        assert zh["short_caption"] == bi["short_caption_zh"] == f"一个{COLORS_ZH[en['color']]}的{SHAPES_ZH[en['shape']]}"
        assert COLORS_ZH[en["color"]] in zh["caption"] and SHAPES_ZH[en["shape"]] in zh["caption"]
        # The Chinese caption names what the English one names.
        if en["size"] in en["caption"].split():
            assert f"{SIZES_ZH[en['size']]}的" in zh["caption"]
        assert ("角落" in zh["caption"]) == ("corner" in en["caption"])
        assert all(ord(c) > 127 for c in zh["caption"])  # no English left in it
    if style == "full":
        assert all(len(r["caption"]) > len(r["short_caption"]) for r in chinese)


def test_chinese_caption_of_a_known_scene(tmp_path):
    write_sample(tmp_path / "s", rows=5, seed=7, width=32, height=32, caption_lang="both")
    row = _rows(tmp_path / "s")[3]
    assert row["caption_zh"] == "一个大的紫色圆环位于上方，深色背景"
    assert row["short_caption_zh"] == "一个紫色的圆环"


def test_mixed_language_rows_are_english_or_chinese_at_random(tmp_path):
    write_sample(tmp_path / "both", rows=200, seed=9, width=16, height=16, caption_style="mixed", caption_lang="both")
    write_sample(tmp_path / "mix", rows=200, seed=9, width=16, height=16, caption_style="mixed", caption_lang="mixed")
    chinese = 0
    for bi, mixed in zip(_rows(tmp_path / "both"), _rows(tmp_path / "mix")):
        assert mixed["image"] == bi["image"] and "caption_zh" not in mixed
        pair = (mixed["caption"], mixed["short_caption"])
        assert pair in ((bi["caption"], bi["short_caption"]), (bi["caption_zh"], bi["short_caption_zh"]))
        chinese += pair[0] == bi["caption_zh"]
    assert 70 < chinese < 130


def test_unknown_language_is_refused(tmp_path):
    with pytest.raises(ValueError, match="caption_lang"):
        write_sample(tmp_path, rows=1, caption_lang="fr")
