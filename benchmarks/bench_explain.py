"""The pointing game: do Grad-CAM and attention rollout point at the one object that decides the class?

    python benchmarks/bench_explain.py           # ~5 min on 2 busy CPU cores -> benchmarks/results/explain.json + .md
    python benchmarks/bench_explain.py --quick   # smaller data, fewer epochs -> benchmarks/results/explain-quick.json

Synthetic 64 x 64 images (lmt.advanced.explain.make_pointing_data): grey noise, one 10 px square coloured red,
green or blue (the class) and two squares in white, black or yellow that decide nothing, each at a random place.
A tiny ResNet and a tiny ViT (transformers classes, random init) are trained from scratch; on held-out images,
a hit is a heat-map peak (for the true class, upsampled to 64 px) inside the coloured square. Chance is the
square's share of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script, this folder is on sys.path; bench_foundation sets HF_HUB_OFFLINE and friends on import.
from bench_foundation import machine_info, quick_or_full_main

#: The qualitative result the tests hold the benchmark to.
GOAL_HIT_RATE = 0.8


@dataclass(frozen=True)
class Settings:
    mode: str
    train_count: int
    test_count: int
    resnet_epochs: int
    vit_epochs: int
    threads: int = 1  # tiny models: thread hand-offs cost more than they save, most on a busy machine


MODES = {"full": Settings("full", 1200, 300, 2, 6), "quick": Settings("quick", 600, 100, 2, 3)}


def run(settings: Settings) -> dict[str, Any]:
    from lmt.advanced.explain import PointingSettings, run_pointing_experiment

    experiment = PointingSettings(train_count=settings.train_count, test_count=settings.test_count,
                                  resnet_epochs=settings.resnet_epochs, vit_epochs=settings.vit_epochs)
    report = run_pointing_experiment(experiment)
    return {"mode": settings.mode, "machine": machine_info(), "goal_hit_rate": GOAL_HIT_RATE} | report.to_dict()


def render_markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    s = results["settings"]
    lines = [
        f"# Pointing game ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores) · torch {machine['torch']} · "
        f"{results['total_s']} s in all",
        "",
        f"{s['size']} x {s['size']} synthetic images, one {s['object_px']} px coloured square decides the class "
        f"(3 classes), {s['distractors']} distractor squares; {s['train_count']} training and {s['test_count']} "
        f"held-out images. Chance hit rate: {results['chance']:.1%}.",
        "",
        "| model | method | held-out accuracy | pointing-game hit rate | ≥ 80% |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        passed = "yes" if row["hit_rate"] >= results["goal_hit_rate"] else "NO"
        lines.append(f"| tiny {row['arch']} | {row['method']} | {row['accuracy']:.1%} | {row['hit_rate']:.1%} | "
                     f"{passed} |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    for row in results["rows"]:
        print(f"{row['arch']:<7} {row['method']:<8} accuracy {row['accuracy']:.3f}  hit rate {row['hit_rate']:.3f}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return quick_or_full_main(
        "explain", run, MODES, description=__doc__.splitlines()[0], quick_help="smaller data, fewer epochs",
        render_markdown=render_markdown, print_table=print_table, argv=argv,
    )


if __name__ == "__main__":
    main()
