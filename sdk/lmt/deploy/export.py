"""Export a registered model to ONNX, check it against PyTorch on the spot, optionally quantise it.

>>> from lmt.deploy import export_onnx
>>> result = export_onnx("vit-b16", weights="tiny", out="build/vit-onnx", quantize="int8")
>>> result.graphs[0].max_abs_diff < 1e-4
True

Families exported today, and their graphs (every graph has a dynamic batch axis):

- ViT, ResNet, DINOv2: ``model.onnx`` -> ``logits``, or ``features`` for a backbone without a head.
- CLIP: ``image.onnx`` -> ``image_embeds`` and ``text.onnx`` -> ``text_embeds``, both *after* the projection
  layers, plus ``similarity.json`` with the logit scale.
- OWLv2, OWL-ViT: ``text.onnx`` (``input_ids``, ``attention_mask`` -> ``text_embeds``, dynamic query and token
  axes) and ``detector.onnx`` (``pixel_values``, ``query_embeds`` -> ``logits`` (batch, patches, queries),
  ``pred_boxes`` (batch, patches, 4), dynamic batch and query axes). Two graphs, not one graph from text and
  pixels, because that is how ``ZeroShotObjectDetection`` runs: a query set is encoded once and cached, then
  every image reuses it. OWLv2's objectness head and image-guided queries are not exported (the task call does
  not use them).
- SAM: ``image_encoder.onnx`` (``pixel_values`` -> ``image_embeddings``) and ``prompt_decoder.onnx``
  (``image_embeddings``, ``input_points`` (batch, objects, points, 2), ``input_labels`` (batch, objects, points)
  -> ``pred_masks`` (batch, objects, 4, h, w) low-resolution logits, ``iou_scores`` (batch, objects, 4)). The
  encoder is the expensive part and runs once per image; each new prompt runs only the small decoder graph on
  the stored embedding, so re-prompting stays cheap. SAM-HQ, which also needs the encoder's intermediate
  embeddings, is a different family and not covered.

SAM's decoder graph takes one fixed prompt layout, the one of the original SAM ONNX export: boxes are two corner
points labelled 2 and 3, so points, boxes, points plus a box and the automatic grid all go through the same
graph. An object's clicks (labels 1/0) come first, then its box corners, or, with no box, one padding point
labelled -1 (SamPromptEncoder adds the same one); -10 marks an ignored slot, as in transformers.
:func:`sam_decoder_prompts` turns SamModel's ``input_points``/``input_labels``/``input_boxes`` into this layout.
The graph returns all four mask tokens' outputs (SamModel chooses mask 0 or masks 1-3 with a Python bool, which
a graph would freeze); :func:`sam_mask_candidates` picks as ``multimask_output`` would. On the tiny SAM the graph
agrees with SamModel to about 1e-4 rather than 1e-6: its random positional-encoding frequencies are 16x SAM's, so
a one-ulp difference in the coordinate projection (points and boxes in one matmul instead of two) shows.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmt.errors import InvalidInputError, LmtError, UnsupportedTaskError, missing_dependency

if TYPE_CHECKING:
    import torch

    from lmt.loading import LoadedModel

logger = logging.getLogger(__name__)

#: Families that export today (see the module docstring for their graphs).
CLASSIFIER_FAMILIES = ("vit", "resnet", "dinov2")
DETECTOR_FAMILIES = ("owlv2", "owlvit")
SEGMENTER_FAMILIES = ("sam",)
EXPORTABLE_FAMILIES = (*CLASSIFIER_FAMILIES, "clip", *DETECTOR_FAMILIES, *SEGMENTER_FAMILIES)
QUANTIZE_CHOICES = ("int8", "fp16")
DEFAULT_OPSET = 18  # the lowest opset the dynamo exporter writes; onnxruntime >= 1.14 runs it
MANIFEST = "lmt_export.json"
#: The image graph of each family that ``quantize="int8"`` gives the SDK's INT8 recipe (``lmt.deploy.optimize``:
#: transformer fusions + per-channel dynamic INT8, or calibrated static INT8 for a CNN); other graphs get plain
#: dynamic INT8 weights.
INT8_RECIPE_GRAPHS = {"vit": "model", "dinov2": "model", "clip": "image", "resnet": "model"}
CLIP_SIMILARITY = "similarity.json"
# Protobuf cannot hold a file over 2 GB: larger models keep their weights in a side file (<name>.onnx.data).
_EXTERNAL_DATA_BYTES = 1_500_000_000
# Sample texts for the text graphs: different lengths, so the batch is padded as in real use.
_SAMPLE_TEXTS = ("a photo of a cat", "a dog")
#: Labels of SAM's decoder graph besides 1 (include) and 0 (exclude): the padding point SamPromptEncoder adds to
#: clicks without a box, box corners, and transformers' "ignore this slot" label for ragged point lists.
SAM_PAD, SAM_BOX_TOP_LEFT, SAM_BOX_BOTTOM_RIGHT, SAM_IGNORE = -1, 2, 3, -10


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
    #: The same distances per output (``max_abs_diff`` is the largest): SAM's mask logits and IoU scores, OWL's
    #: logits and boxes live on different scales.
    max_abs_diffs: dict[str, float] = field(default_factory=dict)
    quantized_max_abs_diffs: dict[str, float] | None = None
    #: How the INT8 graph was made (``lmt.deploy.optimize.Int8Recipe.to_dict()``), None for other quantisations.
    quantized_recipe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "file": self.file, "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs], "max_abs_diff": self.max_abs_diff,
            "quantized_file": self.quantized_file, "quantized_max_abs_diff": self.quantized_max_abs_diff,
            "max_abs_diffs": dict(self.max_abs_diffs),
            "quantized_max_abs_diffs": dict(self.quantized_max_abs_diffs) if self.quantized_max_abs_diffs else None,
            "quantized_recipe": self.quantized_recipe,
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
            f"{', '.join(EXPORTABLE_FAMILIES)}.",
            f"暂不支持导出{'模型族 ' + family.name if family is not None else '该模型'}为 ONNX。目前可导出的模型族："
            f"{'、'.join(EXPORTABLE_FAMILIES)}。",
        )
    if family.name == "clip":
        return family.name, "zero-shot-image-classification"
    if family.name in DETECTOR_FAMILIES:
        return family.name, "zero-shot-object-detection"
    if family.name in SEGMENTER_FAMILIES:
        return family.name, "mask-generation"
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
@dataclass(frozen=True)
class _GraphPlan:
    """One graph to write: the torch module, a sample per input name (passed positionally, in this order), its
    output names and each input's dynamic axes."""

    name: str
    module: Any
    inputs: dict[str, Any]
    outputs: tuple[str, ...]
    dynamic_shapes: tuple[dict[int, Any], ...]

    def reference(self) -> dict[str, np.ndarray]:
        """The module's outputs on the sample, by output name: what onnxruntime must reproduce."""
        import torch

        with torch.no_grad():
            values = self.module(*self.inputs.values())
        values = values if isinstance(values, tuple) else (values,)
        return {name: value.numpy() for name, value in zip(self.outputs, values, strict=True)}


def _wrap(forward: Any, hf_model: Any) -> Any:
    """A module holding ``hf_model`` whose forward is ``forward(model, *inputs)``: the graph boundary we choose."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, *inputs: Any) -> Any:
            return forward(self.model, *inputs)

    return Graph().eval()


def _graph_plans(loaded: LoadedModel, family: str, task: str) -> list[_GraphPlan]:
    if family == "clip":
        return _clip_plans(loaded)
    if family in DETECTOR_FAMILIES:
        return _detector_plans(loaded)
    if family in SEGMENTER_FAMILIES:
        return _sam_plans(loaded)
    return [_classifier_plan(loaded, task)]


def _batch_axis() -> dict[int, Any]:
    import torch

    return {0: torch.export.Dim("batch")}


def _classifier_plan(loaded: LoadedModel, task: str) -> _GraphPlan:
    """``logits`` for a model with a head; else ``features`` as ``lmt`` embeds images: the CLS token after the
    final norm, or a CNN's pooled map (not normalised)."""

    def logits(model: Any, pixel_values: Any) -> Any:
        return model(pixel_values=pixel_values).logits

    def features(model: Any, pixel_values: Any) -> Any:
        outputs = model(pixel_values=pixel_values)
        if outputs.last_hidden_state.ndim == 3:
            return outputs.last_hidden_state[:, 0]
        return outputs.pooler_output.flatten(1)

    has_head = task == "image-classification"
    return _GraphPlan(
        "model", _wrap(logits if has_head else features, loaded.model),
        {"pixel_values": sample_pixel_values(loaded)}, ("logits",) if has_head else ("features",), (_batch_axis(),),
    )


def _text_plan(loaded: LoadedModel, text_features: Any, max_tokens: int) -> _GraphPlan:
    """Text tower + projection (CLIP's ``text_projection``, OWL's): ``text_embeds``, not normalised."""
    import torch

    encoded = loaded.processor.tokenizer(list(_SAMPLE_TEXTS), return_tensors="pt", padding=True)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_tokens)
    return _GraphPlan(
        "text", _wrap(text_features, loaded.model),
        {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}, ("text_embeds",),
        ({0: batch, 1: sequence}, {0: batch, 1: sequence}),
    )


def _clip_plans(loaded: LoadedModel) -> list[_GraphPlan]:
    """Both towers *with* their projections: the embeds that similarity is computed on."""
    from lmt.tasks.base import features_of

    def image_features(model: Any, pixel_values: Any) -> Any:
        return features_of(model.get_image_features(pixel_values=pixel_values))

    def text_features(model: Any, input_ids: Any, attention_mask: Any) -> Any:
        return features_of(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    image = _GraphPlan(
        "image", _wrap(image_features, loaded.model), {"pixel_values": sample_pixel_values(loaded)},
        ("image_embeds",), (_batch_axis(),),
    )
    # the sequence axis ends where the position table does (77 tokens for CLIP)
    return [image, _text_plan(loaded, text_features, loaded.config.text_config.max_position_embeddings)]


def _detector_plans(loaded: LoadedModel) -> list[_GraphPlan]:
    """OWLv2 / OWL-ViT: ``text`` (queries -> ``text_embeds``) and ``detector`` (pixels + query embeds -> logits,
    boxes), split where the task call splits them, so that a query set is encoded once and reused."""
    import torch

    from lmt.tasks.base import features_of
    from lmt.tasks.detect import class_logits_and_boxes

    def text_features(model: Any, input_ids: Any, attention_mask: Any) -> Any:
        return features_of(model.base_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    text = _text_plan(loaded, text_features, loaded.config.text_config.max_position_embeddings)
    query_embeds = text.reference()["text_embeds"]
    detector = _GraphPlan(
        "detector", _wrap(class_logits_and_boxes, loaded.model),
        {"pixel_values": sample_pixel_values(loaded), "query_embeds": torch.from_numpy(query_embeds)},
        ("logits", "pred_boxes"), (_batch_axis(), {0: torch.export.Dim("queries")}),
    )
    return [text, detector]


def _sam_plans(loaded: LoadedModel) -> list[_GraphPlan]:
    """SAM: ``image_encoder`` (run once per image) and ``prompt_decoder`` (prompt encoder + mask decoder, run per
    prompt on the stored embedding)."""
    import torch

    def encode(model: Any, pixel_values: Any) -> Any:
        return model.get_image_embeddings(pixel_values)

    encoder = _GraphPlan(
        "image_encoder", _wrap(encode, loaded.model), {"pixel_values": sample_pixel_values(loaded)},
        ("image_embeddings",), (_batch_axis(),),
    )
    embeddings = torch.from_numpy(encoder.reference()["image_embeddings"])
    # 2 images x 3 objects x 4 prompt points, every kind of label: clicks, a pad, box corners, HF's ignore label
    labels = torch.tensor([[1, 0, 1, SAM_PAD], [1, SAM_BOX_TOP_LEFT, SAM_BOX_BOTTOM_RIGHT, SAM_PAD],
                           [SAM_BOX_TOP_LEFT, SAM_BOX_BOTTOM_RIGHT, SAM_IGNORE, SAM_IGNORE]]).repeat(2, 1, 1)
    side = loaded.processor.image_processor.size.get("longest_edge", 1024)
    points = torch.from_numpy(np.random.RandomState(0).rand(2, 3, 4, 2).astype(np.float32) * side)
    batch = torch.export.Dim("batch")  # one object for all three inputs: the same axis, not three equal names
    prompts = {0: batch, 1: torch.export.Dim("objects"), 2: torch.export.Dim("points")}
    decoder = _GraphPlan(
        "prompt_decoder", _wrap(_sam_decode_all, loaded.model),
        {"image_embeddings": embeddings, "input_points": points, "input_labels": labels},
        ("pred_masks", "iou_scores"), ({0: batch}, prompts, prompts),
    )
    return [encoder, decoder]


def _sam_embed_prompts(prompt_encoder: Any, points: Any, labels: Any) -> Any:
    """SamPromptEncoder's point and box embedding in one pass: box corners are points labelled 2 and 3.

    The same arithmetic as transformers' ``_embed_points`` (labels 1, 0, -1, -10) and ``_embed_boxes``.
    """
    import torch

    size = prompt_encoder.input_image_size
    embedded = prompt_encoder.shared_embedding(points + 0.5, (size, size))  # +0.5: the pixel's centre
    labels = labels[..., None]
    embedded = torch.where(labels == SAM_PAD, prompt_encoder.not_a_point_embed.weight, embedded)
    embedded = torch.where(labels == SAM_IGNORE, torch.zeros_like(embedded), embedded)
    for label, embedding in enumerate(prompt_encoder.point_embed):  # 0 exclude, 1 include, 2/3 box corners
        embedded = torch.where(labels == label, embedded + embedding.weight, embedded)
    return embedded


def _sam_decode_all(model: Any, image_embeddings: Any, input_points: Any, input_labels: Any) -> tuple[Any, Any]:
    """SamModel's prompt encoder + SamMaskDecoder.forward, keeping all mask tokens' outputs.

    transformers picks mask 0 or masks 1-3 with a Python bool (``multimask_output``); a graph would be frozen to
    one choice, so this returns all four and :func:`sam_mask_candidates` picks, as the task call asks.
    """
    import torch

    prompt_encoder, decoder = model.prompt_encoder, model.mask_decoder
    batch, channels, height, width = image_embeddings.shape
    objects = input_points.shape[1]
    sparse = _sam_embed_prompts(prompt_encoder, input_points, input_labels)
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, height, width)
    positional = model.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)

    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.repeat(batch, objects, 1, 1), sparse), dim=2).to(decoder.iou_token.weight.dtype)

    def per_object(images: Any) -> Any:
        # = images.repeat_interleave(objects, 0), which the ONNX translation gets wrong for a batch above 1
        return images.unsqueeze(1).expand(-1, objects, -1, -1, -1).reshape(batch * objects, channels, height, width)

    point_out, image_out = decoder.transformer(
        point_embeddings=tokens,
        image_embeddings=per_object(image_embeddings + dense),
        image_positional_embeddings=per_object(positional),
        attention_similarity=None,
        target_embedding=None,
    )
    mask_tokens_out = point_out[:, :, 1 : 1 + decoder.num_mask_tokens, :]
    image_out = image_out.transpose(2, 3).reshape(batch * objects, channels, height, width)
    upscaled = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(image_out)))
    upscaled = decoder.activation(decoder.upscale_conv2(upscaled))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, :, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=2
    )
    _, up_channels, up_height, up_width = upscaled.shape
    upscaled = upscaled.reshape(batch, objects, up_channels, up_height * up_width)
    masks = (hyper_in @ upscaled).reshape(batch, objects, -1, up_height, up_width)
    return masks, decoder.iou_prediction_head(point_out[:, :, 0, :])


# ---- SAM's decoder graph: its prompt layout, and picking masks from its outputs -------------------------------------
def sam_decoder_prompts(
    input_points: Any = None, input_labels: Any = None, input_boxes: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """``prompt_decoder.onnx``'s ``(input_points, input_labels)`` for SamModel's prompt arguments.

    The arguments are as ``SamModel.forward`` takes them, in the model's resized frame: points
    ``(batch, objects, n, 2)`` with labels ``(batch, objects, n)`` (1 include, 0 exclude), boxes
    ``(batch, objects, 4)``. Boxes become two corner points labelled 2 and 3 after an object's clicks; clicks
    without a box get one padding point (label -1), exactly as SamPromptEncoder pads them.

    >>> points, labels = sam_decoder_prompts(input_boxes=[[[10, 20, 30, 40]]])
    >>> points.tolist(), labels.tolist()
    ([[[[10.0, 20.0], [30.0, 40.0]]]], [[[2, 3]]])
    """
    if input_points is None and input_boxes is None:
        raise InvalidInputError(
            "SAM's decoder needs points, boxes or both.", "SAM 的解码器需要点、框或两者。"
        )
    parts, part_labels = [], []
    if input_points is not None:
        points = np.asarray(input_points, dtype=np.float32)
        parts.append(points)
        # no labels: every point includes, as SamModel.forward assumes
        labels = np.ones(points.shape[:-1]) if input_labels is None else input_labels
        part_labels.append(np.asarray(labels, dtype=np.int64).reshape(points.shape[:-1]))
    if input_boxes is not None:
        boxes = np.asarray(input_boxes, dtype=np.float32)
        parts.append(boxes.reshape(*boxes.shape[:2], 2, 2))
        part_labels.append(np.broadcast_to(
            np.array([SAM_BOX_TOP_LEFT, SAM_BOX_BOTTOM_RIGHT], dtype=np.int64), (*boxes.shape[:2], 2)
        ))
    else:
        shape = parts[0].shape[:2]
        parts.append(np.zeros((*shape, 1, 2), dtype=np.float32))
        part_labels.append(np.full((*shape, 1), SAM_PAD, dtype=np.int64))
    if len({part.shape[:2] for part in parts}) != 1:
        raise InvalidInputError(
            "Points and boxes must describe the same objects: give as many boxes as point groups.",
            "点和框必须对应相同的物体：框的数量应与点组的数量相同。",
        )
    return np.concatenate(parts, axis=2), np.concatenate(part_labels, axis=2)


def sam_mask_candidates(pred_masks: Any, iou_scores: Any, multimask: bool) -> tuple[Any, Any]:
    """From the decoder graph's four masks per object: masks 1-3 (``multimask``) or mask 0, as SamModel returns."""
    keep = slice(1, None) if multimask else slice(0, 1)
    return pred_masks[:, :, keep], iou_scores[:, :, keep]


def sample_pixel_values(loaded: LoadedModel, batch: int = 2) -> torch.Tensor:
    """A batch of deterministic noise images through the model's own image processor."""
    from PIL import Image

    rng = np.random.RandomState(0)
    images = [Image.fromarray((rng.rand(48, 56, 3) * 255).astype(np.uint8)) for _ in range(batch)]
    processor = getattr(loaded.processor, "image_processor", loaded.processor)
    return processor(images=images, return_tensors="pt")["pixel_values"].float()


def _drop_debug_metadata(model: Any) -> None:
    """Remove the exporter's per-node debug notes (Python stack traces, module paths, FX node names).

    They are for debugging the exporter, name files on the machine that exported, and on a small model outweigh
    its weights: a tiny ViT's static INT8 graph was 2.3x larger with them than without.
    """
    from onnx_ir.traversal import RecursiveGraphIterator

    for graph in (model.graph, *model.functions.values()):
        for node in RecursiveGraphIterator(graph):
            node.metadata_props.clear()


def _export_graph(plan: _GraphPlan, path: Path, opset: int, external_data: bool) -> None:
    import torch

    # The exporter prints progress lines on stdout; `lmt export --json` must keep stdout to one JSON document.
    progress = io.StringIO()
    try:
        with contextlib.redirect_stdout(progress), torch.no_grad(), warnings.catch_warnings():
            # torch.export's own deprecation and axis-renaming notices: nothing a caller can act on
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
            program = torch.onnx.export(
                plan.module, tuple(plan.inputs.values()), input_names=list(plan.inputs),
                output_names=list(plan.outputs), opset_version=opset, dynamo=True,
                # the wrapper's forward(*inputs) takes its inputs as one positional group
                dynamic_shapes=(plan.dynamic_shapes,), verbose=False,
            )
            _drop_debug_metadata(program.model)
            program.save(str(path), external_data=external_data)
    except Exception as exc:  # the exporter raises many unrelated types; all mean the same to the user
        logger.debug("exporter output:\n%s", progress.getvalue())
        raise LmtError(
            f"torch.onnx.export failed on the '{plan.name}' graph: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}",
            f"导出 '{plan.name}' 计算图时 torch.onnx.export 失败：{type(exc).__name__}",
        ) from exc
    logger.debug("exporter output:\n%s", progress.getvalue())


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns about unused initialisers on every exported graph
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | Path, inputs: dict[str, Any]) -> np.ndarray:
    """Run an exported graph on CPU with onnxruntime; its first output. ``inputs`` maps input names to arrays or
    tensors. For a graph with several outputs (OWL's detector, SAM's decoder) see :func:`run_onnx_outputs`."""
    return next(iter(run_onnx_outputs(path, inputs).values()))


def run_onnx_outputs(path: str | Path, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run an exported graph on CPU with onnxruntime; every output, by name."""
    return _run(_session(Path(path)), inputs)


def _run(session: Any, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    feed = {name: np.asarray(value.numpy() if hasattr(value, "numpy") else value) for name, value in inputs.items()}
    outputs = session.run(None, feed)
    return {spec.name: value for spec, value in zip(session.get_outputs(), outputs, strict=True)}


def _specs(values: list[Any]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        shape = tuple(dim if isinstance(dim, int) else str(dim) for dim in value.shape)
        specs.append(TensorSpec(value.name, shape, value.type.removeprefix("tensor(").removesuffix(")")))
    return tuple(specs)


def _max_abs_diffs(got: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """|onnx - torch| at its largest, per output."""
    return {
        name: float(np.abs(got[name].astype(np.float64) - expected.astype(np.float64)).max())
        for name, expected in reference.items()
    }


@dataclass(frozen=True)
class _Int8Inputs:
    """What the SDK's INT8 recipe needs besides the graph: the family, the model (config, processor) and the
    calibration images of a static recipe (None: a CNN keeps float32 convolutions, see ``int8_recipe``)."""

    family: str
    loaded: LoadedModel
    calibration_images: tuple[Any, ...] | None


def _quantize(
    path: Path, quantize: str, external_data: bool, int8: _Int8Inputs | None = None
) -> tuple[Path, dict[str, Any] | None]:
    """Write ``<graph>.<quantize>.onnx`` next to ``path``; returns it and the INT8 recipe used (if any)."""
    target = path.with_name(f"{path.stem}.{quantize}.onnx")
    if quantize == "int8" and int8 is not None and not external_data:
        from lmt.deploy.optimize import quantize_int8

        quantized = quantize_int8(path, target, family=int8.family, loaded=int8.loaded,
                                  calibration_images=int8.calibration_images, synthetic_calibration=False)
        return target, quantized.recipe.to_dict()
    if quantize == "int8":
        if int8 is not None:  # external data: onnxruntime's transformer optimizer cannot rewrite a graph over 2 GB
            logger.warning("%s has its weights in a side file: plain dynamic INT8 instead of the %s recipe.",
                           path.name, int8.family)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Dynamic quantisation: int8 weights, activations quantised at run time, so no calibration data needed.
        quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8, use_external_data_format=external_data)
        return target, None
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
    return target, None


def _quantized_diffs(path: Path, inputs: dict[str, Any], reference: dict[str, np.ndarray]) -> dict[str, float] | None:
    try:
        return _max_abs_diffs(run_onnx_outputs(path, inputs), reference)
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


def _export_checked(
    plan: _GraphPlan, folder: Path, opset: int, quantize: str | None, external_data: bool,
    int8: _Int8Inputs | None = None,
) -> ExportedGraph:
    """Write one graph, run it with onnxruntime on the sample it was exported with, and quantise it if asked."""
    path = folder / f"{plan.name}.onnx"
    logger.info("Exporting the '%s' graph to %s", plan.name, path)
    _export_graph(plan, path, opset, external_data)
    reference = plan.reference()
    session = _session(path)
    diffs = _max_abs_diffs(_run(session, plan.inputs), reference)
    quantized, recipe = _quantize(path, quantize, external_data, int8) if quantize else (None, None)
    quantized_diffs = _quantized_diffs(quantized, plan.inputs, reference) if quantized else None
    return ExportedGraph(
        name=plan.name, file=path.name, inputs=_specs(session.get_inputs()), outputs=_specs(session.get_outputs()),
        max_abs_diff=max(diffs.values()), quantized_file=quantized.name if quantized else None,
        quantized_max_abs_diff=max(quantized_diffs.values()) if quantized_diffs else None,
        max_abs_diffs=diffs, quantized_max_abs_diffs=quantized_diffs, quantized_recipe=recipe,
    )


def export_onnx(
    model: str,
    *,
    weights: str = "real",
    out: str | Path,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    calibration_images: Sequence[Any] | None = None,
) -> ExportResult:
    """Export ``model`` (registry name, Hub id or local folder) to ONNX files in ``out`` (new or empty folder).

    Every graph has a dynamic batch axis (text graphs also a token axis, OWL's detector a query axis, SAM's decoder
    object and point axes) and is run with onnxruntime right after export on a sample batch of 2:
    ``max_abs_diff`` is its largest distance from PyTorch, ``max_abs_diffs`` the same per output.
    ``quantize="int8"`` adds ``<graph>.int8.onnx``: the image graph of ViT, DINOv2, CLIP and ResNet gets the
    SDK's INT8 recipe (:func:`lmt.deploy.optimize.int8_recipe`; the graphs are then exported with eager attention,
    which onnxruntime fuses into one ``Attention`` node for CLIP), every other graph dynamic INT8 weights. ResNet's fast recipe is
    static and needs ``calibration_images`` (paths or PIL images, a few dozen typical inputs); without them its
    convolutions stay float32. ``"fp16"`` adds ``<graph>.fp16.onnx`` (float16 weights, float32 inputs/outputs),
    meant for GPUs.
    """
    from lmt.loading import load

    _check_quantize(quantize)
    _import_backends()
    _check_opset(opset)
    folder = _check_out(out)
    _, task = _family_and_task(model, weights)
    loaded = load(model, task=task, weights=weights, device="cpu", dtype="float32")
    return export_loaded(loaded, task, out=folder, quantize=quantize, opset=opset,
                         calibration_images=calibration_images)


def export_loaded(
    loaded: LoadedModel,
    task: str,
    *,
    out: str | Path,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    calibration_images: Sequence[Any] | None = None,
) -> ExportResult:
    """Export a model already in memory (on CPU, float32), e.g. one with a LoRA adapter, for ``task``'s graphs.

    ``export_onnx`` does this after loading by name; the ONNX back-end of the task calls uses it directly.
    """
    from lmt.deploy.optimize import eager_attention

    _check_quantize(quantize)
    _import_backends()
    _check_opset(opset)
    folder = _check_out(out)
    family = loaded.family.name if loaded.family is not None else None
    if family not in EXPORTABLE_FAMILIES:
        raise UnsupportedTaskError(
            f"ONNX export of '{loaded.name}' (family {family}) is not available. Families that export today: "
            f"{', '.join(EXPORTABLE_FAMILIES)}.",
            f"暂不支持将 '{loaded.name}'（模型族 {family}）导出为 ONNX。目前可导出的模型族：{'、'.join(EXPORTABLE_FAMILIES)}。",
        )
    external_data = loaded.num_bytes > _EXTERNAL_DATA_BYTES
    folder.mkdir(parents=True, exist_ok=True)

    int8 = None
    if quantize == "int8" and family in INT8_RECIPE_GRAPHS:
        int8 = _Int8Inputs(family, loaded, tuple(calibration_images) if calibration_images else None)
    # An INT8 export writes eager attention (matmul + softmax): for CLIP the pattern onnxruntime fuses into one
    # Attention node (sdpa's export is never fused); the float32 graph computes the same numbers either way.
    with eager_attention(loaded.model) if int8 is not None else contextlib.nullcontext():
        graphs = [
            _export_checked(plan, folder, opset, quantize, external_data,
                            int8 if int8 is not None and plan.name == INT8_RECIPE_GRAPHS[family] else None)
            for plan in _graph_plans(loaded, family, task)
        ]

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
