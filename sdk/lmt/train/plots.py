"""Training curves and confusion matrices as PNG files (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: runs on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def plot_curves(records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """``loss.png`` (train loss by step, validation loss by epoch) and one PNG per validation metric."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    written = []

    figure, axes = plt.subplots(figsize=(6, 4))
    if train:
        axes.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if val:
        axes.plot([r["step"] for r in val], [r["loss"] for r in val], marker="o", label="validation")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title("Loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(folder / "loss.png", dpi=100)
    plt.close(figure)
    written.append(folder / "loss.png")

    metric_names = [k for k in (val[0] if val else {}) if k not in ("split", "epoch", "step", "loss", "time")]
    for name in metric_names:
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot([r["epoch"] for r in val], [r[name] for r in val], marker="o")
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.set_title(f"Validation {name}")
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """A labelled confusion matrix (rows: true class, columns: predicted class) with counts in the cells."""
    import numpy as np

    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(matrix)
    side = max(4.0, 0.5 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(side, side))
    axes.imshow(values, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels=list(labels), rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels=list(labels))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = values.max() / 2 if values.size else 0
    if len(labels) <= 30:
        for row in range(values.shape[0]):
            for col in range(values.shape[1]):
                axes.text(col, row, int(values[row, col]), ha="center", va="center",
                          color="white" if values[row, col] > threshold else "black", fontsize=8)
    axes.set_title("Confusion matrix (validation, best epoch)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
