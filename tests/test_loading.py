"""Loading: registry names, local folders, Hub ids from a Hub-style cache, adapters, the LRU cache, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import lmt
from lmt.loading import ModelCache, load, resolve
from lmt.tiny import tiny_model_path
from tests.hubcache import lay_out_hub_repo

REVISION_MAIN = "a" * 40
REVISION_V2 = "b" * 40


def _run_offline(code: str, hub_cache: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(hub_cache.parent)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _lora_adapter(folder: Path) -> Path:
    """A LoRA adapter on the tiny ViT with non-zero weights, saved with peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    base = ViTForImageClassification.from_pretrained(tiny_model_path("vit"))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


def test_real_checkpoint_path_loads_offline_from_a_hub_style_cache(tmp_path, rgb_image):
    """Loading by Hub id (the real-checkpoint path), by registry name, with a pinned revision, and an adapter."""
    hub = tmp_path / "hub"
    clip_v1 = tiny_model_path("clip")
    clip_v2 = tmp_path / "clip-v2"
    shutil.copytree(clip_v1, clip_v2)
    config = json.loads((clip_v2 / "config.json").read_text())
    config["logit_scale_init_value"] = 1.0  # a visible difference between revisions: the stored tensor is what counts
    (clip_v2 / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    weights = load_file(clip_v2 / "model.safetensors")
    weights["logit_scale"] = torch.tensor(0.0)
    save_file(weights, clip_v2 / "model.safetensors", metadata={"format": "pt"})
    lay_out_hub_repo(
        hub, "openai/clip-vit-base-patch32", {REVISION_MAIN: clip_v1, REVISION_V2: clip_v2},
        {"main": REVISION_MAIN, "v2": REVISION_V2},
    )
    lay_out_hub_repo(hub, "google/vit-base-patch16-224", {REVISION_MAIN: tiny_model_path("vit")}, {"main": REVISION_MAIN})
    lay_out_hub_repo(hub, "someone/vit-lora", {REVISION_MAIN: _lora_adapter(tmp_path / "lora")}, {"main": REVISION_MAIN})
    image_path = tmp_path / "image.png"
    rgb_image.save(image_path)
    output = _run_offline(
        f"""
        import json, lmt
        from lmt.tiny import tiny_model_path
        by_id = lmt.pipeline("zero-shot-image-classification", model="openai/clip-vit-base-patch32")
        by_name = lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32")
        v2 = lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32", revision="v2")
        tiny = lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32", weights="tiny")
        labels = ["cat", "dog"]
        image = {str(image_path)!r}
        adapted = lmt.pipeline("image-classification", model="vit-b16", adapter="someone/vit-lora")
        plain = lmt.pipeline("image-classification", model="vit-b16")
        print(json.dumps({{
            "by_id": by_id(image, labels).as_label_dict(),
            "by_name": by_name(image, labels).as_label_dict(),
            "tiny": tiny(image, labels).as_label_dict(),
            "v2": v2(image, labels).as_label_dict(),
            "weights": [by_id.loaded.weights, by_name.loaded.weights, tiny.loaded.weights],
            "source": by_name.loaded.source,
            "revision": v2.loaded.revision,
            "adapted": adapted(image, top_k=5).as_label_dict(),
            "plain": plain(image, top_k=5).as_label_dict(),
            "adapter": adapted.loaded.adapter,
        }}))
        """,
        hub,
    )
    result = json.loads(output.strip().splitlines()[-1])
    assert result["weights"] == ["real", "real", "tiny"]
    assert result["source"] == "openai/clip-vit-base-patch32"
    assert result["by_id"] == result["by_name"] == pytest.approx(result["tiny"], abs=1e-6)
    assert result["revision"] == "v2"
    assert result["v2"] != pytest.approx(result["by_name"], abs=1e-4), "revision v2 must load the other weights"
    assert result["adapter"] == "someone/vit-lora"
    assert result["adapted"] != pytest.approx(result["plain"], abs=1e-6), "the adapter must change predictions"


def test_adapter_by_path_equals_peft_reference(tmp_path, rgb_image):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    adapter = _lora_adapter(tmp_path / "lora")
    classify = lmt.pipeline("image-classification", model="vit-b16", weights="tiny", adapter=str(adapter))
    reference = PeftModel.from_pretrained(ViTForImageClassification.from_pretrained(tiny_model_path("vit")), adapter)
    pixel_values = classify.processor(images=rgb_image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = reference.eval()(pixel_values=pixel_values).logits.softmax(-1)[0]
    ours = classify(rgb_image, top_k=10).as_label_dict()
    id2label = reference.config.id2label
    for index, probability in enumerate(expected.tolist()):
        assert ours[id2label[index]] == pytest.approx(probability, abs=1e-6)


def test_missing_real_weights_name_the_way_out(tmp_path, monkeypatch):
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    code = """
        import lmt
        try:
            lmt.load("clip-vit-b32")
        except lmt.WeightsUnavailableError as err:
            print("ERROR:", err)
            print("ZH:", err.message_zh)
    """
    output = _run_offline(code, empty)
    assert "openai/clip-vit-base-patch32" in output
    for way_out in ("--tiny", "HF_ENDPOINT", "HF_HOME", "local folder"):
        assert way_out in output
    assert "ZH:" in output and "镜像" in output


def test_local_folder_is_recognised_by_its_config(tmp_path, rgb_image):
    folder = tmp_path / "my-vit"
    shutil.copytree(tiny_model_path("vit"), folder)
    resolved = resolve(str(folder))
    assert resolved.family.name == "vit" and resolved.weights == "local"
    classify = lmt.pipeline("image-classification", model=str(folder))
    assert classify.loaded.weights == "local"
    with pytest.raises(lmt.InvalidInputError, match="tiny"):
        resolve(str(folder), weights="tiny")


def test_only_safetensors_are_loaded(tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_path("vit"), folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(lmt.WeightsUnavailableError, match="safetensors"):
        load(str(folder), task="image-classification", cache=ModelCache())


def test_remote_code_is_refused_unless_asked(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "totally-custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}})
    )
    with pytest.raises(lmt.LmtError, match="trust_remote_code"):
        load(str(folder), task="image-classification", cache=ModelCache())


def test_unknown_model_suggests_close_names():
    with pytest.raises(lmt.UnknownModelError, match="clip-vit-b32") as info:
        resolve("clip-vit-b3")
    assert "lmt models" in str(info.value)
    with pytest.raises(lmt.UnknownModelError):
        resolve("no such model at all")
    with pytest.raises(lmt.InvalidInputError):
        resolve("")
    with pytest.raises(lmt.InvalidInputError, match="weights"):
        resolve("clip-vit-b32", weights="huge")


def test_family_name_means_its_default_checkpoint():
    assert resolve("sam").name == "sam-vit-base"
    assert resolve("clip", weights="tiny").weights == "tiny"


def test_cache_loads_each_model_once_and_is_bounded():
    cache = ModelCache(max_models=2)
    first = load("clip-vit-b32", weights="tiny", cache=cache)
    assert load("clip-vit-b32", weights="tiny", cache=cache) is first
    assert load("clip-vit-b32", weights="tiny", task="image-feature-extraction", cache=cache) is first
    load("vit-b16", weights="tiny", cache=cache)
    load("resnet-50", weights="tiny", cache=cache)
    assert len(cache) == 2 and cache.loads == 3
    assert load("resnet-50", weights="tiny", cache=cache) is not first
    assert cache.loads == 3
    # the least recently used (clip) was evicted; asking again loads it again
    load("clip-vit-b32", weights="tiny", cache=cache)
    assert cache.loads == 4


def test_cache_is_bounded_by_bytes():
    cache = ModelCache(max_models=10, max_bytes=1)
    load("clip-vit-b32", weights="tiny", cache=cache)
    load("vit-b16", weights="tiny", cache=cache)
    assert len(cache) == 1, "a byte bound of 1 keeps only the model just loaded"


def test_concurrent_requests_load_a_model_once():
    cache = ModelCache(max_models=4)
    results, errors = [], []

    def worker():
        try:
            results.append(load("dinov2-small", weights="tiny", cache=cache))
        except Exception as exc:  # collected and re-raised by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert cache.loads == 1
    assert all(r is results[0] for r in results)


def test_device_and_dtype_are_checked():
    from lmt.device import resolve_device, resolve_dtype

    assert resolve_device().type == "cpu"  # no accelerator on CI
    assert resolve_dtype(torch.device("cpu")) == torch.float32
    with pytest.raises(lmt.UnsupportedDeviceError, match="cpu"):
        resolve_device("cuda")
    with pytest.raises(lmt.UnsupportedDeviceError, match="torch-npu"):
        resolve_device("npu")
    with pytest.raises(lmt.UnsupportedDeviceError, match="float32"):
        resolve_dtype(torch.device("cpu"), "fp16")
    with pytest.raises(lmt.UnsupportedDeviceError, match="Unknown dtype"):
        resolve_dtype(torch.device("cpu"), "float8")
    from lmt.env import cpu_has_fast_bf16

    if not cpu_has_fast_bf16():
        with pytest.raises(lmt.UnsupportedDeviceError, match="300x"):
            resolve_dtype(torch.device("cpu"), "bf16")
    with pytest.raises(lmt.UnsupportedDeviceError):
        load("clip-vit-b32", weights="tiny", device="cuda")


def test_lmt_device_env_overrides_the_choice(monkeypatch):
    from lmt.device import resolve_device

    monkeypatch.setenv("LMT_DEVICE", "cpu")
    assert resolve_device().type == "cpu"
    monkeypatch.setenv("LMT_DEVICE", "cuda")
    with pytest.raises(lmt.UnsupportedDeviceError):
        resolve_device()


def test_tiny_variants_are_deterministic_and_rebuild_after_a_kill(tmp_path, monkeypatch):
    """The tiny build is seeded; a folder without its completion marker (a killed build) is rebuilt."""
    from safetensors.torch import load_file

    monkeypatch.setenv("LMT_HOME", str(tmp_path))
    folder = tiny_model_path("resnet")
    first = {k: v.clone() for k, v in load_file(folder / "model.safetensors").items()}  # not backed by the file
    (folder / ".lmt-tiny-complete").unlink()  # as if the process died before finishing
    (folder / "model.safetensors").write_bytes(b"half written")
    rebuilt = tiny_model_path("resnet")
    assert rebuilt == folder
    second = load_file(rebuilt / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
