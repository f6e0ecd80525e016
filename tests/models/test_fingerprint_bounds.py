"""A model folder's fingerprint reads regular files only, bounded (pipeline/models/identity.py): a link to /dev/zero,
a named pipe, a folder link round a loop, a link out of the folder or a file past the caps can neither hang it nor
make it read without end, and one SIGTERM or SIGINT stops it. For ordinary folders it is the fingerprint mmindex
always made: a differential test against the plain-Python algorithm collections were recorded with."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.errors import ModelError
from mmindex.pipeline.models import identity
from mmindex.pipeline.models.identity import file_signature, model_files, model_fingerprint


def recorded_fingerprint(folder) -> str:
    """The algorithm existing collections recorded (os.walk following links), in plain Python: the oracle."""
    found = []
    for root, folders, files in os.walk(folder, followlinks=True):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f != "__pycache__")
        for name in sorted(files):
            if not name.startswith(".") and not name.lower().endswith(".md"):
                path = os.path.join(root, name)
                found.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    total = hashlib.sha256()
    for relative, path in found:
        data = open(path, "rb").read()
        total.update(f"{relative}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    return "sha256:" + total.hexdigest()


names = st.sampled_from(["config.json", "model.safetensors", "tokenizer.json", "README.md", ".hidden", "a.txt",
                         "notes.MD", "__pycache__", "1_Pooling", "sub", ".git", "Z"])
trees = st.dictionaries(st.lists(names, min_size=1, max_size=3).map(tuple), st.binary(max_size=300), max_size=8)


def write_tree(folder, tree) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for parts, data in tree.items():
        path = folder.joinpath(*parts)
        if any(parent.is_file() for parent in path.parents if folder in parent.parents):
            continue  # a file where this path needs a folder
        if path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tree=trees, link_file=st.booleans(), link_folder=st.booleans())
def test_ordinary_folders_keep_the_fingerprint_collections_recorded(tmp_path_factory, tree, link_file, link_folder):
    folder = tmp_path_factory.mktemp("model")
    write_tree(folder, tree)
    (folder / "weights.bin").write_bytes(b"w" * 100)
    (folder / "inner").mkdir(exist_ok=True)
    (folder / "inner" / "x.json").write_text("{}")
    if link_file:  # a link to a file of the folder: read as before
        os.symlink("weights.bin", folder / "alias.bin")
    if link_folder:  # a link to a folder of the folder (no loop): walked as before
        os.symlink("inner", folder / "inner-link")
    assert model_fingerprint(str(folder)) == recorded_fingerprint(folder)


def test_the_demo_model_keeps_its_recorded_fingerprint():
    demo = os.path.join(os.path.dirname(__file__), "..", "..", "demo", "shapes-clip")
    assert model_fingerprint(demo) == recorded_fingerprint(demo)


def test_a_named_pipe_is_left_out_and_does_not_hang(tmp_path, caplog):
    (tmp_path / "config.json").write_text("{}")
    os.mkfifo(tmp_path / "weights.bin")  # no writer: opening it would block for ever
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="mmindex.models"):
        files = model_files(str(tmp_path))
        fingerprint = model_fingerprint(str(tmp_path))
    assert time.monotonic() - started < 2
    assert [relative for relative, _ in files] == ["config.json"] and fingerprint.startswith("sha256:")
    assert "weights.bin" in caplog.text and "not a regular file" in caplog.text


def test_a_link_to_dev_zero_is_refused_at_once(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    os.symlink("/dev/zero", tmp_path / "model.safetensors")
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"model\.safetensors is a link to /dev/zero, outside the folder"):
        model_fingerprint(str(tmp_path))
    assert time.monotonic() - started < 2


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    model = tmp_path / "model"
    model.mkdir()
    os.symlink(tmp_path / "elsewhere.bin", model / "weights.bin")
    with pytest.raises(ModelError, match="outside the folder.*cp -L"):
        model_fingerprint(str(model))
    os.unlink(model / "weights.bin")
    os.symlink(tmp_path, model / "parent")  # a folder link out (and above: a loop through it)
    with pytest.raises(ModelError, match="parent is a link to"):
        model_files(str(model))


def test_folder_loops_are_walked_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"1")
    os.symlink(".", tmp_path / "self")  # folder/self/self/… 
    os.symlink("..", tmp_path / "a" / "up")  # a/up/a/up/…
    started = time.monotonic()
    files = [relative for relative, _ in model_files(str(tmp_path))]
    assert time.monotonic() - started < 2
    assert files == ["a/w.bin"]


def test_a_hugging_face_snapshot_reads_its_blobs(tmp_path):
    """The Hub cache's layout: snapshot files are links into the repository's blobs/, which are not outside it."""
    repo = tmp_path / "models--org--clip"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc").write_bytes(b"weights")
    snapshot = repo / "snapshots" / "0123"
    snapshot.mkdir(parents=True)
    os.symlink("../../blobs/abc", snapshot / "model.safetensors")
    assert [relative for relative, _ in model_files(str(snapshot))] == ["model.safetensors"]
    assert model_fingerprint(str(snapshot)) == recorded_fingerprint(snapshot)


@pytest.mark.parametrize("cap, value", [("MAX_FILE_BYTES", 50), ("MAX_TOTAL_BYTES", 150), ("MAX_FILES", 2)])
def test_a_folder_past_the_caps_is_refused_before_it_is_read(tmp_path, monkeypatch, cap, value):
    for name in ("a.bin", "b.bin", "c.bin"):
        (tmp_path / name).write_bytes(b"x" * 60)
    monkeypatch.setattr(identity, cap, value)
    opened = []
    monkeypatch.setattr(identity, "hash_file", lambda *args: opened.append(args))
    with pytest.raises(ModelError, match=f"model folder {tmp_path}: .*is it a model's folder"):
        model_fingerprint(str(tmp_path))
    assert opened == []


def test_a_file_that_grows_while_it_is_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 100)
    real = os.fstat

    def smaller(fd):  # the size the listing saw, before a writer appended
        stat = real(fd)
        return os.stat_result((stat.st_mode, *stat[1:6], 50, *stat[7:]))

    monkeypatch.setattr(identity.os, "fstat", smaller)
    with pytest.raises(ModelError, match="changed size while it was read"):
        identity.hash_file(str(path), str(tmp_path))


def test_the_signature_sees_a_file_rewritten_in_place_and_dated_back(tmp_path):
    """touch -r keeps size and mtime; the change time and the inode are the kernel's."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"a" * 64)
    stat = os.stat(path)
    before = file_signature(str(tmp_path))
    time.sleep(0.02)
    path.write_bytes(b"b" * 64)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = file_signature(str(tmp_path))
    assert before["model.safetensors"][:2] == after["model.safetensors"][:2]  # size and mtime as before
    assert before != after


STOP_SCRIPT = textwrap.dedent("""
    import sys
    from mmindex.pipeline.ingest.signals import graceful_stop
    from mmindex.pipeline.models import identity

    with graceful_stop(lambda message: None):  # as `mmindex ingest` runs the checks before loading
        print("reading", flush=True)
        identity.model_fingerprint(sys.argv[1])
    print("finished", flush=True)
""")


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_a_long_fingerprint(tmp_path, number):
    """64 GB of sparse weights (a minute of hashing): one signal ends the process at once, with 128 + N."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with open(model / "model.safetensors", "wb") as handle:
        handle.truncate(identity.MAX_FILE_BYTES - 1)
    process = subprocess.Popen([sys.executable, "-c", STOP_SCRIPT, str(model)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "reading"
    time.sleep(0.3)
    process.send_signal(number)
    sent = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert time.monotonic() - sent < 3, "the fingerprint went on after the signal"
    assert process.returncode == 128 + number, stderr
    assert "stopped while fingerprinting" in stderr and "Traceback" not in stderr
