"""Multimodal fusion heads against single-modality baselines on a task that needs both modalities.

    python benchmarks/bench_fusion.py            # both rules, 3 seeds, 20 epochs -> results/fusion.json + .md
    python benchmarks/bench_fusion.py --quick    # the xor rule, 1 seed, 10 epochs -> results/fusion-quick.json

On one thread the full run needs about 4 min of CPU (233 s measured), the quick run about 30 s; on the shared 2-core
development machine at a 1-minute load of ~13 the full run took 17 min of wall time (both are in results/fusion.md).

The data (lmt.advanced.fusion.make_fusion_data): each sample pairs a handwritten digit image (scikit-learn's
digits, 8x8, split by image: no test image is seen in training) with a six-word sentence holding one number word
("the card says seven a tag"), drawn independently of the digit. Two labels:

    xor       the parity of digit + number: 2 classes; each modality alone is at chance (50 %)
    product   (digit parity, number parity): 4 classes; each modality alone gets at most 50 %

The encoders are fixed and keep all the information (no pretrained model): pixels / bag-of-words vectors for the
vector heads, 4x4-patch tokens / one-hot word tokens for cross-attention. Every variant (image-only, text-only,
early, late, gated, cross-attention) is trained from scratch with the same settings, once per seed.

A second section fuses the embeddings of two image models (tiny CLIP and tiny DINOv2, random weights) for
near-duplicate retrieval, with a sweep over the fusion weights. Random weights carry no semantics: it shows how
score-level fusion behaves, not how good real CLIP + DINOv2 features are.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Run as a script, this folder is on sys.path. bench_foundation sets HF_HUB_OFFLINE and friends on import.
from bench_foundation import Goal, goals_table, machine_info, quick_or_full_main

#: "A clear margin": a fusion head must beat the better single modality by this much accuracy (absolute).
CLEAR_MARGIN = 0.20
#: Late fusion cannot represent xor; it must stay this close to the best single modality there.
LATE_XOR_SLACK = 0.10
INTERACTION_HEADS = ("early", "gated", "cross-attention")
RETRIEVAL_MODELS = ("clip-vit-b32", "dinov2-small")


@dataclass(frozen=True)
class Settings:
    mode: str
    rules: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    gallery_size: int
    #: one thread: these models are small, and on a shared machine a second thread mostly waits
    threads: int = 1


MODES = {
    "full": Settings("full", ("xor", "product"), (0, 1, 2), 20, 200),
    "quick": Settings("quick", ("xor",), (0,), 10, 60),
}


def goals_of(reports: dict[str, dict[str, Any]]) -> list[Goal]:
    goals = []
    for rule, report in reports.items():
        heads = INTERACTION_HEADS if rule == "xor" else (*INTERACTION_HEADS, "late")
        for head in heads:
            goals.append(Goal(f"{rule}_{head}_margin",
                              f"{rule}: {head} fusion accuracy minus the better single modality's",
                              report["results"][head]["margin_over_best_single"], CLEAR_MARGIN, ">=", ""))
        if rule == "xor":
            goals.append(Goal("xor_late_no_gain",
                              "xor: late fusion (score averaging) accuracy minus the better single modality's "
                              "(it cannot model an interaction)",
                              report["results"]["late"]["margin_over_best_single"], LATE_XOR_SLACK, "<=", ""))
    return goals


def run_retrieval(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    import lmt
    from lmt.advanced.fusion import run_retrieval_experiment

    start = time.perf_counter()
    # one batch per call: the whole gallery at 32 px is small, and a single batch shows no progress bar
    embedders = {name: lmt.pipeline("image-feature-extraction", model=name, weights="tiny", device="cpu",
                                    batch_size=1024) for name in RETRIEVAL_MODELS}
    report = run_retrieval_experiment(embedders, gallery_size=settings.gallery_size)
    log(f"[retrieval] {time.perf_counter() - start:.0f} s; best weights {report.best['weights']}")
    return report.to_dict() | {"weights": "tiny (random): the numbers show how fusion combines two embeddings, "
                                          "not how good real CLIP/DINOv2 features are"}


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    from lmt.advanced.fusion import FusionSettings, run_fusion_experiment

    load = {"start": round(os.getloadavg()[0], 2)}
    # CPU seconds of this process: on a shared machine the wall time says more about the neighbours than about us
    cpu_start = time.process_time()
    fusion_settings = FusionSettings(epochs=settings.epochs, seeds=settings.seeds)
    reports = {}
    for rule in settings.rules:
        start = time.perf_counter()
        reports[rule] = run_fusion_experiment(rule, fusion_settings).to_dict()
        log(f"[{rule}] {time.perf_counter() - start:.0f} s: "
            + ", ".join(f"{name} {r['accuracy_mean']:.3f}" for name, r in reports[rule]["results"].items()))
    retrieval = run_retrieval(settings, log)
    load["end"] = round(os.getloadavg()[0], 2)
    cpu_s = round(time.process_time() - cpu_start, 1)
    return {
        "mode": settings.mode,
        "settings": asdict(settings),
        "setup": {
            "data": "scikit-learn digits (1797 8x8 images) split by image 70/30 (seed 0), each image paired with "
                    f"{fusion_settings.pairs_per_image} (train) / {fusion_settings.test_pairs_per_image} (test) "
                    "random six-word sentences holding one number word",
            "encoders": "fixed, information-preserving: 64 pixels and bag-of-words counts (vector heads); 4 tokens "
                        "of 4x4 patches kept in place and one-hot word+position tokens (cross-attention); each head "
                        "trains its own MLP encoders on top",
            "training": "AdamW, cross-entropy, the same settings for every variant, from scratch per seed",
        },
        "machine": machine_info() | {"load_average_1min": load, "process_cpu_s": cpu_s},
        "fusion": reports,
        "retrieval": retrieval,
        "goals": [goal.to_dict() for goal in goals_of(reports)],
    }


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def render_markdown(results: dict[str, Any]) -> str:
    """The tables the tutorials quote, generated from the results JSON only."""
    machine, settings = results["machine"], results["settings"]
    load = machine["load_average_1min"]
    lines = [
        f"# Multimodal fusion benchmark ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores) · torch threads: "
        f"{settings['threads']} · torch {machine['torch']} · {len(settings['seeds'])} seed(s), {settings['epochs']} "
        f"epochs · 1-min load average {load['start']:.1f} at start, {load['end']:.1f} at end · total "
        f"{results['total_s']:.0f} s wall, {machine['process_cpu_s']:.0f} s CPU",
        "",
        f"Data: {results['setup']['data']}. Encoders: {results['setup']['encoders']}.",
        "",
    ]
    lines += goals_table(results["goals"], lambda goal: f"{goal['measured']:+.3f}")
    for rule, report in results["fusion"].items():
        lines += [
            "",
            f"## rule `{rule}`: {len(report['class_names'])} classes, chance {_percent(report['chance'])}, "
            f"{report['train_size']} train / {report['test_size']} test pairs",
            "",
            "| variant | input view | test accuracy (mean ± std over seeds) | vs better single modality | "
            "parameters | train time per seed (s) |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in report["results"].items():
            lines.append(f"| {name} | {r['inputs']} | {_percent(r['accuracy_mean'])} ± {_percent(r['accuracy_std'])} "
                         f"| {100 * r['margin_over_best_single']:+.1f} pts | {r['parameters']:,} | "
                         f"{r['train_s']:.1f} |")
    retrieval = results["retrieval"]
    first, second = retrieval["models"]
    lines += [
        "",
        f"## embedding fusion for retrieval: {first} + {second}, tiny random weights",
        "",
        f"Near-duplicate retrieval: {retrieval['gallery_size']} digit images (32 px) in the gallery, each query a "
        f"distorted copy ({retrieval['distortion']}). Fused vector = concat(sqrt(w1) * e1, sqrt(w2) * e2), so its "
        "cosine is w1 * cos1 + w2 * cos2. Random weights: this shows how fusion combines two embeddings, not how "
        "good real features are.",
        "",
        f"| weight {first} | weight {second} | recall@1 | recall@5 |",
        "|---|---|---|---|",
    ]
    for row in retrieval["rows"]:
        w1, w2 = row["weights"]
        lines.append(f"| {w1:g} | {w2:g} | {_percent(row['recall']['@1'])} | {_percent(row['recall']['@5'])} |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    for rule, report in results["fusion"].items():
        print(f"{rule}: " + ", ".join(f"{name} {r['accuracy_mean']:.3f}" for name, r in report["results"].items()))
    for goal in results["goals"]:
        print(f"{goal['name']}: {goal['measured']:+.3f} {goal['goal']} {'pass' if goal['passed'] else 'FAIL'}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()  # the tiny DINOv2 folder's unused head is reported on every load
    return quick_or_full_main(
        "fusion", run, MODES, description=__doc__.splitlines()[0],
        quick_help="the xor rule, 1 seed, 10 epochs, small gallery",
        render_markdown=render_markdown, print_table=print_table, argv=argv,
    )


if __name__ == "__main__":
    main()
