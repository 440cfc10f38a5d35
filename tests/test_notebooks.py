"""The notebooks under notebooks/ are stored without outputs, and each runs top to bottom with tiny weights."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600

needs_nbclient = pytest.mark.skipif(importlib.util.find_spec("nbclient") is None,
                                    reason="the docs extra (nbclient, ipykernel) is not installed")


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def test_there_are_four_notebooks() -> None:
    assert len(NOTEBOOKS) >= 4, [p.name for p in NOTEBOOKS]


@needs_nbclient
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_without_outputs(path: Path) -> None:
    for cell in _read(path).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear outputs before committing"


@pytest.mark.slow
@needs_nbclient
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    book = _read(path)
    client = NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})
    client.execute(env=dict(os.environ))  # a failing cell raises CellExecutionError naming the cell and traceback
    code_cells = [cell for cell in book.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code_cells)
