"""The model registry: every model family registers itself once, here.

A family is one module under ``lmt/models/`` that calls :func:`register_family` with its names, tasks,
real Hub checkpoints and a tiny-variant builder. Nothing else needs editing to add a family: the SDK,
the CLI (``lmt models``) and the Spaces discover it through :func:`list_models`.

This module imports neither torch nor transformers, so ``lmt models`` answers instantly.

>>> import lmt
>>> lmt.list_models("clip*")[:1]
['clip-vit-b32']
"""

from __future__ import annotations

import fnmatch
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmt.errors import UnknownModelError, UnsupportedTaskError

#: transformers' task names, the only task names the SDK uses.
TASKS: tuple[str, ...] = (
    "zero-shot-image-classification",
    "image-classification",
    "mask-generation",
    "image-to-text",
    "visual-question-answering",
    "zero-shot-object-detection",
    "image-feature-extraction",
    "image-text-to-text",
)


@dataclass(frozen=True)
class Checkpoint:
    """One real checkpoint of a family: our short name and its Hub id."""

    name: str
    hub_id: str
    description: str = ""
    #: Tasks this checkpoint is fit for, when narrower than its family's (e.g. a backbone without a head).
    tasks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelFamily:
    """What the SDK needs to know about one architecture family.

    ``model_classes`` maps each task to the transformers class (by name, resolved lazily) that runs it;
    ``model_types`` are the ``config.model_type`` values by which a local folder or Hub id is recognised.
    ``build_tiny(folder)`` writes a tiny random-weight variant (model + processor) with ``save_pretrained``.
    """

    name: str
    description: str
    model_types: tuple[str, ...]
    model_classes: dict[str, str]
    checkpoints: tuple[Checkpoint, ...]
    build_tiny: Callable[[Path], None]
    processor_class: str = "AutoProcessor"
    lora_target_modules: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default=())

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.model_classes)

    @property
    def default_checkpoint(self) -> Checkpoint:
        return self.checkpoints[0]

    def model_class_for(self, task: str | None) -> str:
        if task is None:
            return next(iter(self.model_classes.values()))
        try:
            return self.model_classes[task]
        except KeyError:
            raise UnsupportedTaskError(
                f"Model family '{self.name}' cannot run task '{task}'. It runs: {', '.join(self.tasks)}. "
                f"Pick a model for '{task}' with: lmt models --task {task}",
                f"模型族 '{self.name}' 不支持任务 '{task}'，它支持：{', '.join(self.tasks)}。"
                f"用 lmt models --task {task} 查找合适的模型。",
            ) from None


_FAMILIES: dict[str, ModelFamily] = {}
_CHECKPOINTS: dict[str, tuple[ModelFamily, Checkpoint]] = {}
_LOCK = threading.Lock()
_DISCOVERED = False

#: The family modules shipped with the SDK. Importing one registers it.
_BUILTIN_FAMILY_MODULES = (
    "lmt.models.clip",
    "lmt.models.vit",
    "lmt.models.resnet",
    "lmt.models.dinov2",
    "lmt.models.sam",
    "lmt.models.blip2",
    "lmt.models.owlv2",
    "lmt.models.owlvit",
    "lmt.models.qwen2_5_vl",
    "lmt.models.internvl",
)


def register_family(family: ModelFamily) -> ModelFamily:
    """Register a model family. Names must be unique across all families."""
    with _LOCK:
        if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
            raise ValueError(f"model family '{family.name}' is registered twice")
        unknown = set(family.model_classes) - set(TASKS)
        if unknown:
            raise ValueError(f"family '{family.name}' names unknown tasks {sorted(unknown)}; use one of {TASKS}")
        for checkpoint in family.checkpoints:
            owner = _CHECKPOINTS.get(checkpoint.name)
            if owner is not None and owner[0].name != family.name:
                raise ValueError(f"model name '{checkpoint.name}' is registered by '{owner[0].name}' already")
        _FAMILIES[family.name] = family
        for checkpoint in family.checkpoints:
            _CHECKPOINTS[checkpoint.name] = (family, checkpoint)
    return family


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for module in _BUILTIN_FAMILY_MODULES:
        importlib.import_module(module)
    _DISCOVERED = True


def families() -> dict[str, ModelFamily]:
    """All registered families by name."""
    _discover()
    return dict(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    _discover()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownModelError(
            f"Unknown model family '{name}'. Known families: {', '.join(sorted(_FAMILIES))}.",
            f"未知的模型族 '{name}'。已知模型族：{', '.join(sorted(_FAMILIES))}。",
        ) from None


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern``, optionally only those running ``task``.

    >>> list_models("sam*")
    ['sam-vit-base', 'sam-vit-large', 'sam-vit-huge']
    """
    _discover()
    if task is not None and task not in TASKS:
        raise UnsupportedTaskError(
            f"Unknown task '{task}'. Tasks: {', '.join(TASKS)}.", f"未知任务 '{task}'。可用任务：{', '.join(TASKS)}。"
        )
    names = []
    for name, (family, checkpoint) in _CHECKPOINTS.items():
        tasks = checkpoint.tasks if checkpoint.tasks is not None else family.tasks
        if fnmatch.fnmatch(name, pattern) and (task is None or task in tasks):
            names.append(name)
    return names


def lookup_checkpoint(name: str) -> tuple[ModelFamily, Checkpoint] | None:
    """The family and checkpoint registered under ``name`` (our short name), or None."""
    _discover()
    return _CHECKPOINTS.get(name)


def family_for_hub_id(hub_id: str) -> ModelFamily | None:
    """The family that lists ``hub_id`` among its checkpoints, or None."""
    _discover()
    for family, checkpoint in _CHECKPOINTS.values():
        if checkpoint.hub_id.lower() == hub_id.lower():
            return family
    return None


def family_for_model_type(model_type: str) -> ModelFamily | None:
    """The family that handles ``config.model_type == model_type``, or None."""
    _discover()
    for family in _FAMILIES.values():
        if model_type in family.model_types:
            return family
    return None


def suggest(name: str) -> list[str]:
    """Registered names close to ``name``, for 'did you mean' messages."""
    import difflib

    _discover()
    return difflib.get_close_matches(name, list(_CHECKPOINTS), n=3, cutoff=0.5)
