"""The lmt command: fast help, model listing, predict with exactly one JSON document, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from lmt.cli import main

HEAVY = ("torch", "transformers", "gradio")


def _lmt(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmt.cli", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


@pytest.mark.parametrize("args", [["--help"], ["models"], ["hub", "push", "--help"]])
def test_help_and_models_import_nothing_heavy(args):
    code = (
        "import sys, contextlib, io\n"
        "from lmt.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({args!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    start = time.perf_counter()
    assert _lmt(*args).returncode == 0
    # a generous bound for a loaded CI machine; benchmarks/bench_foundation.py measures the real figure
    assert time.perf_counter() - start < 5


def test_every_subcommand_has_help():
    for command in ("models", "predict", "env", "hub", "export"):
        result = _lmt(command, "--help")
        assert result.returncode == 0 and "usage: lmt" in result.stdout


def test_models_lists_and_filters(capsys):
    assert main(["models", "sam*"]) == 0
    out = capsys.readouterr().out
    assert "sam-vit-base" in out and "facebook/sam-vit-base" in out and "clip" not in out
    assert main(["models", "--task", "zero-shot-object-detection", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"owlv2-b16", "owlvit-b32"}
    assert all("zero-shot-object-detection" in r["tasks"] for r in rows)


@pytest.mark.parametrize(
    ("task", "options", "key"),
    [
        ("zero-shot-image-classification", ["--labels", "cat,dog,car"], "predictions"),
        ("image-classification", ["--model", "resnet-50", "--top-k", "2"], "predictions"),
        ("mask-generation", ["--points", "100,80,1", "200,150,0"], "masks"),
        ("zero-shot-object-detection", ["--queries", "cat,dog", "--threshold", "0.05"], "detections"),
        ("image-to-text", ["--max-new-tokens", "4"], "text"),
        ("visual-question-answering", ["--question", "what animal is this?", "--max-new-tokens", "3"], "text"),
        ("image-feature-extraction", ["--model", "clip-vit-b32"], "vector"),
    ],
)
def test_predict_json_is_one_document(task, options, key, cat_path, capsys):
    assert main(["predict", task, "--tiny", "--image", str(cat_path), *options, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)  # raises if stdout holds anything but one JSON document
    assert document["task"] == task and document["weights"] == "tiny"
    assert len(document["results"]) == 1 and key in document["results"][0]


def test_predict_stdout_of_a_real_process_is_pure_json(cat_path):
    result = _lmt("predict", "zero-shot-image-classification", "--tiny", "-i", str(cat_path), "--labels", "a,b", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["predictions"]


def test_predict_human_output_and_batches(cat_path, capsys):
    assert main(["predict", "zero-shot-image-classification", "--tiny", "-i", str(cat_path), "-i", str(cat_path),
                 "--labels", "cat,dog"]) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 2 and "cat" in out
    assert main(["predict", "mask-generation", "--tiny", "-i", str(cat_path), "--boxes", "10,10,200,200"]) == 0
    assert "1 masks" in capsys.readouterr().out


def test_predict_errors_are_clear_and_json(cat_path, tmp_path, capsys):
    assert main(["predict", "zero-shot-image-classification", "--tiny", "--image", str(cat_path), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"] == "InvalidInputError"
    assert "at least one" in captured.err and "Traceback" not in captured.err
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", "image-classification", "--tiny", "--image", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "bad.png" in captured.err and str(tmp_path) not in captured.err
    assert main(["predict", "mask-generation", "--tiny", "--image", str(cat_path), "--points", "1,x"]) == 2
    assert "point" in capsys.readouterr().err
    assert main(["predict", "image-classification", "--model", "nope-model", "--image", str(cat_path)]) == 2
    assert "lmt models" in capsys.readouterr().err


def test_env_reports(capsys):
    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report
