"""`mmindex label` and `ingest --labels`: labels written from stored image vectors, then filtered on with `query
--where` and counted by `facets`; the report as text and JSON; each mistake one line with its exit code."""
from __future__ import annotations

import json

from helpers.classify import SHAPES


def labels_file(tmp_path, lines, name="shapes.txt"):
    path = tmp_path / name
    path.write_text("# the sample's shapes\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_label_then_query_where_and_facets(run, ingested, tmp_path):
    path = labels_file(tmp_path, SHAPES)
    result = run("label", "-c", "shapes", "--labels", path, "--template", "a {}", "--template", "{}", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labelled"] == report["points"] == 60 and report["classes"] == SHAPES
    assert report["kind"] == "zero-shot" and report["top_k"] == 3 and sum(report["counts"].values()) == 60
    facet = json.loads(run("facets", "-c", "shapes", "label", "--json").stdout)["facets"][0]
    assert {v["value"]: v["count"] for v in facet["values"]} == {k: v for k, v in report["counts"].items() if v}
    assert facet["index_created"] is False  # label made its index
    shape, count = max(report["counts"].items(), key=lambda item: item[1])
    found = run("query", "a shape", "-c", "shapes", "--where", f"label = {shape} and label_score >= 0",
                "--limit", "100", "--json")
    assert found.exit_code == 0, found.output
    hits = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(hits) == count and {hit["payload"]["label"] for hit in hits} == {shape}
    assert all(len(hit["payload"]["label_top"]) == 3 for hit in hits)


def test_the_report_names_the_labels_and_a_rerun_starts_over(run, ingested, tmp_path):
    path = labels_file(tmp_path, ["red", "blue"], "colours.txt")
    result = run("label", "-c", "shapes", "--labels", path, "--field", "colour_guess", "--top-k", "1", "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("60 of 60 points of collection 'shapes' labelled in 'colour_guess' (zero-shot, 2 "
                               "labels, top 1)")
    assert {line.split()[0] for line in lines[1:]} == {"red", "blue"}
    again = run("label", "-c", "shapes", "--labels", path, "--field", "colour_guess", "--where", "year >= 2021",
                "--json")
    assert json.loads(again.stdout)["points"] < 60


def test_ingest_with_labels_writes_the_fields(run, tiny_model, sample_dir, tmp_path):
    path = labels_file(tmp_path, SHAPES)
    result = run("ingest", sample_dir, "-c", "fresh", "--model", tiny_model, "--labels", path, "--template", "a {}",
                 "--label-field", "guess", "--label-top-k", "2", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    counted = json.loads(run("facets", "-c", "fresh", "guess", "--json").stdout)["facets"][0]
    assert sum(v["count"] for v in counted["values"]) == 60
    assert {v["value"] for v in counted["values"]} <= set(SHAPES)


def test_mistakes_are_one_line(run, ingested, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n", encoding="utf-8")
    twice = labels_file(tmp_path, ["cat", "dog", "Cat"], "twice.txt")
    good = labels_file(tmp_path, SHAPES)
    one = labels_file(tmp_path, ["cat"], "one.txt")
    for args, code, message in [
        (["--labels", empty], 1, "empty.txt: the labels file holds no label"),
        (["--labels", one], 1, "one.txt: the labels file holds one label ('cat', line 2); zero-shot labels choose "
                               "among two or more"),
        (["--labels", twice], 1, "label 'Cat' is on line 2 (as 'cat') and on line 4"),
        (["--labels", good, "--template", "a photo"], 2, "--template 'a photo' must hold {} exactly once"),
        (["--labels", good, "--field", "color"], 2, "payload field 'color' (keyword) holds the collection's own data"),
        (["--labels", good, "--where", "colr = red"], 2, "unknown field colr"),
        (["--labels", good, "-c", "nowhere"], 1, "collection 'nowhere' does not exist"),
    ]:
        result = run("label", "-c", "shapes", *args)
        assert result.exit_code == code, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and message in errors[0], result.stderr  # after click's usage lines (exit 2)
        assert "Traceback" not in result.output
    ray = run("ingest", tmp_path, "-c", "x", "--labels", good, "--engine", "ray")
    assert ray.exit_code == 2 and "--labels runs on the local engine" in ray.stderr


def test_a_missing_labels_or_probe_file_is_a_bad_option_value(run, tmp_path):
    (tmp_path / "folder").mkdir()
    for command in (["label", "-c", "shapes"], ["eval", "--task", "classify", "-c", "shapes", "--label-col", "shape"],
                    ["ingest", tmp_path, "-c", "shapes"]):
        for option in ("--labels", "--probe"):
            for path, says in (("nonexist.txt", "does not exist"), ("folder", "is a directory")):
                result = run(*command, option, path)
                assert result.exit_code == 2, (command, option, result.output)
                errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
                assert len(errors) == 1 and f"'{option}'" in errors[0] and path in errors[0] and says in errors[0]


def test_label_and_eval_take_the_model_from_its_new_folder(run, tiny_model, sample_dir, tmp_path):
    import shutil

    old, new = tmp_path / "models" / "old", tmp_path / "models" / "new"
    shutil.copytree(tiny_model, old)
    result = run("ingest", sample_dir, "-c", "moved", "--model", old, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    old.rename(new)
    path = labels_file(tmp_path, SHAPES)
    lost = run("label", "-c", "moved", "--labels", path)
    assert lost.exit_code != 0 and "pass --model with the model's folder" in lost.stderr, lost.output
    assert "--model" in run("label", "--help").stdout
    moved = run("label", "-c", "moved", "--labels", path, "--model", new, "--json")
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["labelled"] == 60
    scored = run("eval", "--task", "classify", "-c", "moved", "--label-col", "shape", "--labels", path,
                 "--model", new, "--json")
    assert scored.exit_code == 0, scored.output
    assert [r["classifier"] for r in json.loads(scored.stdout)["results"]] == ["zero-shot", "probe"]
    lost_eval = run("eval", "--task", "classify", "-c", "moved", "--label-col", "shape", "--labels", path)
    assert lost_eval.exit_code != 0 and "pass --model" in lost_eval.stderr
    alone = run("eval", "--task", "classify", "-c", "moved", "--label-col", "shape", "--model", new)
    assert alone.exit_code == 2 and "--model goes with --labels FILE" in alone.stderr


def test_labels_cut_to_one_prompt_are_refused_before_anything_is_written(run, ingested, tmp_path):
    long = "red " * 40  # past the tiny model's 32 tokens: the query path's tokenizer cuts it too
    path = labels_file(tmp_path, ["star", long + "circle", long + "square"])
    result = run("label", "-c", "shapes", "--labels", path)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "cannot be told apart" in errors[0] and "cuts them at 32 tokens" in errors[0]
    info = run("info", "-c", "shapes", "--json")
    assert info.exit_code == 0 and '"label_score"' not in info.stdout and '"labels"' not in info.stdout  # nothing written
