"""The model is known by its files, not by its path, through the CLI: a moved or copied folder is the
same model, other weights under the same path are refused; a refused run is one line."""
from __future__ import annotations

import os
import shutil

from helpers.samples import all_rows

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.sample import write_sample

# -- the model is known by its files, not by its path ---------------------------------------------

def test_a_moved_or_copied_model_folder_is_the_same_model(tmp_path, tiny_model, cli):
    model = tmp_path / "models" / "clip-a"
    shutil.copytree(tiny_model, model)
    data = tmp_path / "d"
    write_sample(data, rows=6, seed=18, width=32, height=32)
    store_args = ["-c", "m", "--data-dir", str(tmp_path / "store")]
    first = cli("ingest", str(data), *store_args, "--model", str(model), "--json", "-q",
                                 "--device", "cpu")
    assert first.exit_code == 0, first.output
    copy = tmp_path / "elsewhere" / "clip-copy"
    shutil.copytree(model, copy)
    again = cli("ingest", str(data), *store_args, "--model", str(copy), "--json", "-q",
                                 "--device", "cpu")
    assert again.exit_code == 0, again.output
    assert '"unchanged": 6' in again.output and '"embedded": 0' in again.output
    # The collection now loads the model from where it was last used; move that folder away.
    moved = tmp_path / "moved"
    os.rename(copy, moved)
    lost = cli("query", "a red circle", *store_args)
    assert lost.exit_code == 1 and str(copy) in lost.output and "--model" in lost.output
    assert "Traceback" not in lost.output
    found = cli("query", "a red circle", *store_args, "--model", str(moved), "--json")
    assert found.exit_code == 0, found.output
    assert found.output.count('"rank"') == 6
    info = cli("info", *store_args, "--json")
    assert '"model": "clip-a"' in info.output and '"model_fingerprint": "sha256:' in info.output


def test_other_weights_under_the_same_path_are_refused(tmp_path, tiny_model, sample_dir, cli):
    from mmindex.pipeline.training.scratch import build_scratch_model

    model = tmp_path / "models" / "clip"
    shutil.copytree(tiny_model, model)
    data = tmp_path / "d"
    write_sample(data, rows=4, seed=19, width=32, height=32)
    store_args = ["-c", "w", "--data-dir", str(tmp_path / "store")]
    assert cli("ingest", str(data), *store_args, "--model", str(model), "-q").exit_code == 0
    other = tmp_path / "other"
    texts = [r["caption"] for r in all_rows(sample_dir)]
    build_scratch_model(other, size="tiny", texts=texts, seed=99)  # same sizes, other random weights
    shutil.rmtree(model)
    shutil.copytree(other, model)
    refused = cli("ingest", str(data), *store_args, "--model", str(model), "-q")
    assert refused.exit_code == 1 and "the files differ" in refused.output
    query = cli("query", "a red circle", *store_args)
    assert query.exit_code == 1 and "no longer that model" in query.output and "pass --model" in query.output
    plain = cli("ingest", str(data), *store_args, "-q")  # no --model: the recorded folder changed
    assert plain.exit_code == 1 and "no longer that model" in plain.output
    store = QdrantEdgeStore("w", data_dir=tmp_path / "store")
    assert store.count() == 4
    store.close()


def test_a_refused_run_is_one_line_not_a_failed_run(tmp_path, tiny_model, cli):
    data = tmp_path / "d"
    write_sample(data, rows=4, seed=28, width=32, height=32)
    where = ["-c", "r", "--data-dir", tmp_path / "store"]
    assert cli("ingest", data, *where, "--model", tiny_model, "-q").exit_code == 0
    refused = cli("ingest", data, *where, "--id-col", "caption", "-q")
    assert refused.exit_code == 1 and "FAILED" not in refused.output and "run the same command" not in refused.output
    assert refused.output.count("\n") == 1 and "from column 'id'" in refused.output
