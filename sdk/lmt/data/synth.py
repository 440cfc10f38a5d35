"""Synthetic training images with diffusers: text-to-image for rare classes, and inpainting inside a mask.

- :class:`TextToImage` (``StableDiffusionPipeline``) draws new images from prompts;
  :func:`synthesize` writes ``count`` of them per class, with a manifest ``lmt train`` and ``lmt data validate`` read.
- :class:`Inpainting` (``StableDiffusionInpaintPipeline``) repaints the inside of a mask: the mask is given, or SAM
  (``lmt.MaskGeneration``) cuts it from a box or a click. :func:`inpaint` writes the new images, their masks and a
  manifest. Pixels outside the mask are pasted back from the source (the pipeline itself re-encodes the whole
  image through its VAE, which shifts them).

Models come from a small registry of their own (:data:`CHECKPOINTS`): diffusers pipelines are not transformers
models, so they do not go through ``lmt.load``. Each has a tiny offline variant (``weights="tiny"``): the same
pipeline classes with small configs and seeded random weights, saved with ``save_pretrained`` and loaded through
``from_pretrained`` like a real checkpoint. Their images are noise; their code path is the real one. The real
checkpoints (downloaded only when asked for, never here) want a GPU.

>>> from lmt.data.synth import synthesize
>>> # synthesize(["zebra"], "synthetic/", count=8)               # real Stable Diffusion 1.5 on a GPU
>>> # synthesize(["zebra"], "synthetic/", count=2, weights="tiny")  # offline, seconds on a CPU
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmt.errors import InvalidInputError, UnknownModelError, UnsupportedTaskError, missing_dependency
from lmt.images import ImageInput, load_image
from lmt.lru import LRUCache

logger = logging.getLogger(__name__)

Kind = Literal["text-to-image", "inpainting"]
Weights = Literal["real", "tiny"]
KINDS: tuple[str, ...] = ("text-to-image", "inpainting")
PIPELINE_CLASSES = {"text-to-image": "StableDiffusionPipeline", "inpainting": "StableDiffusionInpaintPipeline"}


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Synthesis: {message}", f"数据合成：{message_zh}")


# ---- the registry --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthesisCheckpoint:
    """One diffusers checkpoint: our short name, what it does, its Hub id and its defaults on real weights."""

    name: str
    kind: Kind
    hub_id: str
    description: str
    size: int = 512
    steps: int = 30

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The defaults for users with a GPU. Never downloaded by the tests or the tutorials (they use weights="tiny").
CHECKPOINTS: tuple[SynthesisCheckpoint, ...] = (
    SynthesisCheckpoint("sd-v1-5", "text-to-image", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                        "Stable Diffusion 1.5: 512 px, about 1B parameters, ~4 GB in fp16"),
    SynthesisCheckpoint("sd-v1-5-inpainting", "inpainting", "stable-diffusion-v1-5/stable-diffusion-inpainting",
                        "Stable Diffusion 1.5 trained for inpainting (9-channel UNet): 512 px"),
)
DEFAULT_MODELS = {"text-to-image": "sd-v1-5", "inpainting": "sd-v1-5-inpainting"}
#: Tiny variants: images this small (a multiple of 8) and this few denoising steps keep a CPU run to seconds.
TINY_SIZE, TINY_STEPS = 32, 2


def list_synthesis_models(kind: str | None = None) -> list[str]:
    """Registered synthesis checkpoints, optionally only those of one kind."""
    _check_kind(kind, allow_none=True)
    return [c.name for c in CHECKPOINTS if kind is None or c.kind == kind]


def get_checkpoint(name: str) -> SynthesisCheckpoint | None:
    return next((c for c in CHECKPOINTS if c.name == name or c.hub_id.lower() == name.lower()), None)


def _check_kind(kind: str | None, allow_none: bool = False) -> None:
    if (kind is None and not allow_none) or (kind is not None and kind not in KINDS):
        raise UnsupportedTaskError(f"Unknown synthesis kind {kind!r}; use one of {', '.join(KINDS)}.",
                                   f"未知的合成类型 {kind!r}，请使用 {', '.join(KINDS)} 之一。")


# ---- tiny variants -------------------------------------------------------------------------------------------------
def _tiny_components(in_channels: int) -> dict[str, Any]:
    """Stable Diffusion's component classes at toy sizes: ~0.3M-parameter UNet, 2-block VAE (2x, not 8x,
    downsampling), 2-layer CLIP text encoder with the offline BPE tokenizer, and a DDIM scheduler."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lmt.models._offline_tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 2, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=TINY_SIZE,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler, "safety_checker": None, "feature_extractor": None,
            "requires_safety_checker": False}


def build_tiny(kind: str, folder: Path) -> None:
    """Write the tiny ``kind`` pipeline to ``folder`` with ``save_pretrained`` (safetensors)."""
    import diffusers

    _check_kind(kind)
    pipeline_cls = getattr(diffusers, PIPELINE_CLASSES[kind])
    pipeline = pipeline_cls(**_tiny_components(9 if kind == "inpainting" else 4))
    pipeline.save_pretrained(folder, safe_serialization=True)


def _builder_hash() -> str:
    """What decides a tiny pipeline's files: this builder, the offline tokenizers, diffusers and transformers."""
    from lmt.models import _offline_tokenizers

    versions = []
    for package in ("diffusers", "transformers"):
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append("?")
    source = inspect.getsource(_tiny_components) + inspect.getsource(_offline_tokenizers) + ",".join(versions)
    return hashlib.sha256(source.encode()).hexdigest()[:10]


def tiny_pipeline_path(kind: str) -> Path:
    """The folder holding the tiny ``kind`` pipeline, built on first use (as :func:`lmt.tiny.tiny_model_path`)."""
    from lmt.tiny import build_once, lmt_home

    _check_kind(kind)
    folder = lmt_home() / "tiny" / f"diffusers-{kind}-{_builder_hash()}"
    return build_once(folder, lambda staging: build_tiny(kind, staging), f"diffusers-{kind}")


# ---- loading -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Resolved:
    name: str
    source: str
    weights: str  # real | tiny | local
    checkpoint: SynthesisCheckpoint | None


def resolve_synthesis_model(model: str | None, kind: str, weights: str = "real") -> _Resolved:
    """A registry name, Hub id or local pipeline folder -> what to load; tiny weights for registry names only."""
    _check_kind(kind)
    if weights not in ("real", "tiny"):
        raise _error(f"weights must be 'real' or 'tiny', not {weights!r:.20}.",
                     f"weights 只能是 'real' 或 'tiny'，而不是 {weights!r:.20}。")
    if model is not None and not isinstance(model, str):
        raise _error(f"model must be a name, a Hub id or a folder, not {type(model).__name__}.",
                     f"model 应为注册名、Hub id 或目录，而不是 {type(model).__name__}。")
    name = (model or DEFAULT_MODELS[kind]).strip()
    if not name:
        raise _error("no model given.", "未指定模型。")
    checkpoint = get_checkpoint(name)
    if checkpoint is not None:
        if checkpoint.kind != kind:
            raise UnsupportedTaskError(
                f"'{checkpoint.name}' is a {checkpoint.kind} model; for {kind} use "
                f"{', '.join(list_synthesis_models(kind))}.",
                f"'{checkpoint.name}' 是 {checkpoint.kind} 模型；{kind} 请使用 {', '.join(list_synthesis_models(kind))}。",
            )
        if weights == "tiny":
            return _Resolved(checkpoint.name, str(tiny_pipeline_path(kind)), "tiny", checkpoint)
        return _Resolved(checkpoint.name, checkpoint.hub_id, "real", checkpoint)
    local = Path(name).expanduser()
    if local.is_dir() and (local / "model_index.json").is_file():
        if weights == "tiny":
            raise _error(f"'{name}' is a local folder; tiny weights apply to registry names only. Drop --tiny.",
                         f"'{name}' 是本地目录；tiny 权重只适用于注册名。请去掉 --tiny。")
        return _Resolved(name, str(local), "local", None)
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")) and weights == "real":
        return _Resolved(name, name, "real", None)
    raise UnknownModelError(
        f"Unknown synthesis model '{name}': not one of {', '.join(list_synthesis_models())}, not a pipeline folder "
        "(with model_index.json), not a Hub id (org/name)" + (" with a tiny variant." if weights == "tiny" else "."),
        f"未知的合成模型 '{name}'：不是 {', '.join(list_synthesis_models())} 之一，也不是管线目录（含 model_index.json）"
        "或 Hub id（org/name）" + ("，且没有 tiny 变体。" if weights == "tiny" else "。"),
    )


_PIPELINES: LRUCache[Any] = LRUCache(max_entries=2)  # a real SD pipeline holds ~4 GB: keep few


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise missing_dependency("diffusers", "data", "Image synthesis", "图像合成") from exc
    return diffusers


def _load_pipeline(resolved: _Resolved, kind: str, device: Any, dtype: Any, revision: str | None) -> Any:
    from lmt.loading import _weights_unavailable

    key = (kind, resolved.source, revision, str(device), str(dtype))
    cached = _PIPELINES.get(key)
    if cached is not None:
        return cached
    pipeline_cls = getattr(_diffusers(), PIPELINE_CLASSES[kind])
    try:
        pipeline = pipeline_cls.from_pretrained(
            resolved.source, revision=None if resolved.weights != "real" else revision, dtype=dtype,
            use_safetensors=True,
        )
    except OSError as exc:
        raise _weights_unavailable(resolved.source, revision, exc) from exc
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)  # our own tqdm counts images, not denoising steps
    _PIPELINES.put(key, pipeline)
    return pipeline


# ---- checks --------------------------------------------------------------------------------------------------------
def _whole(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _error(f"{name} must be a whole number in [{low}, {high}]; got {value!r:.30}.",
                     f"{name} 必须是 [{low}, {high}] 之间的整数，收到的是 {value!r:.30}。")
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not low <= value <= high:
        raise _error(f"{name} must be a number in [{low:g}, {high:g}]; got {value!r:.30}.",
                     f"{name} 必须是 [{low:g}, {high:g}] 之间的数，收到的是 {value!r:.30}。")
    return float(value)


def _check_size(size: Any) -> tuple[int, int]:
    """(width, height), each a multiple of 8 (Stable Diffusion's VAE and UNet need it) in [8, 2048]."""
    sides = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (not isinstance(sides, (tuple, list)) or len(sides) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 8 <= s <= 2048 and s % 8 == 0
                       for s in sides)):
        raise _error(f"size must be pixels in [8, 2048], a multiple of 8 (one side, or (width, height)); got "
                     f"{size!r:.30}.", f"size 必须是 [8, 2048] 之间、8 的倍数的像素数；收到的是 {size!r:.30}。")
    return (int(sides[0]), int(sides[1]))


def _check_prompt(prompt: Any, name: str = "prompt") -> str:
    from lmt.validate import check_text

    return check_text(prompt, name, max_chars=1000)


# ---- the pipelines -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthesizedImage:
    """One generated image, the prompt and seed that made it, and whether a safety checker blanked it."""

    image: Any
    prompt: str
    seed: int
    flagged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.image.size), "prompt": self.prompt, "seed": self.seed, "flagged": self.flagged}


class SynthesisPipeline:
    """What both kinds share: the model (registry name, Hub id or pipeline folder), device, dtype, defaults."""

    kind: str = "text-to-image"

    def __init__(
        self,
        model: str | None = None,
        *,
        weights: Weights = "real",
        revision: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        from lmt.device import resolve_device, resolve_dtype

        self.resolved = resolve_synthesis_model(model, self.kind, weights)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, dtype)
        self.pipeline = _load_pipeline(self.resolved, self.kind, self.device, self.dtype, revision)
        if self.resolved.weights != "tiny" and self.device.type == "cpu":
            logger.warning("Running %s on the CPU: expect minutes per image. Use a GPU, or weights='tiny' to try "
                           "the code path.", self.resolved.name)
        tiny = self.resolved.weights == "tiny"
        checkpoint = self.resolved.checkpoint
        self.default_size = TINY_SIZE if tiny else (checkpoint.size if checkpoint else 512)
        self.default_steps = TINY_STEPS if tiny else (checkpoint.steps if checkpoint else 30)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.resolved.name!r}, weights={self.resolved.weights!r}, " \
               f"device={self.device})"

    def _generators(self, seeds: Sequence[int]) -> list[Any]:
        import torch

        # CPU generators give the same noise on every device, so a seed means the same image on CPU and GPU
        return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]

    def check_settings(self, size: Any, steps: Any, guidance: Any) -> tuple[tuple[int, int], int, float]:
        """(width, height), steps and guidance, checked; None picks this model's default size or steps."""
        return (_check_size(size if size is not None else self.default_size),
                _whole(steps if steps is not None else self.default_steps, "steps", 1, 500),
                _number(guidance, "guidance", 0.0, 50.0))


def _flags(output: Any, count: int) -> list[bool]:
    flagged = getattr(output, "nsfw_content_detected", None)
    return [bool(f) for f in flagged] if flagged is not None else [False] * count


class TextToImage(SynthesisPipeline):
    """Images from prompts with a Stable Diffusion pipeline.

    >>> generate = TextToImage(weights="tiny")
    >>> [item.image.size for item in generate(["a photo of a cat"], seed=0)]
    [(32, 32)]
    """

    kind = "text-to-image"

    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        negative_prompt: str | None = None,
        size: int | tuple[int, int] | None = None,
        steps: int | None = None,
        guidance: float = 7.5,
        seed: int = 0,
        batch_size: int = 4,
    ) -> list[SynthesizedImage]:
        """One image per prompt; prompt ``i`` uses seed ``seed + i``, so each image can be redrawn alone."""
        import torch

        prompts = [_check_prompt(p) for p in ([prompt] if isinstance(prompt, str) else list(prompt))]
        if not prompts:
            raise _error("give at least one prompt.", "请至少给出一个提示词。")
        negative = _check_prompt(negative_prompt, "negative_prompt") if negative_prompt else None
        (width, height), steps, guidance = self.check_settings(size, steps, guidance)
        seed = _whole(seed, "seed", 0, 2**62)
        batch_size = _whole(batch_size, "batch_size", 1, 64)
        results: list[SynthesizedImage] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            seeds = [seed + start + i for i in range(len(chunk))]
            with torch.inference_mode():
                output = self.pipeline(
                    prompt=chunk, negative_prompt=[negative] * len(chunk) if negative else None,
                    height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                    generator=self._generators(seeds),
                )
            for image, text, image_seed, flagged in zip(output.images, chunk, seeds, _flags(output, len(chunk)),
                                                        strict=True):
                results.append(SynthesizedImage(image, text, image_seed, flagged))
        return results


def _as_mask(mask: Any, size: tuple[int, int]) -> np.ndarray:
    """A bool mask of the image's size from an array, a PIL image or a path (any non-zero pixel is inside)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(mask, (str, Path)):
        try:
            with Image.open(mask) as opened:
                mask = opened.convert("L")
        except (UnidentifiedImageError, OSError) as exc:
            raise _error(f"the mask '{mask}' cannot be read ({exc}).", f"无法读取掩码 '{mask}'（{exc}）。") from exc
    array = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
    if array.ndim != 2 or array.shape != (size[1], size[0]):
        raise _error(f"the mask is {array.shape[::-1] if array.ndim == 2 else array.shape}, the image {size}: "
                     "a mask is a 2-D array of the image's size.",
                     f"掩码尺寸 {array.shape} 与图像 {size} 不符：掩码应是与图像同尺寸的二维数组。")
    inside = array > 0
    if not inside.any():
        raise _error("the mask is empty: nothing to inpaint.", "掩码为空：没有需要重绘的区域。")
    return inside


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask dilated by ``pixels`` (a square neighbourhood): room for the new object's edges."""
    from PIL import Image, ImageFilter

    if pixels <= 0:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(image.filter(ImageFilter.MaxFilter(2 * pixels + 1))) > 0


def _blend_alpha(inside: np.ndarray, feather: int) -> Any:
    """How much of the repainted image each pixel takes: all of it inside the mask, none farther than ``feather``
    pixels outside it, and a smooth ramp in between."""
    from PIL import Image, ImageFilter

    mask = inside.astype(np.uint8) * 255
    if feather == 0:
        return Image.fromarray(mask, mode="L")
    blurred = np.asarray(Image.fromarray(mask, mode="L").filter(ImageFilter.GaussianBlur(feather / 2)))
    # the blur must neither thin the mask (inside stays fully repainted) nor reach past the band
    alpha = np.maximum(blurred, mask) * grow_mask(inside, feather)
    return Image.fromarray(alpha.astype(np.uint8), mode="L")


def _working_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """The image's aspect ratio with its longest side near ``longest``, both sides multiples of 8."""
    scale = longest / max(size)
    return tuple(max(8, int(round(side * scale / 8)) * 8) for side in size)  # type: ignore[return-value]


class Inpainting(SynthesisPipeline):
    """Repaint the inside of a mask with a Stable Diffusion inpainting pipeline.

    The image is resized so its longest side is ``size`` (both sides multiples of 8), inpainted, resized back,
    and with ``keep_unmasked`` (the default) every pixel outside the mask is the source's own: the pipeline
    re-encodes the whole image through its VAE, which shifts colours and blurs details everywhere.
    ``feather`` softens the seam: a band of that many pixels just outside the mask is blended too.
    """

    kind = "inpainting"

    def __call__(
        self,
        image: ImageInput,
        mask: Any,
        *,
        prompt: str,
        negative_prompt: str | None = None,
        size: int | None = None,
        steps: int | None = None,
        guidance: float = 7.5,
        strength: float = 1.0,
        seed: int = 0,
        keep_unmasked: bool = True,
        feather: int = 0,
    ) -> SynthesizedImage:
        import torch
        from PIL import Image

        picture = load_image(image)
        inside = _as_mask(mask, picture.size)
        prompt = _check_prompt(prompt)
        negative = _check_prompt(negative_prompt, "negative_prompt") if negative_prompt else None
        longest = _whole(size if size is not None else self.default_size, "size", 8, 2048)
        _, steps, guidance = self.check_settings(8, steps, guidance)
        strength = _number(strength, "strength", 0.01, 1.0)
        seed = _whole(seed, "seed", 0, 2**62)
        feather = _whole(feather, "feather", 0, 64)
        width, height = _working_size(picture.size, longest)
        mask_image = Image.fromarray(inside.astype(np.uint8) * 255, mode="L")
        with torch.inference_mode():
            output = self.pipeline(
                prompt=prompt, negative_prompt=negative, image=picture.resize((width, height), Image.BICUBIC),
                mask_image=mask_image.resize((width, height), Image.NEAREST), height=height, width=width,
                strength=strength, num_inference_steps=steps, guidance_scale=guidance,
                generator=self._generators([seed])[0],
            )
        painted = output.images[0].convert("RGB").resize(picture.size, Image.BICUBIC)
        if keep_unmasked:
            painted = Image.composite(painted, picture, _blend_alpha(inside, feather))
        return SynthesizedImage(painted, prompt, seed, _flags(output, 1)[0])


# ---- writing datasets ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthesisResult:
    """What :func:`synthesize` or :func:`inpaint` wrote: ``manifest.csv`` (image, label[, mask], prompt, seed ...)
    and ``synthesis.json`` (these settings) in ``out_dir``."""

    kind: str
    out_dir: str
    manifest: str
    written: int
    per_label: dict[str, int]
    model: str
    source: str
    weights: str
    steps: int
    guidance: float
    seed: int
    size: tuple[int, int] | None = None
    flagged: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["size"] = list(self.size) if self.size else None
        return data


def _new_folder(out: str | Path, create: bool = True) -> Path:
    folder = Path(out).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise _error(f"'{folder}' is not an empty folder; synthetic data is written to a new or empty folder only.",
                     f"'{folder}' 不是空目录；合成数据只写入新目录或空目录。")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_outputs(folder: Path, rows: list[dict[str, Any]], result: SynthesisResult) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "synthesis.json").write_text(json.dumps(result.to_dict(), ensure_ascii=False, indent=2),
                                           encoding="utf-8")


def safe_name(text: str) -> str:
    """A label as a file-name-safe stem (letters, digits, dot, dash, underscore)."""
    return re.sub(r"[^\w.-]+", "_", str(text)).strip("._")[:60] or "item"


def _class_counts(classes: Sequence[str] | Mapping[str, int], count: int) -> dict[str, int]:
    if isinstance(classes, Mapping):
        plan = {str(k).strip(): v for k, v in classes.items()}
        for label, n in plan.items():
            _whole(n, f"count for '{label}'", 0, 100_000)
    elif isinstance(classes, Sequence) and not isinstance(classes, str):
        _whole(count, "count", 1, 100_000)
        plan = {str(label).strip(): count for label in classes}
    else:
        raise _error("classes must be a list of class names, or a {class: count} mapping.",
                     "classes 必须是类名列表，或 {类名: 数量} 映射。")
    if not plan or any(not label for label in plan):
        raise _error("give at least one non-empty class name.", "请至少给出一个非空的类名。")
    return plan


def balance_counts(source: str | Path, target: int | None = None) -> dict[str, int]:
    """How many images each class of ``source`` lacks to reach ``target`` (default: the largest class's count).

    Classes already at the target are left out. ``source`` is an ImageFolder tree or a .csv/.jsonl manifest.
    """
    from lmt.train.data import read_records

    counts = Counter(str(r["label"]) for r in read_records(source, {"image": "image", "label": "label"}))
    goal = max(counts.values()) if target is None else _whole(target, "target", 1, 1_000_000)
    return {label: goal - n for label, n in sorted(counts.items()) if n < goal}


def synthesize(
    classes: Sequence[str] | Mapping[str, int],
    out: str | Path,
    *,
    count: int = 4,
    template: str = "a photo of a {}",
    prompts: Mapping[str, str] | None = None,
    negative_prompt: str | None = None,
    size: int | tuple[int, int] | None = None,
    steps: int | None = None,
    guidance: float = 7.5,
    seed: int = 0,
    model: str | None = None,
    weights: Weights = "real",
    device: Any = None,
    dtype: Any = None,
    batch_size: int = 4,
) -> SynthesisResult:
    """Write ``count`` generated images per class (or ``{class: count}``, e.g. from :func:`balance_counts`).

    Each class's prompt is ``template.format(class)`` unless ``prompts`` gives one. Images go to
    ``out/images/<class>/``; ``out/manifest.csv`` lists image, label, prompt and seed, which ``lmt train`` and
    ``lmt data validate`` read. Image ``i`` of the whole run uses seed ``seed + i``. Images a safety checker
    blanked are counted in ``flagged`` and not written.
    """
    from tqdm.auto import tqdm

    plan = {label: n for label, n in _class_counts(classes, count).items() if n > 0}
    if "{}" not in template:
        raise _error("template must contain '{}' where the class name goes.", "template 中须包含 '{}' 作为类名的位置。")
    jobs = [(label, (prompts or {}).get(label) or template.format(label)) for label, n in plan.items()
            for _ in range(n)]
    batch_size = _whole(batch_size, "batch_size", 1, 64)
    _new_folder(out, create=False)  # refuse a full folder before loading gigabytes of weights
    generate = TextToImage(model, weights=weights, device=device, dtype=dtype)
    folder = _new_folder(out)
    (width, height), steps, guidance = generate.check_settings(size, steps, guidance)
    seed = _whole(seed, "seed", 0, 2**62)
    rows: list[dict[str, Any]] = []
    flagged = 0
    per_label: Counter[str] = Counter()
    progress = tqdm(total=len(jobs), desc="synthesize", unit="image", leave=False)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        images = generate([p for _, p in chunk], negative_prompt=negative_prompt, size=(width, height), steps=steps,
                          guidance=guidance, seed=seed + start, batch_size=batch_size)
        for (label, _), item in zip(chunk, images, strict=True):
            progress.update()
            if item.flagged:
                flagged += 1
                continue
            name = f"images/{safe_name(label)}/{per_label[label]:05d}.png"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            item.image.save(folder / name)
            per_label[label] += 1
            rows.append({"image": name, "label": label, "prompt": item.prompt, "seed": item.seed,
                         "model": generate.resolved.name, "weights": generate.resolved.weights})
    progress.close()
    result = SynthesisResult(
        kind="text-to-image", out_dir=str(folder), manifest=str(folder / "manifest.csv"), written=len(rows),
        per_label=dict(per_label), model=generate.resolved.name, source=generate.resolved.source,
        weights=generate.resolved.weights, steps=steps, guidance=guidance, seed=seed, size=(width, height),
        flagged=flagged, settings={"template": template, "prompts": dict(prompts or {}),
                                   "negative_prompt": negative_prompt, "plan": plan},
    )
    _write_outputs(folder, rows, result)
    logger.info("synthesized %d images into %s", len(rows), folder)
    return result


def sam_mask(image: ImageInput, *, box: Sequence[float] | None = None, points: Sequence[Sequence[float]] | None = None,
             model: str = "sam-vit-base", weights: Weights = "real", device: Any = None) -> np.ndarray:
    """SAM's mask for one object of ``image``, prompted with a box or with (x, y[, label]) clicks (best mask)."""
    from lmt.tasks import MaskGeneration

    if (box is None) == (points is None):
        raise _error("give SAM a box or points (one of the two).", "请给 SAM 一个框或一组点（二选一）。")
    segment = MaskGeneration(model, weights=weights, device=device)
    result = segment(image, boxes=[box]) if box is not None else segment(image, points=points)
    if not result.masks or not result.masks[0].mask.any():
        raise _error("SAM found no object there: move the box or the points, or give a mask.",
                     "SAM 在该处没有分割出物体：请调整框或点，或直接给出掩码。")
    return np.asarray(result.masks[0].mask, dtype=bool)


def inpaint(
    images: ImageInput | Sequence[ImageInput],
    out: str | Path,
    *,
    prompt: str,
    label: str,
    masks: Sequence[Any] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    points: Sequence[Sequence[Sequence[float]]] | None = None,
    count: int = 1,
    sam_model: str = "sam-vit-base",
    dilate: int = 0,
    feather: int = 0,
    keep_unmasked: bool = True,
    negative_prompt: str | None = None,
    size: int | None = None,
    steps: int | None = None,
    guidance: float = 7.5,
    strength: float = 1.0,
    seed: int = 0,
    model: str | None = None,
    weights: Weights = "real",
    device: Any = None,
    dtype: Any = None,
) -> SynthesisResult:
    """Paint ``prompt`` (an object of class ``label``) into each image, ``count`` variants each.

    The region is one of: ``masks`` (one per image: arrays, PIL images or PNG paths), ``boxes`` (one per image)
    or ``points`` (one list of clicks per image), the last two cut out by SAM (``sam_model``, same ``weights``).
    ``dilate`` grows the mask first. Writes ``out/images/``, ``out/masks/`` (the repainted region, 255 inside)
    and ``out/manifest.csv`` (image, mask, label, prompt, source, seed): rows a segmentation trainer reads,
    though the new object need not fill its mask.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    sources = list(images) if isinstance(images, (list, tuple)) else [images]
    if not sources:
        raise _error("give at least one image.", "请至少给出一张图片。")
    given = [name for name, value in (("masks", masks), ("boxes", boxes), ("points", points)) if value is not None]
    if len(given) != 1:
        raise _error("give exactly one of masks, boxes (SAM) or points (SAM), one entry per image.",
                     "masks、boxes（SAM）、points（SAM）三者须且只能给一个，每张图片一项。")
    regions = {"masks": masks, "boxes": boxes, "points": points}[given[0]]
    if not isinstance(regions, Sequence) or len(regions) != len(sources):
        raise _error(f"{given[0]} has {len(regions) if isinstance(regions, Sequence) else 'no'} entries for "
                     f"{len(sources)} images; give one per image.",
                     f"{given[0]} 的项数与图片数（{len(sources)}）不一致；每张图片一项。")
    label = _check_prompt(label, "label")
    count = _whole(count, "count", 1, 100)
    dilate = _whole(dilate, "dilate", 0, 256)
    _new_folder(out, create=False)
    painter = Inpainting(model, weights=weights, device=device, dtype=dtype)
    folder = _new_folder(out)
    _, steps, guidance = painter.check_settings(8, steps, guidance)
    seed = _whole(seed, "seed", 0, 2**62)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rows: list[dict[str, Any]] = []
    flagged = 0
    for index, (source, region) in enumerate(tqdm(list(zip(sources, regions, strict=True)), desc="inpaint",
                                                  unit="image", leave=False)):
        picture = load_image(source)
        if given[0] == "masks":
            inside = _as_mask(region, picture.size)
        else:
            inside = sam_mask(picture, box=region if given[0] == "boxes" else None,
                              points=region if given[0] == "points" else None, model=sam_model, weights=weights,
                              device=device)
        inside = grow_mask(inside, dilate)
        source_name = str(Path(source).resolve()) if isinstance(source, (str, Path)) else f"image #{index}"
        mask_name = f"masks/{index:05d}.png"
        Image.fromarray(inside.astype(np.uint8) * 255, mode="L").save(folder / mask_name)
        for variant in range(count):
            image_seed = seed + index * count + variant
            item = painter(picture, inside, prompt=prompt, negative_prompt=negative_prompt, size=size, steps=steps,
                           guidance=guidance, strength=strength, seed=image_seed, keep_unmasked=keep_unmasked,
                           feather=feather)
            if item.flagged:
                flagged += 1
                continue
            name = f"images/{index:05d}_{variant}.png"
            item.image.save(folder / name)
            rows.append({"image": name, "mask": mask_name, "label": label, "prompt": prompt, "source": source_name,
                         "seed": image_seed, "model": painter.resolved.name, "weights": painter.resolved.weights})
    result = SynthesisResult(
        kind="inpainting", out_dir=str(folder), manifest=str(folder / "manifest.csv"), written=len(rows),
        per_label={label: len(rows)} if rows else {}, model=painter.resolved.name, source=painter.resolved.source,
        weights=painter.resolved.weights, steps=steps, guidance=guidance, seed=seed, flagged=flagged,
        settings={"prompt": prompt, "negative_prompt": negative_prompt, "region": given[0], "sam_model": sam_model,
                  "dilate": dilate, "feather": feather, "keep_unmasked": keep_unmasked, "strength": strength,
                  "size": size if size is not None else painter.default_size, "count": count},
    )
    _write_outputs(folder, rows, result)
    logger.info("inpainted %d images into %s", len(rows), folder)
    return result
