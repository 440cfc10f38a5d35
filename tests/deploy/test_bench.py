"""lmt.deploy.bench (``lmt bench``) and lmt.deploy.optimize on the tiny variants: what is measured and written,
how FLOPs are counted, the INT8 recipes, and the errors for requests that cannot run here."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lmt
from lmt.cli import build_parser, main
from lmt.deploy.bench import (
    DEFAULT_BACKENDS,
    DEFAULT_BATCHES,
    bench,
    calibration_folder,
    check_backends,
    check_batches,
    count_flops,
    result_from_dict,
    time_rounds,
)
from lmt.deploy.optimize import eager_attention, fold_batchnorm, int8_recipe
from lmt.errors import InvalidInputError, UnsupportedDeviceError, UnsupportedTaskError

# the module, not the function `lmt.deploy.bench` that lmt.deploy exports under the same name
bench_module = importlib.import_module("lmt.deploy.bench")

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "examples" / "images"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def vit_result(tmp_path_factory):
    """One bench of tiny ViT on every CPU back-end at two batch sizes, written to a folder."""
    out = tmp_path_factory.mktemp("bench-vit")
    threads = torch.get_num_threads()
    result = bench("vit-b16", tiny=True, backends="torch,torch-int8,onnx,onnx-int8", batches="1,2", rounds=2,
                   threads=1, ceiling_size=128, out=out)
    assert torch.get_num_threads() == threads  # the thread setting is restored
    return result, out


def test_every_backend_and_batch_is_measured(vit_result):
    result, _ = vit_result
    assert result.backends == ("torch", "torch-int8", "onnx", "onnx-int8")
    assert [(r.backend, r.batch) for r in result.runs] == [
        (b, n) for n in (1, 2) for b in ("torch", "torch-int8", "onnx", "onnx-int8")
    ]
    assert result.threads == 1 and result.device == "cpu" and result.weights == "tiny"
    for run in result.runs:
        assert len(run.raw_s) == 2 and all(t > 0 for t in run.raw_s)
        assert run.latency_ms_p50 <= run.latency_ms_p95
        assert run.throughput == pytest.approx(run.batch / (run.latency_ms_p50 / 1000))
        assert run.gflops == pytest.approx(result.flops_per_image * run.batch / (run.latency_ms_p50 / 1000) / 1e9)
        assert run.ceiling_fraction > 0 and run.model_size_mb > 0
        assert run.peak_memory_mb is None or run.peak_memory_mb >= 0
    assert result.ceiling_gflops > 0 and result.ceiling_size == 128


def test_agreement_is_against_eager_float32(vit_result):
    result, _ = vit_result
    for batch in (1, 2):
        reference = result.run("torch", batch)
        assert reference.speedup == 1.0 and reference.agreement is None
        onnx = result.run("onnx", batch).agreement
        assert onnx.samples == batch and onnx.top1 == 1.0 and onnx.max_abs_diff < 1e-4 and onnx.cosine > 0.9999
        int8 = result.run("onnx-int8", batch).agreement
        assert 0.0 <= int8.top1 <= 1.0 and 0 < int8.max_abs_diff < 1.0 and int8.cosine > 0.9


def test_int8_graph_is_smaller_and_follows_the_recipe(vit_result):
    result, _ = vit_result
    assert result.run("onnx-int8", 1).model_size_mb < result.run("onnx", 1).model_size_mb
    assert result.int8_recipe == int8_recipe("vit").to_dict()
    assert result.int8_recipe["fusion"] == "vit" and "Conv" not in result.int8_recipe["op_types"]


def test_flops_are_counted_two_per_multiply_add_attention_included():
    """Tiny ViT's FLOPs worked out by hand: patch conv, 4 projections + MLP + attention per layer, CLS head."""
    loaded = lmt.load("vit-b16", task="image-classification", weights="tiny", device="cpu", dtype="float32")
    c = loaded.config
    patches = (c.image_size // c.patch_size) ** 2
    tokens = patches + 1
    macs = (patches * c.hidden_size * c.num_channels * c.patch_size**2
            + c.num_hidden_layers * (4 * tokens * c.hidden_size**2 + 2 * tokens * c.hidden_size * c.intermediate_size
                                     + 2 * tokens**2 * c.hidden_size)
            + c.hidden_size * c.num_labels)
    pixels = torch.randn(3, c.num_channels, c.image_size, c.image_size)
    forward = bench_module._torch_forward(loaded.model, "vit", "image-classification")
    with eager_attention(loaded.model):
        assert count_flops(forward, pixels) == 2 * macs  # per image, whatever the batch
    assert loaded.model.config._attn_implementation == "sdpa"  # switched back


def test_results_files_are_written_and_round_trip(vit_result):
    result, out = vit_result
    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(result.to_dict()))
    assert result_from_dict(data) == result
    page = (out / "bench.md").read_text(encoding="utf-8")
    assert page == bench_module.render_markdown(result)
    assert "| back-end | batch | p50 ms |" in page and page.count("| onnx-int8 |") == 2
    png = (out / "bench.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_resnet_gets_static_int8_and_folded_batchnorm(tmp_path):
    result = bench("resnet-50", tiny=True, backends=("torch", "onnx-int8"), batches=(2,), rounds=1, threads=1,
                   ceiling_size=64, calibration_images=calibration_folder(IMAGES))
    recipe = result.int8_recipe
    assert recipe["method"] == "static" and recipe["quant_format"] == "QOperator" and recipe["calibration"] == "5"
    assert recipe["activation_type"] == "uint8" and recipe["per_channel"] is True
    int8 = result.run("onnx-int8", 2).agreement
    assert int8.samples == 2 and int8.cosine > 0.9

    loaded = lmt.load("resnet-50", task="image-classification", weights="tiny", device="cpu", dtype="float32")
    folded_model = copy.deepcopy(loaded.model).eval()
    assert fold_batchnorm(folded_model) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded_model.modules())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded_model(pixel_values=pixels).logits, loaded.model(pixel_values=pixels).logits,
                              atol=1e-4)


def test_time_rounds_rotates_the_order():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = time_rounds(calls, 3)
    assert order == list("abc" "bca" "cab")
    assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_agreement_of_known_outputs():
    reference = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    got = np.array([[0.9, 0.1, 0.0], [0.0, 0.0, 3.0]])
    agreement = bench_module._agreement(got, reference)
    assert agreement.samples == 2 and agreement.top1 == 0.5
    assert agreement.max_abs_diff == pytest.approx(3.0)
    assert agreement.cosine == pytest.approx((0.9 / np.hypot(0.9, 0.1) + 0.0) / 2)


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda: check_backends("torch,tensorrt"), InvalidInputError, "tensorrt"),
        (lambda: check_batches("1,0"), InvalidInputError, "[1, 256]"),
        (lambda: check_batches("one"), InvalidInputError, "[1, 256]"),
        (lambda: bench("vit-b16", tiny=True, rounds=0), InvalidInputError, "rounds"),
        (lambda: bench("vit-b16", tiny=True, backends="onnx-fp16"), UnsupportedDeviceError, "CUDA"),
        (lambda: bench("owlv2-b16", tiny=True, backends="torch"), UnsupportedTaskError, "image encoders"),
        (lambda: calibration_folder(REPO / "sdk"), InvalidInputError, "No images"),
    ],
)
def test_bad_requests_are_clear_bilingual_errors(call, error, text):
    with pytest.raises(error) as caught:
        call()
    assert text in str(caught.value)
    assert caught.value.message_zh != caught.value.message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_on_a_machine_without_it():
    with pytest.raises(UnsupportedDeviceError, match="not available"):
        bench("vit-b16", tiny=True, device="cuda", backends="torch")


def test_bf16_on_this_cpu_is_refused_before_any_work(monkeypatch):
    import lmt.env

    monkeypatch.setattr(lmt.env, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(bench_module, "_family_and_task", lambda *a: pytest.fail("work started before the check"))
    with pytest.raises(UnsupportedDeviceError, match="300x"):
        bench("vit-b16", tiny=True, backends="torch,torch-bf16")


def test_cli_defaults_match_the_sdk():
    args = build_parser().parse_args(["bench", "vit-b16"])
    assert check_backends(args.backends) == DEFAULT_BACKENDS
    assert check_batches(args.batch) == DEFAULT_BATCHES
    assert args.device == "cpu" and args.rounds == 5
    # a task name stands for that task's default model
    assert bench_module._model_name("image-classification") == "vit-b16"
    assert bench_module._model_name("resnet-50") == "resnet-50"


def test_cli_bench_writes_files_and_prints_json(tmp_path, capsys):
    code = main(["bench", "vit-b16", "--tiny", "--backends", "torch", "--batch", "1", "--rounds", "1",
                 "--threads", "1", "--out", str(tmp_path), "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["runs"][0]["backend"] == "torch" and document["batches"] == [1]
    assert {p.name for p in tmp_path.iterdir()} == {"bench.json", "bench.md", "bench.png"}


def test_cli_bench_refuses_an_unknown_backend(capsys):
    assert main(["bench", "vit-b16", "--tiny", "--backends", "torch,openvino"]) == 2
    error = capsys.readouterr().err
    assert "openvino" in error and "未知的后端" in error


@pytest.mark.slow
def test_bench_deploy_tiny_runs_every_model(tmp_path):
    """benchmarks/bench_deploy.py --tiny: every model, back-end and goal, written as JSON, markdown and PNG."""
    path = REPO / "benchmarks" / "bench_deploy.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_deploy", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
        out = tmp_path / "deploy.json"
        results = module.main(["--tiny", "--out", str(out)])
    finally:
        sys.modules.pop("bench_deploy", None)
        sys.path.remove(str(path.parent))
    assert set(results["models"]) == {"vit", "resnet", "clip"}
    assert [g["name"] for g in results["goals"]] == [
        f"{family}_{goal}" for family in ("vit", "resnet", "clip")
        for goal in ("int8_speedup", "eager_ceiling", "int8_size")
    ]
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(json.dumps(results))
    assert out.with_suffix(".md").read_text(encoding="utf-8") == module.render_markdown(results)
    assert out.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
