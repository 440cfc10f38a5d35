"""Large-Model-Tutorial (LMT): one SDK for vision large models — registry, task calls, fine-tuning, Spaces.

>>> import lmt
>>> lmt.list_models("clip*")[:2]
['clip-vit-b32', 'clip-vit-b16']
>>> classify = lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32", weights="tiny")

Importing ``lmt`` is cheap: torch and transformers load only when a model does.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from lmt.errors import (
    InvalidImageError,
    InvalidInputError,
    LmtError,
    MissingDependencyError,
    UnknownModelError,
    UnsupportedDeviceError,
    UnsupportedTaskError,
    WeightsUnavailableError,
)
from lmt.registry import TASKS, list_models

__version__ = "0.1.0"

# name -> module, imported on first access so that `import lmt` and `lmt --help` stay fast
_LAZY = {
    "load": "lmt.loading",
    "LoadedModel": "lmt.loading",
    "pipeline": "lmt.tasks",
    "ZeroShotImageClassification": "lmt.tasks",
    "ImageClassification": "lmt.tasks",
    "MaskGeneration": "lmt.tasks",
    "ImageToText": "lmt.tasks",
    "VisualQuestionAnswering": "lmt.tasks",
    "ZeroShotObjectDetection": "lmt.tasks",
    "ImageFeatureExtraction": "lmt.tasks",
    "ImageTextToText": "lmt.tasks",
    "EmbeddingIndex": "lmt.retrieval",
    "load_image": "lmt.images",
    "load_images": "lmt.images",
}

if TYPE_CHECKING:
    from lmt.images import load_image, load_images
    from lmt.loading import LoadedModel, load
    from lmt.retrieval import EmbeddingIndex
    from lmt.tasks import (
        ImageClassification,
        ImageFeatureExtraction,
        ImageTextToText,
        ImageToText,
        MaskGeneration,
        VisualQuestionAnswering,
        ZeroShotImageClassification,
        ZeroShotObjectDetection,
        pipeline,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lmt' has no attribute '{name}'")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "TASKS",
    "EmbeddingIndex",
    "ImageClassification",
    "ImageFeatureExtraction",
    "ImageTextToText",
    "ImageToText",
    "InvalidImageError",
    "InvalidInputError",
    "LmtError",
    "LoadedModel",
    "MaskGeneration",
    "MissingDependencyError",
    "UnknownModelError",
    "UnsupportedDeviceError",
    "UnsupportedTaskError",
    "VisualQuestionAnswering",
    "WeightsUnavailableError",
    "ZeroShotImageClassification",
    "ZeroShotObjectDetection",
    "list_models",
    "load",
    "load_image",
    "load_images",
    "pipeline",
    "__version__",
]
