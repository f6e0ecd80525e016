"""`--text-model` through the CLI: recorded by ingest, used by query, eval and serve, checked when the
folder moves or changes (the pair: tests/helpers/replicas.py)."""
from __future__ import annotations

import json

import pytest
from helpers.replicas import write_multilingual_text, write_st_clip, write_text_model_pair

from mmindex.pipeline.models.encoder import Encoder


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_text_model_pair(tmp_path_factory.mktemp("pair"))


def test_ingest_records_both_and_query_uses_the_recorded_text_model(pair, cli, tmp_path):
    clip, student, data = pair
    result = cli("ingest", str(data), "-c", "pair", "--model", str(clip), "--text-model", str(student))
    assert result.exit_code == 0, result.output
    info = json.loads(cli("info", "-c", "pair", "--json").output)
    assert info["model"] == "clip-ViT-B-32" and info["text_model"] == "clip-ViT-B-32-multilingual-v1"
    assert info["text_model_fingerprint"].startswith("sha256:") and info["text_model_path"] == str(student)
    shown = cli("info", "-c", "pair").output
    assert "text model   clip-ViT-B-32-multilingual-v1" in shown
    # query with no model options: the collection's pair, and the text vector is the student's
    out = cli("query", "蓝色的三角形", "-c", "pair", "--target", "text", "--limit", "12", "--json")
    assert out.exit_code == 0, out.output
    hits = [json.loads(line) for line in out.output.splitlines()]
    encoder = Encoder(str(clip), device="cpu", text_model=str(student))
    query = encoder.encode_texts(["蓝色的三角形"])[0]
    captions = encoder.encode_texts([h["caption"] for h in hits])
    assert [h["score"] for h in hits] == pytest.approx(list(captions @ query), abs=1e-4)
    # eval uses the recorded text model too
    assert cli("eval", str(data), "-c", "pair").exit_code == 0
    # a rerun with no model options is recognised (nothing re-embedded)
    again = cli("ingest", str(data), "-c", "pair", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output.strip().splitlines()[-1])["embedded"] == 0


def test_mixing_text_models_in_one_collection_is_refused(pair, cli):
    clip, student, data = pair
    assert cli("ingest", str(data), "-c", "mono", "--model", str(clip)).exit_code == 0
    mixed = cli("ingest", str(data), "-c", "mono", "--model", str(clip), "--text-model", str(student))
    assert mixed.exit_code != 0 and "text model" in mixed.output and "Traceback" not in mixed.output
    # a query may bring its own text model: only the vector size must agree
    ok = cli("query", "a red circle", "-c", "mono", "--text-model", str(student), "--limit", "2")
    assert ok.exit_code == 0, ok.output


def test_text_model_folder_replaced_is_named(pair, cli, tmp_path):
    import shutil

    clip, student, data = pair
    moving = tmp_path / "student"
    shutil.copytree(student, moving)
    assert cli("ingest", str(data), "-c", "moved", "--model", str(clip), "--text-model", str(moving)).exit_code == 0
    shutil.rmtree(moving)
    gone = cli("query", "a red circle", "-c", "moved")
    assert gone.exit_code != 0 and "text model" in gone.output and "--text-model" in gone.output
    write_multilingual_text(moving, seed=5)  # other weights under the same path
    changed = cli("query", "a red circle", "-c", "moved")
    assert changed.exit_code != 0 and "no longer that model" in changed.output and "--text-model" in changed.output


@pytest.mark.parametrize("args, message", [
    (["--text-model", "./nope"], "--text-model './nope': no such folder"),
    (["--model", "./nope"], "--model './nope': no such folder"),
    (["--model", ""], "--model is empty"),
    (["--text-model", " "], "--text-model is empty"),
])
def test_a_model_that_is_not_there_is_named_at_once(pair, cli, args, message):
    result = cli("eval", pair[2], *args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_a_file_given_as_model_is_refused_with_what_to_give(pair, cli):
    clip, _, data = pair
    result = cli("ingest", data, "-c", "f", "--model", clip / "modules.json")
    assert result.exit_code != 0 and "is a file; give the model's folder" in result.output


def test_serve_refuses_a_model_that_does_not_fill_its_collection_and_names_text_models(pair, cli, tmp_path):
    """serve --model M on a collection of another model stops at start (it used to start, say ready, then 409 every
    search); a served collection of another text model is a 409 that names the text models."""
    from mmindex.errors import CollectionMismatchError
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.errors import ApiError
    from mmindex.pipeline.serve.service import Service
    from mmindex.pipeline.serve.settings import ServeSettings

    clip, student, data = pair
    assert cli("ingest", data, "-c", "with", "--model", clip, "--text-model", student).exit_code == 0
    assert cli("ingest", data, "-c", "without", "--model", clip).exit_code == 0
    store = StoreSettings(collection="with", data_dir=str(tmp_path / "mmindex_data"))
    other = write_st_clip(tmp_path / "other-clip", seed=9)
    with pytest.raises(CollectionMismatchError, match="holds vectors of model 'clip-ViT-B-32'"):
        Service(ServeSettings(store=store, device="cpu", model=str(other.path))).close()
    service = Service(ServeSettings(store=store, collections=("without",), device="cpu"))
    try:
        assert service.encoder.text_name == "clip-ViT-B-32-multilingual-v1"
        with pytest.raises(ApiError, match="no separate text model") as caught:
            service.checked("without")
        assert caught.value.status == 409
    finally:
        service.close()
