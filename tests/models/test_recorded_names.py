"""One name for a collection's model, the one it records: after an ingest with a copy of the model folder under
another name (same files, same fingerprint), every place that shows the model — info, ingest's summary, query's
header on the fast and the full path, eval, serve's /embed and /readyz — says the recorded name, not the copy's."""
from __future__ import annotations

import copy
import json
import re
import shutil

import pytest

from mmindex.pipeline.models.identity import model_fingerprint


def test_an_encoder_takes_the_names_its_collection_records(encoder):
    twin = copy.copy(encoder)
    twin.name = "tiny-clip-copy"
    meta = {"model": "/elsewhere/tiny-clip", "model_fingerprint": encoder.fingerprint}
    assert twin.take_recorded_names(meta).name == "tiny-clip"  # shown as info shows it: the folder's name
    other = copy.copy(encoder)
    other.name = "another"
    assert other.take_recorded_names({"model": "tiny-clip", "model_fingerprint": "sha256:" + "0" * 64}).name == \
        "another"  # other files: not the collection's model, named as it is
    assert copy.copy(other).take_recorded_names(None).name == "another"


@pytest.mark.slow
def test_every_place_that_shows_the_model_says_the_recorded_name(tiny_model, sample_dir, cli, tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")
    copied = tmp_path / "tiny-clip-copy"
    shutil.copytree(tiny_model, copied)
    assert model_fingerprint(str(copied)) == model_fingerprint(tiny_model)
    assert cli("ingest", sample_dir, "-c", "c", "--model", tiny_model, "-q").exit_code == 0
    shown = {}
    again = cli("ingest", sample_dir, "-c", "c", "--model", copied, "--json", "-q")  # records the copy's place
    assert again.exit_code == 0, again.output
    shown["ingest"] = json.loads(again.output.strip().splitlines()[-1])["model"]
    info = json.loads(cli("info", "-c", "c", "--json").output)
    assert info["model_path"] == str(copied) and info["model"] == "tiny-clip"
    shown["info"] = info["model"]
    for how, options in (("fast query", []), ("full query", ["--backend", "torch"])):
        header = cli("query", "a red circle", "-c", "c", "-k", "1", *options).output
        shown[how] = re.search(r"\(model ([^,)]+)", header).group(1)
    evaluated = cli("eval", sample_dir, "-c", "c", "--device", "cpu").output
    shown["eval"] = re.search(r"^model (\S+):", evaluated, re.M).group(1)
    shown.update(served_names(tmp_path))
    assert shown == {place: "tiny-clip" for place in shown}, shown


def served_names(base) -> dict[str, str]:
    from fastapi.testclient import TestClient

    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.app import create_app
    from mmindex.pipeline.serve.settings import ServeSettings

    app = create_app(ServeSettings(store=StoreSettings(collection="c", data_dir=str(base / "mmindex_data")),
                                   device="cpu"))
    with TestClient(app, raise_server_exceptions=False) as client:
        embedded = client.post("/embed", json={"texts": ["a red circle"]}).json()
        ready = client.get("/readyz").json()
    return {"/embed": embedded["model"], "/readyz": ready["model"]}
