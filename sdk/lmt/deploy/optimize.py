"""Recipes that make an exported image graph (and eager PyTorch) run fast on a CPU, chosen by measurement.

>>> from lmt.deploy.optimize import int8_recipe
>>> int8_recipe("vit").method, int8_recipe("resnet").method
('dynamic', 'static')

INT8 with onnxruntime, per family (``lmt bench`` measured the alternatives; see the tutorial on CPU optimisation):

- **Transformers** (ViT, DINOv2, CLIP's image tower): first onnxruntime's transformer optimizer fuses LayerNorm with
  the residual Add, GELU with its bias and, for CLIP exported with eager attention, the whole attention block into
  one ``Attention`` node (ViT's eager attention is not matched by onnxruntime 1.32's fusion: it stays MatMul +
  Softmax, its MatMuls quantised); then dynamic quantisation of the MatMul/Attention/Gemm weights to int8 per
  output channel. The patch-embedding ``Conv`` stays float: dynamic ``ConvInteger`` is slower than the float
  convolution in onnxruntime.
- **CNNs** (ResNet): static quantisation, calibrated: activations uint8 and weights int8 per channel (U8S8, the
  fast pair on x86), in QOperator form so that onnxruntime runs ``QLinearConv`` end to end. Dynamic quantisation
  is the wrong tool here: its ``ConvInteger`` runs slower than float32. Signed int8 activations (S8S8) gain
  nothing on a CPU without VNNI.

Eager PyTorch (:func:`eager_settings`): a CNN on the CPU gets its BatchNorms folded into the convolutions and
runs channels-last (oneDNN's preferred layout): the same numbers, fewer passes over memory.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmt.errors import InvalidInputError, missing_dependency

if TYPE_CHECKING:
    import torch

    from lmt.loading import LoadedModel

logger = logging.getLogger(__name__)

#: onnxruntime.transformers.optimizer's model_type for each transformer family it can fuse.
FUSION_MODEL_TYPES = {"vit": "vit", "dinov2": "vit", "clip": "clip"}
#: Families whose convolutions carry the FLOPs: static INT8 and, in eager PyTorch, folded BatchNorm + channels-last.
CNN_FAMILIES = ("resnet",)
#: Ops whose weights dynamic INT8 quantises. Not Conv: dynamic ConvInteger is slower than float Conv.
DYNAMIC_OP_TYPES = ("MatMul", "Attention", "Gemm")
#: Synthetic calibration images when none are given (fine for speed, not for accuracy).
_SYNTHETIC_CALIBRATION = 16


@dataclass(frozen=True)
class Int8Recipe:
    """How an INT8 graph is made: the choices a results file records next to its numbers."""

    family: str
    #: "dynamic" (activation ranges measured per call) or "static" (calibrated once)
    method: str
    #: onnxruntime.transformers.optimizer model_type applied before quantising, None when not fused
    fusion: str | None
    per_channel: bool
    #: "QOperator" (quantised operators) or "QDQ" (QuantizeLinear/DequantizeLinear pairs)
    quant_format: str
    activation_type: str
    weight_type: str
    #: None: every op type onnxruntime quantises
    op_types: tuple[str, ...] | None
    #: how many calibration images a static recipe used ("synthetic" when none were given)
    calibration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["op_types"] = list(self.op_types) if self.op_types is not None else None
        return data


@dataclass(frozen=True)
class QuantizedGraph:
    """An INT8 graph written by :func:`quantize_int8`, with its recipe and how long making it took."""

    path: Path
    recipe: Int8Recipe
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "recipe": self.recipe.to_dict(), "seconds": self.seconds}


def int8_recipe(family: str, *, calibrated: bool = True) -> Int8Recipe:
    """The INT8 recipe for ``family`` (see the module docstring for why).

    ``calibrated=False`` says no calibration images are at hand: a CNN then gets dynamic INT8 on its classifier
    (MatMul/Gemm) only and keeps float32 convolutions, since the alternatives are calibrating on noise (wrong
    activation ranges) or dynamic ``ConvInteger`` (slower than float32).
    """
    if family in CNN_FAMILIES:
        if not calibrated:
            return Int8Recipe(family, "dynamic", None, True, "QOperator", "uint8", "int8", ("MatMul", "Gemm"))
        return Int8Recipe(family, "static", None, True, "QOperator", "uint8", "int8", None)
    return Int8Recipe(family, "dynamic", FUSION_MODEL_TYPES.get(family), True, "QOperator", "uint8", "int8",
                      DYNAMIC_OP_TYPES)


# ---- eager PyTorch --------------------------------------------------------------------------------------------------
def fold_batchnorm(model: torch.nn.Module) -> int:
    """Fold every BatchNorm2d that follows a Conv2d in the same block (transformers' ``convolution`` +
    ``normalization`` pairs, as in ResNet) into the convolution, in place; returns how many were folded.

    Inference only (``model.eval()``): the folded convolution computes the same numbers in one pass.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in model.modules():
        conv, norm = getattr(module, "convolution", None), getattr(module, "normalization", None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
            module.convolution = fuse_conv_bn_eval(conv.eval(), norm.eval())
            module.normalization = torch.nn.Identity()
            folded += 1
    return folded


def eager_settings(model: torch.nn.Module, family: str, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """``model`` set up for fast eager inference on ``device``, and the memory format its inputs should have.

    A CNN on the CPU: BatchNorm folded into the convolutions, weights and inputs channels-last. Anything else is
    returned as it is, with contiguous (NCHW) inputs. Changes ``model`` in place: pass a copy of a shared one.
    """
    import torch

    if family in CNN_FAMILIES and device.type == "cpu" and any(p.is_floating_point() for p in model.parameters()):
        folded = fold_batchnorm(model)
        logger.info("Folded %d BatchNorm layers into their convolutions; running channels-last", folded)
        return model.to(memory_format=torch.channels_last), torch.channels_last
    return model, torch.contiguous_format


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Eager (matmul + softmax) attention for the duration, then back to what the model had.

    Two uses: an export that onnxruntime's optimizer can fuse into one ``Attention`` node (CLIP's; transformers' default
    ``sdpa`` attention exports as a decomposed pattern with NaN guards, which no fusion matches), and counting
    FLOPs (``FlopCounterMode`` does not see inside the CPU's fused sdpa kernel). Models without a switchable
    implementation are left as they are.
    """
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    if previous in (None, "eager") or switch is None:
        yield
        return
    try:
        switch("eager")
    except (ValueError, AttributeError) as exc:  # a model that cannot switch: export what it has
        logger.info("Attention stays %s for export (%s)", previous, exc)
        yield
        return
    try:
        yield
    finally:
        switch(previous)


# ---- ONNX -----------------------------------------------------------------------------------------------------------
def _check_paths(onnx_path: str | Path, out: str | Path) -> tuple[Path, Path]:
    source, target = Path(onnx_path).expanduser(), Path(out).expanduser()
    if not source.is_file():
        raise InvalidInputError(f"ONNX file '{source}' not found; export one with lmt.deploy.export_onnx first.",
                                f"找不到 ONNX 文件 '{source}'；请先用 lmt.deploy.export_onnx 导出。")
    if target.suffix != ".onnx" or target.resolve() == source.resolve():
        raise InvalidInputError(f"out must be a new path ending in .onnx, not '{target}'.",
                                f"out 应为新的、以 .onnx 结尾的文件路径，而不是 '{target}'。")
    return source, target


def _import_quantization() -> None:
    import importlib.util

    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise missing_dependency(package, "deploy", "INT8 quantisation", "INT8 量化")


def _vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", None) or config


def fuse_transformer(onnx_path: str | Path, out: str | Path, model_type: str, config: Any) -> Path:
    """onnxruntime's transformer fusions (attention, LayerNorm + residual, GELU + bias) on a float32 graph.

    ``config`` is the model's transformers config (heads and width are read from its vision part).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    source, target = _check_paths(onnx_path, out)
    vision = _vision_config(config)
    optimized = optimize_model(str(source), model_type=model_type, num_heads=vision.num_attention_heads,
                               hidden_size=vision.hidden_size)
    fused = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
    logger.info("onnxruntime fusions (%s): %s", model_type, fused)
    target.parent.mkdir(parents=True, exist_ok=True)
    optimized.save_model_to_file(str(target))
    return target


def _calibration_reader(source: Path, loaded: LoadedModel | None, images: Sequence[Any] | None) -> tuple[Any, str]:
    """A reader that feeds the calibration batches, and how many images it holds (or "synthetic")."""
    import numpy as np

    from lmt.deploy.compress import _calibration_batches, _image_processor, _reader
    from lmt.deploy.export import _session, sample_pixel_values

    input_name = _session(source).get_inputs()[0].name
    if images is not None and len(images):
        if loaded is None:
            raise InvalidInputError("Calibration images need the model's processor: pass loaded=lmt.load(...).",
                                    "校准图片需要模型的预处理器：请传入 loaded=lmt.load(...)。")
        return _reader(input_name, _calibration_batches(list(images), _image_processor(loaded.processor))), \
            str(len(images))
    if loaded is None:
        raise InvalidInputError("Static INT8 needs calibration: pass calibration_images and loaded=lmt.load(...).",
                                "静态 INT8 需要校准：请传入 calibration_images 与 loaded=lmt.load(...)。")
    logger.warning("No calibration images given: calibrating on synthetic images (fine for speed, not accuracy)")
    pixels = sample_pixel_values(loaded, _SYNTHETIC_CALIBRATION).numpy().astype(np.float32)
    return _reader(input_name, [pixels[:8], pixels[8:]]), "synthetic"


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs through the root logger (a warning per call, notes per tensor): keep them
    out of the user's output unless debugging."""
    root = logging.getLogger()
    previous = root.level
    if not logger.isEnabledFor(logging.DEBUG):
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def _quantize_dynamic(source: Path, target: Path, recipe: Int8Recipe) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
                     op_types_to_quantize=list(recipe.op_types or ()))


def _quantize_static(source: Path, target: Path, reader: Any, recipe: Int8Recipe) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        # onnxruntime's recommended pre-step: shape inference and graph clean-up, so more nodes can be quantised
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared), str(target), reader, quant_format=QuantFormat[recipe.quant_format],
            per_channel=recipe.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
        )


def quantize_int8(
    onnx_path: str | Path,
    out: str | Path,
    *,
    family: str,
    loaded: LoadedModel | None = None,
    calibration_images: Sequence[Any] | None = None,
    synthetic_calibration: bool = True,
) -> QuantizedGraph:
    """The fastest INT8 graph this module knows for ``family`` (:func:`int8_recipe`), written to ``out``.

    ``onnx_path`` is a float32 image graph from :func:`lmt.deploy.export_onnx`. ``loaded`` (``lmt.load(...)``)
    gives the config the fusions need and the processor calibration images go through. A static recipe without
    ``calibration_images`` calibrates on synthetic images, with a warning, unless ``synthetic_calibration=False``:
    then a CNN keeps float32 convolutions (``int8_recipe(family, calibrated=False)``), also with a warning.
    """
    _import_quantization()
    source, target = _check_paths(onnx_path, out)
    recipe = int8_recipe(family)
    if recipe.method == "static" and not calibration_images and not synthetic_calibration:
        logger.warning(
            "No calibration images for %s: INT8 covers its classifier only and the convolutions stay float32. For "
            "the fast static INT8 graph pass calibration_images (lmt export --quantize int8 --calibration DIR).",
            family)
        recipe = int8_recipe(family, calibrated=False)
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        graph = source
        if recipe.fusion is not None and loaded is not None:
            graph = fuse_transformer(source, Path(scratch) / "fused.onnx", recipe.fusion, loaded.config)
        elif recipe.fusion is not None:
            recipe = replace(recipe, fusion=None)  # no config, no fusion: say so
        if recipe.method == "dynamic":
            with _quiet_quantizer():
                _quantize_dynamic(graph, target, recipe)
        else:
            reader, calibration = _calibration_reader(graph, loaded, calibration_images)
            recipe = replace(recipe, calibration=calibration)
            with _quiet_quantizer():
                _quantize_static(graph, target, reader, recipe)
    seconds = round(time.perf_counter() - started, 2)
    logger.info("INT8 graph (%s) written to %s in %.1f s", recipe.method, target, seconds)
    return QuantizedGraph(target, recipe, seconds)
