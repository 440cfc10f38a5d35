"""benchmarks/bench_vlm.py --tiny: both families run through prefill and decode and every figure is written, labelled
with what was measured. Speeds are not asserted: tiny models measure nothing but overhead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vlm.py"


def test_tiny_mode_measures_both_families(tmp_path: Path) -> None:
    out = tmp_path / "vlm.json"
    done = subprocess.run([sys.executable, str(BENCH), "--tiny", "--models", "qwen2.5-vl-3b,internvl3-1b",
                           "--decode-tokens", "3", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["benchmark"] == "vlm" and results["mode"] == "tiny"
    rows = {row["model"]: row for row in results["models"]}
    assert set(rows) == {"qwen2.5-vl-3b", "internvl3-1b"}, results["models"]
    for row in rows.values():
        assert "error" not in row, row
        assert row["variant"] == "tiny random weights" and row["decode_tokens"] == 3
        assert row["prompt_tokens"] == row["image_tokens"] + 32 + (2 if row["model"].startswith("qwen") else 0)
        assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0 and row["peak_rss_gib"] > 0
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "tiny random weights" in markdown and "internvl3-1b" in markdown
