"""Continual learning on split-digits: what each method forgets of task A after learning task B, and what it costs.

    python benchmarks/bench_continual.py            # 3 seeds, 20 epochs per task -> results/continual.json + .md
    python benchmarks/bench_continual.py --quick    # 1 seed, 10 epochs per task -> results/continual-quick.json

On one thread the full run needs about 35 s of CPU (33 s measured); on the shared 2-core development machine at a
1-minute load of ~13 it took 4 min of wall time (both are in results/continual.md).

scikit-learn's handwritten digits (1797 8x8 images, split by image 70/30), task A = digits 0-4, then task B = digits
5-9. The model is a small MLP (64 -> 128 -> 128 -> 10) with one 10-way head. Per seed, one model is trained on A,
and every method starts from that same model to learn B (lmt.advanced.continual):

    naive    fine-tune on B
    replay   every B batch is joined by as many examples from a class-balanced buffer of A (20 per class)
    ewc      quadratic penalty weighted by the diagonal Fisher information of A
    lwf      distil the A-class outputs of a frozen copy of the model after A, on B's images
    lora     a peft LoRA adapter (r8 on fc1/fc2, head copy) for B on the frozen model after A; a router (LDA on
             stored class statistics) picks the task of each test image: no task id is given

Accuracy is class-incremental (10-way, no task id), the setting in which forgetting shows; the accuracy with the
task id given (argmax over the task's own five classes) is reported beside it. Forgetting = accuracy on A right
after A minus accuracy on A after B. Memory cost = extra bytes kept (buffer, Fisher + anchor, teacher, adapter +
router); parameter cost = parameters trained for task B.
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

#: Replay and per-task LoRA must forget at most this share of what naive fine-tuning forgets.
FORGETTING_SHARE = round(1 / 3, 3)
#: Naive fine-tuning must forget at least this much accuracy on A, or the setup shows nothing.
NAIVE_FORGETS = 0.5


@dataclass(frozen=True)
class Settings:
    mode: str
    seeds: tuple[int, ...]
    epochs: int
    #: one thread: the model is small, and on a shared machine a second thread mostly waits
    threads: int = 1


MODES = {"full": Settings("full", (0, 1, 2), 20), "quick": Settings("quick", (0,), 10)}


def goals_of(report: dict[str, Any]) -> list[Goal]:
    methods = report["methods"]
    goals = [Goal("naive_forgets", "naive fine-tuning: accuracy on A lost by learning B",
                  methods["naive"]["forgetting"], NAIVE_FORGETS, ">=", "")]
    for name in ("replay", "lora"):
        goals.append(Goal(f"{name}_forgetting", f"{name}: forgetting over naive fine-tuning's",
                          methods[name]["forgetting_vs_naive"], FORGETTING_SHARE, "<=", ""))
    return goals


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    from importlib.metadata import version

    from lmt.advanced.continual import ContinualSettings, run_continual_experiment

    load = {"start": round(os.getloadavg()[0], 2)}
    # CPU seconds of this process: on a shared machine the wall time says more about the neighbours than about us
    cpu_start = time.process_time()
    start = time.perf_counter()
    report = run_continual_experiment(ContinualSettings(epochs=settings.epochs, seeds=settings.seeds)).to_dict()
    log(f"[continual] {time.perf_counter() - start:.0f} s: " + ", ".join(
        f"{name} forgets {m['forgetting']:.3f}" for name, m in report["methods"].items()))
    load["end"] = round(os.getloadavg()[0], 2)
    cpu_s = round(time.process_time() - cpu_start, 1)
    return {
        "mode": settings.mode,
        "settings": asdict(settings),
        "setup": {
            "data": "scikit-learn digits (1797 8x8 images) split by image 70/30 (seed 0); task A = 0-4, task B = 5-9",
            "model": "MLP 64 -> 128 -> 128 -> 10 (ReLU), one 10-way head, AdamW, trained from scratch on A per seed",
            "evaluation": "class-incremental accuracy (10-way argmax, no task id); 'task given' = argmax over the "
                          "task's own classes; the lora method routes each image with a task router (no task id)",
        },
        "machine": machine_info() | {"peft": version("peft"), "load_average_1min": load, "process_cpu_s": cpu_s},
        "continual": report,
        "goals": [goal.to_dict() for goal in goals_of(report)],
    }


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _bytes(value: int) -> str:
    return "0" if value == 0 else f"{value / 1024:.1f} KiB"


def render_markdown(results: dict[str, Any]) -> str:
    """The tables the tutorials quote, generated from the results JSON only."""
    machine, settings, report = results["machine"], results["settings"], results["continual"]
    load = machine["load_average_1min"]
    lines = [
        f"# Continual learning benchmark: split-digits ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores) · torch threads: "
        f"{settings['threads']} · torch {machine['torch']} · peft {machine['peft']} · {len(settings['seeds'])} "
        f"seed(s), {settings['epochs']} epochs per task · 1-min load average {load['start']:.1f} at start, "
        f"{load['end']:.1f} at end · total {results['total_s']:.0f} s wall, {machine['process_cpu_s']:.0f} s CPU",
        "",
        f"{results['setup']['data']}; {report['train_sizes']['A']} / {report['train_sizes']['B']} train and "
        f"{report['test_sizes']['A']} / {report['test_sizes']['B']} test images for A / B. {results['setup']['model']} "
        f"({report['model_parameters']:,} parameters). Accuracy on A right after training on A: "
        f"{_percent(report['accuracy_a_after_a'])} (the same model is the start of every method).",
        "",
    ]
    lines += goals_table(results["goals"], lambda goal: f"{goal['measured']:.3f}")
    lines += [
        "",
        "Class-incremental (10-way, no task id), mean over seeds:",
        "",
        "| method | accuracy on A after B | forgetting on A | forgetting vs naive | accuracy on B | "
        "A / B with task id given | routing accuracy A / B | extra memory | parameters trained for B | "
        "train time B (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        routing = ("—" if m["routing_accuracy_a"] is None
                   else f"{_percent(m['routing_accuracy_a'])} / {_percent(m['routing_accuracy_b'])}")
        lines.append(
            f"| {name} | {_percent(m['accuracy_a'])} | {100 * m['forgetting']:.1f} pts | "
            f"{m['forgetting_vs_naive']:.2f}x | {_percent(m['accuracy_b'])} | "
            f"{_percent(m['accuracy_a_task_given'])} / {_percent(m['accuracy_b_task_given'])} | {routing} | "
            f"{_bytes(m['extra_bytes'])} | {m['trainable_parameters_task_b']:,} | {m['train_s_task_b']:.1f} |"
        )
    lines += ["", "| method | extra memory holds |", "|---|---|"]
    for name, m in report["methods"].items():
        lines.append(f"| {name} | {m['extra_bytes_what']} ({m['extra_bytes']:,} bytes) |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    for name, m in results["continual"]["methods"].items():
        print(f"{name}: A {m['accuracy_a']:.3f} (forgetting {m['forgetting']:.3f}, {m['forgetting_vs_naive']:.2f}x "
              f"naive), B {m['accuracy_b']:.3f}, {m['extra_bytes']} extra bytes, "
              f"{m['trainable_parameters_task_b']} trained parameters")
    for goal in results["goals"]:
        print(f"{goal['name']}: {goal['measured']:.3f} {goal['goal']} {'pass' if goal['passed'] else 'FAIL'}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return quick_or_full_main(
        "continual", run, MODES, description=__doc__.splitlines()[0], quick_help="1 seed, 10 epochs per task",
        render_markdown=render_markdown, print_table=print_table, argv=argv,
    )


if __name__ == "__main__":
    main()
