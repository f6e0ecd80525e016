"""Nothing from a model folder runs when it loads unless the user says so (pipeline/models/trust.py): Python files,
auto_map, trust_remote_code and foreign sentence-transformers modules are refused before a library opens the
folder, pickle weights are checked with torch's weights_only loader, and --trust-model-code (or
trust_model_code=True) is the one way past, named in every refusal."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.errors import ModelError
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.models.trust import check_model_trust, code_trusted, config_reasons, folder_reasons, trusting

MARKER = "mmindex-trust-marker"


class Planted:
    """Unpickling this runs code: it writes the marker file (what a malicious pytorch_model.bin would do)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def copy_model(tiny_model, tmp_path, name="model"):
    folder = tmp_path / name
    shutil.copytree(tiny_model, folder)
    return folder


# -- what is refused, one example each ---------------------------------------------------------------------------

def plant_python(folder, marker):
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")


def plant_auto_map(folder, marker):
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))


def plant_trust_remote_code(folder, marker):
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    config["model_args"] = {"trust_remote_code": True}
    (folder / "sentence_bert_config.json").write_text(json.dumps(config))


def plant_foreign_module(folder, marker):
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 1, "name": "1", "path": "1_Evil", "type": "evil_module.Evil"})
    (folder / "modules.json").write_text(json.dumps(modules))


def plant_pickle(folder, marker):
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weights": Planted(str(marker))}, handle, protocol=2)


PLANTS = {"python file": (plant_python, "modeling_evil.py is Python code"),
          "auto_map": (plant_auto_map, "config.json: auto_map names code to import"),
          "trust_remote_code": (plant_trust_remote_code, "sentence_bert_config.json: trust_remote_code is set"),
          "foreign module": (plant_foreign_module, "module 'evil_module.Evil' is not sentence-transformers' own"),
          "pickle": (plant_pickle, "pytorch_model.bin is a pickle that holds more than tensors")}


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_each_kind_is_refused_before_the_model_loads(plant, tiny_model, tmp_path):
    folder = copy_model(tiny_model, tmp_path)
    marker = tmp_path / MARKER
    write, reason = PLANTS[plant]
    write(folder, marker)
    with pytest.raises(ModelError, match="--trust-model-code") as refused:
        Encoder(str(folder), device="cpu", backend="torch")
    assert reason in str(refused.value) and "MMINDEX_TRUST_MODEL_CODE=1" in str(refused.value)
    assert not marker.exists()


def test_a_pickle_of_tensors_loads_and_embeds_as_the_safetensors(tiny_model, tmp_path, encoder):
    """weights_only accepts a plain state dict: such a pytorch_model.bin is no reason to refuse a model."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    folder = copy_model(tiny_model, tmp_path)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert folder_reasons(str(folder)) == []
    loaded = Encoder(str(folder), device="cpu", backend="torch")
    texts = ["a red circle", "a blue square"]
    np.testing.assert_allclose(loaded.encode_texts(texts), encoder.encode_texts(texts), atol=1e-6)


def test_files_that_are_no_pickle_are_not_refused(tmp_path):
    (tmp_path / "openvino_model.bin").write_bytes(b"\x00\x01openvino weights" * 32)
    (tmp_path / "config.json").write_text("{}")
    assert folder_reasons(str(tmp_path)) == []


def test_a_trusted_pickle_is_still_loaded_with_weights_only(tiny_model, tmp_path):
    """The opt-in lets mmindex hand the folder over; the libraries still unpickle with weights_only=True."""
    folder = copy_model(tiny_model, tmp_path)
    marker = tmp_path / MARKER
    plant_pickle(folder, marker)
    with pytest.raises(ModelError, match="cannot load model"):
        Encoder(str(folder), device="cpu", backend="torch", trust_model_code=True)
    assert not marker.exists()


def test_trusting_is_the_way_past(tiny_model, tmp_path):
    folder = copy_model(tiny_model, tmp_path)
    (folder / "helpers.py").write_text("VALUE = 1\n")  # code nothing imports: the model loads once trusted
    with pytest.raises(ModelError, match="helpers.py is Python code"):
        check_model_trust(str(folder), code_trusted())
    with trusting(True):
        assert code_trusted() and code_trusted(False) is False
        check_model_trust(str(folder), code_trusted())
        assert Encoder(str(folder), device="cpu", backend="torch").dim > 0
    assert not code_trusted()


# -- the rule, over generated configs ------------------------------------------------------------------------------

plain_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["model_type", "a", "b", "vision_config", "auto", "map", "trust"]), children,
                      max_size=3),
    max_leaves=12)
planted = st.sampled_from([("auto_map", {"AutoModel": "modeling_x.X"}), ("auto_map", "modeling_x.X"),
                           ("trust_remote_code", True)])
harmless = st.sampled_from([("trust_remote_code", False), ("auto_map", {}), ("auto_map", None)])


def plant_at(value, path: list[int], key: str, item):
    """``value`` with ``{key: item}`` added in the dict reached by following ``path`` (or wrapped in one)."""
    if isinstance(value, dict):
        children = [k for k in value if isinstance(value[k], (dict, list))]
        if path and children:
            chosen = children[path[0] % len(children)]
            return {**value, chosen: plant_at(value[chosen], path[1:], key, item)}
        return {**value, key: item}
    if isinstance(value, list) and value and path:
        index = path[0] % len(value)
        return value[:index] + [plant_at(value[index], path[1:], key, item)] + value[index + 1:]
    return {"wrapped": value, key: item}


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=plain_json, path=st.lists(st.integers(0, 5), max_size=4), bad=planted, fine=harmless)
def test_a_config_runs_code_exactly_when_a_key_asks_for_it(tmp_path_factory, config, path, bad, fine):
    folder = tmp_path_factory.mktemp("config")
    path_of = folder / "config.json"

    def reasons(value):
        path_of.write_text(json.dumps(value))
        return config_reasons("config.json", str(path_of))

    assert reasons(config) == []
    assert reasons(plant_at(config, path, *fine)) == []
    assert reasons(plant_at(config, path, *bad)) != []


@pytest.mark.parametrize("command", ["ingest", "eval", "train"])  # query: in the slow test, on its collection
def test_every_command_that_loads_a_model_refuses_and_names_the_option(command, tiny_model, sample_dir, cli,
                                                                        tmp_path):
    folder = copy_model(tiny_model, tmp_path)
    (folder / "helpers.py").write_text("VALUE = 1\n")
    args = {"ingest": ["ingest", sample_dir, "-c", "t"], "eval": ["eval", sample_dir],
            "train": ["train", sample_dir, "-o", tmp_path / "out", "--epochs", "1"]}
    refused = cli(*args[command], "--model", folder, "--device", "cpu")
    assert refused.exit_code == 1, refused.output
    assert "helpers.py is Python code" in refused.output and "--trust-model-code" in refused.output
    assert "Traceback" not in refused.output


@pytest.mark.slow
def test_the_cli_option_lets_the_model_load(tiny_model, sample_dir, cli, tmp_path, monkeypatch):
    folder = copy_model(tiny_model, tmp_path)
    (folder / "helpers.py").write_text("VALUE = 1\n")
    trusted = cli("ingest", sample_dir, "-c", "t", "--model", folder, "--backend", "torch", "--trust-model-code", "-q")
    assert trusted.exit_code == 0, trusted.output
    refused = cli("query", "a red circle", "-c", "t", "--backend", "torch", "--json")
    assert refused.exit_code == 1 and "--trust-model-code" in refused.output
    monkeypatch.setenv("MMINDEX_TRUST_MODEL_CODE", "1")
    hits = cli("query", "a red circle", "-c", "t", "--backend", "torch", "--json")
    assert hits.exit_code == 0 and hits.output.strip(), hits.output
