"""Tiny variants: each family's architecture with a small config and seeded random weights.

A tiny variant is materialised once into ``$LMT_HOME/tiny/<family>-<hash>`` (default ``~/.cache/lmt``) and then
loaded through the same ``from_pretrained`` path as a real checkpoint. The hash covers the builder's source and
the transformers version, so a changed builder never serves a stale folder. Tests, tutorials and CI use these;
their outputs are meaningless, their code paths are the real ones.

>>> from lmt.tiny import tiny_model_path
>>> tiny_model_path("clip").name.startswith("clip-")
True
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lmt.registry import get_family

logger = logging.getLogger(__name__)

_COMPLETE_MARKER = ".lmt-tiny-complete"


def lmt_home() -> Path:
    """Where the SDK keeps its own files (tiny variants, caches): ``$LMT_HOME`` or ``~/.cache/lmt``."""
    return Path(os.environ.get("LMT_HOME") or Path.home() / ".cache" / "lmt").expanduser()


def _builder_hash(family_name: str) -> str:
    """Hash of what decides a tiny variant's files: its family module, the offline tokenizers, transformers."""
    from lmt.models import _offline_tokenizers

    family = get_family(family_name)
    try:
        transformers_version = version("transformers")
    except PackageNotFoundError:
        transformers_version = "?"
    family_module = inspect.getmodule(family.build_tiny)
    source = inspect.getsource(family_module) + inspect.getsource(_offline_tokenizers) + transformers_version
    return hashlib.sha256(source.encode()).hexdigest()[:10]


def tiny_model_path(family_name: str) -> Path:
    """The folder holding ``family_name``'s tiny variant, built on first use (safe across processes)."""
    family = get_family(family_name)
    folder = lmt_home() / "tiny" / f"{family.name}-{_builder_hash(family.name)}"
    return build_once(folder, family.build_tiny, family.name)


def build_once(folder: Path, build: Callable[[Path], None], label: str) -> Path:
    """``folder``, written by ``build(staging_folder)`` the first time it is asked for: under a file lock, into a
    hidden staging folder renamed into place once complete, so that concurrent processes build it once and a killed
    build never leaves a folder that looks finished. Used by every tiny variant (models and diffusers pipelines)."""
    from filelock import FileLock

    if (folder / _COMPLETE_MARKER).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / _COMPLETE_MARKER).exists():
            return folder
        logger.info("Building the tiny variant of '%s' in %s", label, folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{label}-", dir=folder.parent))
        try:
            build(staging)
            (staging / _COMPLETE_MARKER).write_text(label)
            if folder.exists():  # a half-built folder from a killed process
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder
