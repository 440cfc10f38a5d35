"""Advanced topics as measured experiments: multimodal fusion (``lmt.advanced.fusion``), continual learning
(``lmt.advanced.continual``), explainability (``lmt.advanced.explain``) and robustness (``lmt.advanced.robustness``).

Importing ``lmt.advanced`` is cheap; torch loads when one of its names is first used::

    from lmt.advanced import EarlyFusion, run_fusion_experiment
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> module, imported on first access (torch is imported by both modules)
_LAZY = {
    "UnimodalHead": "lmt.advanced.fusion",
    "EarlyFusion": "lmt.advanced.fusion",
    "LateFusion": "lmt.advanced.fusion",
    "GatedFusion": "lmt.advanced.fusion",
    "CrossAttentionFusion": "lmt.advanced.fusion",
    "build_head": "lmt.advanced.fusion",
    "make_fusion_data": "lmt.advanced.fusion",
    "FusionSettings": "lmt.advanced.fusion",
    "FusionReport": "lmt.advanced.fusion",
    "run_fusion_experiment": "lmt.advanced.fusion",
    "fuse_embeddings": "lmt.advanced.fusion",
    "FusedEmbedder": "lmt.advanced.fusion",
    "run_retrieval_experiment": "lmt.advanced.fusion",
    "DigitMLP": "lmt.advanced.continual",
    "ReplayBuffer": "lmt.advanced.continual",
    "EWC": "lmt.advanced.continual",
    "lwf_loss": "lmt.advanced.continual",
    "TaskRouter": "lmt.advanced.continual",
    "PerTaskLoRA": "lmt.advanced.continual",
    "ContinualSettings": "lmt.advanced.continual",
    "ContinualReport": "lmt.advanced.continual",
    "run_continual_experiment": "lmt.advanced.continual",
    "explain_image": "lmt.advanced.explain",
    "Explanation": "lmt.advanced.explain",
    "gradcam": "lmt.advanced.explain",
    "attention_rollout": "lmt.advanced.explain",
    "clip_relevance": "lmt.advanced.explain",
    "make_pointing_data": "lmt.advanced.explain",
    "PointingSettings": "lmt.advanced.explain",
    "PointingReport": "lmt.advanced.explain",
    "run_pointing_experiment": "lmt.advanced.explain",
    "DigitsCNN": "lmt.advanced.robustness",
    "fgsm": "lmt.advanced.robustness",
    "pgd": "lmt.advanced.robustness",
    "RobustnessSettings": "lmt.advanced.robustness",
    "RobustnessReport": "lmt.advanced.robustness",
    "run_robustness_experiment": "lmt.advanced.robustness",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lmt.advanced' has no attribute '{name}'")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
