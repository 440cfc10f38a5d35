"""Kill and resume: a run killed with SIGKILL mid-training resumes to the very weights of an uninterrupted run,
and no checkpoint on disk is ever half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import tiny_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def _config(digits: Path, output: Path) -> Path:
    values = tiny_config(
        digits, output,
        # dropout exercises the RNG restore; accumulation exercises the data position inside a window
        lora={"dropout": 0.1},
        optim={"epochs": 6, "batch_size": 8, "grad_accum": 2, "lr": 3e-3},
        run={"save_every_steps": 3, "keep_checkpoints": 2, "deterministic": True, "log_every_steps": 1},
    )
    path = output / "resume.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _command(config: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmt.cli", "train", str(config), f"run.name={name}", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _kill_after(command: list[str], checkpoint: Path, timeout: float = 300) -> None:
    """Start the run and SIGKILL it as soon as ``checkpoint`` is complete; it must still have been running."""
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not (checkpoint / "COMPLETE").exists():
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def _assert_checkpoints_whole(folder: Path) -> None:
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    assert visible, "the killed run left no checkpoint"
    for checkpoint in visible:
        assert (checkpoint / "COMPLETE").is_file(), f"{checkpoint.name} is half-written"
        load_file(str(checkpoint / "trainable.safetensors"))
        if checkpoint.name != "best":
            torch.load(checkpoint / "training_state.pt", weights_only=True)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(digits_small, tmp_path):
    config = _config(digits_small, tmp_path)
    subprocess.run(_command(config, "straight"), env=_env(), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    _kill_after(_command(config, "killed"), killed / "checkpoints" / "step-0000006")
    _assert_checkpoints_whole(killed / "checkpoints")
    assert not (killed / "lmt_run.json").exists()
    # resume, and kill again in a later epoch
    _kill_after(_command(config, "killed", "--resume"), killed / "checkpoints" / "step-0000039")
    _assert_checkpoints_whole(killed / "checkpoints")
    done = subprocess.run(_command(config, "killed", "--resume"), env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    straight = tmp_path / "straight"
    expected = load_file(str(straight / "adapter_model.safetensors"))
    got = load_file(str(killed / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.allclose(got[name], tensor, atol=1e-6, rtol=0), name
    # the logs agree line for line: nothing lost, nothing counted twice
    lines = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
             for run in (straight, killed)]
    assert [(r["split"], r["step"]) for r in lines[0]] == [(r["split"], r["step"]) for r in lines[1]]
    for a, b in zip(*lines, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    info = [json.loads((run / "lmt_run.json").read_text()) for run in (straight, killed)]
    assert info[0]["metrics"] == pytest.approx(info[1]["metrics"], abs=1e-6)


def test_resume_refuses_a_changed_config(digits_small, tmp_path):
    config = _config(digits_small, tmp_path)
    first = subprocess.run(_command(config, "run", "optim.max_steps=3", "optim.epochs=1"), env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    changed = subprocess.run(_command(config, "run", "optim.max_steps=3", "optim.epochs=1", "optim.lr=0.1",
                                      "--resume"), env=_env(), capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2
    assert "optim.lr" in changed.stderr and "Traceback" not in changed.stderr
    fresh = subprocess.run(_command(config, "never-started", "--resume"), env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert fresh.returncode == 2 and "Nothing to resume" in fresh.stderr
