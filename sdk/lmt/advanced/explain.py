"""Where a vision model looks: Grad-CAM (CNNs and ViTs), attention rollout (ViTs) and CLIP text-image relevance.

>>> from lmt.advanced import explain_image as explain
>>> from lmt.tasks import ImageClassification
>>> result = explain(ImageClassification("vit-b16", weights="tiny"), "examples/images/cat.png", method="gradcam")
>>> result.heatmap.shape == (result.overlay.height, result.overlay.width)
True

The tensor-level functions (:func:`gradcam`, :func:`attention_rollout`, :func:`clip_relevance`) take a model and a
batch of pixel values and return one map per image on the model's feature grid, scaled to [0, 1]; :func:`explain`
wraps them for one image: it preprocesses, picks the target class, and returns the map at the image's own size
with an overlay. The image is resized straight to the model's input size (no centre crop), so that every pixel of
the map corresponds to a pixel of the image.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from lmt.errors import InvalidInputError, UnsupportedTaskError, missing_dependency
from lmt.images import ImageInput, load_image

METHODS = ("gradcam", "rollout", "clip-relevance")
#: The prompt CLIP relevance scores the target against, as in zero-shot classification.
DEFAULT_TEMPLATE = "This is a photo of {}."


@dataclass(frozen=True, eq=False)
class Explanation:
    """A heat map over one image: ``heatmap`` (H, W) float32 in [0, 1] at the image's size, ``overlay`` the image
    with the map blended in, ``peak`` the (x, y) pixel of the map's maximum, ``target`` the class or text
    explained and ``score`` the model's probability (classifiers) or cosine similarity (CLIP) for it."""

    heatmap: np.ndarray
    overlay: Image.Image
    peak: tuple[int, int]
    method: str
    target: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        height, width = self.heatmap.shape
        return {"method": self.method, "target": self.target, "score": self.score, "peak": list(self.peak),
                "size": [width, height]}


# ---- maps on the feature grid ---------------------------------------------------------------------------------------
def normalise_maps(maps: Any) -> Any:
    """Scale each map of a (B, h, w) tensor to [0, 1]; a constant map (up to float rounding, which scaling would
    otherwise blow up into a pattern) becomes all zeros."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    span = high - low
    constant = span <= 1e-5 * torch_abs_max(low, high)
    scaled = ((maps - low) / span.clamp_min(1e-12)).clamp(0.0, 1.0)
    return scaled.masked_fill(constant, 0.0)


def torch_abs_max(low: Any, high: Any) -> Any:
    """The larger magnitude of two tensors, at least 1e-12."""
    return low.abs().maximum(high.abs()).clamp_min(1e-12)


def _logits_of(output: Any) -> Any:
    return output.logits if hasattr(output, "logits") else output


def default_gradcam_layer(model: Any) -> Any:
    """The layer Grad-CAM reads for a transformers classifier: a ResNet's last stage; for a ViT-style model the
    input norm of its last block, because the head reads only the [CLS] token after the last block, so the patch
    tokens' gradients are zero at the block's output."""
    resnet = getattr(model, "resnet", None)
    if resnet is not None:
        return resnet.encoder.stages[-1]
    norms = [module for name, module in model.named_modules()
             if name.endswith(("layernorm_before", "norm1", "layer_norm1"))]
    if norms:
        return norms[-1]
    raise InvalidInputError(
        f"No default Grad-CAM layer for {type(model).__name__}; pass layer=<a module whose output is a (B, C, H, W) "
        "feature map or (B, tokens, C) token features>.",
        f"{type(model).__name__} 没有默认的 Grad-CAM 层；请用 layer= 指定一个输出为 (B, C, H, W) 特征图或"
        "(B, tokens, C) token 特征的模块。",
    )


def _tokens_to_grid(tokens: Any) -> Any:
    """(B, N, C) tokens -> (B, C, g, g) patch grid, dropping the leading [CLS]/register tokens."""
    count = tokens.shape[1]
    side = math.isqrt(count)
    if side * side != count:
        side = math.isqrt(count - 1)
    patches = tokens[:, count - side * side:, :]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def _token_gradcam(model: Any, pixel_values: Any, target: Any, layer: Any) -> Any:
    """Grad-CAM on token features: channel weights are the gradients averaged over the patch tokens.
    captum's LayerGradCam averages over every dimension after the first two, which for (B, N, C) tokens would
    average over channels instead, so the token layout is handled here."""
    import torch

    captured: dict[str, Any] = {}

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        captured["tokens"] = output[0] if isinstance(output, tuple) else output

    handle = layer.register_forward_hook(keep)
    try:
        logits = _logits_of(model(pixel_values=pixel_values))
    finally:
        handle.remove()
    tokens = captured["tokens"]
    chosen = logits.gather(1, target[:, None]).sum()
    (grads,) = torch.autograd.grad(chosen, tokens)
    activations, gradients = _tokens_to_grid(tokens), _tokens_to_grid(grads)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))


def gradcam(model: Any, pixel_values: Any, target: int | Any, *, layer: Any = None) -> Any:
    """Grad-CAM maps (B, h, w) in [0, 1] for class ``target`` (an int, or one per image).

    ``model(pixel_values=...)`` must return logits (or an output with ``.logits``). A layer with a (B, C, H, W)
    output goes through captum's ``LayerGradCam``; a (B, tokens, C) one (ViT blocks) through the same formula
    on the patch grid.
    """
    import torch

    layer = layer if layer is not None else default_gradcam_layer(model)
    target = torch.as_tensor(target, device=pixel_values.device).long().expand(pixel_values.shape[0])
    with torch.enable_grad():
        probe = _layer_output_rank(model, pixel_values[:1], layer)
        if probe == 4:
            maps = _captum_gradcam(model, pixel_values, target, layer)
        elif probe == 3:
            maps = _token_gradcam(model, pixel_values, target, layer)
        else:
            raise InvalidInputError(
                f"Grad-CAM needs a layer with a (B, C, H, W) or (B, tokens, C) output; this one has {probe} dims.",
                f"Grad-CAM 需要输出为 (B, C, H, W) 或 (B, tokens, C) 的层；该层输出为 {probe} 维。",
            )
    return normalise_maps(maps.detach().float())


def _layer_output_rank(model: Any, pixel_values: Any, layer: Any) -> int:
    import torch

    ranks: list[int] = []

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        ranks.append((output[0] if isinstance(output, tuple) else output).dim())

    handle = layer.register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        handle.remove()
    if not ranks:
        raise InvalidInputError("The Grad-CAM layer is not part of the model's forward pass.",
                                "Grad-CAM 指定的层不在模型的前向计算中。")
    return ranks[0]


def _captum_gradcam(model: Any, pixel_values: Any, target: Any, layer: Any) -> Any:
    try:
        from captum.attr import LayerGradCam
    except ImportError as exc:
        raise missing_dependency("captum", "advanced", "Grad-CAM", "Grad-CAM") from exc

    def forward(pixels: Any) -> Any:
        return _logits_of(model(pixel_values=pixels))

    cam = LayerGradCam(forward, layer).attribute(pixel_values, target=target, relu_attributions=True)
    return cam[:, 0]


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Run ``model`` with eager attention, which returns attention weights (SDPA does not), then switch back."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _patch_relevance(relevance: Any) -> Any:
    """The [CLS] row of a (B, N, N) token relevance matrix, over the patch tokens, as a (B, g, g) grid."""
    row = relevance[:, 0, :]
    return _tokens_to_grid(row[:, :, None])[:, 0]


def attention_rollout(model: Any, pixel_values: Any) -> Any:
    """Attention rollout (Abnar & Zuidema, 2020): per layer, heads averaged, the residual added as 0.5 A + 0.5 I
    and rows renormalised; the product over layers; the [CLS] row over the patches. Class-agnostic: it shows
    where information flows from, not what decides a class. Returns (B, g, g) in [0, 1]."""
    import torch

    with eager_attention(model), torch.no_grad():
        output = model(pixel_values=pixel_values, output_attentions=True)
    attentions = getattr(output, "attentions", None)
    if not attentions:
        raise UnsupportedTaskError(
            f"{type(model).__name__} returns no attention weights: attention rollout needs a transformer (ViT, "
            "DINOv2); use method='gradcam'.",
            f"{type(model).__name__} 不返回注意力权重：attention rollout 需要 Transformer（ViT、DINOv2），"
            "请改用 method='gradcam'。",
        )
    count = attentions[0].shape[-1]
    identity = torch.eye(count, device=pixel_values.device)
    rollout = identity.expand(pixel_values.shape[0], count, count)
    for attention in attentions:
        mixed = 0.5 * attention.float().mean(dim=1) + 0.5 * identity
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return normalise_maps(_patch_relevance(rollout))


def clip_relevance(model: Any, pixel_values: Any, input_ids: Any, attention_mask: Any | None = None) -> Any:
    """Text-image relevance for a CLIP model (Chefer et al., 2021): the cosine similarity of the image with one
    text is differentiated w.r.t. every vision attention map; relevance starts as I and each layer adds
    mean_heads(relu(grad * A)) @ R. One text for the whole batch. Returns (B, g, g) in [0, 1]."""
    import torch

    from lmt.tasks.base import features_of

    vision = model.vision_model
    with torch.no_grad():
        text = features_of(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        text = text / text.norm(dim=-1, keepdim=True)
    with eager_attention(model), torch.enable_grad():
        output = vision(pixel_values=pixel_values, output_attentions=True)
        image = model.visual_projection(output.pooler_output)
        image = image / image.norm(dim=-1, keepdim=True)
        similarity = (image * text[:1]).sum(dim=-1)
        gradients = torch.autograd.grad(similarity.sum(), output.attentions)
    count = output.attentions[0].shape[-1]
    relevance = torch.eye(count, device=pixel_values.device).expand(pixel_values.shape[0], count, count)
    for attention, gradient in zip(output.attentions, gradients, strict=True):
        cam = (gradient * attention).clamp_min(0).mean(dim=1).detach().float()
        relevance = relevance + cam @ relevance
    # the [CLS] token's relevance to itself is the identity term; only the patches form the map
    return normalise_maps(_patch_relevance(relevance))


# ---- from a map to an image -----------------------------------------------------------------------------------------
def upsample(maps: Any, size: tuple[int, int]) -> Any:
    """(B, h, w) maps -> (B, H, W) by bilinear interpolation, ``size`` as (height, width)."""
    import torch.nn.functional as F

    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def heatmap_peak(heatmap: np.ndarray) -> tuple[int, int]:
    """The (x, y) pixel of the maximum (the first one in row-major order on ties)."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def colourise(heatmap: np.ndarray) -> np.ndarray:
    """A (H, W) map in [0, 1] as (H, W, 3) uint8 with a jet-like ramp (blue = low, red = high)."""
    value = np.clip(heatmap, 0.0, 1.0)[..., None]
    ramp = np.concatenate([1.5 - np.abs(4 * value - 3), 1.5 - np.abs(4 * value - 2), 1.5 - np.abs(4 * value - 1)],
                          axis=-1)
    return (np.clip(ramp, 0.0, 1.0) * 255).astype(np.uint8)


def overlay_heatmap(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5) -> Image.Image:
    """``image`` with the coloured ``heatmap`` (same size) blended in at ``alpha``."""
    colours = Image.fromarray(colourise(heatmap)).resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), colours, alpha)


# ---- one image, end to end ------------------------------------------------------------------------------------------
def model_input_size(processor: Any) -> tuple[int, int]:
    """The (height, width) a model's image processor produces."""
    image_processor = getattr(processor, "image_processor", processor)
    for name in ("crop_size", "size"):
        size = getattr(image_processor, name, None)
        if size is None:
            continue
        size = dict(size) if not isinstance(size, dict) else size
        if size.get("height") and size.get("width"):
            return int(size["height"]), int(size["width"])
        if size.get("shortest_edge"):
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise InvalidInputError("Cannot tell the model's input size from its image processor.",
                            "无法从图像处理器得知模型的输入尺寸。")


def pixel_values_for(image: Image.Image, processor: Any) -> Any:
    """(1, 3, H, W) float pixels: the image resized to the model's input size and normalised as its processor
    does, without a centre crop, so that the map covers the whole image."""
    import torch

    image_processor = getattr(processor, "image_processor", processor)
    height, width = model_input_size(processor)
    array = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    array = array / 255.0
    mean = np.asarray(getattr(image_processor, "image_mean", None) or (0.0, 0.0, 0.0), dtype=np.float32)
    std = np.asarray(getattr(image_processor, "image_std", None) or (1.0, 1.0, 1.0), dtype=np.float32)
    array = (array - mean) / std
    return torch.from_numpy(array.transpose(2, 0, 1).copy())[None]


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise InvalidInputError(
            f"method must be one of {', '.join(METHODS)}; got {method!r}.",
            f"method 必须是 {'、'.join(METHODS)} 之一，收到的是 {method!r}。",
        )
    return method


def _task_for(task_or_model: Any, method: str, weights: str) -> Any:
    from lmt.tasks.classify import ImageClassification, ZeroShotImageClassification

    if isinstance(task_or_model, str):
        task_class = ZeroShotImageClassification if method == "clip-relevance" else ImageClassification
        return task_class(task_or_model, weights=weights)
    wanted = ZeroShotImageClassification if method == "clip-relevance" else ImageClassification
    if not isinstance(task_or_model, wanted):
        raise UnsupportedTaskError(
            f"method='{method}' explains a {wanted.__name__}; got {type(task_or_model).__name__}.",
            f"method='{method}' 用于解释 {wanted.__name__}，收到的是 {type(task_or_model).__name__}。",
        )
    if task_or_model.graphs is not None:
        raise UnsupportedTaskError(
            f"Explanations need gradients or attention weights, which the '{task_or_model.backend}' back-end does "
            "not expose; create the task with backend='torch'.",
            f"解释需要梯度或注意力权重，'{task_or_model.backend}' 后端不提供；请用 backend='torch' 创建任务。",
        )
    return task_or_model


def _class_target(model: Any, target: Any, logits: Any) -> tuple[int, str]:
    """The class index and name to explain: the top prediction when ``target`` is None."""
    id2label = model.config.id2label
    labels = [str(id2label[i]) for i in range(len(id2label))]
    if target is None:
        index = int(logits.argmax(dim=-1)[0])
    elif isinstance(target, str) and target in labels:
        index = labels.index(target)
    elif isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(labels):
        index = target
    else:
        shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
        raise InvalidInputError(
            f"target {target!r} is not one of the model's classes ({shown}) nor an index below {len(labels)}.",
            f"target {target!r} 不是模型的类别（{shown}），也不是小于 {len(labels)} 的序号。",
        )
    return index, labels[index]


def explain(
    task_or_model: Any,
    image: ImageInput,
    method: str = "gradcam",
    target: str | int | None = None,
    *,
    template: str = DEFAULT_TEMPLATE,
    weights: str = "real",
    alpha: float = 0.5,
) -> Explanation:
    """A heat map of what the model used for ``target`` in ``image``.

    ``task_or_model``: an :class:`~lmt.tasks.ImageClassification` (``gradcam``, ``rollout``) or a
    :class:`~lmt.tasks.ZeroShotImageClassification` (``clip-relevance``) on the torch back-end, or a registry name
    (loaded with ``weights``). ``target``: a class name or index (default: the top prediction); for
    ``clip-relevance`` the text to look for (required), put into ``template``.
    """
    import torch

    method = _check_method(method)
    task = _task_for(task_or_model, method, weights)
    picture = load_image(image)
    pixels = pixel_values_for(picture, task.processor).to(task.device, task.loaded.dtype)
    model = task.model
    if method == "clip-relevance":
        if not isinstance(target, str) or not target.strip():
            raise InvalidInputError("clip-relevance needs target='the text to look for', e.g. target='cat'.",
                                    "clip-relevance 需要 target='要查找的文字'，例如 target='cat'。")
        label = target.strip()
        inputs = task.processor.tokenizer([template.format(label)], return_tensors="pt", padding=True)
        inputs = inputs.to(task.device)
        maps = clip_relevance(model, pixels, inputs["input_ids"], inputs.get("attention_mask"))
        with torch.no_grad():
            from lmt.tasks.base import features_of

            image_features = features_of(model.get_image_features(pixel_values=pixels))
            text_features = features_of(model.get_text_features(**inputs))
            score = float(torch.nn.functional.cosine_similarity(image_features, text_features)[0])
    else:
        with torch.no_grad():
            logits = _logits_of(model(pixel_values=pixels)).float()
        index, label = _class_target(model, target, logits)
        score = float(logits.softmax(dim=-1)[0, index])
        maps = gradcam(model, pixels, index) if method == "gradcam" else attention_rollout(model, pixels)
    heatmap = upsample(maps, (picture.height, picture.width))[0].cpu().numpy().astype(np.float32)
    return Explanation(
        heatmap=heatmap,
        overlay=overlay_heatmap(picture, heatmap, alpha=alpha),
        peak=heatmap_peak(heatmap),
        method=method,
        target=label,
        score=score,
    )


# ---- the pointing game ----------------------------------------------------------------------------------------------
#: Class colours (the class is the colour of the one coloured square) and distractor colours (decide nothing).
CLASS_COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.1, 0.2, 0.9)}
DISTRACTOR_COLOURS = ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.95, 0.9, 0.1))


@dataclass(frozen=True)
class PointingData:
    """Synthetic images (N, 3, S, S) in [0, 1], labels (N,) and the deciding object's box (N, 4) as x0, y0, x1, y1
    (x1, y1 exclusive)."""

    images: Any
    labels: Any
    boxes: Any


def _free_spot(rng: np.random.Generator, size: int, side: int, taken: list[tuple[int, int, int, int]]) -> tuple:
    """A random square of ``side`` px inside the image that overlaps none of ``taken`` (a 1 px gap kept)."""
    for _ in range(200):
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        box = (x0, y0, x0 + side, y0 + side)
        if all(box[0] > t[2] or box[2] < t[0] or box[1] > t[3] or box[3] < t[1] for t in taken):
            return box
    raise InvalidInputError("The objects do not fit: use a larger image or fewer distractors.",
                            "物体放不下：请增大图像尺寸或减少干扰物。")


def make_pointing_data(count: int, *, size: int = 64, object_px: int = 10, distractors: int = 2,
                       seed: int = 0) -> PointingData:
    """``count`` images: grey noise texture, one square coloured red, green or blue (the class) at a random place,
    and ``distractors`` squares of the same size in white, black or yellow that do not decide the class."""
    import torch

    rng = np.random.default_rng(seed)
    names = list(CLASS_COLOURS)
    images = np.empty((count, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, len(names), size=count)
    boxes = np.empty((count, 4), dtype=np.int64)
    for i in range(count):
        grey = rng.uniform(0.3, 0.7, size=(1, size, size)) + rng.normal(0.0, 0.03, size=(3, size, size))
        picture = np.clip(grey, 0.0, 1.0)
        box = _free_spot(rng, size, object_px, [])
        taken = [box]
        for _ in range(distractors):
            other = _free_spot(rng, size, object_px, taken)
            taken.append(other)
            colour = DISTRACTOR_COLOURS[int(rng.integers(len(DISTRACTOR_COLOURS)))]
            picture[:, other[1]:other[3], other[0]:other[2]] = np.asarray(colour, dtype=np.float32)[:, None, None]
        colour = CLASS_COLOURS[names[labels[i]]]
        picture[:, box[1]:box[3], box[0]:box[2]] = np.asarray(colour, dtype=np.float32)[:, None, None]
        images[i], boxes[i] = picture, box
    return PointingData(torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(boxes))


def tiny_pointing_model(arch: str, *, size: int = 64, seed: int = 0) -> Any:
    """A small randomly initialised transformers classifier for the pointing game: ``resnet`` (two basic stages,
    an 8 x 8 feature grid at 64 px) or ``vit`` (8 px patches, 3 blocks)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    labels = {"id2label": dict(enumerate(CLASS_COLOURS)), "label2id": {n: i for i, n in enumerate(CLASS_COLOURS)}}
    if arch == "resnet":
        config = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1],
                              layer_type="basic", num_labels=len(CLASS_COLOURS), **labels)
        return ResNetForImageClassification(config)
    if arch == "vit":
        config = ViTConfig(image_size=size, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=3,
                           num_attention_heads=4, intermediate_size=128, num_labels=len(CLASS_COLOURS), **labels)
        return ViTForImageClassification(config)
    raise InvalidInputError(f"arch must be 'resnet' or 'vit'; got {arch!r}.", f"arch 必须是 'resnet' 或 'vit'，收到 {arch!r}。")


def normalise_pixels(images: Any) -> Any:
    """[0, 1] images -> the model's input (mean 0.5, std 0.5 per channel, as the tiny processors use)."""
    return (images - 0.5) / 0.5


def train_classifier(model: Any, images: Any, labels: Any, *, epochs: int, lr: float, batch_size: int = 64,
                     seed: int = 0) -> list[float]:
    """A plain AdamW loop on [0, 1] images; the mean loss of each epoch."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            logits = _logits_of(model(pixel_values=normalise_pixels(images[batch])))
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        losses.append(total / len(labels))
    model.eval()
    return losses


def accuracy(model: Any, images: Any, labels: Any, *, batch_size: int = 256) -> float:
    import torch

    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = _logits_of(model(pixel_values=normalise_pixels(images[start:start + batch_size])))
            correct += int((logits.argmax(dim=-1) == labels[start:start + batch_size]).sum())
    return correct / max(1, len(labels))


def pointing_hits(maps: Any, boxes: Any, size: int, *, tolerance: int = 0) -> Any:
    """Per image, whether the peak of its map (upsampled to ``size`` px) lies in its box widened by ``tolerance``."""
    import torch

    full = upsample(maps, (size, size)).flatten(1)
    peak = full.argmax(dim=1)
    x, y = peak % size, torch.div(peak, size, rounding_mode="floor")
    return ((x >= boxes[:, 0] - tolerance) & (x < boxes[:, 2] + tolerance)
            & (y >= boxes[:, 1] - tolerance) & (y < boxes[:, 3] + tolerance))


def pointing_game(model: Any, data: PointingData, method: str, *, batch_size: int = 64) -> float:
    """The share of images whose heat-map peak for the true class falls inside the deciding object's box."""
    import torch

    hits = []
    for start in range(0, len(data.labels), batch_size):
        pixels = normalise_pixels(data.images[start:start + batch_size])
        labels = data.labels[start:start + batch_size]
        maps = gradcam(model, pixels, labels) if method == "gradcam" else attention_rollout(model, pixels)
        hits.append(pointing_hits(maps, data.boxes[start:start + batch_size], data.images.shape[-1]))
    return float(torch.cat(hits).float().mean())


@dataclass(frozen=True)
class PointingSettings:
    """The pointing-game experiment: data sizes, and how each tiny model is trained."""

    train_count: int = 1200
    test_count: int = 200
    size: int = 64
    object_px: int = 10
    distractors: int = 2
    resnet_epochs: int = 2
    resnet_lr: float = 3e-3
    vit_epochs: int = 6
    vit_lr: float = 2e-3
    seed: int = 0


@dataclass(frozen=True)
class PointingRow:
    """One (architecture, method) pair: the model's held-out accuracy and its pointing-game hit rate."""

    arch: str
    method: str
    accuracy: float
    hit_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "method": self.method, "accuracy": self.accuracy, "hit_rate": self.hit_rate}


@dataclass(frozen=True)
class PointingReport:
    settings: PointingSettings
    rows: tuple[PointingRow, ...]
    #: The hit rate of a peak placed uniformly at random: the box's share of the image.
    chance: float
    losses: dict[str, list[float]]

    def row(self, arch: str, method: str) -> PointingRow:
        return next(row for row in self.rows if row.arch == arch and row.method == method)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"settings": asdict(self.settings), "rows": [row.to_dict() for row in self.rows],
                "chance": self.chance, "losses": self.losses}


def run_pointing_experiment(settings: PointingSettings | None = None,
                            archs: tuple[str, ...] = ("resnet", "vit")) -> PointingReport:
    """Train each tiny model on the synthetic task, then play the pointing game on held-out images: Grad-CAM
    for both, attention rollout for the ViT."""
    settings = settings or PointingSettings()
    shape = {"size": settings.size, "object_px": settings.object_px, "distractors": settings.distractors}
    train = make_pointing_data(settings.train_count, seed=settings.seed, **shape)
    test = make_pointing_data(settings.test_count, seed=settings.seed + 1, **shape)
    rows, losses = [], {}
    for arch in archs:
        epochs, lr = ((settings.resnet_epochs, settings.resnet_lr) if arch == "resnet"
                      else (settings.vit_epochs, settings.vit_lr))
        model = tiny_pointing_model(arch, size=settings.size, seed=settings.seed)
        losses[arch] = train_classifier(model, train.images, train.labels, epochs=epochs, lr=lr, seed=settings.seed)
        held_out = accuracy(model, test.images, test.labels)
        for method in ("gradcam", "rollout") if arch == "vit" else ("gradcam",):
            rows.append(PointingRow(arch, method, held_out, pointing_game(model, test, method)))
    chance = settings.object_px**2 / settings.size**2
    return PointingReport(settings, tuple(rows), chance, losses)


#: ``lmt.advanced.explain`` names this module (a package attribute a submodule import overwrites), so the package
#: exposes the function under this name.
explain_image = explain
