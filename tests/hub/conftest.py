"""Synthetic training runs and LoRA adapters on the tiny ViT, as ``lmt train`` lays them out (no trainer needed)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch

from lmt.hub.cards import render_model_card
from lmt.tiny import tiny_model_path
from tests.hubcache import lay_out_hub_repo, use_hub_cache
from tests.spaces.conftest import space_client  # noqa: F401  (the fixture, for the Space tests here)

BASE_HUB_ID = "google/vit-base-patch16-224"
COMMIT_V1 = "1" * 40
COMMIT_V2 = "2" * 40


def lora_model(seed: int):
    """A peft LoRA model on the tiny ViT (q_proj/v_proj, classifier saved whole) whose outputs differ per seed:
    lora_B starts at zero, which would make the adapter a no-op, so it is filled with noise."""
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    base = ViTForImageClassification.from_pretrained(tiny_model_path("vit"))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


def write_run(folder: Path, *, seed: int = 0, base_model: str | None = BASE_HUB_ID) -> Path:
    """A finished LoRA run folder: card, adapter, processor, lmt_run.json, config, metrics, plots, checkpoints."""
    from transformers import AutoImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    lora_model(seed).save_pretrained(folder)
    if base_model is not None:  # trained from the Hub, peft would have recorded the Hub id, not our tiny folder
        adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = base_model
        (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
    AutoImageProcessor.from_pretrained(tiny_model_path("vit")).save_pretrained(folder)
    card = render_model_card(
        repo_id=f"someone/{folder.name}", base_model=base_model or BASE_HUB_ID, library_name="peft",
        pipeline_tag="image-classification", task="image-classification", method="LoRA r4 on q_proj/v_proj",
        metrics={"accuracy": 0.5}, dataset_name="digits",
    )
    if base_model is None:  # the trainer cannot name a Hub base for a tiny/local base: the card has none either
        card.data.base_model = None
    card.save(folder / "README.md")
    run_info = {
        "task": "image-classification", "method": "lora", "library_name": "peft", "base_model": base_model,
        "pipeline_tag": "image-classification", "metrics": {"accuracy": 0.5},
    }
    (folder / "lmt_run.json").write_text(json.dumps(run_info, indent=2), encoding="utf-8")
    (folder / "train_config.yaml").write_text("epochs: 1\nlr: 0.001\n", encoding="utf-8")
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n', encoding="utf-8")
    (folder / "plots").mkdir(exist_ok=True)
    (folder / "plots" / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    checkpoint = folder / "checkpoints" / "step-000040"
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "optimizer.pt").write_bytes(b"\0" * 128)
    return folder


def tree_digest(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links not followed) and its bytes: to show a folder was left untouched."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "vit-b16_lora-r4_bs8_1ep_digits")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict:
    """Two revisions of one adapter (main -> v1, tag v2 -> v2) in a Hub-style cache, and their peft models."""
    root = tmp_path_factory.mktemp("adapter-revisions")
    models = {COMMIT_V1: lora_model(seed=1), COMMIT_V2: lora_model(seed=2)}
    folders = {}
    for commit, model in models.items():
        folders[commit] = root / commit[:1]
        model.save_pretrained(folders[commit])
    # a fresh id per run: the SDK's process-wide model cache keys on it
    repo_id = f"lmt-tests/vit-lora-{uuid.uuid4().hex[:8]}"
    lay_out_hub_repo(root / "hub", repo_id, folders, {"main": COMMIT_V1, "v2": COMMIT_V2})
    return {"hub": root / "hub", "repo_id": repo_id, "models": models}


@pytest.fixture
def hub(adapters, monkeypatch) -> dict:
    """``adapters``, with this process's Hub client pointed at their cache for the test."""
    use_hub_cache(monkeypatch, adapters["hub"])
    return adapters
