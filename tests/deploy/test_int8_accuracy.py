"""Dynamic INT8 through the ONNX back-end keeps a trained classifier's accuracy.

A tiny ViT is trained from random initialisation on scikit-learn's digits (the training images only), then the
held-out fifth of the digits, never seen in training, is classified three ways: PyTorch, the fp32 ONNX graph and
the dynamically quantised INT8 graph. fp32 must be a meaningful classifier (>= 85 %), ONNX fp32 must agree with
PyTorch, and INT8 must lose at most one point of accuracy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import lmt
from lmt.train import config_from_dict, train

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.slow

HELD_OUT_EVERY = 5  # every 5th digit image (by index) is held out: ~360 images, all ten classes


@pytest.fixture(scope="module")
def digits_split(tmp_path_factory) -> tuple[Path, list[tuple[Path, str]]]:
    """(training folder, held-out (image, true label) pairs) from all 1797 digits at 32 px."""
    from lmt.data.samples import write_digits

    root = tmp_path_factory.mktemp("int8-digits")
    train_dir = write_digits(root / "train", size=32)
    held_out = []
    for path in sorted(train_dir.glob("*/*.png")):
        if int(path.stem) % HELD_OUT_EVERY == 0:
            target = root / "held-out" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
            held_out.append((target, path.parent.name))
    return train_dir, held_out


def _accuracy(classifier, held_out: list[tuple[Path, str]]) -> float:
    results = classifier([str(path) for path, _ in held_out], top_k=1)
    return sum(result.label == label for result, (_, label) in zip(results, held_out, strict=True)) / len(held_out)


def test_int8_onnx_accuracy_within_one_point_of_fp32(digits_split, tmp_path, monkeypatch):
    monkeypatch.setenv("LMT_HOME", str(tmp_path / "home"))  # this run's graphs only, removed with tmp_path
    train_dir, held_out = digits_split
    assert len(held_out) > 300 and len({label for _, label in held_out}) == 10
    run = train(config_from_dict({
        "task": "image-classification", "model": "vit", "weights": "tiny", "method": "full",
        "data": {"train": str(train_dir)},
        "optim": {"epochs": 12, "batch_size": 32, "lr": 3e-3, "warmup_ratio": 0.05},
        "run": {"output_dir": str(tmp_path / "runs"), "name": "vit-digits", "log_every_steps": 50},
    }))

    accuracy = {
        backend: _accuracy(lmt.pipeline("image-classification", str(run.run_dir), backend=backend, batch_size=64),
                           held_out)
        for backend in ("torch", "onnx", "onnx-int8")
    }
    print("held-out accuracy by backend:", accuracy)  # shown with pytest -rP
    assert accuracy["onnx"] >= 0.85, accuracy  # a classifier worth quantising, so the comparison can fail
    assert abs(accuracy["onnx"] - accuracy["torch"]) <= 1 / len(held_out), accuracy
    assert accuracy["onnx"] - accuracy["onnx-int8"] <= 0.01, accuracy

    exported = list((tmp_path / "home" / "onnx").glob("*-int8-*/model.int8.onnx"))
    assert len(exported) == 1 and exported[0].stat().st_size < (exported[0].parent / "model.onnx").stat().st_size
