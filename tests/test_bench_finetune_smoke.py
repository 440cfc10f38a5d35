"""benchmarks/bench_finetune.py --tiny: the whole benchmark (memory processes included) on a tiny ViT, run as the
README says to run it. Speed and memory goals are not asserted: a tiny model measures nothing but overhead."""

from __future__ import annotations

import math

import pytest

from tests.benchscripts import imported, run_script

VARIANTS = ("full", "lora", "lora_checkpointing")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "finetune.json"
    data, stdout = run_script("bench_finetune", out, "--tiny")
    assert "lora_step_time" in stdout  # the printed table names every goal
    return data, out


@pytest.fixture(scope="module")
def bench():
    """The benchmark module, for its render_markdown; imported as the script imports it."""
    with imported("bench_finetune") as module:
        yield module


def test_results_file_has_every_field(results):
    data, out = results
    for key in ("benchmark", "date", "command", "out", "total_s", "mode", "settings", "setup", "machine",
                "variants", "ratios", "goals"):
        assert key in data, key
    assert data["benchmark"] == "finetune" and data["mode"] == "tiny"
    assert data["command"] == f"python benchmarks/bench_finetune.py --tiny --out {out}"
    for key in ("cpu", "logical_cores", "torch", "transformers", "peft", "torch_threads", "load_average_1min"):
        assert key in data["machine"], key
    assert {"start", "end"} <= set(data["machine"]["load_average_1min"])
    assert data["setup"]["num_labels"] == 101 and data["setup"]["batch_size"] == 8
    assert set(data["variants"]) == set(VARIANTS)
    rounds = data["settings"]["rounds"]
    for name, variant in data["variants"].items():
        assert {"trainable", "total", "percent", "percent_of_base_model"} <= set(variant["parameters"]), name
        assert len(variant["step_s"]["raw"]) == rounds and variant["step_s"]["median"] > 0
        assert len(variant["losses"]) == rounds + 1 and all(math.isfinite(loss) for loss in variant["losses"])
        memory = variant["memory"]
        for key in ("rss_before_mib", "peak_rss_mib", "peak_growth_mib", "rss_after_steps_mib", "peak_within_window",
                    "peak_rss_before_build_mib", "steps", "step_s", "losses", "weights_mib", "gradients_and_adamw_mib"):
            assert key in memory, (name, key)
        assert memory["rss_before_mib"] > 0 and memory["peak_growth_mib"] > 0
        assert memory["peak_rss_mib"] == pytest.approx(memory["rss_before_mib"] + memory["peak_growth_mib"])
        assert isinstance(memory["peak_within_window"], bool)
        assert len(memory["step_s"]) == memory["steps"] == data["settings"]["memory_steps"]


def test_ratios_are_positive_numbers(results):
    ratios = results[0]["ratios"]
    assert set(ratios) == {"lora_step_time", "lora_peak_memory", "lora_checkpointing_step_time",
                           "lora_checkpointing_peak_memory"}
    for name, value in ratios.items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, name


def test_goals_are_checked_and_reported(results):
    data = results[0]
    goals = {goal["name"]: goal for goal in data["goals"]}
    assert list(goals) == ["lora_trainable_share", "lora_step_time", "lean_peak_memory"]
    for goal in goals.values():
        assert {"description", "goal", "measured", "target", "passed"} <= set(goal)
        assert goal["passed"] == (goal["measured"] <= goal["target"])
    assert goals["lora_trainable_share"]["measured"] == data["variants"]["lora"]["parameters"]["percent"]
    assert goals["lora_step_time"]["measured"] == data["ratios"]["lora_step_time"]
    assert goals["lean_peak_memory"]["measured"] == data["ratios"]["lora_checkpointing_peak_memory"]


def test_it_measures_lmts_own_training_setup(results):
    """Trainable parameters as lmt's apply_method sets them, the same seeded weights, and steps that train."""
    variants = results[0]["variants"]
    full, lora, lean = (variants[name]["parameters"] for name in VARIANTS)
    assert full["trainable"] == full["total"] and full["percent"] == 100
    assert 0 < lora["trainable"] < full["trainable"] < lora["total"]  # adapters and peft's classifier copy add up
    assert lora == lean
    assert lora["lora_targets"] == ["q_proj", "v_proj"] and lora["modules_trained_in_full"] == ["classifier"]
    # LoRA's B matrices start at zero: before any step the three models compute the same function
    first = [variants[name]["losses"][0] for name in VARIANTS]
    assert max(first) - min(first) < 1e-5
    for name in VARIANTS:  # the same batch again and again: each optimizer step changes the loss
        losses = variants[name]["losses"]
        assert len(set(losses)) == len(losses), name


def test_markdown_is_generated_from_the_json(results, bench):
    data, out = results
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert table == bench.render_markdown(data)
    assert "| LoRA + gradient checkpointing: peak RSS growth over full fine-tuning's |" in table
