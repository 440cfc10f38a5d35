"""Task calls, one ``__call__`` each, named with transformers' task names.

>>> import lmt
>>> classify = lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32", weights="tiny")
"""

from __future__ import annotations

from typing import Any

from lmt.errors import UnsupportedTaskError
from lmt.registry import TASKS
from lmt.tasks.base import Task
from lmt.tasks.caption import ImageToText, VisualQuestionAnswering
from lmt.tasks.chat import ImageTextToText
from lmt.tasks.classify import ImageClassification, ZeroShotImageClassification
from lmt.tasks.detect import ZeroShotObjectDetection
from lmt.tasks.embed import ImageFeatureExtraction
from lmt.tasks.segment import MaskGeneration

TASK_CLASSES: dict[str, type[Task]] = {
    cls.task: cls
    for cls in (
        ZeroShotImageClassification,
        ImageClassification,
        MaskGeneration,
        ImageToText,
        VisualQuestionAnswering,
        ZeroShotObjectDetection,
        ImageFeatureExtraction,
        ImageTextToText,
    )
}
assert set(TASK_CLASSES) == set(TASKS)


def pipeline(task: str, model: Any = None, **kwargs: Any) -> Task:
    """The task call for ``task`` with ``model`` (default: the task's default model). ``kwargs`` go to loading:
    ``weights``, ``revision``, ``device``, ``dtype``, ``adapter``, ``adapter_revision``, ``batch_size``, and
    ``backend``: ``"torch"`` (default), ``"onnx"`` or ``"onnx-int8"`` (see :class:`lmt.tasks.base.Task`)."""
    try:
        cls = TASK_CLASSES[task]
    except KeyError:
        raise UnsupportedTaskError(
            f"Unknown task '{task}'. Tasks: {', '.join(TASKS)}.", f"未知任务 '{task}'。可用任务：{', '.join(TASKS)}。"
        ) from None
    return cls(model, **kwargs)


__all__ = [
    "TASK_CLASSES",
    "ImageClassification",
    "ImageFeatureExtraction",
    "ImageTextToText",
    "ImageToText",
    "MaskGeneration",
    "Task",
    "VisualQuestionAnswering",
    "ZeroShotImageClassification",
    "ZeroShotObjectDetection",
    "pipeline",
]
