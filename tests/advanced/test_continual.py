"""Continual learning: the replay buffer, EWC, LwF, the task router and per-task LoRA as units; and the
split-digits benchmark, whose quick run must show replay and per-task LoRA forgetting at most a third of what
naive fine-tuning forgets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmt.advanced.continual import (
    EWC,
    METHODS,
    TASKS,
    ContinualSettings,
    DigitMLP,
    PerTaskLoRA,
    ReplayBuffer,
    TaskRouter,
    fit,
    lwf_loss,
    split_digits,
)
from lmt.errors import InvalidInputError
from tests.benchscripts import imported, run_script


@pytest.fixture(scope="module")
def tasks():
    return split_digits()


def test_split_digits_keeps_each_task_to_its_classes(tasks):
    a, b = tasks
    assert (a.name, a.classes, b.name, b.classes) == ("A", TASKS[0], "B", TASKS[1])
    assert set(a.train_y.tolist()) == set(TASKS[0]) and set(b.test_y.tolist()) == set(TASKS[1])
    assert a.train_x.shape[1] == 64 and float(a.train_x.min()) >= 0.0 and float(a.train_x.max()) <= 1.0
    assert len(a.train_y) + len(b.train_y) + len(a.test_y) + len(b.test_y) == 1797


# ---- replay ------------------------------------------------------------------------------------------------------------
def test_replay_buffer_is_class_balanced_and_samples_the_whole_stream():
    buffer = ReplayBuffer(10, seed=0)
    x = torch.arange(300, dtype=torch.float32).reshape(-1, 1)  # example i holds the value i
    y = torch.tensor([0] * 200 + [1] * 95 + [2] * 5)
    buffer.add(x, y)
    assert buffer.counts() == {0: 10, 1: 10, 2: 5} and len(buffer) == 25
    kept_x, kept_y = buffer.tensors()
    zeros = kept_x[kept_y == 0].flatten()
    # reservoir sampling: class 0's ten slots are not simply its first ten examples
    assert zeros.max() >= 10
    assert set(kept_y.tolist()) == {0, 1, 2}
    assert buffer.nbytes() == 25 * 4 + 25 * 8
    sampled_x, sampled_y = buffer.sample(7, torch.Generator().manual_seed(0))
    assert sampled_x.shape == (7, 1) and sampled_y.shape == (7,)
    with pytest.raises(InvalidInputError, match="empty"):
        ReplayBuffer(3).tensors()
    with pytest.raises(InvalidInputError, match="labels"):
        buffer.add(x[:3], y[:2])


# ---- EWC ---------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def small_model():
    torch.manual_seed(0)
    return DigitMLP(hidden=8)


def test_ewc_penalty_is_zero_at_the_anchor_and_pulls_back(tasks, small_model):
    a = tasks[0]
    ewc = EWC.from_data(small_model, a.train_x[:20], a.train_y[:20], strength=100.0)
    assert float(ewc.penalty(small_model).detach()) == 0.0
    assert all(bool((fisher >= 0).all()) for fisher in ewc.fisher.values())
    with torch.no_grad():
        small_model.fc1.weight.add_(0.1)
    penalty = ewc.penalty(small_model)
    expected = 0.5 * 100.0 * float((ewc.fisher["fc1.weight"] * 0.1**2).sum())
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-4)
    penalty.backward()
    # the gradient points away from the anchor, so a descent step moves the weights back towards it
    assert bool((small_model.fc1.weight.grad >= 0).all()) and float(small_model.fc1.weight.grad.sum()) > 0
    assert ewc.nbytes() == 2 * 4 * sum(p.numel() for p in small_model.parameters())


def test_ewc_fisher_is_the_mean_of_per_example_squared_gradients(tasks, small_model):
    a = tasks[0]
    x, y = a.train_x[:3], a.train_y[:3]
    ewc = EWC.from_data(small_model, x, y, strength=1.0)
    squares = []
    for i in range(3):
        small_model.zero_grad()
        F.cross_entropy(small_model(x[i:i + 1]), y[i:i + 1]).backward()
        squares.append(small_model.head.weight.grad.detach() ** 2)
    assert torch.allclose(ewc.fisher["head.weight"], sum(squares) / 3, atol=1e-7)
    with pytest.raises(InvalidInputError, match="strength"):
        EWC(ewc.anchor, ewc.fisher, strength=-1.0)


# ---- LwF ---------------------------------------------------------------------------------------------------------------
def test_lwf_loss_distils_the_old_classes_only():
    torch.manual_seed(0)
    teacher = torch.randn(4, 10)
    student = teacher.clone()
    student[:, 5:] += torch.randn(4, 5) * 3  # new classes differ: not distilled
    assert float(lwf_loss(student, teacher, TASKS[0])) == pytest.approx(0.0, abs=1e-6)
    moved = teacher.clone().requires_grad_(True)
    shifted = moved + torch.tensor([2.0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    loss = lwf_loss(shifted, teacher, TASKS[0], temperature=2.0)
    assert float(loss.detach()) > 0
    loss.backward()
    assert float(moved.grad[:, 0].sum()) > 0 and float(moved.grad[:, 5:].abs().sum()) == 0.0
    # T^2 scaling: the same logits at T=1 and T=4 give losses of comparable size, not 16x apart
    small, large = lwf_loss(shifted, teacher, TASKS[0], 1.0), lwf_loss(shifted, teacher, TASKS[0], 4.0)
    assert 0.1 < float(large.detach()) / float(small.detach()) < 10
    with pytest.raises(InvalidInputError, match="temperature"):
        lwf_loss(student, teacher, TASKS[0], temperature=0.0)


# ---- router and per-task LoRA ------------------------------------------------------------------------------------------
def test_task_router_routes_by_class_statistics():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 5
    x = torch.cat([centres[c] + torch.randn(50, 4, generator=generator) * 0.5 for c in range(4)])
    y = torch.arange(4).repeat_interleave(50)
    router = TaskRouter(4)
    with pytest.raises(InvalidInputError, match="observe"):
        router.predict_task(x)
    router.observe(0, x[y < 2], y[y < 2])
    router.observe(1, x[y >= 2], y[y >= 2])
    assert torch.equal(router.predict_class(x), y)
    assert torch.equal(router.predict_task(x), (y >= 2).long())
    assert router.nbytes() == 4 * (4 * 4 + 4 * 4)


def test_per_task_lora_trains_only_its_adapter_and_keeps_the_base(tasks):
    a, b = tasks
    settings = ContinualSettings(epochs=1, hidden=16, lora_rank=4)
    torch.manual_seed(0)
    base = DigitMLP(hidden=16)
    fit(base, a, settings, seed=0)
    before = base(a.test_x).detach()
    adapters = PerTaskLoRA(base, settings)
    adapters.add_task(b, seed=0)
    adapter = adapters.adapter_parameters("task_1")
    trainable = {name for name, p in adapters.model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter)
    # r4 on fc1 (64 -> 16) and fc2 (16 -> 16), plus peft's trained copy of the head (16 -> 10)
    assert sum(p.numel() for p in adapter.values()) == 4 * (64 + 16) + 4 * (16 + 16) + 16 * 10 + 10
    assert torch.allclose(adapters.logits(a.test_x, 0), before)  # task 0 = the frozen base, unchanged
    assert torch.allclose(base(a.test_x), before)  # the caller's model was copied, not wrapped
    assert not torch.allclose(adapters.logits(a.test_x, 1), before)
    predictions = adapters.predict(b.test_x, [a.classes, b.classes], torch.ones(len(b.test_y), dtype=torch.int64))
    assert set(predictions.tolist()) <= set(b.classes)


def test_fit_is_deterministic_for_a_seed(tasks):
    a = tasks[0]
    settings = ContinualSettings(epochs=1, hidden=16)
    models = []
    for _ in range(2):
        torch.manual_seed(3)
        model = DigitMLP(hidden=16)
        fit(model, a, settings, seed=3)
        models.append(model)
    for first, second in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(first, second)


def test_unknown_methods_are_refused():
    from lmt.advanced.continual import run_continual_experiment

    with pytest.raises(InvalidInputError, match="naive"):
        run_continual_experiment(ContinualSettings(epochs=1, seeds=(0,)), methods=("replay",))
    with pytest.raises(InvalidInputError, match="naive"):
        run_continual_experiment(ContinualSettings(epochs=1, seeds=(0,)), methods=("naive", "magic"))


# ---- the benchmark -----------------------------------------------------------------------------------------------------
def _run_bench(out: Path, *args: str) -> dict:
    return run_script("bench_continual", out, *args, timeout=1800)[0]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "continual-quick.json"
    return _run_bench(out, "--quick"), out


@pytest.fixture(scope="module")
def bench():
    with imported("bench_continual") as module:
        yield module


def test_quick_results_file_has_every_field(quick, bench):
    data, out = quick
    for key in ("benchmark", "date", "command", "machine", "settings", "setup", "continual", "goals"):
        assert key in data, key
    assert data["command"] == f"python benchmarks/bench_continual.py --quick --out {out}"
    methods = data["continual"]["methods"]
    assert list(methods) == list(METHODS)
    assert out.with_suffix(".md").read_text(encoding="utf-8") == bench.render_markdown(data)
    full_model = data["continual"]["model_parameters"]
    for name in ("naive", "replay", "ewc", "lwf"):
        assert methods[name]["trainable_parameters_task_b"] == full_model, name
    assert 0 < methods["lora"]["trainable_parameters_task_b"] < full_model / 3
    assert methods["naive"]["extra_bytes"] == 0
    assert methods["ewc"]["extra_bytes"] == 2 * methods["lwf"]["extra_bytes"] == 2 * 4 * full_model
    assert methods["replay"]["extra_bytes"] == 5 * 20 * (64 * 4 + 8)
    assert methods["lora"]["routing_accuracy_a"] is not None and methods["naive"]["routing_accuracy_a"] is None


def test_quick_run_replay_and_lora_forget_at_most_a_third_of_naive(quick):
    report = quick[0]["continual"]
    methods = report["methods"]
    assert report["accuracy_a_after_a"] > 0.9
    assert methods["naive"]["forgetting"] > 0.5  # naive fine-tuning does forget A
    for name in ("replay", "lora"):
        assert methods[name]["forgetting"] <= methods["naive"]["forgetting"] / 3, (name, methods[name])
        assert methods[name]["accuracy_b"] > 0.8, (name, methods[name])
    assert all(goal["passed"] for goal in quick[0]["goals"]), quick[0]["goals"]


@pytest.mark.parametrize(("field", "value"), [
    ("epochs", 0), ("batch_size", 2.5), ("lr", 0.0), ("lora_lr", float("nan")), ("ewc_strength", -1.0),
    ("lwf_temperature", "hot"), ("seeds", ()), ("replay_per_class", True),
])
def test_settings_refuse_bad_values(field, value):
    with pytest.raises(InvalidInputError, match=field):
        ContinualSettings(**{field: value})
