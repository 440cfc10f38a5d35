"""Test-wide settings: offline Hub, no gradio analytics, tiny variants in one shared folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before anything imports huggingface_hub/gradio: both read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One folder for every xdist worker, so each tiny variant is built once per machine (builds are file-locked).
os.environ.setdefault("LMT_HOME", str(Path(tempfile.gettempdir()) / f"lmt-test-home-{os.getuid()}"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "images"


@pytest.fixture(scope="session")
def rgb_image() -> Image.Image:
    """A deterministic 60x50 noise image."""
    return Image.fromarray((np.random.RandomState(0).rand(50, 60, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="session")
def other_image() -> Image.Image:
    return Image.fromarray((np.random.RandomState(1).rand(40, 70, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="session")
def cat_path() -> Path:
    return EXAMPLES / "cat.png"


# ---- the tutorial runner's summary line (tests/test_tutorials.py leaves one counts file per doc) ----------------------
def pytest_sessionstart(session):
    """On the controller only: a fresh counts folder per session; xdist workers, started after this, inherit it."""
    if not hasattr(session.config, "workerinput"):
        os.environ["LMT_TUTORIAL_COUNTS_DIR"] = tempfile.mkdtemp(prefix=f"lmt-tutorial-counts-{os.getuid()}-")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """``tutorials: N docs, N code blocks executed, N marked (...), N lmt commands run``, summed over workers."""
    import json
    import shutil

    folder = os.environ.get("LMT_TUTORIAL_COUNTS_DIR")
    if hasattr(config, "workerinput") or not folder:
        return
    totals = {"docs": 0, "blocks_executed": 0, "blocks_marked": 0, "commands_run": 0}
    for path in sorted(Path(folder).glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            totals[key] = totals.get(key, 0) + value
    if totals["docs"]:
        terminalreporter.write_line(
            f"tutorials: {totals['docs']} docs, {totals['blocks_executed']} code blocks executed, "
            f"{totals['blocks_marked']} marked check-only (needs-real-weights/needs-gpu/starts-server), {totals['commands_run']} lmt commands run"
        )
    shutil.rmtree(folder, ignore_errors=True)
