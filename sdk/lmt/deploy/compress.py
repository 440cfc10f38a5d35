"""Model compression: INT8 quantisation (torch dynamic, onnxruntime static), pruning, knowledge distillation.

>>> import copy, lmt
>>> from lmt.deploy import prune_magnitude, quantize_torch_dynamic
>>> model = copy.deepcopy(lmt.load("vit-b16", weights="tiny").model)  # pruning edits in place: prune a copy
>>> round(prune_magnitude(model, 0.5).fraction, 2)
0.5
>>> int8 = quantize_torch_dynamic(model)   # a new model; nn.Linear -> dynamic int8 Linear

ONNX dynamic INT8 and fp16 come with :func:`lmt.deploy.export_onnx` (``quantize="int8"`` / ``"fp16"``); this
module adds static INT8 on an exported graph, calibrated on real images.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmt.errors import InvalidInputError, missing_dependency

if TYPE_CHECKING:
    import torch

    from lmt.loading import LoadedModel

logger = logging.getLogger(__name__)

# Static INT8 quantises these ops only: they hold the weights and nearly all the FLOPs. LayerNorm, Softmax and the
# residual Adds stay float: quantising their activations costs accuracy and saves no weight bytes.
STATIC_OP_TYPES = ("MatMul", "Gemm", "Conv")
_CALIBRATION_BATCH = 8


# ---- sparsity -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSparsity:
    """One layer's weight: how many of its entries are exactly zero."""

    name: str
    zeros: int
    total: int

    @property
    def fraction(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "zeros": self.zeros, "total": self.total, "fraction": self.fraction}


@dataclass(frozen=True)
class SparsityReport:
    """Zero fractions of the reported layers' weights, layer by layer and together, and of the whole model."""

    layers: tuple[LayerSparsity, ...]
    #: zeros among *all* parameters (biases, norms, embeddings and unpruned layers included)
    model_zeros: int
    model_parameters: int

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def fraction(self) -> float:
        """Zero fraction over the reported layers' weights."""
        return self.zeros / self.total if self.total else 0.0

    @property
    def model_fraction(self) -> float:
        return self.model_zeros / self.model_parameters if self.model_parameters else 0.0

    def layer(self, name: str) -> LayerSparsity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [layer.to_dict() for layer in self.layers], "zeros": self.zeros, "total": self.total,
            "fraction": self.fraction, "model_zeros": self.model_zeros, "model_parameters": self.model_parameters,
            "model_fraction": self.model_fraction,
        }


def _default_modules() -> tuple[type, ...]:
    from torch import nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d)


def _weighted_modules(model: torch.nn.Module, modules: tuple[type, ...]) -> list[tuple[str, Any]]:
    import torch

    return [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, modules) and isinstance(getattr(module, "weight", None), torch.Tensor)
    ]


def sparsity_report(model: torch.nn.Module, *, modules: tuple[type, ...] | None = None) -> SparsityReport:
    """Zero fractions of every Linear/Conv weight (or of the ``modules`` types given) and of the whole model."""
    import torch

    _check_module(model)
    layers = []
    for name, module in _weighted_modules(model, modules or _default_modules()):
        weight = module.weight.detach()
        layers.append(LayerSparsity(f"{name}.weight", int((weight == 0).sum()), weight.numel()))
    with torch.no_grad():
        model_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return SparsityReport(tuple(layers), model_zeros, sum(p.numel() for p in model.parameters()))


def _check_module(model: Any) -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(
            f"Expected a torch.nn.Module (e.g. lmt.load(...).model), not {type(model).__name__}.",
            f"需要 torch.nn.Module（例如 lmt.load(...).model），而不是 {type(model).__name__}。",
        )


def _check_amount(amount: Any) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= float(amount) < 1.0:
        raise InvalidInputError(
            f"amount is the fraction of weights to zero, a number in [0, 1); got {amount!r}.",
            f"amount 是要置零的权重比例，应为 [0, 1) 之间的数，而不是 {amount!r}。",
        )
    return float(amount)


def _targets(model: torch.nn.Module, modules: tuple[type, ...]) -> list[tuple[str, Any]]:
    _check_module(model)
    targets = _weighted_modules(model, modules)
    if not targets:
        kinds = ", ".join(kind.__name__ for kind in modules)
        raise InvalidInputError(f"The model has no {kinds} layer with a weight to prune.",
                                f"模型中没有可剪枝的 {kinds} 层。")
    return targets


def prune_magnitude(
    model: torch.nn.Module, amount: float, *, modules: tuple[type, ...] | None = None
) -> SparsityReport:
    """Zero the ``amount`` smallest-magnitude weights of every ``nn.Linear`` (or ``modules``) layer, in place.

    Unstructured L1 pruning per layer (``torch.nn.utils.prune.l1_unstructured``), made permanent: the model keeps
    plain ``weight`` tensors with zeros in them. It is no smaller or faster on dense kernels; the report says how
    sparse the pruned layers are.
    """
    from torch import nn
    from torch.nn.utils import prune

    amount = _check_amount(amount)
    kinds = modules or (nn.Linear,)
    targets = _targets(model, kinds)
    for _, module in targets:
        prune.l1_unstructured(module, "weight", amount=amount)
        prune.remove(module, "weight")  # fold the mask into the weight: no forward hook, no weight_orig left
    return sparsity_report(model, modules=kinds)


def prune_structured(
    model: torch.nn.Module, amount: float, dim: int = 0, *, modules: tuple[type, ...] | None = None
) -> SparsityReport:
    """Zero whole rows (``dim=0``: output units) of every ``nn.Linear`` (or ``modules``) weight, in place.

    ``torch.nn.utils.prune.ln_structured`` with the L2 norm: the ``amount`` fraction of rows with the smallest
    norm become zero. Zero rows can later be cut out to make the layer really smaller; this function only zeroes.
    """
    from torch import nn
    from torch.nn.utils import prune

    amount = _check_amount(amount)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise InvalidInputError(f"dim must be an integer axis of the weight, not {dim!r}.",
                                f"dim 应为权重的整数轴，而不是 {dim!r}。")
    kinds = modules or (nn.Linear,)
    targets = _targets(model, kinds)
    for name, module in targets:
        if not -module.weight.ndim <= dim < module.weight.ndim:
            raise InvalidInputError(f"dim={dim} is out of range for '{name}.weight' of shape "
                                    f"{tuple(module.weight.shape)}.",
                                    f"dim={dim} 超出 '{name}.weight'（形状 {tuple(module.weight.shape)}）的范围。")
        prune.ln_structured(module, "weight", amount=amount, n=2, dim=dim)
        prune.remove(module, "weight")
    return sparsity_report(model, modules=kinds)


# ---- quantisation ---------------------------------------------------------------------------------------------------
def quantize_torch_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers hold int8 weights (activations quantised at run time).

    CPU only (fbgemm/x86 kernels); the original model is left unchanged.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    _check_module(model)
    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization deprecated (moving to torchao); the kernels still run and torchao
        # is not in our stack. Nothing a caller can act on, so keep it out of their logs.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
    return quantized.eval()


def _image_processor(processor: Any) -> Any:
    if isinstance(processor, (str, Path)):
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(str(processor))  # e.g. the folder export_onnx wrote
    processor = getattr(processor, "image_processor", processor)
    if not callable(processor):
        raise InvalidInputError(
            "processor must be an image processor (e.g. lmt.load(...).processor) or the folder it was saved to.",
            "processor 应为图像预处理器（例如 lmt.load(...).processor）或其保存目录。",
        )
    return processor


def _calibration_batches(images: Sequence[Any], processor: Any) -> list[Any]:
    import numpy as np

    from lmt.images import load_images

    batches = []
    for start in range(0, len(images), _CALIBRATION_BATCH):
        chunk = load_images(list(images[start:start + _CALIBRATION_BATCH]))
        pixels = processor(images=chunk, return_tensors="np")["pixel_values"]
        batches.append(np.asarray(pixels, dtype=np.float32))
    return batches


def _reader(input_name: str, batches: list[Any]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the calibration batches once, in order; onnxruntime records each activation's range."""

        def __init__(self) -> None:
            self._batches: Iterator[Any] = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def quantize_onnx_static(
    onnx_path: str | Path,
    calibration_images: Sequence[Any],
    processor: Any,
    out: str | Path,
    *,
    per_channel: bool = True,
) -> Path:
    """Static INT8 (QDQ) of an exported image graph, with activation ranges measured on ``calibration_images``.

    ``calibration_images`` are paths, PIL images or arrays (a few dozen to a few hundred real images like those
    the model will see); ``processor`` is the model's image processor or the folder :func:`export_onnx` wrote.
    MatMul/Gemm/Conv are quantised (weights per channel when ``per_channel``); other ops stay float.
    Returns ``out``, the new ``.onnx`` file.
    """
    import importlib.util

    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise missing_dependency(package, "deploy", "Static INT8 quantisation", "静态 INT8 量化")
    source, target = _check_static_paths(onnx_path, out)
    if isinstance(calibration_images, (str, Path, bytes)) or not len(calibration_images):
        raise InvalidInputError(
            "calibration_images must be a non-empty list of images (paths, PIL images or arrays).",
            "calibration_images 应为非空的图片列表（路径、PIL 图片或数组）。",
        )
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from lmt.deploy.export import _session

    input_name = _session(source).get_inputs()[0].name
    batches = _calibration_batches(calibration_images, _image_processor(processor))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        # onnxruntime's recommended pre-step: shape inference and graph clean-up, so more nodes can be quantised
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared), str(target), _reader(input_name, batches), quant_format=QuantFormat.QDQ,
            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(STATIC_OP_TYPES),
        )
    logger.info("Static INT8 graph written to %s (%d calibration images)", target, len(calibration_images))
    return target


def _check_static_paths(onnx_path: str | Path, out: str | Path) -> tuple[Path, Path]:
    source, target = Path(onnx_path).expanduser(), Path(out).expanduser()
    if not source.is_file():
        raise InvalidInputError(f"ONNX file '{source}' not found; export one with lmt.deploy.export_onnx first.",
                                f"找不到 ONNX 文件 '{source}'；请先用 lmt.deploy.export_onnx 导出。")
    if target.suffix != ".onnx" or target.is_dir():
        raise InvalidInputError(f"out must be a path ending in .onnx, not '{target}'.",
                                f"out 应为以 .onnx 结尾的文件路径，而不是 '{target}'。")
    if target.resolve() == source.resolve():
        raise InvalidInputError("out must differ from onnx_path: the float graph is kept for comparison.",
                                "out 不能与 onnx_path 相同：需要保留浮点模型用于对比。")
    return source, target


# ---- distillation ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistillResult:
    """What distillation did: accuracies and KD losses before/after, the loss per epoch, the trained student."""

    temperature: float
    alpha: float
    epochs: int
    steps: int
    #: "val" when val_records were given, else "train" (then the accuracies are training accuracies)
    evaluated_on: str
    teacher_accuracy: float
    student_accuracy_before: float
    student_accuracy_after: float
    #: mean KD loss over the training records, student in eval mode, before and after training
    kd_loss_before: float
    kd_loss_after: float
    epoch_losses: tuple[float, ...]
    seconds: float
    #: the distilled student (a copy; the student passed in is unchanged); not serialised
    student: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "student"}
        data["epoch_losses"] = list(self.epoch_losses)
        return data


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al.'s loss: ``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE(student, labels)``.

    Both distributions are softened by ``T``; the ``T^2`` keeps the soft term's gradients on the scale of the
    hard term's as ``T`` grows. KL is taken from the teacher's distribution, as in the paper (and ``kl_div``).
    """
    import torch.nn.functional as F

    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1), F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean", log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def _check_distill_args(temperature: Any, alpha: Any, epochs: Any, lr: Any, batch_size: Any) -> None:
    def bad(name: str, rule: str, rule_zh: str, value: Any) -> InvalidInputError:
        return InvalidInputError(f"{name} must be {rule}, not {value!r}.", f"{name} 应为{rule_zh}，而不是 {value!r}。")

    def number(value: Any) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

    if not number(temperature) or temperature <= 0:
        raise bad("temperature", "a positive number", "正数", temperature)
    if not number(alpha) or not 0.0 <= alpha <= 1.0:
        raise bad("alpha", "a number in [0, 1]", "[0, 1] 之间的数", alpha)
    if not number(lr) or lr <= 0:
        raise bad("lr", "a positive number", "正数", lr)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(name, "a positive integer", "正整数", value)


def _check_pair(teacher: Any, student: Any) -> None:
    for role, loaded in (("teacher", teacher), ("student", student)):
        if not hasattr(loaded, "model") or not hasattr(loaded, "processor"):
            raise InvalidInputError(
                f"{role} must be a loaded classifier: lmt.load(name, task='image-classification').",
                f"{role} 应为已加载的分类模型：lmt.load(name, task='image-classification')。",
            )
    teacher_labels = dict(teacher.model.config.id2label)
    student_labels = dict(student.model.config.id2label)
    if teacher_labels != student_labels:
        raise InvalidInputError(
            f"Teacher and student must predict the same labels in the same order; teacher has "
            f"{list(teacher_labels.values())}, student {list(student_labels.values())}.",
            "教师模型与学生模型的标签及顺序必须一致。",
        )


def _as_records(records: Any, name: str) -> list[dict[str, Any]]:
    from lmt.train.data import read_records

    if isinstance(records, (str, Path)):
        return read_records(records, {"image": "image", "label": "label"})
    records = list(records) if records is not None else []
    if not records or not all(isinstance(r, dict) and "image" in r and "label" in r for r in records):
        raise InvalidInputError(
            f"{name} must be a folder (<label>/<image>), a .csv/.jsonl file, or a non-empty list of "
            "{'image': ..., 'label': ...} records.",
            f"{name} 应为目录（<标签>/<图片>）、.csv/.jsonl 文件，或非空的 {{'image': ..., 'label': ...}} 记录列表。",
        )
    return records


def _label_ids(records: list[dict[str, Any]], label2id: dict[str, int]) -> list[int]:
    unknown = sorted({str(r["label"]) for r in records} - set(label2id))
    if unknown:
        raise InvalidInputError(
            f"Labels {unknown[:5]} are not among the model's labels {sorted(label2id)}; give models whose heads "
            "were trained on these labels (e.g. a run folder of lmt train).",
            f"标签 {unknown[:5]} 不在模型的标签 {sorted(label2id)} 中；请使用在这些标签上训练过分类头的模型。",
        )
    return [label2id[str(r["label"])] for r in records]


def _pixels(loaded: LoadedModel, images: list[Any]) -> torch.Tensor:
    processor = getattr(loaded.processor, "image_processor", loaded.processor)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    parameter = next(loaded.model.parameters())
    return pixels.to(device=parameter.device, dtype=parameter.dtype)


def _logits(loaded: LoadedModel, model: Any, images: list[Any], batch_size: int) -> torch.Tensor:
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            outputs.append(model(pixel_values=_pixels(loaded, images[start:start + batch_size])).logits.float().cpu())
    return torch.cat(outputs)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def distill(
    teacher: LoadedModel,
    student: LoadedModel,
    records: Any,
    *,
    val_records: Any = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> DistillResult:
    """Train a copy of ``student`` to match ``teacher``'s softened outputs and the labels (see :func:`kd_loss`).

    ``teacher`` and ``student`` come from ``lmt.load(..., task="image-classification")`` and share one label set;
    each sees the images through its own processor. ``records`` / ``val_records``: a folder (``<label>/<image>``),
    a .csv/.jsonl file, or ``{"image", "label"}`` dicts. A small explicit loop (AdamW, no schedule): the teacher's
    logits are computed once, since the teacher is frozen and the images are not augmented.
    """
    import torch

    from lmt.images import load_images

    _check_distill_args(temperature, alpha, epochs, lr, batch_size)
    _check_pair(teacher, student)
    started = time.perf_counter()
    train_records = _as_records(records, "records")
    eval_records = _as_records(val_records, "val_records") if val_records is not None else train_records
    label2id = {str(label): int(i) for i, label in student.model.config.id2label.items()}
    labels = torch.tensor(_label_ids(train_records, label2id))
    eval_labels = torch.tensor(_label_ids(eval_records, label2id))
    images = load_images([r["image"] for r in train_records])
    eval_images = load_images([r["image"] for r in eval_records]) if val_records is not None else images

    model = copy.deepcopy(student.model)  # lmt.load's models are shared through its cache: never train them in place
    with _eval_mode(teacher.model):
        teacher_logits = _logits(teacher, teacher.model, images, batch_size)
        teacher_eval = _logits(teacher, teacher.model, eval_images, batch_size) if val_records is not None \
            else teacher_logits

    def measure() -> tuple[float, float]:
        with _eval_mode(model):
            accuracy = float((_logits(student, model, eval_images, batch_size).argmax(-1) == eval_labels).float().mean())
            train_logits = _logits(student, model, images, batch_size)
        return accuracy, float(kd_loss(train_logits, teacher_logits, labels, temperature, alpha))

    accuracy_before, loss_before = measure()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    order = list(range(len(images)))
    rng = random.Random(seed)
    epoch_losses, steps = [], 0
    model.train()
    for epoch in range(epochs):
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            logits = model(pixel_values=_pixels(student, [images[i] for i in batch])).logits.float()
            loss = kd_loss(logits, teacher_logits[batch].to(logits.device), labels[batch].to(logits.device),
                           temperature, alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            steps += 1
        epoch_losses.append(total / len(order))
        logger.info("distill epoch %d/%d: loss %.4f", epoch + 1, epochs, epoch_losses[-1])
    model.eval()
    accuracy_after, loss_after = measure()
    teacher_accuracy = float((teacher_eval.argmax(-1) == eval_labels).float().mean())
    return DistillResult(
        temperature=float(temperature), alpha=float(alpha), epochs=epochs, steps=steps,
        evaluated_on="val" if val_records is not None else "train", teacher_accuracy=teacher_accuracy,
        student_accuracy_before=accuracy_before, student_accuracy_after=accuracy_after,
        kd_loss_before=loss_before, kd_loss_after=loss_after, epoch_losses=tuple(epoch_losses),
        seconds=time.perf_counter() - started, student=model,
    )
