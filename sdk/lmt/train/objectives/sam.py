"""SAM mask-decoder fine-tuning: (image, mask) records, box and/or point prompts drawn from each mask.

The image encoder stays frozen: its embeddings are computed once per batch under ``torch.no_grad``, and only the
mask decoder trains (``method: full``) or gets LoRA adapters on its attention projections (``method: lora``).

Loss, per example, on the decoder's low-resolution mask logits (256 px for the real 1024 px models) against the
ground-truth mask resized (nearest) to that grid, counting only the part of the grid that covers the image (not
the padding): Dice + binary cross-entropy, plus, as in SAM's own training, the mean squared error between the
predicted IoU score and the IoU the mask actually reaches (so the IoU head, which the SDK reports as each mask's
score, stays honest and every trained parameter receives a gradient, which DistributedDataParallel requires).

Prompts: validation always uses the exact ones (the mask's tight box; the foreground pixel nearest the mask's
centroid), so epochs compare fairly. Training jitters each box corner by a few per cent of the box's size and draws
a random foreground pixel as the point, from torch's global RNG, so a resumed run draws the same prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError
from lmt.train.objectives.base import Objective

#: Box jitter: each corner moves by N(0, JITTER_STD * box side), at most JITTER_MAX * box side.
JITTER_STD = 0.05
JITTER_MAX = 0.1
#: Weight of the IoU-head term. The random tiny decoder starts with IoU predictions of a few units; at weight 1
#: that term dominates the clipped gradient and the masks first collapse to all-background (seen on tiny SAM).
IOU_LOSS_WEIGHT = 0.1
#: Segmentation-map values handed to the processor; it pads with 0, which tells padding apart from background.
_BACKGROUND, _OBJECT = 1, 2


def inner_point(mask: Any) -> tuple[int, int]:
    """(x, y) of the foreground pixel nearest the mask's centroid: inside the object even when it is not convex."""
    import numpy as np

    rows, cols = np.nonzero(mask)
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return int(cols[nearest]), int(rows[nearest])


def _unwrap(model: Any) -> Any:
    """The transformers SamModel inside a DistributedDataParallel wrapper and/or a PeftModel."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class SamMaskDecoderObjective(Objective):
    name = "sam-mask-decoder"
    sdk_task = "mask-generation"
    pipeline_tag = "mask-generation"
    main_metric = "dice"
    record_columns = {"image": "image_column", "mask": "mask_column"}

    # ------------------------------------------------------------------ data
    def setup(self, train_records: Sequence[dict], val_records: Sequence[dict]) -> None:
        """Every mask must match its image's size and hold at least one foreground pixel (a prompt needs one)."""
        from PIL import Image

        for split, records in (("training", train_records), ("validation", val_records)):
            for number, record in enumerate(records, start=1):
                with Image.open(record["image"]) as image:
                    image_size = image.size
                with Image.open(record["mask"]) as mask:
                    mask_size, box = mask.size, mask.convert("L").getbbox()
                where = f"{split} example {number} (mask '{Path(record['mask']).name}')"
                if mask_size != image_size:
                    raise InvalidInputError(
                        f"Training data: {where} is {mask_size[0]}x{mask_size[1]} but its image is "
                        f"{image_size[0]}x{image_size[1]}; a mask must have its image's size.",
                        f"训练数据：{where} 的尺寸为 {mask_size[0]}x{mask_size[1]}，而对应图片为 "
                        f"{image_size[0]}x{image_size[1]}；掩码必须与图片同样大小。",
                    )
                if box is None:
                    raise InvalidInputError(
                        f"Training data: {where} has no foreground pixel, so no prompt can be drawn from it. Remove "
                        "the row or fix the mask (any non-zero pixel is foreground).",
                        f"训练数据：{where} 没有前景像素，无法从中生成提示。请删除该行或修正掩码（非零像素即前景）。",
                    )

    # ------------------------------------------------------------------ model
    def lora_target_modules(self) -> list[str]:
        # The mask decoder's attention projections; the family default ("qkv") targets the image encoder,
        # which this objective keeps frozen.
        return ["q_proj", "k_proj", "v_proj", "out_proj"]

    def freeze_for_full(self, model: Any) -> None:
        """Full fine-tuning trains the mask decoder only: image encoder and prompt encoder stay as loaded."""
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("mask_decoder."))

    def on_train_mode(self, model: Any) -> None:
        super().on_train_mode(model)
        base = _unwrap(model)
        base.vision_encoder.eval()
        base.prompt_encoder.eval()

    # ------------------------------------------------------------------ batches
    def _uses(self, prompt: str) -> bool:
        return prompt in self.config.data.prompt.split("+")

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Images, exact prompts (one object per image) and the masks on the decoder's low-resolution grid."""
        import numpy as np
        from PIL import Image

        from lmt.tasks.segment import mask_box

        images = [e["image"] for e in examples]
        masks = [np.asarray(e["mask"], dtype=bool) for e in examples]
        prompts: dict[str, Any] = {}
        if self._uses("box"):
            prompts["input_boxes"] = [[list(mask_box(mask))] for mask in masks]  # (image, box, 4)
        if self._uses("point"):
            prompts["input_points"] = [[[list(inner_point(mask))]] for mask in masks]  # (image, object, point, 2)
            prompts["input_labels"] = [[[1]] for _ in masks]
        maps = [Image.fromarray(np.where(mask, _OBJECT, _BACKGROUND).astype(np.uint8)) for mask in masks]
        inputs = self.processor(images=images, segmentation_maps=maps, return_tensors="pt", **prompts)
        labels = inputs["labels"]
        batch = {
            "pixel_values": inputs["pixel_values"],
            "reshaped_sizes": inputs["reshaped_input_sizes"],
            "target": (labels == _OBJECT).float(),
            "valid": (labels > 0).float(),
            **{key: inputs[key] for key in prompts},
        }
        if self._uses("point"):
            batch["object_pixels"] = self._object_pixels(masks, inputs["reshaped_input_sizes"],
                                                         tuple(inputs["pixel_values"].shape[-2:]))
        return batch

    @staticmethod
    def _object_pixels(masks: list[Any], reshaped_sizes: Any, padded: tuple[int, int]) -> Any:
        """Each mask resized (nearest) to the model's input frame and padded: where training draws its points."""
        import numpy as np
        import torch
        from PIL import Image

        out = torch.zeros((len(masks), *padded), dtype=torch.bool)
        for index, (mask, (height, width)) in enumerate(zip(masks, reshaped_sizes.tolist(), strict=True)):
            resized = Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.NEAREST)
            out[index, :height, :width] = torch.from_numpy(np.asarray(resized) > 0)
        return out

    def _training_prompts(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        prompts: dict[str, Any] = {}
        if "input_boxes" in batch:
            boxes = batch["input_boxes"]
            sides = (boxes[..., 2:] - boxes[..., :2]).repeat(1, 1, 2)
            # drawn on the CPU from the global generator: the checkpoint restores it, so resumes are bit-exact
            noise = torch.randn(boxes.shape).to(boxes.device, boxes.dtype)
            shift = (noise * JITTER_STD).clamp(-JITTER_MAX, JITTER_MAX) * sides
            limits = batch["reshaped_sizes"].flip(-1).to(boxes.dtype)[:, None, :].repeat(1, 1, 2)  # (w, h, w, h)
            jittered = torch.minimum(torch.clamp(boxes + shift, min=0), limits)
            keep = (jittered[..., 2:] - jittered[..., :2] >= 1).all(-1, keepdim=True)
            prompts["input_boxes"] = torch.where(keep, jittered, boxes)
        if "input_points" in batch:
            points = batch["input_points"].clone()
            for index, pixels in enumerate(batch["object_pixels"]):
                found = pixels.nonzero()
                if len(found):  # else the object vanished in the resize: keep the exact point
                    row, col = found[int(torch.randint(len(found), ()))].tolist()
                    points[index, 0, 0] = torch.tensor([col, row], dtype=points.dtype)
            prompts["input_points"], prompts["input_labels"] = points, batch["input_labels"]
        return prompts

    def _exact_prompts(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {key: batch[key] for key in ("input_boxes", "input_points", "input_labels") if key in batch}

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _decode(model: Any, batch: dict[str, Any], prompts: dict[str, Any]) -> tuple[Any, Any]:
        """(low-res mask logits (B, h, w), predicted IoU (B,)); the frozen encoder runs without gradients."""
        import torch

        with torch.no_grad():
            embeddings = _unwrap(model).get_image_embeddings(batch["pixel_values"])
        outputs = model(image_embeddings=embeddings, multimask_output=False, **prompts)
        return outputs.pred_masks[:, 0, 0].float(), outputs.iou_scores[:, 0, 0].float()

    @staticmethod
    def _per_example_loss(logits: Any, iou_pred: Any, target: Any, valid: Any) -> tuple[Any, Any, Any]:
        """(loss, dice, iou) per example; dice and iou threshold the logits at 0, on the valid grid only."""
        import torch
        import torch.nn.functional as F

        count = valid.sum((1, 2)).clamp(min=1)
        bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).sum((1, 2)) / count
        probs = torch.sigmoid(logits) * valid
        soft_dice = 1 - (2 * (probs * target).sum((1, 2)) + 1) / (probs.sum((1, 2)) + (target * valid).sum((1, 2)) + 1)
        predicted, truth = (logits > 0) & (valid > 0), (target > 0) & (valid > 0)
        inter = (predicted & truth).sum((1, 2)).float()
        sizes = predicted.sum((1, 2)).float() + truth.sum((1, 2)).float()
        union = sizes - inter
        one = torch.ones_like(inter)
        dice = torch.where(sizes > 0, 2 * inter / sizes.clamp(min=1), one)
        iou = torch.where(union > 0, inter / union.clamp(min=1), one)
        loss = bce + soft_dice + IOU_LOSS_WEIGHT * (iou_pred - iou.detach()) ** 2
        return loss, dice, iou

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        logits, iou_pred = self._decode(model, batch, self._training_prompts(batch))
        loss, _, _ = self._per_example_loss(logits, iou_pred, batch["target"], batch["valid"])
        return loss.mean()

    def eval_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        logits, iou_pred = self._decode(model, batch, self._exact_prompts(batch))
        loss, dice, iou = self._per_example_loss(logits, iou_pred, batch["target"], batch["valid"])
        return {"loss": loss, "dice": dice, "iou": iou}

    def compute_metrics(self, outputs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        metrics = {
            "loss": float(outputs["loss"].mean()),
            "dice": float(outputs["dice"].mean()),
            "iou": float(outputs["iou"].mean()),
        }
        return metrics, {"dice": [round(float(v), 4) for v in outputs["dice"]]}

    # ------------------------------------------------------------------ outputs
    def run_info(self) -> dict[str, Any]:
        mask_pad = self.processor.image_processor.mask_pad_size
        return {
            "prompt": self.config.data.prompt,
            "trained_modules": "mask_decoder" if self.config.method == "full" else "mask_decoder attention (LoRA)",
            "loss": "dice + bce on low-res mask logits (+ mse of the predicted iou)",
            "mask_resolution": [int(mask_pad.height), int(mask_pad.width)],
        }
