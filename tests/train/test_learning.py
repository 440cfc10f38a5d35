"""Learning checks on real data (scikit-learn's 1797 handwritten digits, upscaled to 32 px).

1. A tiny ViT / ResNet trained from random initialisation with full fine-tuning reaches >= 90% validation accuracy.
2. That run folder is the base of a LoRA run on a different labelling of the same images (even/odd), which
   trains only the adapter and the new head and reaches >= 90% too.
3. The same classification job under DDP with two processes lands in the one-process accuracy band.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from lmt.train import config_from_dict, train

from .conftest import tiny_config

pytestmark = pytest.mark.slow

FULL = {
    "vit": {"epochs": 15, "batch_size": 32, "lr": 3e-3, "warmup_ratio": 0.05},
    "resnet": {"epochs": 6, "batch_size": 32, "lr": 3e-3, "warmup_ratio": 0.05},
}
LORA = {
    "vit": {"epochs": 6, "batch_size": 32, "lr": 5e-3, "warmup_ratio": 0.05},
    "resnet": {"epochs": 4, "batch_size": 32, "lr": 5e-3, "warmup_ratio": 0.05},
}


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_full_from_random_init_then_lora_on_a_new_labelling(family, digits_full, digits_parity, tmp_path):
    full = train(config_from_dict(tiny_config(
        digits_full, tmp_path, model=family, method="full", optim=FULL[family], run={"name": f"{family}-digits"},
    )))
    assert full.metrics["accuracy"] >= 0.90, full.metrics
    assert full.trainable_parameters == full.total_parameters

    lora = train(config_from_dict(tiny_config(
        digits_parity, tmp_path, model=str(full.run_dir), weights="real", method="lora", optim=LORA[family],
        run={"name": f"{family}-parity-lora"},
    )))
    assert lora.metrics["accuracy"] >= 0.90, lora.metrics
    trainable = [name for name, p in lora.model.named_parameters() if p.requires_grad]
    assert all("lora_" in name or "classifier" in name for name in trainable), trainable
    assert lora.trainable_parameters < 0.5 * lora.total_parameters
    info = json.loads((lora.run_dir / "lmt_run.json").read_text())
    assert info["labels"] == ["even", "odd"] and info["base"] == f"local folder '{full.run_dir.name}'"
    assert info["base_model"] is None  # a local base is never written as a Hub id


def test_two_processes_land_in_the_one_process_band(digits_full, tmp_path):
    """DDP over two CPU processes (gloo). With accelerate 1.15 `accelerate launch --cpu --num_processes 2` starts
    ONE process (several CPU processes need mpirun); `--multi_gpu` on a machine without GPUs starts two CPU
    processes through torchrun, which is what this checks."""
    values = tiny_config(digits_full, tmp_path, model="resnet", method="full", optim=FULL["resnet"])
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(values))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                  "29517", "-m", "lmt.cli", "train", str(config), "run.name=two", "--json"]
    two = subprocess.run(accelerate, env=env, capture_output=True, text=True, timeout=1500)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "lmt.cli", "train", str(config), "run.name=one", "--json"], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert one.returncode == 0, one.stderr[-3000:]
    info = {name: json.loads((tmp_path / name / "lmt_run.json").read_text()) for name in ("one", "two")}
    assert info["two"]["num_processes"] == 2 and info["one"]["num_processes"] == 1
    # two processes see half the batches each: half the optimizer steps per epoch
    assert info["two"]["global_step"] < info["one"]["global_step"]
    accuracy = {name: info[name]["metrics"]["accuracy"] for name in info}
    assert min(accuracy.values()) >= 0.90, accuracy
    assert abs(accuracy["one"] - accuracy["two"]) <= 0.05, accuracy
