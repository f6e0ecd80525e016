"""`mmindex ingest --text-fields` and `mmindex keywords`: the fields recorded, other fields refused in one line, a
backfill of a collection made before keyword search, a re-run that says it has nothing to do."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import ROOT
from helpers.keyword_data import create_old_style

from mmindex.connectors.base import CollectionSpec
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.queries import KEYWORDS
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.query.keywords import SETTINGS_KEY


def test_ingest_records_text_fields_and_keywords_says_nothing_to_do(run, tiny_model, sample_dir, tmp_path):
    result = run("ingest", sample_dir, "-c", "shapes", "--model", tiny_model, "--text-fields", "tags,shape",
                 "--quiet", "--backend", "torch")
    assert result.exit_code == 0, result.output
    again = run("keywords", "-c", "shapes")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("nothing to do: the 60 points of collection 'shapes' have their keyword vectors "
                                   "(from the caption and tags, shape)")
    other = run("ingest", sample_dir, "-c", "shapes", "--model", tiny_model, "--text-fields", "tags", "--quiet")
    assert other.exit_code == 1
    assert "makes keyword vectors from the caption and --text-fields tags,shape" in other.output
    assert "Traceback" not in other.output
    redo = run("keywords", "-c", "shapes", "--text-fields", "", "--json", "--quiet")
    assert redo.exit_code == 0, redo.output
    summary = json.loads(redo.stdout)
    assert summary["redone"] and summary["written"] == 60 and summary["fields"] == []


def test_keywords_backfills_a_collection_made_before_keyword_search(run, tiny_model, sample_dir, tmp_path):
    store = QdrantEdgeStore("old", data_dir=tmp_path / "mmindex_data")
    create_old_style(store, Encoder(tiny_model, device="cpu").spec())
    store.close()
    assert run("ingest", sample_dir, "-c", "old", "--model", tiny_model, "--quiet", "--backend", "torch").exit_code == 0
    result = run("keywords", "-c", "old", "--text-fields", "tags", "--page-size", 16, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added the keyword vector; 60 points given keyword vectors from the caption and "
                                    "tags in ")
    store = QdrantEdgeStore("old", data_dir=tmp_path / "mmindex_data")
    points, _ = store.scroll(limit=100, with_vectors=True)
    assert all(KEYWORDS in p.vectors for p in points) and store.metadata()[SETTINGS_KEY]["fields"] == ["tags"]
    store.close()


def test_keywords_refusals_are_one_line(run, tmp_path):
    missing = run("keywords", "-c", "nothing")
    assert missing.exit_code == 1 and "collection 'nothing' does not exist" in missing.output
    store = QdrantEdgeStore("made", data_dir=tmp_path / "mmindex_data")
    create_old_style(store, CollectionSpec("m", 4, {"year": "integer"}))
    store.close()
    wrong = run("keywords", "-c", "made", "--text-fields", "year")
    assert wrong.exit_code == 2 and "--text-fields: field 'year' holds integer values, not text" in wrong.output
    assert "Traceback" not in wrong.output


HOLD = ("import sys, time\n"
        "from mmindex.connectors.qdrant_edge import QdrantEdgeStore\n"
        "store = QdrantEdgeStore('made', data_dir=sys.argv[1])\n"
        "store.count()\n"
        "print('holding', flush=True)\n"
        "time.sleep(60)\n")


def test_keywords_on_a_collection_another_process_holds_changes_nothing(run, tmp_path):
    store = QdrantEdgeStore("made", data_dir=tmp_path / "mmindex_data")
    store.ensure_collection(CollectionSpec("m", 4, {"title": "keyword"}))  # has the vector: no engine write first
    before = store.metadata()
    store.close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "mmindex_data")], stdout=subprocess.PIPE,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == b"holding\n"
        refused = run("keywords", "-c", "made", "--text-fields", "title")
        assert refused.exit_code == 1 and f"is open in another process (pid {holder.pid}: " in refused.output
    finally:
        holder.kill()
        holder.wait()
    store = QdrantEdgeStore("made", data_dir=tmp_path / "mmindex_data")
    assert store.metadata() == before  # no mark, no rule: the next run starts clean
    store.close()
