"""benchmarks/bench_foundation.py --tiny: every measurement runs on the tiny variants, and its outputs match the
transformers pipelines. Speed goals are not asserted: tiny models measure nothing but overhead."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_foundation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_foundation", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "foundation.json"
    returned = bench.main(["--tiny", "--out", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(returned))
    return written, out


def test_results_file_has_the_documented_structure(results, bench):
    data, out = results
    for key in ("benchmark", "date", "command", "mode", "settings", "machine", "sections", "goals", "parity"):
        assert key in data, key
    assert data["mode"] == "tiny"
    assert data["command"] == f"python benchmarks/bench_foundation.py --tiny --out {out}"
    for key in ("cpu", "logical_cores", "torch", "transformers", "torch_threads", "load_average_1min"):
        assert key in data["machine"], key
    assert set(data["sections"]) == {"zero_shot", "detect", "classify", "sam", "cli"}
    for name in ("zero_shot", "detect", "classify", "sam"):
        section = data["sections"][name]
        assert section["raw"] and all(len(times) >= 1 for times in section["raw"].values())
        assert all(value > 0 for value in section["ratios"].values())
    names = [goal["name"] for goal in data["goals"]]
    assert names == [
        "zero_shot_single", "zero_shot_batch8", "detect_6_queries", "classify_batch8", "classify_overhead",
        "sam_full_over_reprompt", "sam_reprompt_over_bare", "cli_help", "cli_models", "cli_no_heavy_imports",
    ]
    for goal in data["goals"]:
        assert {"description", "goal", "measured", "target", "passed"} <= set(goal)
        assert isinstance(goal["passed"], bool)
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert table == bench.render_markdown(data)
    assert "| CLIP zero-shot, 1 image/call" in table


def test_sdk_matches_the_pipelines(results):
    parity = results[0]["parity"]
    assert set(parity) == {"zero_shot", "detect", "classify", "sam", "cli"}
    failed = {name: check for name, check in parity.items() if not check["passed"]}
    assert not failed
    assert parity["detect"]["compared_detections"] > 0
    assert parity["zero_shot"]["max_abs_score_diff"] <= 1e-5


def test_cli_imports_no_heavy_modules(results):
    assert results[0]["sections"]["cli"]["heavy_imports"] == {"lmt --help": [], "lmt models": []}
