"""Export a registered model to ONNX, check it against PyTorch on the spot, optionally quantise it.

>>> from lmt.deploy import export_onnx
>>> result = export_onnx("vit-b16", weights="tiny", out="build/vit-onnx", quantize="int8")
>>> result.graphs[0].max_abs_diff < 1e-4
True

Families exported today: ViT, ResNet, DINOv2 (one graph: ``logits``, or ``features`` for a backbone without a
head) and CLIP (two graphs: ``image.onnx`` -> ``image_embeds`` and ``text.onnx`` -> ``text_embeds``, both
*after* the projection layers, plus ``similarity.json`` with the logit scale).

Why ``torch.onnx.export(dynamo=True)`` and not optimum: optimum-onnx requires transformers<4.58 and installing it
downgrades transformers 5 (see ENVIRONMENT.md). Why the dynamo exporter and not the legacy TorchScript one: the
legacy tracer is deprecated in torch 2.x and, on transformers' mask code, warns that it turns tensor values into
Python booleans, i.e. the graph may be specialised to the sample input (padded or not). ``torch.export`` either
captures such branches or fails loudly. It costs a few seconds more per graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmt.errors import InvalidInputError, LmtError, UnsupportedTaskError, missing_dependency

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lmt.loading import LoadedModel

logger = logging.getLogger(__name__)

#: Families that export today, and what their graph returns.
CLASSIFIER_FAMILIES = ("vit", "resnet", "dinov2")
EXPORTABLE_FAMILIES = (*CLASSIFIER_FAMILIES, "clip")
QUANTIZE_CHOICES = ("int8", "fp16")
DEFAULT_OPSET = 18  # the lowest opset the dynamo exporter writes; onnxruntime >= 1.14 runs it
MANIFEST = "lmt_export.json"
CLIP_SIMILARITY = "similarity.json"
# Protobuf cannot hold a file over 2 GB: larger models keep their weights in a side file (<name>.onnx.data).
_EXTERNAL_DATA_BYTES = 1_500_000_000
# Sample texts for CLIP's text graph: different lengths, so the batch is padded as in real use.
_SAMPLE_TEXTS = ("a photo of a cat", "a dog")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, shape (a str for a dynamic axis) and element type."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ExportedGraph:
    """One ONNX file, its interface, and how far onnxruntime's output lies from PyTorch's on a sample batch."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_abs_diff: float
    quantized_file: str | None = None
    #: None where the quantised graph was not run (fp16 on a machine whose onnxruntime lacks the kernels).
    quantized_max_abs_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "file": self.file, "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs], "max_abs_diff": self.max_abs_diff,
            "quantized_file": self.quantized_file, "quantized_max_abs_diff": self.quantized_max_abs_diff,
        }


@dataclass(frozen=True)
class ExportResult:
    """What ``export_onnx`` wrote: graphs, every file with its size in bytes (paths relative to ``out_dir``)."""

    model: str
    family: str
    weights: str
    out_dir: str
    opset: int
    quantize: str | None
    graphs: tuple[ExportedGraph, ...]
    sizes: dict[str, int] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    def graph(self, name: str) -> ExportedGraph:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "family": self.family, "weights": self.weights, "out_dir": self.out_dir,
            "opset": self.opset, "quantize": self.quantize, "graphs": [g.to_dict() for g in self.graphs],
            "files": list(self.files), "sizes": dict(self.sizes),
            "labels": list(self.labels) if self.labels is not None else None,
        }


# ---- checking the request -------------------------------------------------------------------------------------------
def _check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise InvalidInputError(
            f"quantize must be one of {', '.join(QUANTIZE_CHOICES)} or None, not {quantize!r}.",
            f"quantize 只能是 {'、'.join(QUANTIZE_CHOICES)} 或 None，而不是 {quantize!r}。",
        )


def _check_opset(opset: int) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not DEFAULT_OPSET <= opset <= newest:
        raise InvalidInputError(
            f"opset must be an integer in [{DEFAULT_OPSET}, {newest}] (the dynamo exporter writes opset >= 18), "
            f"not {opset!r}.",
            f"opset 应为 [{DEFAULT_OPSET}, {newest}] 之间的整数（dynamo 导出器最低为 18），而不是 {opset!r}。",
        )


def _check_out(out: str | Path) -> Path:
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(
            f"'{folder}' is a file; give a folder to write the ONNX files to.",
            f"'{folder}' 是文件；请指定一个用来保存 ONNX 文件的目录。",
        )
    if folder.is_dir() and any(folder.iterdir()):
        raise InvalidInputError(
            f"'{folder}' is not empty. Export into a new or empty folder so that no older file is mixed in.",
            f"目录 '{folder}' 不是空的。请导出到新的或空的目录，以免混入旧文件。",
        )
    return folder


def _import_backends() -> None:
    """onnx, onnxruntime and onnxscript (the dynamo exporter's) come with the ``deploy`` extra."""
    import importlib.util

    for package in ("onnx", "onnxruntime", "onnxscript"):
        if importlib.util.find_spec(package) is None:
            raise missing_dependency(package, "deploy", "ONNX export", "ONNX 导出")


def _family_and_task(model: str, weights: str) -> tuple[str, str]:
    """Which family ``model`` belongs to and which task to load it for (classifier head or bare backbone)."""
    from lmt.loading import resolve

    resolved = resolve(model, weights)
    family = resolved.family
    if family is None or family.name not in EXPORTABLE_FAMILIES:
        which = f"family '{family.name}'" if family is not None else "this model"
        raise UnsupportedTaskError(
            f"ONNX export of {which} is not available yet. Families that export today: "
            f"{', '.join(EXPORTABLE_FAMILIES)} (OWLv2 and SAM come later).",
            f"暂不支持导出{'模型族 ' + family.name if family is not None else '该模型'}为 ONNX。目前可导出的模型族："
            f"{'、'.join(EXPORTABLE_FAMILIES)}（OWLv2 与 SAM 稍后支持）。",
        )
    if family.name == "clip":
        return family.name, "zero-shot-image-classification"
    if "image-classification" not in family.tasks:
        return family.name, "image-feature-extraction"
    try:  # a registered backbone (dinov2-small) refuses the classification task: export its features
        resolve(model, weights, "image-classification")
    except UnsupportedTaskError:
        return family.name, "image-feature-extraction"
    if resolved.is_local and resolved.weights == "local" and not _local_has_head(Path(resolved.source)):
        return family.name, "image-feature-extraction"
    return family.name, "image-classification"


def _local_has_head(folder: Path) -> bool:
    try:
        architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        return False
    return any(name.endswith("ForImageClassification") for name in architectures)


# ---- the graphs -----------------------------------------------------------------------------------------------------
def _graph_modules(loaded: LoadedModel, task: str) -> dict[str, Any]:
    """The torch modules to export, by graph name; each returns exactly one tensor."""
    import torch

    from lmt.tasks.base import features_of

    hf_model = loaded.model

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    class Features(torch.nn.Module):
        """As ``lmt`` embeds images: the CLS token after the final norm, or a CNN's pooled map (not normalised)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            outputs = self.model(pixel_values=pixel_values)
            if outputs.last_hidden_state.ndim == 3:
                return outputs.last_hidden_state[:, 0]
            return outputs.pooler_output.flatten(1)

    class ClipImage(torch.nn.Module):
        """Vision tower + visual_projection: the embeds that similarity is computed on."""

        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return features_of(self.model.get_image_features(pixel_values=pixel_values))

    class ClipText(torch.nn.Module):
        """Text tower + text_projection."""

        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return features_of(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    if task == "zero-shot-image-classification":
        return {"image": ClipImage().eval(), "text": ClipText().eval()}
    if task == "image-classification":
        return {"model": Logits().eval()}
    return {"model": Features().eval()}


def _output_name(graph: str, task: str) -> str:
    if graph == "image":
        return "image_embeds"
    if graph == "text":
        return "text_embeds"
    return "logits" if task == "image-classification" else "features"


def sample_pixel_values(loaded: LoadedModel, batch: int = 2) -> torch.Tensor:
    """A batch of deterministic noise images through the model's own image processor."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    images = [Image.fromarray((rng.rand(48, 56, 3) * 255).astype(np.uint8)) for _ in range(batch)]
    processor = getattr(loaded.processor, "image_processor", loaded.processor)
    return processor(images=images, return_tensors="pt")["pixel_values"].float()


def _sample_inputs(loaded: LoadedModel, graph: str) -> dict[str, torch.Tensor]:
    if graph != "text":
        return {"pixel_values": sample_pixel_values(loaded)}
    encoded = loaded.processor.tokenizer(list(_SAMPLE_TEXTS), return_tensors="pt", padding=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _dynamic_shapes(graph: str) -> tuple[dict[int, Any], ...]:
    import torch

    batch = torch.export.Dim("batch")
    if graph == "text":
        sequence = torch.export.Dim("sequence", max=77)  # CLIP's position table has 77 rows
        return ({0: batch, 1: sequence}, {0: batch, 1: sequence})
    return ({0: batch},)


def _export_graph(module: Any, inputs: dict[str, torch.Tensor], path: Path, output: str, opset: int,
                  external_data: bool) -> None:
    import torch

    # The exporter prints progress lines on stdout; `lmt export --json` must keep stdout to one JSON document.
    progress = io.StringIO()
    try:
        with contextlib.redirect_stdout(progress), torch.no_grad(), warnings.catch_warnings():
            # torch.export's own deprecation and axis-renaming notices: nothing a caller can act on
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
            torch.onnx.export(
                module, tuple(inputs.values()), str(path), input_names=list(inputs), output_names=[output],
                opset_version=opset, dynamo=True, dynamic_shapes=_dynamic_shapes(path.stem),
                external_data=external_data, verbose=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types; all mean the same to the user
        logger.debug("exporter output:\n%s", progress.getvalue())
        raise LmtError(
            f"torch.onnx.export failed on the '{path.stem}' graph: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}",
            f"导出 '{path.stem}' 计算图时 torch.onnx.export 失败：{type(exc).__name__}",
        ) from exc
    logger.debug("exporter output:\n%s", progress.getvalue())


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns about unused initialisers on every exported graph
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | Path, inputs: dict[str, Any]) -> np.ndarray:
    """Run an exported graph on CPU with onnxruntime; ``inputs`` maps input names to arrays or tensors."""
    import numpy as np

    feed = {name: np.asarray(value.numpy() if hasattr(value, "numpy") else value) for name, value in inputs.items()}
    return _session(Path(path)).run(None, feed)[0]


def _specs(values: list[Any]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        shape = tuple(dim if isinstance(dim, int) else str(dim) for dim in value.shape)
        specs.append(TensorSpec(value.name, shape, value.type.removeprefix("tensor(").removesuffix(")")))
    return tuple(specs)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    import numpy as np

    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _quantize(path: Path, quantize: str, external_data: bool) -> Path:
    target = path.with_name(f"{path.stem}.{quantize}.onnx")
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Dynamic quantisation: int8 weights, activations quantised at run time, so no calibration data needed.
        quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8, use_external_data_format=external_data)
        return target
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError as exc:
            raise missing_dependency("onnxconverter-common", "deploy", "fp16 conversion", "fp16 转换") from exc
    import onnx

    # keep_io_types: callers feed and read float32, as with the fp32 graph; casts sit inside the graph.
    converted = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(converted, str(target), save_as_external_data=external_data)
    return target


def _quantized_diff(path: Path, inputs: dict[str, Any], reference: np.ndarray) -> float | None:
    try:
        return _max_abs_diff(run_onnx(path, inputs), reference)
    except Exception as exc:  # onnxruntime's own error types; fp16 kernels may be missing on this CPU build
        logger.warning("Could not run %s on this machine to check it (%s); its parity is not measured.", path.name, exc)
        return None


def _write_clip_similarity(loaded: LoadedModel, folder: Path) -> str:
    scale = float(loaded.model.logit_scale.detach().exp())
    document = {
        "logit_scale": scale,
        "log_logit_scale": math.log(scale),
        "normalize": "l2",
        "formula": "logits_per_image = logit_scale * (image_embeds / ||image_embeds||) @ "
                   "(text_embeds / ||text_embeds||).T",
        "image_graph": "image.onnx", "text_graph": "text.onnx",
        "note": "The graphs output projected, unnormalised embeds: L2-normalise each row before the dot product.",
    }
    (folder / CLIP_SIMILARITY).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return CLIP_SIMILARITY


def _labels(loaded: LoadedModel, task: str) -> tuple[str, ...] | None:
    if task != "image-classification":
        return None
    id2label = loaded.model.config.id2label
    return tuple(str(id2label[i]) for i in range(len(id2label)))


def export_onnx(
    model: str,
    *,
    weights: str = "real",
    out: str | Path,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Export ``model`` (registry name, Hub id or local folder) to ONNX files in ``out`` (new or empty folder).

    Every graph has a dynamic batch axis (and CLIP's text graph a dynamic sequence axis, up to 77 tokens), and is
    run with onnxruntime right after export on a sample batch of 2: ``max_abs_diff`` is its distance from PyTorch.
    ``quantize="int8"`` adds ``<graph>.int8.onnx`` (dynamic quantisation, int8 weights); ``"fp16"`` adds
    ``<graph>.fp16.onnx`` (float16 weights, float32 inputs/outputs), meant for GPUs.
    """
    import torch

    from lmt.loading import load

    _check_quantize(quantize)
    _import_backends()
    _check_opset(opset)
    folder = _check_out(out)
    family, task = _family_and_task(model, weights)
    loaded = load(model, task=task, weights=weights, device="cpu", dtype="float32")
    external_data = loaded.num_bytes > _EXTERNAL_DATA_BYTES
    folder.mkdir(parents=True, exist_ok=True)

    graphs = []
    for name, module in _graph_modules(loaded, task).items():
        inputs = _sample_inputs(loaded, name)
        output = _output_name(name, task)
        path = folder / f"{name}.onnx"
        logger.info("Exporting the '%s' graph of %s to %s", name, loaded.name, path)
        _export_graph(module, inputs, path, output, opset, external_data)
        with torch.no_grad():
            reference = module(**inputs).numpy()
        session = _session(path)
        diff = _max_abs_diff(session.run(None, {k: v.numpy() for k, v in inputs.items()})[0], reference)
        quantized = _quantize(path, quantize, external_data) if quantize else None
        graphs.append(ExportedGraph(
            name=name, file=path.name, inputs=_specs(session.get_inputs()), outputs=_specs(session.get_outputs()),
            max_abs_diff=diff, quantized_file=quantized.name if quantized else None,
            quantized_max_abs_diff=_quantized_diff(quantized, inputs, reference) if quantized else None,
        ))

    if family == "clip":
        _write_clip_similarity(loaded, folder)
    loaded.processor.save_pretrained(folder)  # the preprocessing (and tokenizer) the graphs expect
    # sizes: every file written so far; the manifest itself, written last, is the one file not listed
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    result = ExportResult(
        model=loaded.name, family=family, weights=loaded.weights, out_dir=str(folder), opset=opset, quantize=quantize,
        graphs=tuple(graphs), sizes=sizes, labels=_labels(loaded, task),
    )
    (folder / MANIFEST).write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return result
