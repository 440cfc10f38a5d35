"""Where the Spaces live (``spaces/<name>/app.py``), without importing gradio.

``lmt spaces list|bundle|deploy`` need only these paths; :mod:`lmt.ui.spaces` adds the gradio-side loading.
"""

from __future__ import annotations

import os
from pathlib import Path


def spaces_root() -> Path:
    """``$LMT_SPACES_DIR``, else the repository's ``spaces/`` (editable install), else ``./spaces``."""
    configured = os.environ.get("LMT_SPACES_DIR")
    if configured:
        return Path(configured).expanduser()
    repository = Path(__file__).resolve().parents[2] / "spaces"
    if repository.is_dir():
        return repository
    return Path.cwd() / "spaces"


def list_spaces() -> list[str]:
    """The names of the folders under :func:`spaces_root` that hold an ``app.py``, sorted."""
    root = spaces_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/app.py"))
