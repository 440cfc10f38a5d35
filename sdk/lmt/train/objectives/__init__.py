"""Training objectives, one per ``task`` in the training config."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmt.train.objectives.base import Objective

#: task name -> "module:Class"; imported when used, so one objective's dependencies never burden another.
OBJECTIVES: dict[str, str] = {
    "image-classification": "lmt.train.objectives.classification:ImageClassificationObjective",
    "blip2-caption": "lmt.train.objectives.blip2:Blip2CaptionObjective",
    "blip2-vqa": "lmt.train.objectives.blip2:Blip2VqaObjective",
    "sam-mask-decoder": "lmt.train.objectives.sam:SamMaskDecoderObjective",
    "clip-contrastive": "lmt.train.objectives.clip:ClipContrastiveObjective",
    "clip-zero-shot-head": "lmt.train.objectives.clip:ClipZeroShotHeadObjective",
    "vlm-sft": "lmt.train.objectives.vlm:VlmSftObjective",
}


def objective_class(task: str) -> type[Objective]:
    from lmt.errors import UnsupportedTaskError

    if task not in OBJECTIVES:
        raise UnsupportedTaskError(
            f"No training objective for task '{task}'. Trainable tasks: {', '.join(OBJECTIVES)}.",
            f"没有任务 '{task}' 的训练目标。可训练的任务：{', '.join(OBJECTIVES)}。",
        )
    module, _, name = OBJECTIVES[task].partition(":")
    return getattr(import_module(module), name)
