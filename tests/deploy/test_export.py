"""ONNX export: every exportable family matches PyTorch through onnxruntime; CLIP's graphs carry the projections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lmt
from lmt.cli import main
from lmt.deploy import export_onnx, run_onnx, sample_pixel_values
from lmt.errors import InvalidInputError, UnknownModelError, UnsupportedTaskError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export per model, shared by the tests below (each export takes a few seconds)."""
    cases = {
        "vit-b16": "int8", "resnet-50": "int8", "dinov2-small": None, "dinov2-small-imagenet1k": "fp16",
        "clip-vit-b32": "int8",
    }
    return {
        name: export_onnx(name, weights="tiny", out=tmp_path_factory.mktemp(name) / "onnx", quantize=quantize)
        for name, quantize in cases.items()
    }


def _fresh_batch(loaded, seed: int) -> torch.Tensor:
    """A batch of 3 (not the export's 2): proves the batch axis is dynamic."""
    shape = sample_pixel_values(loaded).shape
    return torch.from_numpy(np.random.RandomState(seed).randn(3, *shape[1:]).astype(np.float32))


@pytest.mark.parametrize(
    ("name", "task", "output"),
    [
        ("vit-b16", "image-classification", "logits"),
        ("resnet-50", "image-classification", "logits"),
        ("dinov2-small-imagenet1k", "image-classification", "logits"),
        ("dinov2-small", "image-feature-extraction", "features"),
    ],
)
def test_single_graph_families_match_torch(exported, name, task, output):
    result = exported[name]
    graph = result.graph("model")
    assert graph.outputs[0].name == output and graph.outputs[0].shape[0] == "batch"
    assert graph.inputs[0].name == "pixel_values" and graph.inputs[0].shape[0] == "batch"
    assert graph.max_abs_diff < TOL
    loaded = lmt.load(name, task=task, weights="tiny", device="cpu", dtype="float32")
    pixel_values = _fresh_batch(loaded, seed=1)
    with torch.no_grad():
        outputs = loaded.model(pixel_values=pixel_values)
    expected = outputs.logits if output == "logits" else outputs.last_hidden_state[:, 0]
    got = run_onnx(f"{result.out_dir}/model.onnx", {"pixel_values": pixel_values})
    assert got.shape == tuple(expected.shape) and np.abs(got - expected.numpy()).max() < TOL
    manifest = json.loads((Path(result.out_dir) / "lmt_export.json").read_text())
    assert manifest["graphs"][0]["max_abs_diff"] == graph.max_abs_diff
    if output == "logits":
        assert result.labels == ("cat", "dog", "car", "bird", "tree")


def _clip_reference(loaded, pixel_values, texts):
    encoded = loaded.processor.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        outputs = loaded.model(pixel_values=pixel_values, **encoded)
    return encoded, outputs


def test_clip_towers_are_projected_and_similarity_matches_torch(exported):
    result = exported["clip-vit-b32"]
    assert {g.name for g in result.graphs} == {"image", "text"}
    text_graph = result.graph("text")
    assert [i.shape for i in text_graph.inputs] == [("batch", "sequence")] * 2
    loaded = lmt.load("clip-vit-b32", weights="tiny", device="cpu", dtype="float32")
    pixel_values = _fresh_batch(loaded, seed=2)
    texts = ["a photo of a cat", "a dog", "a small red car on the road"]
    encoded, outputs = _clip_reference(loaded, pixel_values, texts)

    image_embeds = run_onnx(f"{result.out_dir}/image.onnx", {"pixel_values": pixel_values})
    text_embeds = run_onnx(f"{result.out_dir}/text.onnx", dict(encoded))
    with torch.no_grad():
        projected = loaded.model.get_image_features(pixel_values=pixel_values).pooler_output
        unprojected = loaded.model.vision_model(pixel_values=pixel_values).pooler_output
    assert np.abs(image_embeds - projected.numpy()).max() < TOL
    assert np.abs(image_embeds - unprojected.numpy()).max() > 1e-2  # the bug we grew out of: no projection

    similarity = json.loads((Path(result.out_dir) / "similarity.json").read_text())
    assert similarity["logit_scale"] == pytest.approx(float(loaded.model.logit_scale.detach().exp()))
    image_n = image_embeds / np.linalg.norm(image_embeds, axis=-1, keepdims=True)
    text_n = text_embeds / np.linalg.norm(text_embeds, axis=-1, keepdims=True)
    logits = similarity["logit_scale"] * image_n @ text_n.T
    assert np.abs(logits - outputs.logits_per_image.numpy()).max() < TOL


def test_int8_is_smaller_and_agrees_on_top1(exported):
    for name in ("vit-b16", "resnet-50"):
        result = exported[name]
        graph = result.graph("model")
        assert graph.quantized_file == "model.int8.onnx"
        assert result.sizes["model.int8.onnx"] < result.sizes["model.onnx"]
        loaded = lmt.load(name, task="image-classification", weights="tiny", device="cpu", dtype="float32")
        pixel_values = _fresh_batch(loaded, seed=3)
        fp32 = run_onnx(f"{result.out_dir}/model.onnx", {"pixel_values": pixel_values})
        int8 = run_onnx(f"{result.out_dir}/model.int8.onnx", {"pixel_values": pixel_values})
        assert int8.shape == fp32.shape and np.isfinite(int8).all()
        assert (int8.argmax(-1) == fp32.argmax(-1)).all()
    clip = exported["clip-vit-b32"]
    for graph in ("image", "text"):
        assert clip.sizes[f"{graph}.int8.onnx"] < clip.sizes[f"{graph}.onnx"]


def test_fp16_graph_keeps_float32_io(exported):
    result = exported["dinov2-small-imagenet1k"]
    graph = result.graph("model")
    assert graph.quantized_file == "model.fp16.onnx"
    assert result.sizes["model.fp16.onnx"] < result.sizes["model.onnx"]
    loaded = lmt.load("dinov2-small-imagenet1k", task="image-classification", weights="tiny", device="cpu",
                      dtype="float32")
    out = run_onnx(f"{result.out_dir}/model.fp16.onnx", {"pixel_values": _fresh_batch(loaded, seed=4)})
    assert out.dtype == np.float32 and out.shape == (3, 5)


def test_result_to_dict_is_json(exported):
    document = json.loads(json.dumps(exported["clip-vit-b32"].to_dict()))
    assert document["family"] == "clip" and document["weights"] == "tiny"
    assert set(document["files"]) >= {"image.onnx", "text.onnx", "similarity.json", "tokenizer.json"}


def test_cli_round_trip_json(tmp_path, capsys):
    out = tmp_path / "resnet"
    assert main(["export", "resnet-50", "--tiny", "--out", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)  # stdout holds exactly one JSON document
    assert document["graphs"][0]["max_abs_diff"] < TOL and (out / "model.onnx").is_file()
    assert main(["export", "resnet-50", "--tiny", "--out", str(out), "--json"]) == 2  # not an empty folder
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"] == "InvalidInputError" and "不是空的" in captured.err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["export", "no-such-model", "--tiny"], "Unknown model"),
        (["export", "blip2-opt-2.7b", "--tiny"], "vit, resnet, dinov2, clip, owlv2, owlvit, sam"),
    ],
)
def test_cli_errors_are_bilingual_exit_2(tmp_path, capsys, argv, needle):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "error:" in err and not (tmp_path / "x").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):  # argparse rejects it before any work
        main(["export", "vit-b16", "--tiny", "--quantize", "int4", "--out", str(tmp_path / "x")])
    with pytest.raises(InvalidInputError, match="quantize"):
        export_onnx("vit-b16", weights="tiny", out=tmp_path / "y", quantize="int4")
    with pytest.raises(InvalidInputError, match="opset"):
        export_onnx("vit-b16", weights="tiny", out=tmp_path / "y", opset=11)
    with pytest.raises(UnsupportedTaskError):
        export_onnx("blip2-opt-2.7b", weights="tiny", out=tmp_path / "y")
    with pytest.raises(UnknownModelError):
        export_onnx("no-such-model", weights="tiny", out=tmp_path / "y")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        export_onnx("vit-b16", weights="tiny", out=tmp_path / "file")


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_int8_uses_the_sdk_recipe_on_image_graphs(exported):
    """quantize="int8" gives ViT's graph the fusions + per-channel dynamic recipe of lmt.deploy.optimize (the one
    bench_deploy.py measures), records it in the manifest, and keeps ResNet's convolutions float32 when no
    calibration images were given (dynamic ConvInteger is slower than float32 on a CPU)."""
    vit = exported["vit-b16"]
    recipe = vit.graph("model").quantized_recipe
    assert recipe["method"] == "dynamic" and recipe["fusion"] == "vit" and recipe["per_channel"]
    ops = _op_types(Path(vit.out_dir) / "model.int8.onnx")
    # fused LayerNorm + residual and GELU + bias; ViT's attention stays MatMul + Softmax, its MatMuls quantised
    assert {"SkipLayerNormalization", "BiasGelu", "MatMulInteger"} <= ops, ops
    manifest = json.loads((Path(vit.out_dir) / "lmt_export.json").read_text())
    assert manifest["graphs"][0]["quantized_recipe"] == recipe

    resnet = exported["resnet-50"].graph("model").quantized_recipe
    assert resnet["method"] == "dynamic" and resnet["op_types"] == ["MatMul", "Gemm"]
    ops = _op_types(Path(exported["resnet-50"].out_dir) / "model.int8.onnx")
    assert "Conv" in ops and not {"ConvInteger", "QLinearConv"} & ops

    clip = exported["clip-vit-b32"]
    assert clip.graph("image").quantized_recipe["fusion"] == "clip"
    # CLIP's eager attention export fuses into one Attention node per layer, which dynamic INT8 makes QAttention
    assert "QAttention" in _op_types(Path(clip.out_dir) / "image.int8.onnx")
    assert clip.graph("text").quantized_recipe is None  # plain dynamic INT8 weights


def test_cli_calibrated_resnet_int8_is_static_qlinearconv(tmp_path, capsys):
    from lmt.deploy.bench import calibration_folder

    images = Path(__file__).resolve().parents[2] / "examples" / "images"
    out = tmp_path / "resnet"
    assert main(["export", "resnet-50", "--tiny", "--quantize", "int8", "--calibration", str(images),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.int8.onnx" in printed and "(static INT8)" in printed
    manifest = json.loads((out / "lmt_export.json").read_text())
    recipe = manifest["graphs"][0]["quantized_recipe"]
    assert recipe["method"] == "static" and recipe["calibration"] == str(len(calibration_folder(images)))
    assert "QLinearConv" in _op_types(out / "model.int8.onnx")
    loaded = lmt.load("resnet-50", task="image-classification", weights="tiny", device="cpu", dtype="float32")
    pixel_values = _fresh_batch(loaded, seed=5)
    fp32 = run_onnx(out / "model.onnx", {"pixel_values": pixel_values})
    int8 = run_onnx(out / "model.int8.onnx", {"pixel_values": pixel_values})
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    assert np.corrcoef(int8.ravel(), fp32.ravel())[0, 1] > 0.9  # quantisation noise, not garbage
