"""LoRA against full fine-tuning of a real-size ViT-B/16 (random weights), through lmt's own training code.

    python benchmarks/bench_finetune.py              # ~6 min on 2 idle CPU cores -> benchmarks/results/finetune.json + .md
    python benchmarks/bench_finetune.py --tiny       # tiny ViT, 2 rounds: code paths only (~30 s) -> finetune-tiny.json
    python benchmarks/bench_finetune.py --wait-idle 600   # first wait (up to 10 min) for the machine to be idle

The model is ViTForImageClassification(ViTConfig()) -- ViT-B/16 at 224 px -- with a 101-class head and seeded
random weights (step time and memory do not depend on weight values). Three ways to train it, each from a
TrainConfig with lmt's defaults (batch 8, AdamW lr 5e-4, weight decay 0.01, gradient clipping at 1.0):

    full                 method=full
    lora                 method=lora: r16 on the family's targets (q_proj, v_proj), the classifier trained in full
    lora_checkpointing   method=lora, optim.gradient_checkpointing=true: the memory-lean mode

Each is made trainable by lmt.train.methods.apply_method, optimised by lmt.train.loop._optimizer, and a step is
what lmt.train.loop does at grad_accum=1 in fp32: the objective's loss (forward with labels, cross-entropy),
backward, clip_grad_norm_, optimizer.step, zero_grad(set_to_none=True). The learning-rate scheduler is left out
(it only rescales the learning rate).

Step time: all three models live in this process; after one warm-up step each, every round runs one step of
each, back to back, in a rotating order; a ratio is the median of the per-round ratios. Peak memory: each mode
runs in a fresh Python process (this script with --child), which measures its resident set size after the
imports, builds the model, runs its steps, and reports the peak RSS growth over that window (see measure_child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this folder is on sys.path. bench_foundation sets HF_HUB_OFFLINE and friends on import, before
# anything reads them; the children inherit them.
from bench_foundation import (
    Goal,
    goals_table,
    machine_info,
    measure_and_write,
    median,
    paired_ratio,
    rounded,
    time_rounds,
)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = {"full": RESULTS / "finetune.json", "tiny": RESULTS / "finetune-tiny.json"}
#: The issue's setting: a 101-class dataset (as Food-101), ViT-B/16's registry name (its LoRA targets).
NUM_LABELS = 101
MODEL_NAME = "vit-b16"
#: A small ViT for --tiny (ViTConfig overrides), fast yet with a memory growth that a measurement can see.
TINY_VIT = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
            "image_size": 64, "patch_size": 8}
#: An even smaller one, taken through the whole path before a memory baseline is read (see measure_child).
MICRO_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "image_size": 16, "patch_size": 8}
MIB = 1024 * 1024
#: From one full fine-tuning step timed on the busy development machine (24 s of CPU time, 2 threads).
RUN_TIME_ESTIMATE = (
    "The full run takes about 6 minutes on 2 idle CPU cores: a full fine-tuning step of ViT-B/16 at batch 8 takes "
    "about 10-12 s there, and each variant runs 1 + 6 timed steps plus 3 steps in its memory process."
)


@dataclass(frozen=True)
class Variant:
    """One way to fine-tune: a method and whether activations are recomputed in the backward pass."""

    name: str
    method: str
    gradient_checkpointing: bool
    description: str


VARIANTS = (
    Variant("full", "full", False, "full fine-tuning"),
    Variant("lora", "lora", False, "LoRA, lmt's defaults (r16 on q_proj/v_proj, classifier trained in full)"),
    Variant("lora_checkpointing", "lora", True, "LoRA + gradient checkpointing (memory-lean mode)"),
)
VARIANT_BY_NAME = {variant.name: variant for variant in VARIANTS}


@dataclass(frozen=True)
class Settings:
    mode: str  # "full", "tiny" or "micro"
    #: timed rounds (one step of each variant per round), after one warm-up round
    rounds: int
    #: steps each memory process runs: AdamW allocates its state in the first optimizer step, so the peak
    #: (gradients + optimizer state + activations together) comes in the second step's backward pass
    memory_steps: int
    threads: int = 2
    seed: int = 0
    #: ViTConfig overrides; none: ViT-B/16 at 224 px
    vit: dict[str, int] = field(default_factory=dict)

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"


MODES = {
    "full": Settings("full", rounds=6, memory_steps=3),
    # one thread: the tiny model's microsecond ops only lose to thread hand-offs, badly so on a busy machine
    "tiny": Settings("tiny", rounds=2, memory_steps=2, threads=1, vit=TINY_VIT),
}
MICRO = Settings("micro", rounds=0, memory_steps=1, threads=1, vit=MICRO_VIT)


# ---- one trainee: a model made trainable by lmt, its optimizer, and a training step --------------------------
@dataclass(frozen=True)
class Trainee:
    variant: Variant
    config: Any  # lmt.train.config.TrainConfig
    objective: Any  # ImageClassificationObjective
    model: Any
    optimizer: Any
    trainable: list[Any]


def train_config(variant: Variant) -> Any:
    """lmt's TrainConfig defaults, with this variant's method and gradient checkpointing."""
    from lmt.train.config import OptimConfig, TrainConfig

    # built directly rather than through config_from_dict, whose validation asks for a data.train folder
    return TrainConfig(model=MODEL_NAME, method=variant.method,
                       optim=OptimConfig(gradient_checkpointing=variant.gradient_checkpointing))


def build_trainee(variant: Variant, settings: Settings) -> Trainee:
    """ViT-B/16 (or the tiny ViT) with a 101-class head and seeded random weights, made trainable by lmt."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from lmt.loading import resolve
    from lmt.train.loop import _optimizer
    from lmt.train.methods import apply_method
    from lmt.train.objectives import objective_class

    config = train_config(variant)
    # resolve() only names the family (its LoRA targets) here: nothing is downloaded, nothing loaded
    objective = objective_class(config.task)(config, resolve(config.model))
    objective.setup([{"label": str(i)} for i in range(NUM_LABELS)], [])
    head = {key: value for key, value in objective.model_kwargs().items() if key != "ignore_mismatched_sizes"}
    torch.manual_seed(settings.seed)
    model = ViTForImageClassification(ViTConfig(**settings.vit, **head))
    model = apply_method(model, config, objective)
    model.train()
    objective.on_train_mode(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Trainee(variant, config, objective, model, _optimizer(model, config), trainable)


def make_batch(settings: Settings) -> dict[str, Any]:
    """Random pixels and labels: one batch of TrainConfig's default size, the same for every variant and step."""
    import torch
    from transformers import ViTConfig

    from lmt.train.config import OptimConfig

    batch_size = OptimConfig().batch_size
    image_size = ViTConfig(**settings.vit).image_size
    generator = torch.Generator().manual_seed(settings.seed)
    return {
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=generator),
        "labels": torch.randint(0, NUM_LABELS, (batch_size,), generator=generator),
    }


def train_step(trainee: Trainee, batch: dict[str, Any]) -> float:
    """One optimizer step as lmt.train.loop takes it (grad_accum=1, fp32): loss, backward, clip, step, zero_grad."""
    import torch

    loss = trainee.objective.loss(trainee.model, batch)
    loss.backward()
    max_norm = trainee.config.optim.max_grad_norm
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainee.trainable, max_norm)
    trainee.optimizer.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


# ---- peak memory: one fresh process per variant ---------------------------------------------------------------
def current_rss_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm's second field, in pages)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far: getrusage's ru_maxrss, which Linux gives in KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim), so that the RSS baseline holds no
    memory that the model would merely reuse; a no-op where the C library has no malloc_trim."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def measure_child(variant: Variant, settings: Settings) -> dict[str, Any]:
    """Peak RSS growth of building ``variant`` and running its steps, in this (fresh) process.

    Counted: everything the process holds resident at its peak beyond what it held just before the model was
    built -- weights, LoRA adapters and peft's copy of the classifier, gradients, AdamW state, activations kept for
    the backward pass, temporaries, and whatever the allocator keeps. Not counted: the interpreter, the libraries
    and the input batch, all in place before the baseline is read.
    """
    import gc

    import torch

    torch.set_num_threads(settings.threads)
    # transformers, peft, torch and lmt import parts of themselves on first use: a throwaway micro model taken
    # through the same path first puts them all in place, so that the growth is the model's, not the libraries'
    train_step(build_trainee(variant, MICRO), make_batch(MICRO))
    gc.collect()
    release_free_memory()
    batch = make_batch(settings)
    rss_before, peak_before = current_rss_bytes(), peak_rss_bytes()
    start = time.perf_counter()
    trainee = build_trainee(variant, settings)
    build_s = time.perf_counter() - start
    step_s, losses = [], []
    for _ in range(settings.memory_steps):
        start = time.perf_counter()
        losses.append(train_step(trainee, batch))
        step_s.append(time.perf_counter() - start)
    peak_after, rss_after = peak_rss_bytes(), current_rss_bytes()
    return {
        "rss_before_mib": rss_before / MIB,
        "peak_rss_mib": peak_after / MIB,
        "peak_growth_mib": (peak_after - rss_before) / MIB,
        "rss_after_steps_mib": rss_after / MIB,
        # ru_maxrss is the whole process's peak: it measures this window only if it rose during the window
        "peak_within_window": peak_after > peak_before,
        "peak_rss_before_build_mib": peak_before / MIB,
        "steps": settings.memory_steps,
        "build_s": round(build_s, 3),
        "step_s": rounded(step_s),
        "losses": losses,
    }


def start_child(variant: Variant, settings: Settings) -> subprocess.Popen:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant.name]
    if settings.tiny:
        command.append("--tiny")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_child(name: str, process: subprocess.Popen) -> dict[str, Any]:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the memory run of '{name}' failed (exit code {process.returncode}):\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def measure_memory_one_by_one(settings: Settings, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    memory = {}
    for variant in VARIANTS:
        memory[variant.name] = finish_child(variant.name, start_child(variant, settings))
        log(f"[memory] {variant.name}: peak RSS growth {memory[variant.name]['peak_growth_mib']:.0f} MiB")
    return memory


# ---- step time: all variants in this process, rotating rounds -----------------------------------------------
def stepper(trainee: Trainee, batch: dict[str, Any]) -> Callable[[int], float]:
    def step(_: int) -> float:
        return train_step(trainee, batch)

    return step


def measure_step_times(settings: Settings) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """(raw step seconds, losses, what is trained) per variant."""
    from lmt.train.methods import count_parameters, lora_settings

    batch = make_batch(settings)
    trainees = {variant.name: build_trainee(variant, settings) for variant in VARIANTS}
    counts = {name: count_parameters(trainee.model) for name, trainee in trainees.items()}
    base_total = counts["full"].total
    parameters = {name: count.to_dict() | {"percent_of_base_model": round(100 * count.trainable / base_total, 4)}
                  for name, count in counts.items()}
    for name, trainee in trainees.items():
        if trainee.config.method == "lora":
            targets, trained_in_full = lora_settings(trainee.config, trainee.objective)
            parameters[name] |= {"lora_targets": targets, "modules_trained_in_full": trained_in_full}
    outputs: dict[str, dict[int, Any]] = {}
    raw = time_rounds({name: stepper(trainee, batch) for name, trainee in trainees.items()}, settings.rounds, outputs)
    losses = {name: [outputs[name][i] for i in sorted(outputs[name])] for name in outputs}
    return raw, losses, parameters


# ---- results ------------------------------------------------------------------------------------------------
def ratios_of(raw: dict[str, list[float]], memory: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each variant against full fine-tuning: step time (median of per-round ratios) and peak RSS growth."""
    ratios = {}
    for variant in VARIANTS[1:]:
        ratios[f"{variant.name}_step_time"] = paired_ratio(raw[variant.name], raw["full"])
        ratios[f"{variant.name}_peak_memory"] = (
            memory[variant.name]["peak_growth_mib"] / memory["full"]["peak_growth_mib"])
    return ratios


def goals_of(parameters: dict[str, Any], ratios: dict[str, float]) -> list[Goal]:
    return [
        Goal("lora_trainable_share", f"LoRA defaults, {NUM_LABELS} classes: trainable share of all parameters",
             parameters["lora"]["percent"], 1.0, "<=", "%"),
        Goal("lora_step_time", "LoRA defaults: step time over full fine-tuning's", ratios["lora_step_time"], 0.65, "<="),
        Goal("lean_peak_memory", "LoRA + gradient checkpointing: peak RSS growth over full fine-tuning's",
             ratios["lora_checkpointing_peak_memory"], 0.5, "<="),
    ]


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement, as one JSON-ready dict (without the date, command and output path)."""
    from transformers import ViTConfig

    load = {"start": round(os.getloadavg()[0], 2)}
    if settings.tiny:
        # the smoke test's time budget: the children start together and run beside the timing phase (memory is
        # counted per process; tiny step times mean nothing anyway)
        pending = {variant.name: start_child(variant, settings) for variant in VARIANTS}
    else:
        # one at a time and before the timing phase, so that nothing of ours runs beside them
        memory = measure_memory_one_by_one(settings, log)
        load["after_memory"] = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    raw, losses, parameters = measure_step_times(settings)
    log(f"[step time] {settings.rounds} rounds in {time.perf_counter() - start:.0f} s")
    if settings.tiny:
        memory = {name: finish_child(name, process) for name, process in pending.items()}
    load["end"] = round(os.getloadavg()[0], 2)
    ratios = ratios_of(raw, memory)
    vit = ViTConfig(**settings.vit)
    defaults = train_config(VARIANTS[1])
    variants = {
        variant.name: asdict(variant) | {
            "parameters": parameters[variant.name],
            "step_s": {"median": median(raw[variant.name]), "raw": rounded(raw[variant.name])},
            "losses": losses[variant.name],
            "memory": memory[variant.name] | memory_breakdown(parameters[variant.name]),
        }
        for variant in VARIANTS
    }
    return {
        "mode": settings.mode,
        "settings": asdict(settings),
        "setup": {
            "model": f"tiny ViT {settings.vit}" if settings.vit else "ViT-B/16, ViTConfig() defaults",
            "image_size": vit.image_size, "patch_size": vit.patch_size, "layers": vit.num_hidden_layers,
            "hidden_size": vit.hidden_size, "num_labels": NUM_LABELS, "batch_size": defaults.optim.batch_size,
            "dtype": "float32", "weights": f"random, torch.manual_seed({settings.seed})",
            "train_config": {"optim": asdict(defaults.optim), "lora": asdict(defaults.lora)},
            "step": "objective.loss (forward with labels, cross-entropy), backward, clip_grad_norm_(max_grad_norm), "
                    "AdamW step (lmt.train.loop._optimizer), zero_grad(set_to_none=True); no scheduler, no accelerate "
                    "wrappers (pass-throughs in one CPU process)",
            "memory_counted": "ru_maxrss at the end of the child's steps minus its RSS just before the model was "
                              "built (after the imports, a throwaway micro-ViT pass for lazy imports, malloc_trim "
                              "and the input batch)",
        },
        "machine": machine_info() | {"peft": _version("peft"), "load_average_1min": load},
        "variants": variants,
        "ratios": ratios,
        "goals": [goal.to_dict() for goal in goals_of(parameters, ratios)],
    }


def memory_breakdown(parameters: dict[str, Any]) -> dict[str, float]:
    """What the parameter counts alone account for, in fp32; the rest of the growth is activations and overhead."""
    return {
        "weights_mib": 4 * parameters["total"] / MIB,
        # a gradient and AdamW's two moments per trainable parameter
        "gradients_and_adamw_mib": 3 * 4 * parameters["trainable"] / MIB,
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def render_markdown(results: dict[str, Any]) -> str:
    """The markdown tables the docs quote, generated from the results JSON only."""
    machine, setup = results["machine"], results["setup"]
    load = machine["load_average_1min"]
    lines = [
        f"# Fine-tuning benchmark: LoRA vs full ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores) · torch threads: "
        f"{results['settings']['threads']} · torch {machine['torch']} · transformers {machine['transformers']} · "
        f"peft {machine['peft']} · {setup['model']}, {setup['image_size']} px, {setup['num_labels']} classes, "
        f"batch {setup['batch_size']}, {setup['dtype']}, random weights · 1-min load average {load['start']:.1f} at "
        f"start, {load['end']:.1f} at end"
        + (" · tiny ViT: the numbers mean nothing, only the code paths run" if results["mode"] == "tiny" else ""),
        "",
        f"Step: {setup['step']}. Step-time ratios are medians of per-round ratios over "
        f"{results['settings']['rounds']} rounds (one step of each variant per round, rotating order). Peak memory: "
        f"each variant in a fresh process; {setup['memory_counted']}.",
        "",
    ]
    lines += goals_table(results["goals"])
    lines += [
        "",
        "| variant | trainable / total parameters | trainable | step (s, median) | step vs full | "
        "peak RSS growth (MiB) | vs full | RSS before build / peak (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, variant in results["variants"].items():
        params, memory = variant["parameters"], variant["memory"]
        time_ratio = results["ratios"].get(f"{name}_step_time", 1.0)
        memory_ratio = results["ratios"].get(f"{name}_peak_memory", 1.0)
        lines.append(
            f"| {variant['description']} | {params['trainable']:,} / {params['total']:,} | {params['percent']:.2f}% | "
            f"{variant['step_s']['median']:.3f} | {time_ratio:.2f}x | {memory['peak_growth_mib']:.0f} | "
            f"{memory_ratio:.2f}x | {memory['rss_before_mib']:.0f} / {memory['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "| variant | weights (MiB) | gradients + AdamW state (MiB) | rest of the growth: activations, temporaries, "
        "allocator (MiB) | peak inside the measured window |",
        "|---|---|---|---|---|",
    ]
    for variant in results["variants"].values():
        memory = variant["memory"]
        rest = memory["peak_growth_mib"] - memory["weights_mib"] - memory["gradients_and_adamw_mib"]
        lines.append(f"| {variant['name']} | {memory['weights_mib']:.0f} | {memory['gradients_and_adamw_mib']:.0f} | "
                     f"{rest:.0f} | {'yes' if memory['peak_within_window'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    header = ("variant", "trainable", "step s", "vs full", "peak MiB", "vs full")
    rows = [header]
    for name, variant in results["variants"].items():
        rows.append((
            name, f"{variant['parameters']['percent']:.2f}%", f"{variant['step_s']['median']:.3f}",
            f"{results['ratios'].get(f'{name}_step_time', 1.0):.2f}x", f"{variant['memory']['peak_growth_mib']:.0f}",
            f"{results['ratios'].get(f'{name}_peak_memory', 1.0):.2f}x",
        ))
    rows.append(("", "", "", "", "", ""))
    rows.append(("goal", "target", "measured", "", "", ""))
    for goal in results["goals"]:
        rows.append((goal["name"], goal["goal"], f"{goal['measured']:.3f}{goal['unit']}",
                     "pass" if goal["passed"] else "FAIL", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# ---- main ---------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=RUN_TIME_ESTIMATE)
    parser.add_argument("--tiny", action="store_true", help="tiny ViT, 2 rounds: code paths only (~30 s)")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/finetune[-tiny].json)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below 1")
    # the fresh process that measures one variant's peak memory (started by this script)
    parser.add_argument("--child", choices=sorted(VARIANT_BY_NAME), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "full"
    settings = MODES[mode]
    if not Path("/proc/self/statm").is_file():
        parser.error("the memory measurement reads /proc/self/statm: run this benchmark on Linux")
    if args.child:
        result = measure_child(VARIANT_BY_NAME[args.child], settings)
        print(json.dumps(result))
        return result

    out = args.out or DEFAULT_OUT[mode]
    command_args = list(sys.argv[1:] if argv is None else argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    return measure_and_write("finetune", run, settings, out=out, command_args=command_args,
                             wait_idle=args.wait_idle, render_markdown=render_markdown, print_table=print_table)


if __name__ == "__main__":
    main()
