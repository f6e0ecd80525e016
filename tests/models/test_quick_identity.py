"""The fast query path makes the full path's identity check (pipeline/models/quick.py): it serves a model only while
its files are the ones the bundle was written for — by size, times, change time and inode, and a sampled digest of
the bytes — so a model changed in place with its size and modification time kept (``touch -r``) takes the full path,
which refuses it by fingerprint. Differential: over generated edits, the fast path accepts exactly when the full
fingerprint is unchanged."""
from __future__ import annotations

import copy
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.pipeline.models import bundle, identity, quick
from mmindex.pipeline.models.bundle import write_bundle
from mmindex.pipeline.models.identity import model_fingerprint
from mmindex.pipeline.models.onnx_model import OnnxModel

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'mmindex[onnx]')")


@pytest.fixture(scope="module")
def onnx_tiny(tiny_model):
    return OnnxModel(tiny_model, "cpu", threads=1)


def bundled_copy(onnx_tiny, tiny_model, folder):
    """A copy of the tiny model (times kept: old enough for a bundle) with its bundle index written, as a load of the
    copy with ONNX Runtime writes it (the export is the same: same files, same fingerprint)."""
    shutil.copytree(tiny_model, folder)
    twin = copy.copy(onnx_tiny)
    twin.name = str(folder)
    assert write_bundle(twin) is not None
    fingerprint = model_fingerprint(str(folder))
    assert quick.open_bundle(str(folder), "fp32", fingerprint) is not None
    return fingerprint


def bundle_index(folder) -> dict:
    return quick.read_json(quick.index_path(str(folder), "fp32"))


def rewrite_in_place(path, offset: int, data: bytes, date_back: bool) -> None:
    stat = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
    if date_back:  # touch -r: the size and modification time as they were
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_weights_changed_in_place_and_dated_back_take_the_full_path(onnx_tiny, tiny_model, tmp_path, caplog):
    folder = tmp_path / "model"
    fingerprint = bundled_copy(onnx_tiny, tiny_model, folder)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    rewrite_in_place(weights, size // 2, bytes(64), date_back=True)
    assert weights.stat().st_size == size
    with caplog.at_level("INFO", logger="mmindex.quick"):
        assert quick.open_bundle(str(folder), "fp32", fingerprint) is None
    assert "its files changed since the bundle was written" in caplog.text
    assert model_fingerprint(str(folder)) != fingerprint  # what the full path then refuses the model by


def test_without_change_times_the_sampled_bytes_still_tell(onnx_tiny, tiny_model, tmp_path, monkeypatch, caplog):
    """A filesystem whose change times say nothing (or a clock set back): weights replaced by others of the same
    size, dated back, differ in the sampled bytes."""
    def size_and_mtime(folder):
        return {relative: stamp[:2] for relative, stamp in identity.file_signature(folder).items()}

    monkeypatch.setattr(quick, "file_signature", size_and_mtime)
    monkeypatch.setattr(bundle, "file_signature", size_and_mtime)
    folder = tmp_path / "model"
    fingerprint = bundled_copy(onnx_tiny, tiny_model, folder)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    rewrite_in_place(weights, 0, os.urandom(size), date_back=True)  # other weights throughout, same size
    assert size_and_mtime(str(folder)) == bundle_index(folder)["files"]  # what the signature alone sees: nothing
    with caplog.at_level("INFO", logger="mmindex.quick"):
        assert quick.open_bundle(str(folder), "fp32", fingerprint) is None
    assert "its files changed since the bundle was written" in caplog.text
    assert quick.indexed_fingerprint(str(folder)) is None


def test_a_start_on_an_indexed_folder_does_not_hash_its_weights(onnx_tiny, tiny_model, tmp_path, monkeypatch):
    """``Encoder`` takes the fingerprint the query index vouches for (``quick.indexed_fingerprint``) instead of
    hashing the weights again; once the files change (dated back: only the change time and sampled bytes tell), it
    hashes them and records the new fingerprint."""
    from mmindex.pipeline.models.encoder import Encoder

    folder = tmp_path / "model"
    fingerprint = bundled_copy(onnx_tiny, tiny_model, folder)
    identity._FINGERPRINTS.clear()  # as in a new process
    hashed = []
    real = identity.hash_file
    monkeypatch.setattr(identity, "hash_file", lambda path, model: hashed.append(path) or real(path, model))
    encoder = Encoder(str(folder), device="cpu", backend="auto")
    assert encoder.fingerprint == fingerprint and encoder.backend.torch_free and hashed == []
    rewrite_in_place(folder / "model.safetensors", 100, b"\x7f" * 8, date_back=True)
    identity._FINGERPRINTS.clear()
    assert identity.model_source(str(folder), quick.indexed_fingerprint)[2] == model_fingerprint(str(folder)) \
        != fingerprint
    assert hashed


edits = st.lists(st.tuples(st.sampled_from(["model.safetensors", "config.json", "tokenizer.json", "modules.json"]),
                           st.floats(0, 1), st.binary(min_size=1, max_size=16), st.booleans(),
                           st.sampled_from(["in place", "append"])), max_size=2)



def apply_edits(folder, edits) -> None:
    """Each (file, where, bytes, date back?, in place or append) edit of ``edits`` applied to ``folder``."""
    for name, where, data, date_back, how in edits:
        path = folder / name
        size = path.stat().st_size
        if how == "append":
            stat = os.stat(path)
            with open(path, "ab") as handle:
                handle.write(data)
            if date_back:
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        else:
            rewrite_in_place(path, min(int(where * size), size - len(data)), data, date_back)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=edits)
def test_the_fast_path_accepts_exactly_what_the_full_fingerprint_accepts(onnx_tiny, tiny_model, tmp_path_factory,
                                                                          edits):
    folder = tmp_path_factory.mktemp("edits") / "model"
    fingerprint = bundled_copy(onnx_tiny, tiny_model, folder)
    apply_edits(folder, edits)
    fast = quick.open_bundle(str(folder), "fp32", fingerprint) is not None
    same = model_fingerprint(str(folder)) == fingerprint
    assert same or not fast, "the fast path served a model the full path would refuse"
    indexed = quick.indexed_fingerprint(str(folder))  # what ingest, serve and eval record without hashing
    assert indexed in (None, model_fingerprint(str(folder))), "the index vouched for files it was not made of"
    if not edits:
        assert fast and indexed == fingerprint


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=edits)
def test_a_remembered_fingerprint_is_never_a_stale_one(tiny_model, tmp_path_factory, edits):
    """A folder without a bundle (the torch path, a ready-made repository) has its fingerprint recorded at its first
    start (``quick.remembered_fingerprint``); over generated edits, what a later start takes is always the full
    hash of the files as they are, and an unedited folder is not hashed again."""
    folder = tmp_path_factory.mktemp("remembered") / "model"
    shutil.copytree(tiny_model, folder)  # times kept: old enough to be recorded
    identity._FINGERPRINTS.clear()
    first = quick.remembered_fingerprint(str(folder))
    assert first == model_fingerprint(str(folder)) and quick.indexed_fingerprint(str(folder)) == first
    apply_edits(folder, edits)
    identity._FINGERPRINTS.clear()  # a new process
    fresh = model_fingerprint(str(folder))
    assert quick.indexed_fingerprint(str(folder)) in (None, fresh), "the record vouched for files it was not made of"
    assert quick.remembered_fingerprint(str(folder)) == fresh
    if not edits:
        assert quick.indexed_fingerprint(str(folder)) == first
