"""A Hub-style cache laid out by hand, so that Hub ids resolve offline (``HF_HUB_OFFLINE=1``).

``from_pretrained("org/name")``, ``hf_hub_download``, ``snapshot_download`` and ``PeftModel.from_pretrained`` all
read ``$HF_HUB_CACHE/models--org--name/refs/<branch or tag>`` (a 40-hex commit, no trailing newline) and the files
under ``snapshots/<commit>/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def lay_out_hub_repo(cache: Path, repo_id: str, files_by_revision: dict[str, Path], refs: dict[str, str]) -> Path:
    """A Hub-style cache entry: refs/<name> holds a 40-hex revision (no newline), files under snapshots/<rev>/."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for revision, source in files_by_revision.items():
        shutil.copytree(source, repo / "snapshots" / revision, ignore=shutil.ignore_patterns(".lmt-*"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref, revision in refs.items():
        (repo / "refs" / ref).write_text(revision)  # a trailing newline would break hf_hub_download
    return repo


def use_hub_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Point this process's Hub client at ``cache``. huggingface_hub reads ``HF_HUB_CACHE`` once, at import, into
    ``constants.HF_HUB_CACHE``, which every download then reads: patch both (child processes see the variable)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
