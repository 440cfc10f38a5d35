"""Compression: torch dynamic INT8, onnxruntime static INT8, magnitude/structured pruning, distillation.

Fast tests run on the tiny random-weight ViT; the slow one trains a tiny ViT on all 1797 digits and checks that
INT8 (dynamic and static) accuracy stays within 1 point of fp32, all measured with onnxruntime on the same images.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import lmt
from lmt.deploy import (
    distill,
    export_onnx,
    kd_loss,
    prune_magnitude,
    prune_structured,
    quantize_onnx_static,
    quantize_torch_dynamic,
    run_onnx,
    sparsity_report,
)
from lmt.errors import InvalidInputError

pytest.importorskip("onnxruntime")


def _vit():
    return lmt.load("vit-b16", task="image-classification", weights="tiny", device="cpu", dtype="float32")


def _noise_images(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)) for _ in range(count)]


def _pixels(loaded, images) -> torch.Tensor:
    return loaded.processor(images=images, return_tensors="pt")["pixel_values"].float()


# ---- torch dynamic INT8 ------------------------------------------------------------------------------------------
def test_torch_dynamic_replaces_linears_and_stays_close():
    loaded = _vit()
    quantized = quantize_torch_dynamic(loaded.model)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert sum(isinstance(m, dynamic) for m in quantized.modules()) == \
        sum(isinstance(m, torch.nn.Linear) for m in loaded.model.modules())
    assert not any(isinstance(m, dynamic) for m in loaded.model.modules())  # the original is untouched
    pixels = _pixels(loaded, _noise_images(8, seed=3))
    with torch.no_grad():
        reference = loaded.model(pixel_values=pixels).logits
        int8 = quantized(pixel_values=pixels).logits
    assert (reference - int8).abs().max() < 0.1 * reference.abs().max()
    assert (reference.argmax(-1) == int8.argmax(-1)).float().mean() >= 0.75


# ---- onnxruntime static INT8 -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory):
    pytest.importorskip("onnxscript")
    return export_onnx("vit-b16", weights="tiny", out=tmp_path_factory.mktemp("vit") / "onnx")


def test_static_int8_is_smaller_and_close(vit_onnx, tmp_path):
    folder = vit_onnx.out_dir
    fp32 = f"{folder}/model.onnx"
    calibration = _noise_images(16, seed=0)
    # the processor as the folder export_onnx wrote it: what a deployment has at hand
    int8 = quantize_onnx_static(fp32, calibration, folder, tmp_path / "static" / "model.int8-static.onnx")
    assert int8.is_file() and int8.stat().st_size < 0.5 * (tmp_path / "../").resolve().joinpath(fp32).stat().st_size
    pixels = _pixels(_vit(), _noise_images(12, seed=1)).numpy()
    reference, quantized = run_onnx(fp32, {"pixel_values": pixels}), run_onnx(int8, {"pixel_values": pixels})
    assert quantized.shape == reference.shape
    assert np.abs(reference - quantized).max() < 0.25 * np.abs(reference).max()
    assert (reference.argmax(-1) == quantized.argmax(-1)).mean() >= 0.75
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format


def test_static_int8_refuses_bad_arguments(vit_onnx, tmp_path):
    fp32 = f"{vit_onnx.out_dir}/model.onnx"
    with pytest.raises(InvalidInputError, match="not found"):
        quantize_onnx_static(tmp_path / "missing.onnx", _noise_images(2, 0), vit_onnx.out_dir, tmp_path / "o.onnx")
    with pytest.raises(InvalidInputError, match="non-empty"):
        quantize_onnx_static(fp32, [], vit_onnx.out_dir, tmp_path / "o.onnx")
    with pytest.raises(InvalidInputError, match="differ"):
        quantize_onnx_static(fp32, _noise_images(2, 0), vit_onnx.out_dir, fp32)
    with pytest.raises(InvalidInputError, match=".onnx"):
        quantize_onnx_static(fp32, _noise_images(2, 0), vit_onnx.out_dir, tmp_path / "o.bin")


# ---- pruning -----------------------------------------------------------------------------------------------------
def test_magnitude_pruning_zeroes_half_of_each_linear():
    model = copy.deepcopy(_vit().model)  # pruning edits in place; lmt.load's model is shared through its cache
    before = sparsity_report(model)
    assert before.fraction < 0.01
    report = prune_magnitude(model, 0.5)
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert [layer.name for layer in report.layers] == [f"{name}.weight" for name in linears]
    for layer in report.layers:
        assert abs(layer.fraction - 0.5) <= 1 / layer.total + 1e-9, layer
    assert abs(report.fraction - 0.5) < 0.01
    assert 0 < report.model_fraction < report.fraction  # norms, biases, embeddings are not pruned
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # made permanent
    # the report reads the model: measuring again gives the same numbers
    assert sparsity_report(model, modules=(torch.nn.Linear,)).to_dict() == report.to_dict()
    assert json.loads(json.dumps(report.to_dict()))["fraction"] == report.fraction


def test_magnitude_pruning_keeps_the_largest_weights():
    layer = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[0.1, -5.0, 0.2, 3.0], [-0.3, 0.05, 4.0, -2.0]]))
    prune_magnitude(layer, 0.5)
    assert layer[0].weight.tolist() == [[0.0, -5.0, 0.0, 3.0], [0.0, 0.0, 4.0, -2.0]]


def test_structured_pruning_zeroes_whole_rows():
    model = copy.deepcopy(_vit().model)
    report = prune_structured(model, 0.25, dim=0)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            zero_rows = int((module.weight == 0).all(dim=1).sum())
            assert zero_rows == round(0.25 * module.weight.shape[0]), name
            # every zero is inside a zero row: whole rows, not scattered weights
            assert int((module.weight == 0).sum()) == zero_rows * module.weight.shape[1], name
    assert 0.2 < report.fraction <= 0.25


@pytest.mark.parametrize("amount", [1.0, -0.1, "half", True, float("nan")])
def test_pruning_refuses_bad_amounts(amount):
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(InvalidInputError, match="amount"):
        prune_magnitude(model, amount)


def test_pruning_refuses_models_without_the_layers():
    with pytest.raises(InvalidInputError, match="no Linear"):
        prune_magnitude(torch.nn.Sequential(torch.nn.ReLU()), 0.5)
    with pytest.raises(InvalidInputError, match="torch.nn.Module"):
        sparsity_report("vit-b16")


# ---- distillation ------------------------------------------------------------------------------------------------
def test_kd_loss_formula():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, -2.0]])
    labels = torch.tensor([0, 1])
    T, alpha = 3.0, 0.7
    p_t = torch.softmax(teacher / T, -1)
    p_s = torch.softmax(student / T, -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(student, labels)
    expected = alpha * T**2 * kl + (1 - alpha) * ce
    assert torch.allclose(kd_loss(student, teacher, labels, T, alpha), expected, atol=1e-6)
    assert torch.allclose(kd_loss(teacher, teacher, labels, T, 1.0), torch.tensor(0.0), atol=1e-6)


def _shape_records(tmp_path, count: int) -> list[dict]:
    """Images that differ by label (a bright square somewhere per label), labelled with the tiny ViT's labels."""
    labels = ("cat", "dog", "car", "bird", "tree")
    rng = np.random.RandomState(0)
    records = []
    for index in range(count):
        label = index % len(labels)
        pixels = (rng.rand(32, 32, 3) * 60).astype(np.uint8)
        pixels[label * 6:label * 6 + 8, 4:28] = 255
        path = tmp_path / f"{index}.png"
        Image.fromarray(pixels).save(path)
        records.append({"image": str(path), "label": labels[label]})
    return records


def test_distillation_lowers_the_kd_loss_and_leaves_the_student_alone(tmp_path):
    teacher = _vit()
    # a student with the same architecture and other random weights (a tiny ResNet student works too, but its
    # convolutions make this test several times slower on a 2-core CPU)
    torch.manual_seed(1)
    student = dataclasses.replace(teacher, model=type(teacher.model)(teacher.model.config).eval())
    original = {k: v.clone() for k, v in student.model.state_dict().items()}
    records = _shape_records(tmp_path, 40)
    result = distill(teacher, student, records, temperature=2.0, alpha=0.9, epochs=3, lr=3e-3, batch_size=8)
    assert result.steps == 15 and len(result.epoch_losses) == 3
    assert result.kd_loss_after < result.kd_loss_before, result.to_dict()
    assert result.evaluated_on == "train"
    assert all(0.0 <= a <= 1.0 for a in (result.teacher_accuracy, result.student_accuracy_before,
                                         result.student_accuracy_after))
    assert all(torch.equal(v, original[k]) for k, v in student.model.state_dict().items())
    assert result.student is not student.model
    assert "student" not in json.loads(json.dumps(result.to_dict()))


def test_distillation_refuses_bad_input(tmp_path):
    teacher = _vit()
    records = _shape_records(tmp_path, 5)
    with pytest.raises(InvalidInputError, match="temperature"):
        distill(teacher, teacher, records, temperature=0)
    with pytest.raises(InvalidInputError, match="alpha"):
        distill(teacher, teacher, records, alpha=1.5)
    with pytest.raises(InvalidInputError, match="not among"):
        distill(teacher, teacher, [{"image": records[0]["image"], "label": "zebra"}])
    with pytest.raises(InvalidInputError, match="records"):
        distill(teacher, teacher, [])
    with pytest.raises(InvalidInputError, match="teacher"):
        distill(teacher.model, teacher, records)


# ---- slow: INT8 accuracy on a digits-trained tiny ViT --------------------------------------------------------------
@pytest.mark.slow
def test_int8_accuracy_within_one_point_of_fp32_on_digits(tmp_path):
    """Full fine-tuning of the tiny ViT on all 1797 digits, then fp32 / dynamic INT8 / static INT8 through
    onnxruntime on the same validation images: each INT8 graph within 1 accuracy point of fp32."""
    pytest.importorskip("onnxscript")
    from lmt.data.samples import write_digits
    from lmt.train import config_from_dict, train
    from lmt.train.data import read_image_folder, stratified_split

    digits = write_digits(tmp_path / "digits", size=32)
    config = config_from_dict({
        "task": "image-classification", "model": "vit", "weights": "tiny", "method": "full",
        "data": {"train": str(digits)},
        "optim": {"epochs": 15, "batch_size": 32, "lr": 3e-3, "warmup_ratio": 0.05},
        "run": {"output_dir": str(tmp_path / "runs"), "name": "vit-digits"},
    })
    trained = train(config)
    # the validation split the run held out: same records, fraction and seed
    train_records, val_records = stratified_split(
        read_image_folder(digits), config.data.val_fraction, config.run.seed
    )
    exported = export_onnx(str(trained.run_dir), weights="real", out=tmp_path / "onnx", quantize="int8")
    folder = tmp_path / "onnx"
    static = quantize_onnx_static(folder / "model.onnx", [r["image"] for r in train_records[:256]], folder,
                                  folder / "model.int8-static.onnx")
    processor = lmt.load(str(trained.run_dir), task="image-classification", weights="real").processor
    pixels = processor(images=[Image.open(r["image"]).convert("RGB") for r in val_records],
                       return_tensors="np")["pixel_values"].astype(np.float32)
    label_ids = {label: i for i, label in enumerate(exported.labels)}
    truth = np.array([label_ids[r["label"]] for r in val_records])
    accuracy = {
        name: float((run_onnx(folder / file, {"pixel_values": pixels}).argmax(-1) == truth).mean())
        for name, file in (("fp32", "model.onnx"), ("dynamic", "model.int8.onnx"), ("static", static.name))
    }
    assert accuracy["fp32"] >= 0.90, accuracy
    assert abs(accuracy["fp32"] - trained.metrics["accuracy"]) <= 0.01, (accuracy, trained.metrics)
    assert accuracy["fp32"] - accuracy["dynamic"] <= 0.01, accuracy
    assert accuracy["fp32"] - accuracy["static"] <= 0.01, accuracy
    assert static.stat().st_size < 0.5 * (folder / "model.onnx").stat().st_size
