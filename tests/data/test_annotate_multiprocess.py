"""Data-parallel runs under ``accelerate launch``: two processes write the same bytes as one.

With accelerate 1.15, ``accelerate launch --cpu --num_processes 2`` starts ONE process; ``--multi_gpu`` on a machine
without GPUs starts two CPU processes (torchrun, gloo), which is what these run. Both sides use one thread per
process, and different chunk sizes, so that the equality also covers the chunk-size independence of the merge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .synthetic import smooth_image

pytestmark = pytest.mark.slow

TIMEOUT_S = 900


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for index in range(6):
        smooth_image(rng, 40 + 4 * index).save(root / f"{index:02d}.png")
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _launch(port: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "lmt.cli", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def _single(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmt.cli", *args], env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def test_two_processes_annotate_to_the_same_coco_bytes(photos, tmp_path):
    common = ["data", "annotate", str(photos), "--classes", "car:a photo of a car,person", "--tiny",
              "--box-threshold", "0.05", "--max-detections", "3", "--gallery", "2", "--json"]
    two = _launch(29531, *common, "--out", str(tmp_path / "two"), "--chunk-size", "1")
    assert two.returncode == 0, two.stderr[-3000:]
    report = json.loads(two.stdout)  # exactly one document: only the main process reports
    assert report["shards"]["num_processes"] == 2 and report["shards"]["computed"] == [0, 2, 4]
    assert len(list((tmp_path / "two" / "shards").glob("shard-*-of-00006.json"))) == 6
    one = _single(*common, "--out", str(tmp_path / "one"), "--chunk-size", "4")
    assert one.returncode == 0, one.stderr[-3000:]
    merged = (tmp_path / "two" / "annotations.json").read_bytes()
    assert merged == (tmp_path / "one" / "annotations.json").read_bytes()
    assert json.loads(merged)["annotations"], "a low threshold must leave some boxes even with random weights"
    assert (tmp_path / "two" / "gallery" / "index.html").exists()


def test_two_processes_embed_to_the_same_matrix_bytes(photos, tmp_path):
    common = ["data", "embed", str(photos), "--model", "dinov2-small", "--tiny", "--json"]
    two = _launch(29533, *common, "--out", str(tmp_path / "two"), "--chunk-size", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads(two.stdout)["count"] == 6
    one = _single(*common, "--out", str(tmp_path / "one"), "--chunk-size", "5")
    assert one.returncode == 0, one.stderr[-3000:]
    for name in ("embeddings.npy", "index.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
