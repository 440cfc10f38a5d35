"""benchmarks/bench_sam_encoder.py --tiny: every side and measurement runs on lmt's tiny SAM, run as the README says
to run it, and the fast encoder matches transformers. Speed goals are not asserted: a tiny model measures overhead."""

from __future__ import annotations

import pytest

from tests.benchscripts import imported, run_script

SIDES = ("transformers_eager", "transformers_sdpa", "fast")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sam_encoder.json"
    data, stdout = run_script("bench_sam_encoder", out, "--tiny")
    assert "sam_encoder_vs_eager" in stdout  # the printed table names the goal
    return data, out


@pytest.fixture(scope="module")
def bench():
    """The benchmark module, for its render_markdown and encoder_flops; imported as the script imports it."""
    with imported("bench_sam_encoder") as module:
        yield module


def test_results_file_has_every_field(results, bench):
    data, out = results
    for key in ("benchmark", "date", "command", "out", "total_s", "mode", "settings", "setup", "machine", "raw",
                "s_per_call", "ratios", "minor_page_faults", "flops", "gflops_per_s", "matmul_ceiling", "parity",
                "goals"):
        assert key in data, key
    assert data["benchmark"] == "sam_encoder" and data["mode"] == "tiny"
    assert data["command"] == f"python benchmarks/bench_sam_encoder.py --tiny --out {out}"
    assert data["machine"]["load_average_1min"].keys() == {"start", "end"}
    rounds = data["settings"]["rounds"]
    for side in SIDES:
        assert len(data["raw"][f"{side}_s"]) == rounds and data["s_per_call"][side] > 0
        assert len(data["minor_page_faults"]["raw"][side]) == rounds
        assert data["matmul_ceiling"]["fraction"][side] > 0
    assert set(data["ratios"]) == {"transformers_eager_over_fast", "transformers_sdpa_over_fast"}
    assert all(ratio > 0 for ratio in data["ratios"].values())
    assert data["matmul_ceiling"]["gflops_per_s"] == pytest.approx(max(data["matmul_ceiling"]["raw"]), rel=1e-6)
    [goal] = data["goals"]
    assert goal["name"] == "sam_encoder_vs_eager" and goal["goal"] == ">= 2x"
    assert goal["measured"] == data["ratios"]["transformers_eager_over_fast"]
    assert out.with_suffix(".md").read_text(encoding="utf-8") == bench.render_markdown(data)


def test_fast_encoder_matches_transformers(results):
    parity = results[0]["parity"]
    assert parity["passed"]
    assert parity["transformers_sdpa"]["max_abs_diff"] == 0.0  # bit for bit against the default attention
    assert parity["transformers_eager"]["relative"] <= parity["tolerance"]


def test_flops_of_vit_b(bench):
    from transformers import SamVisionConfig

    flops = bench.encoder_flops(SamVisionConfig())
    tokens, hidden = 64 * 64, 768
    # per layer: qkv (3 x 768), output projection (768), MLP (2 x 3072); 2 FLOPs per multiply-add
    assert flops["linear_layers"] == 12 * 2 * tokens * hidden * (4 * hidden + 2 * 3072)
    assert flops["patch_embed"] == 2 * tokens * 3 * 16 * 16 * hidden
    global_attention = 4 * (2 * 2 * tokens * tokens * hidden + 2 * tokens * 2 * 64 * hidden)
    windows = 8 * 25 * (2 * 2 * 196 * 196 * hidden + 2 * 196 * 2 * 14 * hidden)  # 70 x 70 padded: 25 windows
    assert flops["attention"] == global_attention + windows
    assert flops["total"] == sum(value for key, value in flops.items() if key != "total")
