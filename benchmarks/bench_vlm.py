"""Qwen2.5-VL against InternVL3: prefill and decode tokens/s and peak memory, random weights, CPU fp32.

    python benchmarks/bench_vlm.py                       # real-size configs -> benchmarks/results/vlm.json
    python benchmarks/bench_vlm.py --models internvl3-1b  # one family only
    python benchmarks/bench_vlm.py --tiny                # tiny variants: checks the code paths only

Each model is built from the real checkpoint's architecture (layer counts and widths as in its config.json) with
seeded random weights in fp32; speed does not depend on the weight values. Inputs are built directly: one image
(448x448 px: 256 image tokens for both families) and a 32-token question. Prefill is the first forward pass over the
whole prompt (``generate`` with one new token); decode is timed inside one ``generate`` call that makes
``1 + DECODE_TOKENS`` tokens: a streamer stamps the clock as each token arrives, and decode tokens/s is the number of
tokens after the first over the time from the first to the last (so the prefill's run-to-run variation cannot leak
into it, as it did when decode was the difference of two calls). Peak memory is the process's peak resident set
(each model runs in its own subprocess), weights included.
Every figure is labelled with exactly what was measured.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# Run as a script, this folder is on sys.path (the test loads it the same way)
from bench_foundation import RESULTS, machine_info, measure_and_write  # noqa: E402

QUESTION_TOKENS = 32
#: Special token ids of the real vocabularies (Qwen2.5 tokenizer) used to lay out the prompt.
QWEN_IDS = {"image": 151655, "video": 151656, "vision_start": 151652, "vision_end": 151653}
INTERNVL_IMAGE_ID = 151667
#: The real checkpoints' architectures (from their config.json), vision and language model.
REAL: dict[str, dict[str, Any]] = {
    "qwen2.5-vl-3b": {"family": "qwen2_5_vl",
                      "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                               "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936},
                      "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                                 "out_hidden_size": 2048}},
    "internvl3-1b": {"family": "internvl",
                     "text": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                              "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151674},
                     "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                "num_attention_heads": 16}},
    "internvl3-2b": {"family": "internvl",
                     "text": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                              "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151674},
                     "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                "num_attention_heads": 16}},
}
#: All three checkpoints share the output layer's weights with the input embedding.
TIED = {"tie_word_embeddings": True}


@dataclass(frozen=True)
class Settings:
    mode: str  # "full" or "tiny"
    models: tuple[str, ...]
    decode_tokens: int
    threads: int = 2


def build_model(name: str, tiny: bool) -> Any:
    """The model: the tiny variant's (loaded) or the real architecture with seeded random fp32 weights."""
    import torch
    import transformers

    if tiny:
        import lmt

        return lmt.load(name, weights="tiny", device="cpu").model
    spec = REAL[name]
    torch.manual_seed(0)
    rope = {"rope_type": "default", "rope_theta": 1e6}
    if spec["family"] == "qwen2_5_vl":
        config = transformers.Qwen2_5_VLConfig(
            vision_config={**spec["vision"], "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                           "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
            text_config={**spec["text"], **TIED, "rope_parameters": {**rope, "mrope_section": [16, 24, 24]}},
            image_token_id=QWEN_IDS["image"], video_token_id=QWEN_IDS["video"],
            vision_start_token_id=QWEN_IDS["vision_start"], vision_end_token_id=QWEN_IDS["vision_end"],
            **TIED,
        )
        return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    config = transformers.InternVLConfig(
        vision_config={**spec["vision"], "image_size": [448, 448], "patch_size": [14, 14]},
        text_config={"model_type": "qwen2", **spec["text"], **TIED, "rope_parameters": rope},
        image_token_id=INTERNVL_IMAGE_ID, image_seq_length=256, downsample_ratio=0.5,
    )
    return transformers.InternVLForConditionalGeneration(config).eval()


def build_inputs(model: Any, tiny: bool) -> dict[str, Any]:
    """One image and a question, laid out as each family's processor lays them out (448 px real, 56 px tiny)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    config = model.config
    question = torch.randint(100, 400, (QUESTION_TOKENS,), generator=generator)
    if config.model_type == "qwen2_5_vl":
        side = 4 if tiny else 32  # patches of 14 px a side: 56 px or 448 px
        image_tokens = side * side // 4
        ids = [config.vision_start_token_id, *[config.image_token_id] * image_tokens, config.vision_end_token_id]
        pixel_values = torch.randn(side * side, 3 * 2 * 14 * 14, generator=generator)
        extra = {"pixel_values": pixel_values, "image_grid_thw": torch.tensor([[1, side, side]])}
    else:
        size = config.vision_config.image_size[0]
        image_tokens = config.image_seq_length
        ids = [config.image_token_id] * image_tokens
        extra = {"pixel_values": torch.randn(1, 3, size, size, generator=generator)}
    input_ids = torch.tensor([[*ids, *question.tolist()]])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **extra,
            "image_tokens": image_tokens}


def _token_clock() -> Any:
    """A ``generate`` streamer that records ``time.perf_counter()`` at each ``put``: first the prompt, then each new
    token as it is produced."""
    from transformers.generation.streamers import BaseStreamer

    class TokenClock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    return TokenClock()


def measure_one(name: str, tiny: bool, decode_tokens: int) -> dict[str, Any]:
    """Prefill and decode speed of one model in this process, and this process's peak memory."""
    import torch

    started = time.perf_counter()
    model = build_model(name, tiny)
    build_s = time.perf_counter() - started
    inputs = build_inputs(model, tiny)
    image_tokens = inputs.pop("image_tokens")
    prompt_tokens = inputs["input_ids"].shape[1]
    options = {"do_sample": False, "num_beams": 1, "pad_token_id": 0, "eos_token_id": None}
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, **options)  # warm-up
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, **options)
        prefill_s = time.perf_counter() - start
        clock = _token_clock()
        output = model.generate(**inputs, max_new_tokens=1 + decode_tokens, min_new_tokens=1 + decode_tokens,
                                streamer=clock, **options)
    generated = output.shape[1] - prompt_tokens
    # clock.times: [prompt, first new token, ..., last new token]; decode runs from the first new token to the last
    if len(clock.times) != generated + 1:
        raise RuntimeError(f"the streamer saw {len(clock.times) - 1} new tokens, generate returned {generated}")
    decode_s = clock.times[-1] - clock.times[1]
    decode_per_s = round((generated - 1) / decode_s, 3)
    params = sum(p.numel() for p in model.parameters())
    return {
        "model": name, "variant": "tiny random weights" if tiny else "real-size architecture, random weights",
        "parameters": params, "dtype": "float32", "device": "cpu", "threads": torch.get_num_threads(),
        "prompt_tokens": prompt_tokens, "image_tokens": image_tokens, "decode_tokens": generated - 1,
        "build_s": round(build_s, 2), "prefill_s": round(prefill_s, 3),
        "prefill_tokens_per_s": round(prompt_tokens / prefill_s, 2),
        "decode_s": round(decode_s, 3), "decode_tokens_per_s": decode_per_s,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def run(settings: Settings) -> dict[str, Any]:
    """Each model in its own subprocess, so that its peak memory is its own."""
    rows, load_start = [], os.getloadavg()[0]
    for name in settings.models:
        command = [sys.executable, __file__, "--one", name, "--decode-tokens", str(settings.decode_tokens),
                   "--threads", str(settings.threads), *(["--tiny"] if settings.mode == "tiny" else [])]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            rows.append({"model": name, "error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else
                         f"exit {done.returncode}"})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    # other work on the machine slows every figure: say how busy it was
    machine = {**machine_info(), "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}}
    return {"mode": settings.mode, "machine": machine, "models": rows}


def render_markdown(results: dict[str, Any]) -> str:
    lines = [f"# VLM speed and memory ({results['mode']})", "", f"Command: `{results['command']}` ({results['date']})", "",
             "| model | what was measured | params | prompt tokens (image) | prefill tok/s | decode tok/s "
             "| peak RSS GiB |", "|---|---|---|---|---|---|---|"]
    for row in results["models"]:
        if "error" in row:
            lines.append(f"| {row['model']} | failed: {row['error']} | | | | | |")
            continue
        lines.append(f"| {row['model']} | {row['variant']}, {row['dtype']} {row['device']}, {row['threads']} threads, "
                     f"{row['decode_tokens']} decoded tokens | {row['parameters'] / 1e9:.3f} B | {row['prompt_tokens']} "
                     f"({row['image_tokens']}) | {row['prefill_tokens_per_s']} | {row['decode_tokens_per_s']} "
                     f"| {row['peak_rss_gib']} |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    print(render_markdown(results))


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny variants: code paths only")
    parser.add_argument("--models", default=None, help=f"comma-separated, from {', '.join(REAL)}")
    parser.add_argument("--decode-tokens", type=int, default=None, help="tokens decoded after the first (default 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one model, JSON on stdout
    args = parser.parse_args(argv)
    decode_tokens = args.decode_tokens or (4 if args.tiny else 8)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure_one(args.one, args.tiny, decode_tokens)))
        return None
    models = tuple(args.models.split(",")) if args.models else tuple(REAL)
    unknown = [m for m in models if m not in REAL]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(REAL)}")
    mode = "tiny" if args.tiny else "full"
    out = args.out or RESULTS / ("vlm-tiny.json" if args.tiny else "vlm.json")
    settings = Settings(mode, models, decode_tokens, args.threads)
    return measure_and_write("vlm", run, settings, out=out, command_args=list(sys.argv[1:] if argv is None else argv),
                             wait_idle=0.0, render_markdown=render_markdown, print_table=print_table)


if __name__ == "__main__":
    main()
