"""SAM's ViT-B image encoder at 1024 px: transformers against lmt's fast encoder (lmt.models.sam_fast), in one run.

    python benchmarks/bench_sam_encoder.py                  # ~4.5 min on 2 idle CPU cores -> results/sam_encoder.json
    python benchmarks/bench_sam_encoder.py --tiny           # tiny SAM, 1 round: code paths and parity only (~30 s)
    python benchmarks/bench_sam_encoder.py --wait-idle 600  # first wait (up to 10 min) for the machine to be idle

The model is SamModel(SamConfig()) -- the ViT-B encoder, 1024 px input -- with seeded random weights (speed does not
depend on weight values as long as they do not underflow: see bench_foundation.build_sam), and random relative-
position tables and absolute position embedding (transformers initialises both to zeros, which would leave the
relative-position path of the parity check untested). Batch 1, float32, 2 torch threads.

Three sides, each called once per round, back to back, in a rotating order, after one warm-up round:

    transformers_eager   model.get_image_embeddings(pixel_values), attn_implementation="eager": the attention the
                         issue describes (12 x 4096 x 4096 attention matrices and relative-position biases per global
                         layer, allocated and freed on every call)
    transformers_sdpa    the same call with transformers' default attention (SDPA with the full bias as its mask):
                         what ``lmt`` ran before, and what ``from_pretrained`` gives
    fast                 lmt.models.sam_fast.encode_images(model, pixel_values), the same weights

A speed-up is the median of the per-round ratios. For every call the script also records the minor page faults
(``ru_minflt`` of ``resource.getrusage``), and it compares the embeddings (max abs diff). A matmul of the encoder's
MLP shape, timed in the same run, gives the fp32 ceiling that the achieved GFLOP/s are set against; the FLOPs are
counted from the config (see ``encoder_flops``), the same count for every side.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Run as a script, this folder is on sys.path. bench_foundation sets HF_HUB_OFFLINE and friends on import.
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
DEFAULT_OUT = {"full": RESULTS / "sam_encoder.json", "tiny": RESULTS / "sam_encoder-tiny.json"}
#: The issue's goal: the fast encoder at least twice as fast as transformers in the same run.
TARGET_SPEEDUP = 2.0
#: Parity: max abs diff of the embeddings relative to their largest magnitude (float32).
PARITY_TOLERANCE = 1e-4
#: The matmul that sets the ceiling: the MLP's first linear layer at 1024 px (4096 tokens, 768 -> 3072).
CEILING_SHAPE = (4096, 768, 3072)
SIDES = {
    "transformers_eager": "transformers, eager attention",
    "transformers_sdpa": "transformers, default (SDPA) attention",
    "fast": "lmt fast encoder",
}


@dataclass(frozen=True)
class Settings:
    mode: str  # "full" or "tiny"
    #: timed rounds (one call of each side per round), after one warm-up round
    rounds: int
    #: matmuls timed for the ceiling, at the start and again at the end of the run
    ceiling_repeats: int
    threads: int = 2
    seed: int = 0

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"


MODES = {
    "full": Settings("full", rounds=4, ceiling_repeats=5),
    # one thread: the tiny model's microsecond ops only lose to thread hand-offs on a busy machine
    "tiny": Settings("tiny", rounds=1, ceiling_repeats=1, threads=1),
}


def build_models(settings: Settings) -> tuple[Any, Any]:
    """SAM ViT-B with seeded random weights (or lmt's tiny SAM), position tables drawn at random too, with
    transformers' default attention; and a copy of it with its eager attention."""
    import copy

    import torch
    from transformers import AutoModel, SamConfig, SamModel

    torch.manual_seed(settings.seed)
    if settings.tiny:
        from lmt.tiny import tiny_model_path

        # a fresh copy, not lmt.load's cached one: the position tables are redrawn below
        model = SamModel.from_pretrained(tiny_model_path("sam")).eval()
    else:
        # 0.02 as in bench_foundation.build_sam: the default 1e-10 gives subnormal activations, slow on CPUs
        model = SamModel(SamConfig(vision_config={"initializer_range": 0.02})).eval()
    encoder = model.vision_encoder
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                param.normal_(std=0.5)
    eager = AutoModel.from_config(copy.deepcopy(model.config), attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    return model, eager


def encoder_flops(config: Any) -> dict[str, float]:
    """Floating-point operations (2 per multiply-add) of one image through SAM's image encoder, by part.

    Linear layers count the real tokens only (transformers also runs the windowed layers' qkv and output projections
    on the padding tokens, uncounted work that lmt's fast encoder skips); windowed attention counts the padded
    windows, whose padding tokens are real keys in SAM. Layer norms, softmax, GELU and additions are left out.
    """
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    side, hidden = size // patch, config.hidden_size
    tokens = side * side
    window = config.window_size
    padded_side = -(-side // window) * window if window else side
    flops = {"patch_embed": 2.0 * tokens * config.num_channels * patch * patch * hidden}
    linear = attention = 0.0
    for index in range(config.num_hidden_layers):
        linear += 2.0 * tokens * hidden * (3 * hidden + hidden + 2 * config.mlp_dim)
        if index in config.global_attn_indexes or not window:
            # q.k and attention.v over all token pairs, plus the two relative-position terms (side keys each)
            attention += 2.0 * tokens * tokens * hidden * 2 + 2.0 * tokens * 2 * side * hidden
        else:
            per_window = window * window
            windows = (padded_side // window) ** 2
            attention += windows * (2.0 * per_window * per_window * hidden * 2 + 2.0 * per_window * 2 * window * hidden)
    flops["linear_layers"] = linear
    flops["attention"] = attention
    flops["neck"] = 2.0 * tokens * (hidden * config.output_channels + config.output_channels ** 2 * 9)
    flops["total"] = sum(flops.values())
    return flops


def matmul_gflops(repeats: int) -> list[float]:
    """GFLOP/s of ``repeats`` fp32 matmuls of :data:`CEILING_SHAPE`, one timing each, after a warm-up."""
    import torch

    m, k, n = CEILING_SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2.0 * m * k * n / (time.perf_counter() - start) / 1e9)
    return rates


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def counting_faults(call: Callable[[], Any], faults: list[int]) -> Callable[[int], Any]:
    """``call`` as a timed round's call, appending the minor page faults of each timed run (i >= 0) to ``faults``."""

    def run(i: int) -> Any:
        before = minor_faults()
        result = call()
        if i >= 0:
            faults.append(minor_faults() - before)
        return result

    return run


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    from lmt.models.sam_fast import encode_images, unsupported_reason

    start = time.perf_counter()
    model, eager_model = build_models(settings)
    config = model.config.vision_config
    log(f"models ready in {time.perf_counter() - start:.1f} s; measuring ...")
    torch.manual_seed(settings.seed + 1)
    size = config.image_size
    pixel_values = torch.randn(1, config.num_channels, size, size)
    with torch.inference_mode():
        reason = unsupported_reason(model)
    if reason is not None:
        raise RuntimeError(f"the fast path does not apply to the benchmark model: {reason}")

    def transformers_call(sam: Any) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return sam.get_image_embeddings(pixel_values)

        return call

    def fast_call() -> Any:
        with torch.inference_mode():
            return encode_images(model, pixel_values)

    sides = {"transformers_eager": transformers_call(eager_model), "transformers_sdpa": transformers_call(model),
             "fast": fast_call}
    ceiling_start = matmul_gflops(settings.ceiling_repeats)
    faults: dict[str, list[int]] = {name: [] for name in sides}
    outputs: dict[str, dict[int, Any]] = {}
    raw = time_rounds({f"{name}_s": counting_faults(call, faults[name]) for name, call in sides.items()},
                      settings.rounds, outputs)
    ceiling_end = matmul_gflops(settings.ceiling_repeats)

    ours = outputs["fast_s"][-1]
    parity = {}
    for name in ("transformers_eager", "transformers_sdpa"):
        reference = outputs[f"{name}_s"][-1]
        max_abs_diff, magnitude = float((reference - ours).abs().max()), float(reference.abs().max())
        parity[name] = {"max_abs_diff": max_abs_diff, "max_abs_reference": magnitude,
                        "relative": max_abs_diff / magnitude, "passed": max_abs_diff <= PARITY_TOLERANCE * magnitude}
    flops = encoder_flops(config)
    seconds = {name: median(raw[f"{name}_s"]) for name in sides}
    ceiling = max(ceiling_start + ceiling_end)
    gflops = {name: flops["total"] / value / 1e9 for name, value in seconds.items()}
    ratios = {f"{name}_over_fast": paired_ratio(raw[f"{name}_s"], raw["fast_s"])
              for name in ("transformers_eager", "transformers_sdpa")}
    log(", ".join(f"{name} {value:.2f} s" for name, value in seconds.items()) + f"; ratios {ratios}")
    return {
        "mode": settings.mode,
        "settings": asdict(settings),
        "machine": machine_info(),
        "setup": {
            "model": "SAM ViT-B image encoder" if not settings.tiny else "SAM tiny image encoder",
            "image_size": size,
            "batch_size": 1,
            "dtype": "float32",
            "transformers_call": "model.get_image_embeddings(pixel_values)",
            "fast_call": "lmt.models.sam_fast.encode_images(model, pixel_values)",
            "tokens": (size // config.patch_size) ** 2,
            "global_attn_indexes": list(config.global_attn_indexes),
            "window_size": config.window_size,
        },
        "raw": {name: rounded(values) for name, values in raw.items()},
        "s_per_call": seconds,
        "ratios": ratios,
        "minor_page_faults": {"raw": faults, "per_call": {name: median(values) for name, values in faults.items()}},
        "flops": flops,
        "gflops_per_s": gflops,
        "matmul_ceiling": {
            "shape": list(CEILING_SHAPE),
            "gflops_per_s": ceiling,
            "raw": rounded(ceiling_start + ceiling_end),
            "fraction": {name: value / ceiling for name, value in gflops.items()},
        },
        "parity": {"tolerance": PARITY_TOLERANCE, "passed": all(p["passed"] for p in parity.values()), **parity},
        "goals": [
            Goal("sam_encoder_vs_eager",
                 "SAM image encoder, 1 image: transformers (eager attention) s / lmt fast encoder s",
                 ratios["transformers_eager_over_fast"], TARGET_SPEEDUP, ">=").to_dict(),
        ],
    }


def render_markdown(results: dict[str, Any]) -> str:
    """The markdown tables the docs quote, generated from the results JSON only."""
    machine, setup = results["machine"], results["setup"]
    load = machine["load_average_1min"]
    seconds, faults = results["s_per_call"], results["minor_page_faults"]["per_call"]
    gflops, ceiling, parity = results["gflops_per_s"], results["matmul_ceiling"], results["parity"]
    lines = [
        f"# SAM image encoder benchmark ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores) · torch threads: "
        f"{results['settings']['threads']} · torch {machine['torch']} · transformers {machine['transformers']} · "
        f"{setup['model']}, {setup['image_size']} px, batch {setup['batch_size']}, {setup['dtype']}, random weights · "
        f"1-min load average {load['start']:.1f} at start, {load['end']:.1f} at end"
        + (" · tiny SAM: the speed numbers mean nothing, only parity does" if results["mode"] == "tiny" else ""),
        "",
        f"Ratios: medians of per-round ratios over {results['settings']['rounds']} rounds (each side once per round, "
        f"rotating order, after a warm-up round). transformers runs `{setup['transformers_call']}` with its eager "
        f"attention and with its default (SDPA) attention; lmt runs `{setup['fast_call']}` on the same weights.",
        "",
    ]
    lines += goals_table(results["goals"])
    lines += [
        "",
        f"| side | s per image (median) | lmt fast is faster by | minor page faults per call | GFLOP/s | "
        f"of the matmul ceiling ({ceiling['gflops_per_s']:.0f} GFLOP/s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in SIDES.items():
        ratio = results["ratios"].get(f"{name}_over_fast")
        lines.append(f"| {label} | {seconds[name]:.3f} | {'—' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{faults[name]:,.0f} | {gflops[name]:.1f} | {100 * ceiling['fraction'][name]:.0f}% |")
    flops = results["flops"]
    lines += [
        "",
        f"GFLOP per image: {flops['total'] / 1e9:.4g} (linear layers {flops['linear_layers'] / 1e9:.4g}, "
        f"attention {flops['attention'] / 1e9:.4g}, patch embedding {flops['patch_embed'] / 1e9:.4g}, "
        f"neck {flops['neck'] / 1e9:.4g}), 2 per multiply-add. Ceiling: the best of the fp32 matmuls "
        f"{' x '.join(map(str, ceiling['shape']))} timed at the start and end of the run.",
        "",
        "| parity of the lmt fast encoder with | max abs diff | largest embedding value | relative | passed |",
        "|---|---|---|---|---|",
    ]
    for name in ("transformers_eager", "transformers_sdpa"):
        check = parity[name]
        lines.append(f"| {SIDES[name]} | {check['max_abs_diff']:.2e} | {check['max_abs_reference']:.2f} | "
                     f"{check['relative']:.1e} | {'yes' if check['passed'] else 'NO'} (tolerance "
                     f"{parity['tolerance']:.0e}) |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    for goal in results["goals"]:
        print(f"{goal['name']}  {goal['goal']}  measured {goal['measured']:.3f}  "
              f"{'pass' if goal['passed'] else 'FAIL'}")
    for name, ratio in results["ratios"].items():
        print(f"{name}: {ratio:.3f}x")
    parity = results["parity"]
    print(f"parity  <= {parity['tolerance']:.0e} relative  {'pass' if parity['passed'] else 'FAIL'}")
    for name, value in results["s_per_call"].items():
        print(f"{name}: {value:.3f} s/image, {results['minor_page_faults']['per_call'][name]:,.0f} minor faults/call, "
              f"{results['gflops_per_s'][name]:.1f} GFLOP/s")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny SAM, 1 round: code paths and parity only")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/sam_encoder[-tiny].json)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below 1")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "full"
    settings = MODES[mode]
    out = args.out or DEFAULT_OUT[mode]
    command_args = list(sys.argv[1:] if argv is None else argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars would bury the log

    def run_recording_load(settings: Settings) -> dict[str, Any]:
        import os

        load_start = os.getloadavg()[0]
        results = run(settings)
        results["machine"]["load_average_1min"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
        return results

    return measure_and_write("sam_encoder", run_recording_load, settings, out=out, command_args=command_args,
                             wait_idle=args.wait_idle, render_markdown=render_markdown, print_table=print_table)


if __name__ == "__main__":
    main()
