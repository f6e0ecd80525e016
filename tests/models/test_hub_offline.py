"""A Hub model name without network (pipeline/models/st_model.py, ``hub_access``): one look for the Hub with a short
timeout instead of the Hub library's minutes of retries for each file and each backend; then the model loads from
the local Hugging Face cache when it is there, else one error says how to work offline — once, with the exit code of
a model error, never behind a "runs in torch" warning."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

# The Hub library reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported: each case runs in its own process, timed
# from after the imports (torch alone takes seconds to import on a busy machine).
SCRIPT = textwrap.dedent("""
    import json, sys, time
    import sentence_transformers, torch  # noqa: F401 - imported before the clock starts
    from click.testing import CliRunner
    from mmindex.pipeline.cli import main

    started = time.monotonic()
    result = CliRunner().invoke(main, sys.argv[1:])
    print(json.dumps({"seconds": time.monotonic() - started, "code": result.exit_code, "output": result.output,
                      "error": repr(result.exception) if result.exit_code not in (0, 1) else None}))
""")


def closed_port() -> int:
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(args, tmp_path, **env):
    environment = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    environment.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf-home"), **env)
    done = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer, done.stderr


def test_an_unreachable_hub_is_looked_for_once(tmp_path, monkeypatch, caplog):
    """In this process: the Hub library's settings as HF_ENDPOINT (a closed port) and no HF_HUB_OFFLINE make them."""
    import time

    from huggingface_hub import constants

    from mmindex.errors import ModelError
    from mmindex.pipeline.models.encoder import Encoder

    importlib.import_module("sentence_transformers")  # before the clock starts (seconds on a busy machine)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    started = time.monotonic()
    with caplog.at_level("WARNING"), pytest.raises(ModelError) as failed:
        Encoder("clip-ViT-B-32", device="cpu", backend="auto")
    assert time.monotonic() - started < 10
    message = str(failed.value)
    assert message.startswith("cannot load model 'clip-ViT-B-32'") and "cannot be reached" in message
    assert "HF_HUB_OFFLINE=1" in message and "--model /models/clip-ViT-B-32" in message
    assert "runs in torch" not in caplog.text and "Retrying" not in caplog.text


@pytest.mark.slow
def test_an_unreachable_hub_fails_at_once_with_one_message(sample_dir, tmp_path):
    answer, stderr = run(["ingest", sample_dir, "-c", "photos", "--model", "clip-ViT-B-32", "--device", "cpu"],
                         tmp_path)
    text = answer["output"] + stderr
    assert answer["code"] == 1, answer
    assert answer["seconds"] < 10, f"{answer['seconds']:.1f} s to fail"
    assert text.count("cannot load model 'clip-ViT-B-32'") == 1, text
    assert "runs in torch" not in text and "Retrying" not in text and "Traceback" not in text, text
    for advice in ("cannot be reached", "HF_HUB_OFFLINE=1", "--model /models/clip-ViT-B-32",
                   "SentenceTransformer('clip-ViT-B-32')"):
        assert advice in answer["output"], answer["output"]


@pytest.mark.slow
def test_a_cached_hub_model_loads_without_network(tiny_model, sample_dir, tmp_path):
    """The model in the local Hugging Face cache: used as it is, with one warning that the Hub was not reached."""
    repo = tmp_path / "hf-home" / "hub" / "models--sentence-transformers--tiny-clip"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    answer, stderr = run(["ingest", sample_dir, "-c", "photos", "--model", "tiny-clip", "--device", "cpu",
                          "--backend", "torch", "-q"], tmp_path)
    text = answer["output"] + stderr
    assert answer["code"] == 0, text
    assert answer["seconds"] < 60, answer
    assert text.count("cannot be reached") == 1 and "loads from the local cache" in text, text
    assert "Retrying" not in text
