"""ONNX export of OWLv2 (text + detector graphs) and SAM (image encoder + prompt decoder): parity with PyTorch on
batch and query counts other than the export sample's, quantised files, and SAM re-prompting on one stored image
embedding."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lmt
from lmt.cli import main
from lmt.deploy.export import (
    _quantize,
    _sam_decode_all,
    run_onnx_outputs,
    sam_decoder_prompts,
    sam_mask_candidates,
)
from lmt.deploy.runtime import onnx_session
from lmt.errors import InvalidInputError
from lmt.tasks.base import features_of
from lmt.tasks.detect import class_logits_and_boxes

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-4
# SamModel.forward embeds clicks and box corners in two matmuls, the graph in one; on the tiny SAM (positional
# frequencies 16x the real model's) that one-ulp difference reaches a few 1e-4 in the mask logits. A wrong prompt
# layout (a missing padding point, a swapped label) moves them by whole units, so this still pins the layout.
SAM_VS_TRANSFORMERS_TOL = 1e-3
CAT = Path("examples/images/cat.png")


def _cli_export(argv: list[str]) -> tuple[dict, str]:
    """Run `lmt export ...`; the manifest it wrote and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", *argv]) == 0
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "lmt_export.json").read_text(encoding="utf-8")), printed.getvalue()


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    out = tmp_path_factory.mktemp("owl") / "onnx"
    return _cli_export(["owlv2-b16", "--tiny", "--format", "onnx", "--quantize", "int8", "--out", str(out)])


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    out = tmp_path_factory.mktemp("sam") / "onnx"
    manifest, printed = _cli_export(["sam-vit-base", "--tiny", "--quantize", "int8", "--out", str(out), "--json"])
    assert json.loads(printed) == manifest  # --json prints exactly the manifest
    return manifest


@pytest.fixture(scope="module")
def owl_model():
    return lmt.load("owlv2-b16", weights="tiny", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def sam_model():
    return lmt.load("sam-vit-base", weights="tiny", device="cpu", dtype="float32")


def _graphs(manifest: dict) -> dict[str, dict]:
    return {graph["name"]: graph for graph in manifest["graphs"]}


def _shapes(specs: list[dict]) -> dict[str, list]:
    return {spec["name"]: spec["shape"] for spec in specs}


def _path(manifest: dict, file: str) -> Path:
    return Path(manifest["out_dir"]) / file


# ---- OWLv2 --------------------------------------------------------------------------------------------------------
def test_owl_graphs_and_their_export_parity(owl):
    manifest, printed = owl
    graphs = _graphs(manifest)
    assert set(graphs) == {"text", "detector"} and manifest["family"] == "owlv2"
    assert _shapes(graphs["text"]["inputs"]) == {"input_ids": ["batch", "sequence"],
                                                 "attention_mask": ["batch", "sequence"]}
    assert _shapes(graphs["detector"]["inputs"]) == {"pixel_values": ["batch", 3, 64, 64], "query_embeds": ["queries", 32]}
    assert _shapes(graphs["detector"]["outputs"]) == {"logits": ["batch", 64, "queries"], "pred_boxes": ["batch", 64, 4]}
    for graph in graphs.values():
        assert set(graph["max_abs_diffs"]) == {spec["name"] for spec in graph["outputs"]}
        assert max(graph["max_abs_diffs"].values()) == graph["max_abs_diff"] < TOL
        assert graph["quantized_file"] in manifest["sizes"]
    assert "detector.onnx: logits['batch', 64, 'queries'], pred_boxes['batch', 64, 4]" in printed
    assert {"tokenizer.json", "processor_config.json"} <= set(manifest["files"])


def test_owl_graphs_match_the_whole_model_on_new_axis_sizes(owl, owl_model):
    """5 queries and 3 images (the export saw 2 and 2), against Owlv2ForObjectDetection.forward itself."""
    manifest, _ = owl
    queries = ["cat", "a photo of a dog", "car", "a small red bus on a road", "tree"]
    text = owl_model.processor.tokenizer(queries, return_tensors="pt", padding=True, truncation=True)
    images = [Image.open(CAT).convert("RGB"), Image.fromarray(np.full((30, 90, 3), 200, np.uint8)),
              Image.fromarray((np.random.RandomState(5).rand(70, 40, 3) * 255).astype(np.uint8))]
    pixel_values = owl_model.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    query_embeds = run_onnx_outputs(_path(manifest, "text.onnx"), dict(text))["text_embeds"]
    detector = run_onnx_outputs(_path(manifest, "detector.onnx"),
                                {"pixel_values": pixel_values, "query_embeds": query_embeds})
    with torch.no_grad():
        expected_queries = features_of(owl_model.model.base_model.get_text_features(**text))
        outputs = owl_model.model(
            input_ids=text["input_ids"].repeat(3, 1), attention_mask=text["attention_mask"].repeat(3, 1),
            pixel_values=pixel_values,
        )
    assert query_embeds.shape == (5, 32) and np.abs(query_embeds - expected_queries.numpy()).max() < TOL
    assert detector["logits"].shape == (3, 64, 5)
    assert np.abs(detector["logits"] - outputs.logits.numpy()).max() < TOL
    assert np.abs(detector["pred_boxes"] - outputs.pred_boxes.numpy()).max() < TOL


def test_owl_int8_graphs_run(owl, owl_model):
    manifest, _ = owl
    text = owl_model.processor.tokenizer(["cat", "dog", "car"], return_tensors="pt", padding=True)
    pixel_values = torch.from_numpy(np.random.RandomState(2).randn(3, 3, 64, 64).astype(np.float32))
    query_embeds = run_onnx_outputs(_path(manifest, "text.int8.onnx"), dict(text))["text_embeds"]
    int8 = run_onnx_outputs(_path(manifest, "detector.int8.onnx"),
                            {"pixel_values": pixel_values, "query_embeds": query_embeds})
    with torch.no_grad():
        logits, boxes = class_logits_and_boxes(owl_model.model, pixel_values, torch.from_numpy(query_embeds))
    assert int8["logits"].shape == (3, 64, 3) and np.isfinite(int8["logits"]).all()
    assert ((int8["pred_boxes"] >= 0) & (int8["pred_boxes"] <= 1)).all()  # still sigmoid outputs
    assert np.abs(int8["pred_boxes"] - boxes.numpy()).max() < 0.05  # int8 noise, not garbage
    assert manifest["sizes"]["detector.int8.onnx"] < manifest["sizes"]["detector.onnx"]
    assert all(g["quantized_max_abs_diff"] is not None for g in manifest["graphs"])


# ---- SAM ----------------------------------------------------------------------------------------------------------
def test_sam_graphs_and_their_export_parity(sam):
    graphs = _graphs(sam)
    assert set(graphs) == {"image_encoder", "prompt_decoder"} and sam["family"] == "sam"
    assert _shapes(graphs["image_encoder"]["outputs"]) == {"image_embeddings": ["batch", 32, 8, 8]}
    assert _shapes(graphs["prompt_decoder"]["inputs"]) == {
        "image_embeddings": ["batch", 32, 8, 8], "input_points": ["batch", "objects", "points", 2],
        "input_labels": ["batch", "objects", "points"],
    }
    assert _shapes(graphs["prompt_decoder"]["outputs"]) == {
        "pred_masks": ["batch", "objects", 4, 32, 32], "iou_scores": ["batch", "objects", 4],
    }
    for graph in graphs.values():
        assert max(graph["max_abs_diffs"].values()) == graph["max_abs_diff"] < TOL
        assert (Path(sam["out_dir"]) / graph["quantized_file"]).is_file()


def _transformers_decode(sam_model, embeddings, multimask, **prompts):
    tensors = {name: torch.as_tensor(np.asarray(value)) for name, value in prompts.items()}
    with torch.no_grad():
        outputs = sam_model.model(image_embeddings=embeddings, multimask_output=multimask, **tensors)
    return outputs.pred_masks.numpy(), outputs.iou_scores.numpy()


def test_sam_reprompting_reuses_one_encoder_output(sam, sam_model):
    """The encoder graph runs once; two different prompts then go through the decoder graph on its output."""
    encoder = onnx_session(_path(sam, "image_encoder.onnx"), ["CPUExecutionProvider"])
    decoder = onnx_session(_path(sam, "prompt_decoder.onnx"), ["CPUExecutionProvider"])
    inputs = sam_model.processor.image_processor(images=Image.open(CAT).convert("RGB"), return_tensors="pt")
    (embeddings,) = encoder.run(None, {"pixel_values": inputs["pixel_values"].numpy()})
    with torch.no_grad():
        torch_embeddings = sam_model.model.get_image_embeddings(inputs["pixel_values"])
    assert np.abs(embeddings - torch_embeddings.numpy()).max() < TOL

    one_click = {"input_points": [[[[30.0, 20.0]]]], "input_labels": [[[1]]]}
    click_and_box = {"input_points": [[[[30.0, 20.0], [50.0, 40.0]]]], "input_labels": [[[1, 0]]],
                     "input_boxes": [[[5.0, 4.0, 60.0, 42.0]]]}
    results = []
    for prompts, multimask in ((one_click, True), (click_and_box, False)):
        points, labels = sam_decoder_prompts(**prompts)
        masks, scores = decoder.run(None, {"image_embeddings": embeddings, "input_points": points,
                                           "input_labels": labels})
        masks, scores = sam_mask_candidates(masks, scores, multimask)
        with torch.no_grad():  # the torch module the graph was exported from, on the same stored embedding
            module = _sam_decode_all(sam_model.model, *(torch.from_numpy(a) for a in (embeddings, points, labels)))
        module_masks, module_scores = sam_mask_candidates(*(t.numpy() for t in module), multimask)
        assert np.abs(masks - module_masks).max() < TOL and np.abs(scores - module_scores).max() < TOL
        expected_masks, expected_scores = _transformers_decode(sam_model, torch_embeddings, multimask, **prompts)
        assert masks.shape == expected_masks.shape and scores.shape == expected_scores.shape
        assert np.abs(masks - expected_masks).max() < SAM_VS_TRANSFORMERS_TOL
        assert np.abs(scores - expected_scores).max() < SAM_VS_TRANSFORMERS_TOL
        results.append(masks)
    assert results[0].shape[2] == 3 and results[1].shape[2] == 1
    assert np.abs(results[0][:, :, :1] - results[1]).max() > 0.1  # two prompts, two answers


@pytest.mark.parametrize(
    ("prompts", "multimask"),
    [
        ({"input_points": [[[[10.0, 12.0]]]], "input_labels": [[[1]]]}, True),
        ({"input_points": [[[[10.0, 12.0], [40.0, 50.0], [33.0, 7.0]]]], "input_labels": [[[1, 0, 1]]]}, False),
        ({"input_boxes": [[[2.0, 3.0, 30.0, 40.0], [20.0, 10.0, 63.0, 60.0], [0.0, 0.0, 64.0, 64.0]]]}, False),
        ({"input_points": [[[[10.0, 12.0]]]], "input_labels": [[[0]]], "input_boxes": [[[2.0, 3.0, 30.0, 40.0]]]}, True),
        # the automatic grid's layout: one click per object, many objects
        ({"input_points": (np.random.RandomState(3).rand(1, 6, 1, 2) * 64).tolist(), "input_labels": [[[1]] * 6]},
         True),
    ],
    ids=["one-click", "clicks", "three-boxes", "click-and-box", "grid"],
)
def test_sam_decoder_layout_matches_transformers_prompt_encoder(sam, sam_model, prompts, multimask):
    """Every prompt kind the task call sends, through the one decoder graph, against SamModel.forward."""
    embeddings = torch.from_numpy(np.random.RandomState(4).randn(1, 32, 8, 8).astype(np.float32))
    points, labels = sam_decoder_prompts(**prompts)
    outputs = run_onnx_outputs(_path(sam, "prompt_decoder.onnx"),
                               {"image_embeddings": embeddings, "input_points": points, "input_labels": labels})
    masks, scores = sam_mask_candidates(outputs["pred_masks"], outputs["iou_scores"], multimask)
    expected_masks, expected_scores = _transformers_decode(sam_model, embeddings, multimask, **prompts)
    assert masks.shape == expected_masks.shape
    assert np.abs(masks - expected_masks).max() < SAM_VS_TRANSFORMERS_TOL
    assert np.abs(scores - expected_scores).max() < SAM_VS_TRANSFORMERS_TOL


def test_sam_decoder_new_axis_sizes_match_torch_and_per_image_runs(sam, sam_model):
    """3 images x 2 objects x 3 points (the export saw 2 x 3 x 4): against the torch module the graph was exported
    from, and against three runs of one image each."""
    rng = np.random.RandomState(6)
    embeddings = rng.randn(3, 32, 8, 8).astype(np.float32)
    points = (rng.rand(3, 2, 3, 2) * 64).astype(np.float32)
    labels = np.array([[[1, 0, -1], [2, 3, -1]]] * 3, dtype=np.int64)
    path = _path(sam, "prompt_decoder.onnx")
    batched = run_onnx_outputs(path, {"image_embeddings": embeddings, "input_points": points, "input_labels": labels})
    with torch.no_grad():
        masks, scores = _sam_decode_all(sam_model.model, *(torch.from_numpy(a) for a in (embeddings, points, labels)))
    assert batched["pred_masks"].shape == (3, 2, 4, 32, 32)
    assert np.abs(batched["pred_masks"] - masks.numpy()).max() < TOL
    assert np.abs(batched["iou_scores"] - scores.numpy()).max() < TOL
    for i in range(3):
        single = run_onnx_outputs(path, {"image_embeddings": embeddings[i : i + 1], "input_points": points[i : i + 1],
                                         "input_labels": labels[i : i + 1]})
        assert np.abs(batched["pred_masks"][i] - single["pred_masks"][0]).max() < TOL


def test_sam_quantised_graphs_run(sam, tmp_path):
    rng = np.random.RandomState(7)
    pixel_values = rng.randn(2, 3, 64, 64).astype(np.float32)
    (embeddings,) = run_onnx_outputs(_path(sam, "image_encoder.int8.onnx"), {"pixel_values": pixel_values}).values()
    points, labels = sam_decoder_prompts(input_points=[[[[10.0, 20.0]]]] * 2, input_labels=[[[1]]] * 2)
    feed = {"image_embeddings": embeddings, "input_points": points, "input_labels": labels}
    int8 = run_onnx_outputs(_path(sam, "prompt_decoder.int8.onnx"), feed)
    assert embeddings.shape == (2, 32, 8, 8) and int8["pred_masks"].shape == (2, 1, 4, 32, 32)
    assert np.isfinite(int8["pred_masks"]).all() and np.isfinite(int8["iou_scores"]).all()
    # fp16 (for GPUs) from the same fp32 file: float32 in and out, casts inside
    shutil.copy(_path(sam, "prompt_decoder.onnx"), tmp_path / "prompt_decoder.onnx")
    fp16_path, _ = _quantize(tmp_path / "prompt_decoder.onnx", "fp16", False)
    fp16 = run_onnx_outputs(fp16_path, feed)
    assert fp16["pred_masks"].dtype == np.float32 and fp16["pred_masks"].shape == (2, 1, 4, 32, 32)


# ---- the prompt layout helpers ------------------------------------------------------------------------------------
def test_sam_decoder_prompts_layout():
    points, labels = sam_decoder_prompts(input_points=[[[[1, 2], [3, 4]]]], input_labels=[[[1, 0]]])
    assert points.tolist() == [[[[1, 2], [3, 4], [0, 0]]]] and labels.tolist() == [[[1, 0, -1]]]
    points, labels = sam_decoder_prompts(input_points=[[[[1, 2]]]], input_boxes=[[[5, 6, 7, 8]]])
    assert points.tolist() == [[[[1, 2], [5, 6], [7, 8]]]] and labels.tolist() == [[[1, 2, 3]]]  # no labels: include
    points, labels = sam_decoder_prompts(input_boxes=[[[0, 0, 9, 9], [1, 1, 5, 5]]])
    assert points.shape == (1, 2, 2, 2) and labels.tolist() == [[[2, 3], [2, 3]]]
    assert points.dtype == np.float32 and labels.dtype == np.int64
    with pytest.raises(InvalidInputError, match="same objects"):
        sam_decoder_prompts(input_points=[[[[1, 2]]]], input_labels=[[[1]]], input_boxes=[[[0, 0, 9, 9]] * 2])
    with pytest.raises(InvalidInputError, match="points, boxes"):
        sam_decoder_prompts()
    masks, scores = np.zeros((1, 2, 4, 3, 3)), np.arange(8).reshape(1, 2, 4)
    assert sam_mask_candidates(masks, scores, True)[1].tolist() == [[[1, 2, 3], [5, 6, 7]]]
    assert sam_mask_candidates(masks, scores, False)[1].tolist() == [[[0], [4]]]
