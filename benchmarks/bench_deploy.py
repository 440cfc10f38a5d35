"""Deployment back-ends on real-size architectures (random weights): eager PyTorch, onnxruntime, INT8, in one run.

    python benchmarks/bench_deploy.py --wait-idle 600   # ~6 min on 2 idle CPU cores -> benchmarks/results/deploy.*
    python benchmarks/bench_deploy.py --tiny            # tiny variants, 1 round: code paths only -> deploy-tiny.*

Three models, each built from its family's default config with seeded random weights and saved once: ViT-B/16
(224 px, 1000 classes), ResNet-50 (224 px, 1000 classes) and CLIP ViT-B/32 (its image tower with the projection
is what is measured). Each goes through ``lmt.deploy.bench.bench`` -- the code behind ``lmt bench`` -- on the
back-ends torch (eager float32, the reference), torch-int8, onnx and onnx-int8 (the SDK's INT8 recipe,
``lmt.deploy.optimize``), at batch 1 and 8, on 2 threads. Speed does not depend on weight values, so the ratios
hold for the real checkpoints; agreement with float32 on random weights says little about real accuracy.

Goals, at batch 8, each measured in this run on this machine: onnx-int8 at >= 1.6x the throughput of eager
float32; eager float32 at >= 0.85 of the float32 matmul ceiling (``torch.mm`` 2048 x 2048, timed in the same
rounds); the INT8 graph at <= 0.3x the size of the float32 graph. The JSON, the markdown table and the PNG chart
written next to each other are what the docs quote.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Run as a script, this folder is on sys.path. bench_foundation sets HF_HUB_OFFLINE and friends on import, before
# anything reads them.
from bench_foundation import REPO, Goal, build_clip, build_vit, goals_table, machine_info, measure_and_write

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_OUT = {"full": RESULTS / "deploy.json", "tiny": RESULTS / "deploy-tiny.json"}
IMAGES = REPO / "examples" / "images"
BACKENDS = ("torch", "torch-int8", "onnx", "onnx-int8")
#: The registry name each model's tiny variant is loaded by in --tiny mode.
TINY_NAMES = {"vit": "vit-b16", "resnet": "resnet-50", "clip": "clip-vit-b32"}
TITLES = {"vit": "ViT-B/16, 224 px", "resnet": "ResNet-50, 224 px", "clip": "CLIP ViT-B/32 image tower, 224 px"}
GOAL_BATCH = 8


@dataclass(frozen=True)
class Settings:
    mode: str  # "full" or "tiny"
    rounds: int
    batches: tuple[int, ...]
    ceiling_size: int
    threads: int = 2

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"


MODES = {
    "full": Settings("full", rounds=6, batches=(1, GOAL_BATCH), ceiling_size=2048),
    "tiny": Settings("tiny", rounds=1, batches=(1, GOAL_BATCH), ceiling_size=256, threads=1),
}


def build_resnet(folder: Path) -> None:
    """ResNet-50 (ResNetConfig()'s defaults: bottleneck blocks 3-4-6-3) with a 1000-class head, as
    microsoft/resnet-50: its ConvNext-style processor resizes to 224/0.875 and centre-crops 224 px."""
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(folder)


BUILDERS = {"vit": build_vit, "resnet": build_resnet, "clip": build_clip}


def calibration_images() -> list[Any]:
    """The example images and their mirror images: 10 calibration images for static INT8 (ResNet)."""
    from PIL import Image

    from lmt.deploy.bench import calibration_folder
    from lmt.images import load_image

    images = [load_image(path) for path in calibration_folder(IMAGES)]
    return images + [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in images]


def measure_model(family: str, settings: Settings, workdir: Path) -> Any:
    """Build (or, with --tiny, name) the model and run lmt's bench on it."""
    import torch

    from lmt.deploy.bench import bench

    start = time.perf_counter()
    if settings.tiny:
        model, tiny = TINY_NAMES[family], True
    else:
        folder = workdir / family
        torch.manual_seed(0)
        BUILDERS[family](folder)
        model, tiny = str(folder), False
    print(f"[{family}] model ready in {time.perf_counter() - start:.1f} s; measuring ...", flush=True)
    return bench(model, backends=BACKENDS, batches=settings.batches, tiny=tiny, threads=settings.threads,
                 rounds=settings.rounds, calibration_images=calibration_images(), ceiling_size=settings.ceiling_size)


def goals_of(results: dict[str, Any]) -> list[Goal]:
    goals = []
    for family, result in results.items():
        runs = {(run["backend"], run["batch"]): run for run in result["runs"]}
        eager, onnx, int8 = (runs[(backend, GOAL_BATCH)] for backend in ("torch", "onnx", "onnx-int8"))
        title = TITLES[family]
        goals += [
            Goal(f"{family}_int8_speedup", f"{title}, batch {GOAL_BATCH}: onnx-int8 img/s over eager float32 img/s",
                 int8["speedup"], 1.6, ">="),
            Goal(f"{family}_eager_ceiling", f"{title}, batch {GOAL_BATCH}: eager float32 GFLOP/s over the float32 "
                 "matmul ceiling", eager["ceiling_fraction"], 0.85, ">=", ""),
            Goal(f"{family}_int8_size", f"{title}: INT8 graph size over the float32 graph size",
                 int8["model_size_mb"] / onnx["model_size_mb"], 0.3, "<=", ""),
        ]
    return goals


def render_markdown(results: dict[str, Any]) -> str:
    """The page the docs quote: goals, then one table per model, generated from the results JSON only."""
    machine = results["machine"]
    lines = [
        f"# Deployment benchmark ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores, {' '.join(machine['cpu_features'])})"
        f" · {results['settings']['threads']} threads · torch {machine['torch']} · "
        + ("tiny variants: the numbers mean nothing, only the code paths do" if results["mode"] == "tiny"
           else "real-size architectures, random weights")
        + f" · 1-min load average {machine['load_average_1min']['start']:.1f} at start, "
        f"{machine['load_average_1min']['end']:.1f} at end",
        "",
        "Speed-ups and shares of the ceiling are medians of per-round ratios; in each round every back-end and the "
        "matmul ceiling run once, back to back, in a rotating order. The chart is `deploy.png` next to this file.",
        "",
    ]
    lines += goals_table(results["goals"])
    for family, result in results["models"].items():
        lines += [
            "",
            f"## {TITLES[family]}",
            "",
            f"{result['flops_per_image'] / 1e9:.2f} GFLOP per image · ceiling {result['ceiling_gflops']:.1f} GFLOP/s "
            f"(float32 `torch.mm` {result['ceiling_size']}²) · {result['rounds']} rounds · INT8 recipe: "
            f"{_recipe(result['int8_recipe'])}",
            "",
            _table(result),
        ]
    return "\n".join(lines) + "\n"


def _recipe(recipe: dict[str, Any] | None) -> str:
    if recipe is None:
        return "—"
    fusion = f"fusions ({recipe['fusion']}) + " if recipe["fusion"] else ""
    ops = ", ".join(recipe["op_types"]) if recipe["op_types"] else "all quantisable ops"
    calibration = f", calibrated on {recipe['calibration']} images" if recipe["calibration"] else ""
    return (f"{fusion}{recipe['method']} {recipe['quant_format']} {recipe['activation_type']}/"
            f"{recipe['weight_type']}{' per-channel' if recipe['per_channel'] else ''} on {ops}{calibration}")


def _table(result: dict[str, Any]) -> str:
    from lmt.deploy.bench import markdown_table, result_from_dict

    return markdown_table(result_from_dict(result)).rstrip("\n")


def print_table(results: dict[str, Any]) -> None:
    rows = [(g["name"], g["goal"], f"{g['measured']:.3f}", "pass" if g["passed"] else "FAIL") for g in results["goals"]]
    header = ("goal", "target", "measured", "")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def run(settings: Settings) -> dict[str, Any]:
    """Every model, as one JSON-ready dict (without the date, command and output path)."""
    load_start = os.getloadavg()[0]
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lmt-bench-deploy-") as workdir:
        for family in ("vit", "resnet", "clip"):
            result = measure_model(family, settings, Path(workdir))
            models[family] = result.to_dict()
            print(f"[{family}] done in {result.seconds:.0f} s: "
                  + ", ".join(f"{r.backend}@{r.batch} {r.throughput:.2f} img/s" for r in result.runs), flush=True)
    machine = machine_info() | {"load_average_1min": {"start": round(load_start, 2),
                                                      "end": round(os.getloadavg()[0], 2)}}
    return {
        "mode": settings.mode,
        "settings": asdict(settings) | {"backends": list(BACKENDS)},
        "machine": machine,
        "models": models,
        "goals": [goal.to_dict() for goal in goals_of(models)],
    }


def write_chart(results: dict[str, Any], out: Path) -> Path:
    from lmt.deploy.bench import result_from_dict
    from lmt.deploy.bench import write_chart as chart

    return chart([result_from_dict(copy.deepcopy(model)) for model in results["models"].values()],
                 out.with_suffix(".png"))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny variants, 1 round: code paths only")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/deploy[-tiny].json)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below 1")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "full"
    out = args.out or DEFAULT_OUT[mode]
    command_args = list(sys.argv[1:] if argv is None else argv)

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars would bury the log
    results = measure_and_write("deploy", run, MODES[mode], out=out, command_args=command_args,
                                wait_idle=args.wait_idle, render_markdown=render_markdown, print_table=print_table)
    print(f"wrote {write_chart(results, out)}")
    return results


if __name__ == "__main__":
    main()
