"""Image classification (ViT, ResNet, DINOv2 backbone + head): full fine-tuning or LoRA with the head trained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError
from lmt.train.objectives.base import Objective


def _label_sort_key(label: str) -> tuple:
    # "2" before "10": numeric labels sort as numbers, the rest alphabetically after them
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def label_set(train_records: Sequence[dict], val_records: Sequence[dict]) -> list[str]:
    """The sorted class labels of the training records; refuses fewer than 2, or validation-only labels."""
    labels = sorted({str(r["label"]) for r in train_records}, key=_label_sort_key)
    if len(labels) < 2:
        raise InvalidInputError(
            f"Training data: classification needs at least 2 classes; found {labels}.",
            f"训练数据：分类至少需要 2 个类别；实际为 {labels}。",
        )
    unseen = sorted({str(r["label"]) for r in val_records} - set(labels))
    if unseen:
        raise InvalidInputError(
            f"Training data: validation labels {unseen} never occur in the training data.",
            f"训练数据：验证集标签 {unseen} 在训练集中没有出现。",
        )
    return labels


def classification_outputs(logits: Any, labels: Any) -> dict[str, Any]:
    """Per-example ``loss``/``prediction``/``target`` of a batch, as :func:`classification_metrics` reads them."""
    import torch.nn.functional as F

    logits = logits.float()
    return {"loss": F.cross_entropy(logits, labels, reduction="none"), "prediction": logits.argmax(-1),
            "target": labels}


def classification_metrics(outputs: dict[str, Any], num_classes: int) -> tuple[dict[str, float], dict[str, Any]]:
    """loss, accuracy and macro F1 from per-example ``loss``/``prediction``/``target``, plus the confusion matrix."""
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    preds, target = outputs["prediction"].long(), outputs["target"].long()
    metrics = {
        "loss": float(outputs["loss"].mean()),
        "accuracy": float(multiclass_accuracy(preds, target, num_classes=num_classes, average="micro")),
        "macro_f1": float(multiclass_f1_score(preds, target, num_classes=num_classes, average="macro")),
    }
    matrix = multiclass_confusion_matrix(preds, target, num_classes=num_classes)
    return metrics, {"confusion_matrix": matrix.tolist()}


class ImageClassificationObjective(Objective):
    name = "image-classification"
    sdk_task = "image-classification"
    pipeline_tag = "image-classification"
    main_metric = "accuracy"
    record_columns = {"image": "image_column", "label": "label_column"}
    stratify_key = "label"
    # the head of ViT, ResNet and DINOv2 image classifiers alike; it is new, so it is trained in full
    lora_modules_to_save = ("classifier",)

    def setup(self, train_records: Sequence[dict], val_records: Sequence[dict]) -> None:
        self.labels = label_set(train_records, val_records)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.labels),
            "id2label": dict(enumerate(self.labels)),
            "label2id": dict(self.label_to_id),
            # a new head when the label count differs from the checkpoint's (e.g. 1000 ImageNet classes -> 10)
            "ignore_mismatched_sizes": True,
        }

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        pixels = self.processor(images=[e["image"] for e in examples], return_tensors="pt")["pixel_values"]
        labels = torch.tensor([self.label_to_id[str(e["label"])] for e in examples])
        return {"pixel_values": pixels, "labels": labels}

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        logits = model(pixel_values=batch["pixel_values"]).logits
        return F.cross_entropy(logits.float(), batch["labels"])

    def eval_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        return classification_outputs(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])

    def compute_metrics(self, outputs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        return classification_metrics(outputs, len(self.labels))

    def run_info(self) -> dict[str, Any]:
        return {"labels": list(self.labels)}

    def plot_extras(self, extras: dict[str, Any], folder: Path) -> list[Path]:
        from lmt.train.plots import plot_confusion_matrix

        if "confusion_matrix" not in extras:
            return []
        return [plot_confusion_matrix(extras["confusion_matrix"], self.labels, folder / "confusion_matrix.png")]
