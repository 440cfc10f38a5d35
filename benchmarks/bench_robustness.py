"""FGSM and PGD against a small CNN on scikit-learn digits, before and after PGD adversarial fine-tuning.

    python benchmarks/bench_robustness.py           # ~3 min on 2 busy CPU cores -> benchmarks/results/robustness.json
    python benchmarks/bench_robustness.py --quick   # fewer epochs -> benchmarks/results/robustness-quick.json

eps is an L-infinity radius on the [0, 1] pixel scale (digit pixels 0-16 divided by 16; eps = 0.0625 is one grey
level), applied before the model's own mean/std normalisation; attacked images are clipped to [0, 1]. The
defended model is a copy of the trained one fine-tuned on PGD examples (eps = train_eps) made each batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script, this folder is on sys.path; bench_foundation sets HF_HUB_OFFLINE and friends on import.
from bench_foundation import machine_info, quick_or_full_main


@dataclass(frozen=True)
class Settings:
    mode: str
    clean_epochs: int
    adversarial_epochs: int
    eval_pgd_steps: int
    threads: int = 1  # tiny models: thread hand-offs cost more than they save, most on a busy machine


MODES = {"full": Settings("full", 15, 5, 20), "quick": Settings("quick", 8, 3, 10)}


def run(settings: Settings) -> dict[str, Any]:
    from lmt.advanced.robustness import RobustnessSettings, run_robustness_experiment

    experiment = RobustnessSettings(clean_epochs=settings.clean_epochs, adversarial_epochs=settings.adversarial_epochs,
                                    eval_pgd_steps=settings.eval_pgd_steps)
    return {"mode": settings.mode, "machine": machine_info()} | run_robustness_experiment(experiment).to_dict()


def render_markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    s = results["settings"]
    eps_values = [f"{eps:g}" for eps in s["eval_eps"]]
    header = " | ".join(f"FGSM {e}" for e in eps_values) + " | " + " | ".join(f"PGD-{s['eval_pgd_steps']} {e}"
                                                                           for e in eps_values)
    lines = [
        f"# Adversarial robustness on digits ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores) · torch {machine['torch']} · "
        f"{results['total_s']} s in all",
        "",
        f"Small CNN on scikit-learn digits ({results['train_size']} train / {results['test_size']} test images). "
        "eps: L∞ radius on the [0, 1] pixel scale (pixel / 16). Defence: PGD adversarial fine-tuning, "
        f"{s['adversarial_epochs']} epochs at eps {s['train_eps']:g} with {s['train_pgd_steps']}-step PGD.",
        "",
        f"| model | clean | {header} |",
        "|---|---|" + "---|" * (2 * len(eps_values)),
    ]
    for row in results["rows"]:
        cells = [f"{row['fgsm'][e]:.1%}" for e in eps_values] + [f"{row['pgd'][e]:.1%}" for e in eps_values]
        lines.append(f"| {row['model']} | {row['clean']:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    for row in results["rows"]:
        print(f"{row['model']:<9} clean {row['clean']:.3f}  fgsm {row['fgsm']}  pgd {row['pgd']}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return quick_or_full_main(
        "robustness", run, MODES, description=__doc__.splitlines()[0], quick_help="fewer epochs and PGD steps",
        render_markdown=render_markdown, print_table=print_table, argv=argv,
    )


if __name__ == "__main__":
    main()
