"""CLIP fine-tuning: contrastive image-caption training, and a zero-shot head trained on class labels.

- ``clip-contrastive``: (image, caption) records. The loss is CLIP's own symmetric InfoNCE over the batch
  (``CLIPModel(..., return_loss=True).loss``); validation reports retrieval recall@1 in both directions over
  the whole validation set.
- ``clip-zero-shot-head``: (image, label) records. Every label becomes a prompt (``data.label_template``),
  the logits are CLIP's ``logit_scale * cos(image, prompt)`` and the loss is cross-entropy on the true label.

Both leave a plain ``CLIPModel`` (full) or a CLIP LoRA adapter, which ``lmt.ZeroShotImageClassification`` and
``lmt.ImageFeatureExtraction`` load with ``model=<run folder>`` or ``adapter=<run folder>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError
from lmt.train.objectives.base import Objective
from lmt.train.objectives.classification import classification_metrics, classification_outputs, label_set

#: Rows of the validation similarity matrix computed at once: bounds memory on large validation sets.
SIMILARITY_CHUNK = 1024


class _ClipObjective(Objective):
    """What both CLIP objectives share: the model class and how images and texts become tensors."""

    sdk_task = "zero-shot-image-classification"
    pipeline_tag = "zero-shot-image-classification"
    model_class_name = "CLIPModel"

    def _pixels(self, examples: list[dict[str, Any]]) -> Any:
        return self.processor.image_processor(images=[e["image"] for e in examples], return_tensors="pt")[
            "pixel_values"
        ]

    def _tokens(self, texts: list[str]) -> dict[str, Any]:
        # the same tokenizer call as the SDK's task calls, so trained and served text embeddings agree
        tokens = self.processor.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


# ------------------------------------------------------------------------------------------------ contrastive


def retrieval_recall_at_1(image_embeds: Any, text_embeds: Any, caption_ids: Any) -> tuple[float, float]:
    """(image->text, text->image) recall@1 over all pairs; row ``i`` of both embeddings is one (image, caption).

    A retrieval counts as a hit when the retrieved caption's text equals the true one (same ``caption_ids``), so
    duplicate captions (``"a red circle"`` on many images) do not count as misses.
    """
    import torch

    image_hits = 0
    best_image_score = torch.full((len(text_embeds),), -float("inf"))
    best_image = torch.zeros(len(text_embeds), dtype=torch.long)
    for start in range(0, len(image_embeds), SIMILARITY_CHUNK):
        similarity = image_embeds[start : start + SIMILARITY_CHUNK] @ text_embeds.t()
        retrieved_text = similarity.argmax(dim=1)
        image_hits += int((caption_ids[retrieved_text] == caption_ids[start : start + SIMILARITY_CHUNK]).sum())
        # text->image: the best image per text so far; ">" keeps the first image on ties, as argmax does
        chunk_score, chunk_best = similarity.max(dim=0)
        better = chunk_score > best_image_score
        best_image_score = torch.where(better, chunk_score, best_image_score)
        best_image = torch.where(better, chunk_best + start, best_image)
    text_hits = int((caption_ids[best_image] == caption_ids).sum())
    count = max(len(caption_ids), 1)
    return image_hits / count, text_hits / count


class ClipContrastiveObjective(_ClipObjective):
    name = "clip-contrastive"
    main_metric = "recall_at_1"
    record_columns = {"image": "image_column", "caption": "text_column"}

    def setup(self, train_records: Sequence[dict], val_records: Sequence[dict]) -> None:
        if self.config.optim.batch_size < 2:
            raise InvalidInputError(
                "Training config: the contrastive loss compares each image with the other captions of its batch; "
                "set optim.batch_size to 2 or more (CLIP was trained with thousands).",
                "训练配置：对比损失要把每张图与同批次的其他描述比较；请把 optim.batch_size 设为 2 或更大。",
            )
        if len({r["caption"] for r in val_records}) < 2:
            raise InvalidInputError(
                "Training data: the validation set needs at least 2 different captions, or retrieval recall is "
                "trivially 1. Add examples or set data.val.",
                "训练数据：验证集至少需要 2 种不同的描述，否则检索召回率恒为 1。请增加样本或设置 data.val。",
            )
        captions = sorted({r["caption"] for r in (*train_records, *val_records)})
        # caption text -> id: equal texts get equal ids, which is how duplicate captions are recognised
        self.caption_ids = {caption: i for i, caption in enumerate(captions)}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        captions = [e["caption"] for e in examples]
        return {
            "pixel_values": self._pixels(examples),
            **self._tokens(captions),
            "caption_id": torch.tensor([self.caption_ids[c] for c in captions]),
        }

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        outputs = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"], return_loss=True,
        )
        return outputs.loss

    def eval_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        outputs = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
        )
        logits = outputs.logits_per_image.float()
        targets = torch.arange(len(logits), device=logits.device)
        # each example's share of the in-batch symmetric InfoNCE: their mean is the batch's CLIP loss
        loss = (F.cross_entropy(logits, targets, reduction="none")
                + F.cross_entropy(logits.t(), targets, reduction="none")) / 2
        return {
            "loss": loss,
            "image_embeds": outputs.image_embeds.float(),  # L2-normalised by CLIPModel
            "text_embeds": outputs.text_embeds.float(),
            "caption_id": batch["caption_id"],
        }

    def compute_metrics(self, outputs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        image_to_text, text_to_image = retrieval_recall_at_1(
            outputs["image_embeds"], outputs["text_embeds"], outputs["caption_id"]
        )
        metrics = {
            "loss": float(outputs["loss"].mean()),
            "image_to_text_recall_at_1": image_to_text,
            "text_to_image_recall_at_1": text_to_image,
            "recall_at_1": (image_to_text + text_to_image) / 2,
        }
        unique = len(set(outputs["caption_id"].tolist()))
        return metrics, {"validation_pairs": len(outputs["caption_id"]), "unique_captions": unique}

    def run_info(self) -> dict[str, Any]:
        return {"retrieval_hit": "the retrieved caption's text equals the true caption's text"}


# ------------------------------------------------------------------------------------------------ zero-shot head


class ClipZeroShotHeadObjective(_ClipObjective):
    name = "clip-zero-shot-head"
    main_metric = "accuracy"
    record_columns = {"image": "image_column", "label": "label_column"}
    stratify_key = "label"

    def setup(self, train_records: Sequence[dict], val_records: Sequence[dict]) -> None:
        self.labels = label_set(train_records, val_records)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.template = self.config.data.label_template
        self.prompts = [self.template.format(label) for label in self.labels]
        self._prompt_tokens: dict[str, Any] | None = None

    def prompt_tokens(self) -> dict[str, Any]:
        """The label prompts, tokenised once (the processor exists only after the model loads)."""
        if self._prompt_tokens is None:
            self._prompt_tokens = self._tokens(self.prompts)
        return self._prompt_tokens

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        prompts = self.prompt_tokens()
        # the prompts travel in every batch so that accelerate moves them to the device with the images
        return {
            "pixel_values": self._pixels(examples),
            "prompt_input_ids": prompts["input_ids"],
            "prompt_attention_mask": prompts["attention_mask"],
            "labels": torch.tensor([self.label_to_id[str(e["label"])] for e in examples]),
        }

    def _logits(self, model: Any, batch: dict[str, Any]) -> Any:
        # CLIPModel.forward: logit_scale.exp() * cos(image, text), one column per label prompt
        outputs = model(
            input_ids=batch["prompt_input_ids"], attention_mask=batch["prompt_attention_mask"],
            pixel_values=batch["pixel_values"],
        )
        return outputs.logits_per_image.float()

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(self._logits(model, batch), batch["labels"])

    def eval_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        return classification_outputs(self._logits(model, batch), batch["labels"])

    def compute_metrics(self, outputs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        return classification_metrics(outputs, len(self.labels))

    def run_info(self) -> dict[str, Any]:
        # not "labels": that key tells the model card to rebuild a classification head, which CLIP does not have
        return {"zero_shot_labels": list(self.labels), "label_template": self.template}

    def plot_extras(self, extras: dict[str, Any], folder: Path) -> list[Path]:
        from lmt.train.plots import plot_confusion_matrix

        if "confusion_matrix" not in extras:
            return []
        return [plot_confusion_matrix(extras["confusion_matrix"], self.labels, folder / "confusion_matrix.png")]
