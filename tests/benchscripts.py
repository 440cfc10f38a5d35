"""Running a script under benchmarks/ from a test, the way its README section says to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def run_script(name: str, out: Path, *args: str, timeout: int = 600) -> tuple[dict, str]:
    """Run ``benchmarks/<name>.py ARGS --out OUT`` as a script (it imports bench_foundation next to it, offline);
    return the JSON it wrote and its stdout. A non-zero exit fails the test with the end of stderr."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *args, "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), done.stdout


@contextmanager
def imported(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported as the script imports itself (with benchmarks/ on sys.path); both it and
    bench_foundation are removed from sys.modules afterwards."""
    import importlib

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        try:
            yield importlib.import_module(name)
        finally:
            for module in (name, "bench_foundation"):
                sys.modules.pop(module, None)
