"""The SDK against transformers pipelines, on real-size architectures with random weights, in one run.

    python benchmarks/bench_foundation.py            # ~4 min on 2 idle CPU cores -> benchmarks/results/foundation.json
    python benchmarks/bench_foundation.py --quick    # fewer rounds, ~2 min -> benchmarks/results/foundation-quick.json
    python benchmarks/bench_foundation.py --tiny     # tiny variants, 1 round: checks the code paths and parity only
    python benchmarks/bench_foundation.py --wait-idle 600   # first wait (up to 10 min) for the machine to be idle

Each model is built from its family's default config (CLIP ViT-B/32, OWL-ViT B/32 768 px, ViT-B/16 224 px with 1000
labels, SAM ViT-B 1024 px) with seeded random weights and an offline tokenizer/processor, saved once with
``save_pretrained``, and that same folder is loaded both by ``lmt`` (by path) and by ``transformers.pipeline``.
Speed does not depend on weight values (as long as they do not underflow to subnormal floats: see build_sam), so
the ratios hold for the real checkpoints; the outputs are compared too (parity), so the faster path is also the
same computation.

Every ratio is measured in this run, on this machine; the JSON file and the markdown table written next to it
are what the docs quote.
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub or gradio: both read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE_FILES = ("cat.png", "coffee.jpg", "rocket.jpg", "astronaut.jpg", "street.png")
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_OUT = {"full": RESULTS / "foundation.json", "quick": RESULTS / "foundation-quick.json",
               "tiny": RESULTS / "foundation-tiny.json"}

#: Ten labels, the same on every call, as a Space's fixed label set. They are words the offline tokenizer knows, so
#: that prompts are about as long as with the real CLIP BPE (12 tokens here, 9 there): the text tower's cost, which
#: the SDK's label cache saves, is then neither understated nor much overstated.
LABELS = ("cat", "dog", "car", "bus", "person", "bird", "tree", "apple", "bottle", "truck")
#: Six detection queries (the issue's OWL-ViT figure is for six).
QUERIES = ("cat", "car", "person", "bus", "cup", "rocket")
SCORE_TOLERANCE = 1e-5
#: A 1-minute load average above this at the start means other work is running on the machine (2 cores here).
BUSY_LOAD = 1.0

#: The registry name each family's tiny variant is loaded by in --tiny mode.
TINY_NAMES = {"clip": "clip-vit-b32", "owlvit": "owlvit-b32", "vit": "vit-b16", "sam": "sam-vit-base"}


@dataclass(frozen=True)
class Settings:
    """How many timed rounds each measurement makes, after one warm-up round."""

    mode: str  # "full", "quick" or "tiny"
    zero_shot_single: int
    zero_shot_batch: int
    detect: int
    classify: int
    sam_full: int
    sam_prompt: int
    cli: int
    import_baseline: int
    #: OWL score threshold; 0.1 is the pipeline's default.
    detect_threshold: float = 0.1
    #: torch threads. The tiny models' microsecond ops only lose to thread hand-offs on a busy machine.
    threads: int = 2

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"


MODES = {
    "full": Settings("full", 10, 4, 4, 6, 2, 30, 5, 3),
    "quick": Settings("quick", 4, 2, 1, 2, 1, 10, 3, 1),
    "tiny": Settings("tiny", 1, 1, 1, 1, 1, 1, 1, 0, detect_threshold=0.0, threads=1),
}


# ---- timing helpers ------------------------------------------------------------------------------------------------
def time_rounds(
    calls: dict[str, Callable[[int], Any]], rounds: int, outputs: dict[str, dict[int, Any]] | None = None
) -> dict[str, list[float]]:
    """Seconds of each call ``calls[name](i)`` over ``rounds`` rounds, after an untimed warm-up round (i = -1).

    In each round every call runs once, the order rotating from round to round: a busy spell of a shared machine
    then slows both sides of a ratio alike instead of whichever happened to run during it. With ``outputs``, each
    call's result is kept (``outputs[name][i]``), so that the parity checks need no extra calls.
    """
    kept: dict[str, dict[int, Any]] = {name: {} for name in calls} if outputs is None else outputs
    for name, call in calls.items():
        kept.setdefault(name, {})[-1] = call(-1)
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            result = calls[name](i)
            times[name].append(time.perf_counter() - start)
            if outputs is not None:
                outputs[name][i] = result
    return times


def by_image(outputs: dict[int, Any], count: int) -> dict[int, Any]:
    """Outputs of ``call(i)`` keyed by the image it ran on (call i runs on image i % count)."""
    return {i % count: output for i, output in outputs.items()}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median over rounds of numerator / denominator, each pair timed back to back in one round.

    Unlike a ratio of medians, it stays right when the machine gets busier halfway through a series.
    """
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 6) for v in values]


# ---- real-size models, saved once --------------------------------------------------------------------------------
def _text_ids(tokenizer: Any) -> dict[str, int]:
    """The text config fields that must agree with the offline tokenizer."""
    return {
        "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }


def build_clip(folder: Path) -> None:
    """CLIP ViT-B/32 (CLIPConfig()'s defaults), 224 px crop."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from lmt.models._offline_tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    model = CLIPModel(CLIPConfig(text_config=_text_ids(tokenizer))).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    model.save_pretrained(folder, safe_serialization=True)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def build_owlvit(folder: Path) -> None:
    """OWL-ViT B/32 at 768 px (OwlViTConfig()'s defaults); queries padded to 16 tokens as google/owlvit-*."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessorPil, OwlViTProcessor

    from lmt.models._offline_tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = 16
    model = OwlViTForObjectDetection(OwlViTConfig(text_config=_text_ids(tokenizer))).eval()
    image_processor = OwlViTImageProcessorPil(size={"height": 768, "width": 768}, crop_size={"height": 768, "width": 768})
    model.save_pretrained(folder, safe_serialization=True)
    OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def build_vit(folder: Path) -> None:
    """ViT-B/16 at 224 px (ViTConfig()'s defaults) with a 1000-class head."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    model = ViTForImageClassification(ViTConfig(num_labels=1000)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)


def build_sam(folder: Path) -> None:
    """SAM ViT-B (SamConfig()'s defaults): 1024 px input, 256 px low-res masks."""
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    # SamConfig's vision initializer_range (1e-10) makes a random encoder output ~1e-20 embeddings, whose products
    # underflow to subnormal floats, which the CPU computes far more slowly; 0.02 gives unit-scale ones, as real.
    model = SamModel(SamConfig(vision_config={"initializer_range": 0.02})).eval()
    image_processor = SamImageProcessorPil(
        size={"longest_edge": 1024}, pad_size={"height": 1024, "width": 1024},
        mask_size={"longest_edge": 256}, mask_pad_size={"height": 256, "width": 256},
    )
    model.save_pretrained(folder, safe_serialization=True)
    SamProcessor(image_processor=image_processor).save_pretrained(folder)


BUILDERS = {"clip": build_clip, "owlvit": build_owlvit, "vit": build_vit, "sam": build_sam}


@dataclass(frozen=True)
class Subject:
    """One saved model folder, and how the SDK is asked for it."""

    family: str
    folder: Path
    sdk_model: str  # a folder path, or a registry name in --tiny mode
    weights: str
    build_s: float


def prepare(family: str, settings: Settings, workdir: Path) -> Subject:
    """The folder both sides load: the tiny variant in --tiny mode, else a freshly saved real-size model."""
    import torch

    start = time.perf_counter()
    if settings.tiny:
        from lmt.tiny import tiny_model_path

        folder = tiny_model_path(family)
        return Subject(family, folder, TINY_NAMES[family], "tiny", time.perf_counter() - start)
    folder = workdir / family
    torch.manual_seed(0)
    BUILDERS[family](folder)
    gc.collect()
    return Subject(family, folder, str(folder), "real", time.perf_counter() - start)


def sdk_task(task: str, subject: Subject, **kwargs: Any) -> Any:
    import lmt

    return lmt.pipeline(task, model=subject.sdk_model, weights=subject.weights, **kwargs)


def hf_pipeline(task: str, subject: Subject) -> Any:
    from transformers import pipeline

    return pipeline(task, model=str(subject.folder), device="cpu")


def release() -> None:
    """Drop the SDK's cached models between sections so that at most one family is in memory."""
    from lmt.loading import MODEL_CACHE

    MODEL_CACHE.clear()
    gc.collect()


def load_example_images() -> list[Any]:
    from lmt.images import load_image

    return [load_image(REPO / "examples" / "images" / name) for name in IMAGE_FILES]


# ---- 1. zero-shot classification (CLIP) ------------------------------------------------------------------------
def bench_zero_shot(subject: Subject, images: list[Any], settings: Settings) -> dict[str, Any]:
    import torch

    from lmt.tasks.classify import DEFAULT_TEMPLATE

    sdk = sdk_task("zero-shot-image-classification", subject, batch_size=8)
    hf = hf_pipeline("zero-shot-image-classification", subject)
    labels = list(LABELS)
    batch = [images[i % len(images)] for i in range(8)]
    text_inputs = sdk.processor.tokenizer(
        [DEFAULT_TEMPLATE.format(label) for label in labels], padding=True, return_tensors="pt"
    )
    one_pixel_values, batch_pixel_values = sdk._pixel_values(images[:1]), sdk._pixel_values(batch)

    def sdk_one(i: int) -> Any:
        return sdk(images[i % len(images)], labels=labels)

    def hf_one(i: int) -> Any:
        return hf(images[i % len(images)], candidate_labels=labels)

    def sdk_batch(_: int) -> Any:
        return sdk(batch, labels=labels)

    def hf_batch(_: int) -> Any:
        return hf(batch, candidate_labels=labels, batch_size=8)

    # The two towers alone bound what caching the labels can gain: (text + image) / image.
    def text_tower(_: int) -> Any:
        with torch.inference_mode():
            return sdk.model.get_text_features(**text_inputs)

    def image_tower(pixel_values: Any) -> Callable[[int], Any]:
        def run(_: int) -> Any:
            with torch.inference_mode():
                return sdk.model.get_image_features(pixel_values=pixel_values)

        return run

    outputs: dict[str, dict[int, Any]] = {}
    raw = time_rounds(
        {"sdk_single_s": sdk_one, "pipeline_single_s": hf_one, "text_tower_10_labels_s": text_tower,
         "image_tower_batch1_s": image_tower(one_pixel_values)},
        settings.zero_shot_single,
        outputs,
    )
    raw |= time_rounds(
        {"sdk_batch8_s": sdk_batch, "pipeline_batch8_s": hf_batch, "image_tower_batch8_s": image_tower(batch_pixel_values)},
        settings.zero_shot_batch,
        outputs,
    )
    # parity, from the timed calls: each image alone, and the last batch of 8
    ours_single = by_image(outputs["sdk_single_s"], len(images))
    theirs_single = by_image(outputs["pipeline_single_s"], len(images))
    pairs = [(ours_single[i], theirs_single[i]) for i in sorted(ours_single)]
    last = max(outputs["sdk_batch8_s"])
    pairs += list(zip(outputs["sdk_batch8_s"][last], outputs["pipeline_batch8_s"][last], strict=True))
    diffs = []
    for ours_one, theirs_one in pairs:
        ours = {p.label: p.score for p in ours_one.predictions}
        theirs = {r["label"]: r["score"] for r in theirs_one}
        diffs.extend(abs(ours[label] - theirs[label]) for label in labels)
    text_s = median(raw["text_tower_10_labels_s"])
    return {
        "model": "CLIP ViT-B/32, 224 px" if not settings.tiny else "clip tiny",
        "labels": labels,
        "prompt_tokens": int(text_inputs["input_ids"].shape[1]),
        "raw": {key: rounded(values) for key, values in raw.items()},
        "img_per_s": {
            "sdk_single": 1 / median(raw["sdk_single_s"]),
            "pipeline_single": 1 / median(raw["pipeline_single_s"]),
            "sdk_batch8": 8 / median(raw["sdk_batch8_s"]),
            "pipeline_batch8": 8 / median(raw["pipeline_batch8_s"]),
            "image_tower_batch1": 1 / median(raw["image_tower_batch1_s"]),
            "image_tower_batch8": 8 / median(raw["image_tower_batch8_s"]),
        },
        "ratios": {
            "single": paired_ratio(raw["pipeline_single_s"], raw["sdk_single_s"]),
            "batch8": paired_ratio(raw["pipeline_batch8_s"], raw["sdk_batch8_s"]),
            # what skipping the text tower can gain at most, from the towers alone
            "single_ceiling": (text_s + median(raw["image_tower_batch1_s"])) / median(raw["image_tower_batch1_s"]),
            "batch8_ceiling": (text_s + median(raw["image_tower_batch8_s"])) / median(raw["image_tower_batch8_s"]),
        },
        "parity": {"max_abs_score_diff": max(diffs), "tolerance": SCORE_TOLERANCE,
                   "passed": max(diffs) <= SCORE_TOLERANCE, "compared_images": len(pairs),
                   "compared_scores": len(diffs)},
    }


# ---- 2. zero-shot object detection (OWL-ViT) -------------------------------------------------------------------
def _detections_by_label(items: list[tuple[str, float, tuple[int, ...]]]) -> dict[str, list[tuple[float, tuple]]]:
    by_label: dict[str, list[tuple[float, tuple]]] = {}
    for label, score, box in items:
        by_label.setdefault(label, []).append((score, box))
    return by_label


def compare_detections(ours: Any, theirs: list[dict[str, Any]]) -> tuple[bool, float, int]:
    """Per query: the same multiset of integer boxes, and scores equal within tolerance when paired by box.

    The pipeline truncates its boxes with ``tensor.int()``; ``int(float)`` truncates the same way.
    Returns (boxes equal, max score difference, detections compared).
    """
    mine = _detections_by_label([(d.label, d.score, tuple(int(v) for v in d.box)) for d in ours])
    other = _detections_by_label(
        [(r["label"], r["score"], (r["box"]["xmin"], r["box"]["ymin"], r["box"]["xmax"], r["box"]["ymax"]))
         for r in theirs]
    )
    same_boxes = mine.keys() == other.keys()
    max_diff, count = 0.0, 0
    for label in mine.keys() & other.keys():
        a, b = mine[label], other[label]
        same_boxes &= Counter(box for _, box in a) == Counter(box for _, box in b)
        for (score_a, box_a), (score_b, box_b) in zip(sorted(a, key=lambda x: (x[1], x[0])),
                                                      sorted(b, key=lambda x: (x[1], x[0])), strict=False):
            same_boxes &= box_a == box_b
            max_diff = max(max_diff, abs(score_a - score_b))
            count += 1
    return same_boxes, max_diff, count


def bench_detect(subject: Subject, images: list[Any], settings: Settings) -> dict[str, Any]:
    sdk = sdk_task("zero-shot-object-detection", subject, batch_size=8)
    hf = hf_pipeline("zero-shot-object-detection", subject)
    queries = list(QUERIES)
    threshold = settings.detect_threshold

    def sdk_one(i: int) -> Any:
        # as the pipeline: no NMS, and boxes not clipped to the image
        return sdk(images[i % len(images)], queries=queries, threshold=threshold, nms_threshold=None, clip_boxes=False)

    def hf_one(i: int) -> Any:
        return hf(images[i % len(images)], candidate_labels=queries, threshold=threshold)

    outputs: dict[str, dict[int, Any]] = {}
    raw = time_rounds({"sdk_s": sdk_one, "pipeline_s": hf_one}, settings.detect, outputs)
    # parity, from the timed calls: every image both ran
    ours_by_image, theirs_by_image = by_image(outputs["sdk_s"], len(images)), by_image(outputs["pipeline_s"], len(images))
    boxes_equal, max_diff, compared, sdk_count = True, 0.0, 0, []
    for i in sorted(ours_by_image):
        sdk_count.append(len(ours_by_image[i]))
        equal, diff, count = compare_detections(ours_by_image[i], theirs_by_image[i])
        boxes_equal &= equal
        max_diff = max(max_diff, diff)
        compared += count
    ratio = paired_ratio(raw["pipeline_s"], raw["sdk_s"])
    return {
        "model": "OWL-ViT B/32, 768 px" if not settings.tiny else "owlvit tiny",
        "queries": queries,
        "threshold": threshold,
        "raw": {key: rounded(values) for key, values in raw.items()},
        "s_per_image": {"sdk": median(raw["sdk_s"]), "pipeline": median(raw["pipeline_s"])},
        "ratios": {"pipeline_over_sdk": ratio},
        "parity": {
            "boxes_equal": boxes_equal, "max_abs_score_diff": max_diff, "tolerance": SCORE_TOLERANCE,
            "compared_detections": compared, "sdk_detections_per_image": sdk_count,
            "passed": boxes_equal and compared > 0 and max_diff <= SCORE_TOLERANCE,
        },
    }


# ---- 3. image classification (ViT-B/16) ------------------------------------------------------------------------
def bare_forward(model: Any, pixel_values: Any) -> Any:
    """The model alone, on an already preprocessed batch: the floor any wrapper is measured against."""
    import torch

    with torch.inference_mode():
        return model(pixel_values).logits


def bench_classify(subject: Subject, images: list[Any], settings: Settings) -> dict[str, Any]:
    sdk = sdk_task("image-classification", subject, batch_size=8)
    hf = hf_pipeline("image-classification", subject)
    batch = [images[i % len(images)] for i in range(8)]
    pixel_values = sdk._pixel_values(batch)

    last: dict[str, dict[int, Any]] = {}
    raw = time_rounds(
        {
            "sdk_batch8_s": lambda _: sdk(batch, top_k=5),
            "bare_forward_batch8_s": lambda _: bare_forward(sdk.model, pixel_values),
            "pipeline_batch8_s": lambda _: hf(batch, batch_size=8, top_k=5),
        },
        settings.classify,
        last,
    )
    # where the SDK's time goes besides the forward pass
    preprocess_times = time_rounds({"preprocess": lambda _: sdk._pixel_values(batch)}, settings.classify)["preprocess"]

    max_diff, same_labels = 0.0, True
    final = settings.classify - 1
    for ours, theirs in zip(last["sdk_batch8_s"][final], last["pipeline_batch8_s"][final], strict=True):
        same_labels &= [p.label for p in ours.predictions] == [r["label"] for r in theirs]
        max_diff = max([max_diff] + [abs(p.score - r["score"]) for p, r in zip(ours.predictions, theirs, strict=True)])
    sdk_s, bare_s = median(raw["sdk_batch8_s"]), median(raw["bare_forward_batch8_s"])
    return {
        "model": "ViT-B/16, 224 px, 1000 classes" if not settings.tiny else "vit tiny",
        "raw": {key: rounded(values) for key, values in raw.items()} | {"sdk_preprocess_batch8_s": rounded(preprocess_times)},
        "img_per_s": {
            "sdk": 8 / sdk_s, "pipeline": 8 / median(raw["pipeline_batch8_s"]), "bare_forward": 8 / bare_s,
        },
        "ratios": {
            "sdk_over_pipeline": paired_ratio(raw["pipeline_batch8_s"], raw["sdk_batch8_s"]),
            "sdk_overhead_over_bare": paired_ratio(raw["sdk_batch8_s"], raw["bare_forward_batch8_s"]) - 1,
            "preprocess_share_of_sdk": median(preprocess_times) / sdk_s,
        },
        "parity": {"top5_labels_equal": same_labels, "max_abs_score_diff": max_diff, "tolerance": SCORE_TOLERANCE,
                   "passed": same_labels and max_diff <= SCORE_TOLERANCE},
    }


# ---- 4. SAM: full pass vs re-prompt vs bare decoder -----------------------------------------------------------
def bench_sam(subject: Subject, images: list[Any], settings: Settings) -> dict[str, Any]:
    import torch

    sdk = sdk_task("mask-generation", subject)
    image = images[0]
    width, height = image.size
    # a different click each call, spread over the image
    clicks = [(int(width * (0.15 + 0.7 * ((i * 7) % 10) / 9)), int(height * (0.15 + 0.7 * ((i * 3) % 10) / 9)))
              for i in range(max(settings.sam_prompt, settings.sam_full) + 1)]
    embedding_cache = sdk.loaded.cache("image_embeddings", sdk.embedding_cache_size)

    def full(i: int) -> Any:
        embedding_cache.clear()  # a new image: the image encoder runs
        x, y = clicks[i + 1]
        return sdk(image, points=[(x, y, 1)])

    def reprompt(i: int) -> Any:
        x, y = clicks[i + 1]
        return sdk(image, points=[(x, y, 1)])

    # each full pass is paired with a re-prompt of the image it cached
    raw = time_rounds({"full_s": full, "reprompt_after_full_s": reprompt}, settings.sam_full)
    embedding = sdk.image_embedding(image)  # cached by the last full pass
    scaled = [sdk._scale([[x, y]], embedding)[0] for x, y in clicks]
    points = [torch.tensor(p, dtype=torch.float32).reshape(1, 1, 1, 2) for p in scaled]  # (image, object, point, xy)
    labels = torch.ones((1, 1, 1), dtype=torch.long)

    def bare(i: int) -> Any:
        with torch.inference_mode():
            return sdk.model(image_embeddings=embedding.embeddings, input_points=points[i + 1], input_labels=labels,
                             multimask_output=True)

    def bare_and_upscale(i: int) -> Any:
        outputs = bare(i)
        return sdk._upscale(outputs.pred_masks, embedding, 0.0, binarize=True)

    raw |= time_rounds(
        {"reprompt_s": reprompt, "bare_decoder_s": bare, "bare_decoder_and_upscale_s": bare_and_upscale},
        settings.sam_prompt,
    )

    # parity: the SDK's best mask equals the bare decoder's best mask, upscaled the same way
    outputs = bare(0)
    best = int(outputs.iou_scores[0, 0].argmax())
    reference = sdk._upscale(outputs.pred_masks, embedding, 0.0, binarize=True)[0, best].numpy()
    ours = reprompt(0).masks[0]
    score_diff = abs(ours.score - float(outputs.iou_scores[0, 0, best]))
    masks_equal = bool((ours.mask == reference).all())
    reprompt_s, bare_s = median(raw["reprompt_s"]), median(raw["bare_decoder_s"])
    return {
        "model": "SAM ViT-B, 1024 px" if not settings.tiny else "sam tiny",
        "image_size": [width, height],
        "raw": {key: rounded(values) for key, values in raw.items()},
        "s_per_call": {"full": median(raw["full_s"]), "reprompt": reprompt_s, "bare_decoder": bare_s,
                       "bare_decoder_and_upscale": median(raw["bare_decoder_and_upscale_s"])},
        "ratios": {
            "full_over_reprompt": paired_ratio(raw["full_s"], raw["reprompt_after_full_s"]),
            "reprompt_over_bare": paired_ratio(raw["reprompt_s"], raw["bare_decoder_s"]),
            "reprompt_over_bare_and_upscale": paired_ratio(raw["reprompt_s"], raw["bare_decoder_and_upscale_s"]),
        },
        "parity": {"best_mask_equal": masks_equal, "max_abs_score_diff": score_diff, "tolerance": SCORE_TOLERANCE,
                   "passed": masks_equal and score_diff <= SCORE_TOLERANCE},
    }


# ---- 5. CLI start-up ---------------------------------------------------------------------------------------------
HEAVY_MODULES = ("torch", "transformers", "gradio")


def _lmt_command() -> list[str]:
    script = Path(sys.executable).parent / "lmt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lmt.cli"]


def _run_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_cli(settings: Settings) -> dict[str, Any]:
    lmt = _lmt_command()
    commands = {
        "lmt_help_s": lmt + ["--help"],
        "lmt_models_s": lmt + ["models"],
    }
    raw = {key: [_run_seconds(command) for _ in range(settings.cli)] for key, command in commands.items()}
    # --tiny skips it: it only gives the CLI times a scale
    raw["import_torch_transformers_s"] = [
        _run_seconds([sys.executable, "-c", "import transformers, torch"]) for _ in range(settings.import_baseline)
    ]
    heavy = {}
    for argv in (["--help"], ["models"]):
        probe = (
            "import contextlib, io, sys, lmt.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        lmt.cli.main({argv!r})\n    except SystemExit:\n        pass\n"
            f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
        )
        found = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
        heavy[" ".join(["lmt", *argv])] = [m for m in found.strip().split(",") if m]
    return {
        "command": lmt,
        "raw": {key: rounded(values) for key, values in raw.items()},
        "s": {key.removesuffix("_s"): median(values) if values else None for key, values in raw.items()},
        "heavy_imports": heavy,
        "parity": {"passed": not any(heavy.values())},
    }


# ---- goals and report ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    name: str
    description: str
    measured: float
    target: float
    comparison: str  # ">=" or "<="
    unit: str = "x"

    @property
    def passed(self) -> bool:
        return self.measured >= self.target if self.comparison == ">=" else self.measured <= self.target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"goal": f"{self.comparison} {self.target:g}{self.unit}", "passed": self.passed}


def goals_table(goals: Sequence[dict[str, Any]], value: Callable[[dict[str, Any]], str] | None = None) -> list[str]:
    """The markdown table of goals (``Goal.to_dict()`` rows) every results file opens with; ``value`` formats the
    measured value (default: two decimals and the unit)."""
    value = value or (lambda goal: f"{goal['measured']:.2f}{goal['unit']}")
    lines = ["| goal | measured | target | pass |", "|---|---|---|---|"]
    for goal in goals:
        lines.append(f"| {goal['description']} | {value(goal)} | {goal['goal']} | {'yes' if goal['passed'] else 'NO'} |")
    return lines


def goals_of(sections: dict[str, Any]) -> list[Goal]:
    zs, det, cls, sam, cli = (sections[k] for k in ("zero_shot", "detect", "classify", "sam", "cli"))
    return [
        Goal("zero_shot_single", "CLIP zero-shot, 1 image/call, 10 fixed labels: SDK img/s over pipeline img/s",
             zs["ratios"]["single"], 2.5, ">="),
        Goal("zero_shot_batch8", "CLIP zero-shot, batch of 8: SDK over pipeline(batch_size=8)",
             zs["ratios"]["batch8"], 1.15, ">="),
        Goal("detect_6_queries", "OWL-ViT B/32, 6 queries, 1 image: pipeline s/img over SDK s/img",
             det["ratios"]["pipeline_over_sdk"], 5.0, ">="),
        Goal("classify_batch8", "ViT-B/16 batch 8: SDK img/s over pipeline(batch_size=8) img/s",
             cls["ratios"]["sdk_over_pipeline"], 1.0, ">="),
        Goal("classify_overhead", "ViT-B/16 batch 8: SDK time (with preprocessing) over bare forward, minus 1",
             100 * cls["ratios"]["sdk_overhead_over_bare"], 3.0, "<=", "%"),
        Goal("sam_full_over_reprompt", "SAM ViT-B: full pass on a new image over a re-prompt of the cached image",
             sam["ratios"]["full_over_reprompt"], 100.0, ">="),
        Goal("sam_reprompt_over_bare", "SAM ViT-B: SDK re-prompt over bare prompt-encoder + mask-decoder call",
             sam["ratios"]["reprompt_over_bare"], 1.0, "<="),
        Goal("cli_help", "`lmt --help` wall time", cli["s"]["lmt_help"], 1.0, "<=", " s"),
        Goal("cli_models", "`lmt models` wall time", cli["s"]["lmt_models"], 1.0, "<=", " s"),
        Goal("cli_no_heavy_imports", "`lmt --help` / `lmt models` import none of torch, transformers, gradio",
             float(sum(len(v) for v in cli["heavy_imports"].values())), 0.0, "<=", " modules"),
    ]


def machine_info() -> dict[str, Any]:
    import torch

    from lmt.env import environment_report

    report = environment_report()
    return {
        "cpu": report["cpu"]["model"],
        "logical_cores": report["cpu"]["logical_cores"],
        "usable_cores": report["cpu"]["usable_cores"],
        "cpu_features": [name for name, on in report["cpu"]["features"].items() if on],
        "torch_threads": torch.get_num_threads(),
        "python": report["python"],
        "platform": report["platform"],
        "torch": report["packages"].get("torch"),
        "transformers": report["packages"].get("transformers"),
        "lmt": report["lmt"],
        "memory_gib": report["memory"]["total_gib"],
    }


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}"


def _goal_value(goal: dict[str, Any]) -> str:
    unit = goal["unit"]
    return f"{goal['measured']:.2f}{unit}" if unit in ("x", "%", " s") else f"{goal['measured']:g}{unit}"


def render_markdown(results: dict[str, Any]) -> str:
    """The markdown table the README quotes, generated from the results JSON only."""
    machine = results["machine"]
    lines = [
        f"# Foundation benchmark ({results['mode']})",
        "",
        f"Generated from `{Path(results['out']).name}` — do not edit by hand. Command: `{results['command']}`",
        "",
        f"{results['date']} · {machine['cpu']} ({machine['usable_cores']} cores) · torch threads: {machine['torch_threads']}"
        f" · torch {machine['torch']} · transformers {machine['transformers']} · "
        + ("tiny variants: the ratios mean nothing, only parity does" if results["mode"] == "tiny"
           else "real-size architectures, random weights")
        + f" · 1-min load average {machine['load_average_1min']['start']:.1f} at start, "
        f"{machine['load_average_1min']['end']:.1f} at end",
        "",
        "Ratios are medians over rounds of per-round ratios; in each round every side runs once, back to back.",
        "",
    ]
    lines += goals_table(results["goals"], _goal_value)
    s = results["sections"]
    lines += [
        "",
        "| measurement | SDK | transformers pipeline |",
        "|---|---|---|",
        f"| CLIP zero-shot, 1 image/call (img/s) | {s['zero_shot']['img_per_s']['sdk_single']:.2f} | "
        f"{s['zero_shot']['img_per_s']['pipeline_single']:.2f} |",
        f"| CLIP zero-shot, batch 8 (img/s) | {s['zero_shot']['img_per_s']['sdk_batch8']:.2f} | "
        f"{s['zero_shot']['img_per_s']['pipeline_batch8']:.2f} |",
        f"| CLIP towers alone: text, {len(s['zero_shot']['labels'])} labels ({s['zero_shot']['prompt_tokens']} tokens) "
        f"/ image batch 1 / image batch 8 (s) | {median(s['zero_shot']['raw']['text_tower_10_labels_s']):.3f} / "
        f"{median(s['zero_shot']['raw']['image_tower_batch1_s']):.3f} / "
        f"{median(s['zero_shot']['raw']['image_tower_batch8_s']):.3f} | — |",
        f"| most that caching labels can gain, (text + image) / image: 1 image / batch 8 | "
        f"{s['zero_shot']['ratios']['single_ceiling']:.2f}x / {s['zero_shot']['ratios']['batch8_ceiling']:.2f}x | — |",
        f"| OWL-ViT, 6 queries (s/img) | {s['detect']['s_per_image']['sdk']:.3f} | "
        f"{s['detect']['s_per_image']['pipeline']:.3f} |",
        f"| ViT-B/16, batch 8 (img/s) | {s['classify']['img_per_s']['sdk']:.2f} | "
        f"{s['classify']['img_per_s']['pipeline']:.2f} (bare forward: {s['classify']['img_per_s']['bare_forward']:.2f}) |",
        f"| SAM ViT-B full pass / re-prompt / bare decoder (s) | {s['sam']['s_per_call']['full']:.3f} / "
        f"{s['sam']['s_per_call']['reprompt']:.4f} / {s['sam']['s_per_call']['bare_decoder']:.4f} "
        f"(bare decoder + mask upscaling: {s['sam']['s_per_call']['bare_decoder_and_upscale']:.4f}) | — |",
        f"| `lmt --help` / `lmt models` / `import transformers, torch` (s) | {s['cli']['s']['lmt_help']:.2f} / "
        f"{s['cli']['s']['lmt_models']:.2f} | {_seconds(s['cli']['s']['import_torch_transformers'])} |",
        "",
        "| parity with the pipeline | max abs score diff | passed |",
        "|---|---|---|",
    ]
    for name in ("zero_shot", "detect", "classify", "sam"):
        parity = s[name]["parity"]
        lines.append(f"| {name} | {parity['max_abs_score_diff']:.2e} | {'yes' if parity['passed'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    rows = [(g["name"], g["goal"], f"{g['measured']:.3f}", "pass" if g["passed"] else "FAIL") for g in results["goals"]]
    rows += [(f"parity_{name}", "equal", f"{p['max_abs_score_diff']:.1e}" if "max_abs_score_diff" in p else "-",
              "pass" if p["passed"] else "FAIL") for name, p in results["parity"].items()]
    widths = [max(len(r[i]) for r in rows + [("goal", "target", "measured", "")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("goal", "target", "measured", ""), widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


# ---- main ----------------------------------------------------------------------------------------------------------
SECTIONS = (("zero_shot", "clip", bench_zero_shot), ("detect", "owlvit", bench_detect),
            ("classify", "vit", bench_classify), ("sam", "sam", bench_sam))


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement, as one JSON-ready dict (without the date, command and output path)."""
    import torch

    torch.manual_seed(0)
    images = load_example_images()
    sections: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lmt-bench-foundation-") as workdir:
        for name, family, bench in SECTIONS:
            subject = prepare(family, settings, Path(workdir))
            log(f"[{name}] model ready in {subject.build_s:.1f} s; measuring ...")
            start, load_before = time.perf_counter(), os.getloadavg()[0]
            sections[name] = bench(subject, images, settings) | {
                "build_s": round(subject.build_s, 3),
                "measure_s": round(time.perf_counter() - start, 3),
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
            release()
            log(f"[{name}] done in {sections[name]['measure_s']:.1f} s: ratios {sections[name]['ratios']}")
    sections["cli"] = bench_cli(settings)
    log(f"[cli] {sections['cli']['s']}")
    return {
        "mode": settings.mode,
        "settings": asdict(settings),
        "machine": machine_info(),
        "sections": sections,
        "goals": [goal.to_dict() for goal in goals_of(sections)],
        "parity": {name: sections[name]["parity"] for name in ("zero_shot", "detect", "classify", "sam", "cli")},
    }


def wait_until_idle(max_wait_s: float) -> None:
    """Sleep until the 1-minute load average is below :data:`BUSY_LOAD`, or ``max_wait_s`` has passed."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] > BUSY_LOAD and time.monotonic() < deadline:
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, as the docs cite it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer repeats (~2 min)")
    group.add_argument("--tiny", action="store_true", help="tiny variants, 1 repeat: code paths and parity only")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/foundation[-quick|-tiny].json)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below 1")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    out = args.out or DEFAULT_OUT[mode]
    command_args = list(sys.argv[1:] if argv is None else argv)

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars would bury the log
    settings = MODES[mode]

    def run_recording_load(settings: Settings) -> dict[str, Any]:
        load_start = os.getloadavg()[0]
        results = run(settings)
        # other work on the machine slows both sides of a ratio, but not always alike: say how busy it was
        results["machine"]["load_average_1min"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
        return results

    return measure_and_write("foundation", run_recording_load, settings, out=out, command_args=command_args,
                             wait_idle=args.wait_idle, render_markdown=render_markdown, print_table=print_table)


def measure_and_write(
    name: str,
    run: Callable[[Any], dict[str, Any]],
    settings: Any,
    *,
    out: Path,
    command_args: list[str],
    wait_idle: float,
    render_markdown: Callable[[dict[str, Any]], str],
    print_table: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run ``run(settings)`` on ``settings.threads`` torch threads (after waiting for an idle machine, warning when
    busy), then write the results with the command and date to ``out`` (JSON) and its ``.md``, and print the table.
    Shared by every benchmark script."""
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    wait_until_idle(wait_idle)
    load_before = os.getloadavg()[0]
    if load_before > BUSY_LOAD:
        print(f"warning: the 1-minute load average is {load_before:.1f}: other work on this machine will slow the "
              "measurements unevenly; the load is recorded in the results", file=sys.stderr)
    started = time.perf_counter()
    try:
        results = run(settings)
    finally:
        torch.set_num_threads(previous_threads)
    results = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", f"benchmarks/bench_{name}.py", *command_args]),
        "out": _display_path(out),
        "total_s": round(time.perf_counter() - started, 1),
    } | results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(render_markdown(results), encoding="utf-8")
    print_table(results)
    print(f"wrote {out} and {out.with_suffix('.md')} in {results['total_s']} s")
    return results


def quick_or_full_main(
    name: str,
    run: Callable[[Any], dict[str, Any]],
    modes: dict[str, Any],
    *,
    description: str,
    quick_help: str,
    render_markdown: Callable[[dict[str, Any]], str],
    print_table: Callable[[dict[str, Any]], None],
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The command line of a benchmark with a full and a ``--quick`` mode (``modes`` maps both to settings):
    ``--quick``, ``--out`` (default ``results/<name>.json`` or ``results/<name>-quick.json``) and ``--wait-idle``;
    then :func:`measure_and_write`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help=f"results JSON (default: benchmarks/results/{name}[-quick].json)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below 1")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    out = args.out or RESULTS / (f"{name}-quick.json" if args.quick else f"{name}.json")
    command_args = list(sys.argv[1:] if argv is None else argv)
    return measure_and_write(name, run, modes[mode], out=out, command_args=command_args, wait_idle=args.wait_idle,
                             render_markdown=render_markdown, print_table=print_table)

if __name__ == "__main__":
    main()
