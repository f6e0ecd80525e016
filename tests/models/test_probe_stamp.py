"""A bundle's passed probe check is recorded (pipeline/models/probe_stamp.py) and skipped on later opens only while
every file it read and the code that ran it are the same: any file rewritten (even dated back), any version or
CPU changed, and the probes run again."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.pipeline.models import probe_stamp, quick
from mmindex.pipeline.models.bundle import write_bundle
from mmindex.pipeline.models.identity import model_fingerprint
from mmindex.pipeline.models.onnx_model import OnnxModel

FILES = {"image.onnx": b"i" * 64, "text.onnx": b"t" * 64, "probes.npz": b"p" * 32}


def fake_cache(folder):
    """An export folder as folder_state reads it: its manifest's files, the manifest, the bundle, the tokenizer."""
    folder.mkdir(exist_ok=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    manifest = {"files": {name: len(data) for name, data in FILES.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "query.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    return manifest


@pytest.fixture
def settled(monkeypatch):
    """Files written by the test count as settled (not changed in the last 2 s), so a stamp is written."""
    monkeypatch.setattr(probe_stamp, "racy", lambda _: False)


def covered_names():
    return [*FILES, "manifest.json", *probe_stamp.COVERED]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(covered_names()), offset=st.integers(0, 1), dated_back=st.booleans())
def test_any_covered_file_rewritten_voids_the_stamp(tmp_path_factory, settled, name, offset, dated_back):
    folder = tmp_path_factory.mktemp("cache")
    manifest = fake_cache(folder)
    probe_stamp.write_stamp(folder, manifest, images=True)
    assert probe_stamp.stamp_holds(folder, manifest, images=True)
    path = folder / name
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 1  # same size, other bytes
    path.write_bytes(bytes(data))
    if dated_back:  # the modification time set back: only the change time tells
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not probe_stamp.stamp_holds(folder, manifest, images=True)


def test_other_code_or_another_cpu_voids_the_stamp(tmp_path, settled, monkeypatch):
    manifest = fake_cache(tmp_path)
    probe_stamp.write_stamp(tmp_path, manifest, images=False)
    assert probe_stamp.stamp_holds(tmp_path, manifest, images=False)
    assert not probe_stamp.stamp_holds(tmp_path, manifest, images=True)  # images were not checked
    real = probe_stamp.versions()
    monkeypatch.setattr(probe_stamp, "versions", lambda: {**real, "onnxruntime": "0.0.1"})
    assert not probe_stamp.stamp_holds(tmp_path, manifest, images=False)
    monkeypatch.setattr(probe_stamp, "versions", lambda: real)
    monkeypatch.setattr(probe_stamp, "cpu_name", lambda: "another CPU")
    assert not probe_stamp.stamp_holds(tmp_path, manifest, images=False)


def test_files_changed_in_the_last_two_seconds_get_no_stamp(tmp_path):
    manifest = fake_cache(tmp_path)  # just written: racy
    probe_stamp.write_stamp(tmp_path, manifest, images=True)
    assert not (tmp_path / probe_stamp.STAMP).exists()


@pytest.mark.parametrize("stamp", ["{not json", "[]", json.dumps({"format": 99})])
def test_a_damaged_stamp_runs_the_probes(tmp_path, settled, stamp):
    manifest = fake_cache(tmp_path)
    (tmp_path / probe_stamp.STAMP).write_text(stamp)
    assert not probe_stamp.stamp_holds(tmp_path, manifest, images=False)
    assert not probe_stamp.stamp_holds(tmp_path, None, images=False)


def test_a_read_only_cache_keeps_checking_without_failing(tmp_path, settled, monkeypatch):
    manifest = fake_cache(tmp_path)
    monkeypatch.setattr(type(tmp_path), "write_text", lambda *a, **k: (_ for _ in ()).throw(PermissionError("ro")))
    probe_stamp.write_stamp(tmp_path, manifest, images=True)  # no error
    assert not probe_stamp.stamp_holds(tmp_path, manifest, images=True)


def test_a_real_bundle_skips_its_probes_once_checked_and_checks_again_after_a_change(tiny_model, tmp_path,
                                                                                     settled, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    write_bundle(OnnxModel(str(model), "cpu"))
    fingerprint = model_fingerprint(str(model))
    checks = []
    real_check = quick.QuickEncoder.check
    monkeypatch.setattr(quick.QuickEncoder, "check", lambda self, images: checks.append(images) or
                        real_check(self, images))
    first = quick.open_bundle(str(model), "fp32", fingerprint, images=True)
    assert first is not None and checks == [True]
    second = quick.open_bundle(str(model), "fp32", fingerprint, images=True)
    assert second is not None and checks == [True]  # skipped: same files, same code
    assert second.encode_texts(["a red circle"]).tolist() == first.encode_texts(["a red circle"]).tolist()
    folder = str(quick.export_folder(json.loads(quick.index_path(str(model), "fp32").read_text())["cache_dir"]))
    bundle_file = os.path.join(folder, quick.BUNDLE)
    bundle = json.loads(open(bundle_file, encoding="utf-8").read())
    bundle["text"]["probe_features"]["input_ids"][0][1] += 1  # the bundle's own record now disagrees
    before = os.stat(bundle_file)
    open(bundle_file, "w", encoding="utf-8").write(json.dumps(bundle))
    os.utime(bundle_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert quick.open_bundle(str(model), "fp32", fingerprint, images=True) is None
    assert checks == [True, True]
