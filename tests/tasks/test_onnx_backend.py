"""The ONNX back-end of the task calls: the same results as PyTorch (1e-4, same ranking), graphs exported once and
reused, clear bilingual errors, and a Space that answers on it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import lmt
from lmt.cli import main
from lmt.deploy import export as export_module
from lmt.deploy import runtime
from lmt.errors import InvalidInputError, LmtError, MissingDependencyError, UnsupportedDeviceError
from lmt.loading import MODEL_CACHE, ModelCache
from lmt.tasks import ImageClassification

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-4
LABELS = ["cat", "dog", "car", "a red apple"]


def _assert_same_classification(expected, actual) -> None:
    """Scores within TOL label by label, and the same order wherever two scores are further apart than TOL."""
    want = {p.label: p.score for p in expected.predictions}
    got = {p.label: p.score for p in actual.predictions}
    assert set(want) == set(got)
    for label, score in want.items():
        assert got[label] == pytest.approx(score, abs=TOL), label
    order = [p.label for p in actual.predictions]
    for higher, lower in zip(expected.predictions, expected.predictions[1:], strict=False):
        if higher.score - lower.score > TOL:
            assert order.index(higher.label) < order.index(lower.label)


@pytest.fixture(scope="module")
def images(rgb_image, other_image, cat_path):
    return [rgb_image, other_image, str(cat_path)]  # a batch of 3: the export sampled 2


# ---- parity with PyTorch --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit-b16", "resnet-18", "dinov2-small-imagenet1k"])
def test_classification_matches_torch(name, images):
    on_torch = lmt.pipeline("image-classification", name, weights="tiny")
    on_onnx = lmt.pipeline("image-classification", name, weights="tiny", backend="onnx")
    assert on_onnx.backend == "onnx" and on_onnx.graphs.names == ("model",)
    for expected, actual in zip(on_torch(images, top_k=10), on_onnx(images, top_k=10), strict=True):
        _assert_same_classification(expected, actual)
    # one image in, one result out, exactly as on torch
    _assert_same_classification(on_torch(images[0], top_k=3), on_onnx(images[0], top_k=3))


@pytest.mark.parametrize("name", ["vit-b16", "dinov2-small"])
def test_features_match_torch(name, images):
    on_torch = lmt.pipeline("image-feature-extraction", name, weights="tiny")
    on_onnx = lmt.pipeline("image-feature-extraction", name, weights="tiny", backend="onnx")
    expected = np.stack([e.vector for e in on_torch(images)])
    actual = np.stack([e.vector for e in on_onnx(images)])
    np.testing.assert_allclose(actual, expected, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)
    # the gallery ranking built on ONNX vectors is the PyTorch one
    np.testing.assert_array_equal(np.argsort(-actual @ actual[0]), np.argsort(-expected @ expected[0]))


def test_clip_zero_shot_matches_torch(images):
    on_torch = lmt.pipeline("zero-shot-image-classification", "clip-vit-b32", weights="tiny")
    on_onnx = lmt.pipeline("zero-shot-image-classification", "clip-vit-b32", weights="tiny", backend="onnx")
    assert set(on_onnx.graphs.names) == {"image", "text"}
    for expected, actual in zip(on_torch(images, labels=LABELS), on_onnx(images, labels=LABELS), strict=True):
        _assert_same_classification(expected, actual)
    # the label cache is per back-end: the torch embeddings are never served to the ONNX call or back
    torch_rows = on_torch.label_embeddings(LABELS)
    onnx_rows = on_onnx.label_embeddings(LABELS)
    assert torch_rows is not onnx_rows
    np.testing.assert_allclose(onnx_rows.numpy(), torch_rows.numpy(), atol=TOL)


def test_clip_embeddings_and_similarity_match_torch(images):
    on_torch = lmt.pipeline("image-feature-extraction", "clip-vit-b32", weights="tiny")
    on_onnx = lmt.pipeline("image-feature-extraction", "clip-vit-b32", weights="tiny", backend="onnx")
    texts = ["a photo of a cat", "a dog on the grass"]
    image_vectors = np.stack([e.vector for e in on_onnx(images)])
    text_vectors = np.stack([e.vector for e in on_onnx.embed_text(texts)])
    np.testing.assert_allclose(image_vectors, np.stack([e.vector for e in on_torch(images)]), atol=TOL)
    np.testing.assert_allclose(text_vectors, np.stack([e.vector for e in on_torch.embed_text(texts)]), atol=TOL)

    # CLIP's own image-text logits from the PyTorch forward, against ONNX vectors and the exported logit scale
    processor = on_torch.processor
    inputs = processor(text=texts, images=[lmt.load_image(i) for i in images], return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = on_torch.model(**inputs).logits_per_image.numpy()
    scale = json.loads((on_onnx.graphs.folder / export_module.CLIP_SIMILARITY).read_text())["logit_scale"]
    np.testing.assert_allclose(scale * image_vectors @ text_vectors.T, logits, atol=TOL * max(1.0, scale))
    hits = on_onnx.search(texts[0], images, top_k=3)
    assert [h.index for h in hits] == [h.index for h in on_torch.search(texts[0], images, top_k=3)]


def test_int8_backend_runs_the_quantised_graph(images):
    on_int8 = lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend="onnx-int8")
    assert on_int8.graphs.quantize == "int8"
    assert on_int8.graphs.files["model"].name == "model.int8.onnx"
    results = on_int8(images, top_k=10)
    for result in results:
        assert sum(p.score for p in result.predictions) == pytest.approx(1.0, abs=1e-4)
    assert "backend='onnx-int8'" in repr(on_int8)


def test_lora_adapter_runs_on_onnx(images, tmp_path):
    """The graphs are exported from the model in memory, so an adapter's weights are in them."""
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    base = lmt.load("vit-b16", task="image-classification", weights="tiny")
    lora = get_peft_model(ViTForImageClassification.from_pretrained(base.source),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    adapter = str(tmp_path / "adapter")
    on_torch = lmt.pipeline("image-classification", "vit-b16", weights="tiny", adapter=adapter)
    on_onnx = lmt.pipeline("image-classification", "vit-b16", weights="tiny", adapter=adapter, backend="onnx")
    plain = lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend="onnx")
    assert on_onnx.graphs.folder != plain.graphs.folder
    for expected, actual in zip(on_torch(images, top_k=10), on_onnx(images, top_k=10), strict=True):
        _assert_same_classification(expected, actual)
    adapted, unadapted = on_onnx(images[0], top_k=10), plain(images[0], top_k=10)
    assert max(abs(adapted.as_label_dict()[k] - v) for k, v in unadapted.as_label_dict().items()) > 1e-3


# ---- the cache ------------------------------------------------------------------------------------------------------
def test_graphs_are_exported_once_and_written_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("LMT_HOME", str(tmp_path))
    real_export = export_module.export_loaded
    calls = []

    def interrupted(loaded, task, *, out, **kwargs):
        (out / "model.onnx").write_bytes(b"half a graph")
        raise LmtError("killed mid-export")

    monkeypatch.setattr(export_module, "export_loaded", interrupted)
    with pytest.raises(LmtError, match="killed"):
        lmt.pipeline("image-classification", "resnet-18", weights="tiny", backend="onnx")
    root = tmp_path / "onnx"
    assert [p for p in root.iterdir() if p.is_dir()] == []  # neither the final folder nor the staging one

    def counting(*args, **kwargs):
        calls.append(kwargs["out"])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export_module, "export_loaded", counting)
    first = lmt.pipeline("image-classification", "resnet-18", weights="tiny", backend="onnx")
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert len(calls) == 1 and folders == [first.graphs.folder]
    assert first.graphs.folder.name.startswith("resnet-18-image-classification-fp32-")
    written = (first.graphs.folder / export_module.MANIFEST).stat().st_mtime_ns

    again = lmt.pipeline("image-classification", "resnet-18", weights="tiny", backend="onnx")
    assert again.graphs is first.graphs  # the same loaded model keeps its sessions

    fresh = lmt.load("resnet-18", task="image-classification", weights="tiny", cache=ModelCache())
    reloaded = ImageClassification(fresh, backend="onnx")  # a new process would look like this
    assert reloaded.graphs is not first.graphs and reloaded.graphs.folder == first.graphs.folder
    assert len(calls) == 1
    assert (first.graphs.folder / export_module.MANIFEST).stat().st_mtime_ns == written
    assert [p for p in root.iterdir() if p.is_dir()] == folders


def test_changed_weights_get_their_own_graphs(tmp_path, monkeypatch):
    """The cache key is the weights, not the name: a fine-tuned or adapted model never gets stale graphs."""
    fresh = lmt.load("resnet-18", task="image-classification", weights="tiny", cache=ModelCache())
    before = runtime._fingerprint(fresh, "image-classification", None)
    with torch.no_grad():
        fresh.model.classifier[-1].bias.add_(1.0)
    assert runtime._fingerprint(fresh, "image-classification", None) != before
    assert runtime._fingerprint(fresh, "image-classification", "int8") != runtime._fingerprint(
        fresh, "image-classification", None
    )


# ---- errors ---------------------------------------------------------------------------------------------------------
def _bilingual(err: LmtError) -> None:
    assert err.message and err.message_zh and err.message != err.message_zh


def test_unknown_backend_is_a_bilingual_error():
    loads = MODEL_CACHE.loads
    with pytest.raises(InvalidInputError, match="torch, onnx, onnx-int8") as info:
        lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend="tensorrt")
    _bilingual(info.value)
    assert "后端" in info.value.message_zh
    with pytest.raises(InvalidInputError):
        lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend=None)
    assert MODEL_CACHE.loads == loads  # refused before any model loads


def test_task_without_onnx_support_is_refused_before_loading():
    loads = MODEL_CACHE.loads
    with pytest.raises(lmt.UnsupportedTaskError, match="no ONNX back-end") as info:
        lmt.pipeline("image-to-text", "blip2-opt-2.7b", weights="tiny", backend="onnx")
    _bilingual(info.value)
    assert MODEL_CACHE.loads == loads


def test_family_without_onnx_support_is_refused(monkeypatch):
    monkeypatch.setattr(ImageClassification, "onnx_families", ("vit",))
    with pytest.raises(lmt.UnsupportedTaskError, match="family resnet") as info:
        lmt.pipeline("image-classification", "resnet-18", weights="tiny", backend="onnx")
    _bilingual(info.value)


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"large-model-tutorial\[deploy\]") as info:
        lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend="onnx")
    _bilingual(info.value)
    assert "onnxruntime" in info.value.message_zh


def test_dtype_and_device_are_checked_for_onnx():
    with pytest.raises(InvalidInputError, match="dtype") as info:
        lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend="onnx", dtype="float16")
    _bilingual(info.value)
    with pytest.raises(InvalidInputError, match="Unknown ONNX device"):
        lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend="onnx", device="npu")
    if "CUDAExecutionProvider" not in runtime.available_providers():
        with pytest.raises(UnsupportedDeviceError, match="onnxruntime-gpu"):
            lmt.pipeline("image-classification", "vit-b16", weights="tiny", backend="onnx", device="cuda")


# ---- the CLI and the Spaces -----------------------------------------------------------------------------------------
def test_cli_predict_with_backend(cat_path, capsys):
    assert main(["predict", "image-classification", "--model", "vit-b16", "--tiny", "--image", str(cat_path),
                 "--top-k", "3", "--backend", "onnx", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["backend"] == "onnx"
    expected = lmt.pipeline("image-classification", "vit-b16", weights="tiny")(str(cat_path), top_k=3)
    for got, want in zip(document["results"][0]["predictions"], expected.to_dict()["predictions"], strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=TOL)
    assert main(["predict", "image-classification", "--tiny", "--image", str(cat_path), "--backend", "tensorrt"]) == 2
    error = capsys.readouterr().err
    assert "torch, onnx, onnx-int8" in error and "后端" in error and "Traceback" not in error


def test_space_backend_comes_from_the_environment(monkeypatch):
    pytest.importorskip("gradio")
    from lmt import ui

    monkeypatch.delenv("LMT_BACKEND", raising=False)
    assert ui.backend() == "torch"
    monkeypatch.setenv("LMT_BACKEND", "onnx-int8")
    assert ui.backend() == "onnx-int8"
    monkeypatch.setenv("LMT_BACKEND", "openvino")
    with pytest.raises(InvalidInputError, match="openvino"):
        ui.backend()


def test_vit_space_answers_on_onnx(cat_path, monkeypatch):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from lmt import ui
    from lmt.ui.spaces import load_space

    monkeypatch.setenv("LMT_BACKEND", "onnx")
    built = []
    real_graphs = runtime.onnx_graphs
    monkeypatch.setattr(runtime, "onnx_graphs", lambda *a, **k: built.append(1) or real_graphs(*a, **k))
    demo = ui.configure_queue(load_space("vit").build_demo(tiny=True))
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None, show_error=False)
    try:
        client = Client(demo.local_url, verbose=False)
        label, raw = client.predict(handle_file(str(cat_path)), 3, "vit-b16 (tiny)", "", api_name="/classify")
        assert built, "the Space did not go through the ONNX back-end"
        expected = lmt.pipeline("image-classification", "vit-b16", weights="tiny")(str(cat_path), top_k=3)
        assert [p["label"] for p in raw["predictions"]] == [p.label for p in expected.predictions]
        np.testing.assert_allclose([p["score"] for p in raw["predictions"]],
                                   [p.score for p in expected.predictions], atol=TOL)
        assert label["label"] == expected.label

        monkeypatch.setenv("LMT_BACKEND", "tensorrt")
        with pytest.raises(AppError) as info:
            client.predict(handle_file(str(cat_path)), 3, "vit-b16 (tiny)", "", api_name="/classify")
        message = str(info.value)
        assert "后端" in message and "torch, onnx, onnx-int8" in message and "Traceback" not in message
    finally:
        demo.close()
