"""PEFT methods beyond LoRA (DoRA, rsLoRA, IA3, LoHa, LoKr) on the tiny ViT: they train, count the parameters
their formulas give, save adapters that reload (and merge) to the same outputs, and bad combinations are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import lmt
from lmt.cli import main
from lmt.errors import InvalidInputError
from lmt.train import config_from_dict, load_config, train

from .conftest import tiny_config, with_sections

REPO = Path(__file__).resolve().parents[2]

#: method id -> (config sections, run-name tag, peft_type in adapter_config.json)
METHODS = {
    "dora": ({"method": "lora", "lora": {"use_dora": True}}, "dora-r16", "LORA"),
    "rslora": ({"method": "lora", "lora": {"use_rslora": True}}, "lora-r16-rs", "LORA"),
    "ia3": ({"method": "ia3"}, "ia3", "IA3"),
    "loha": ({"method": "loha"}, "loha-r16", "LOHA"),
    "lokr": ({"method": "lokr"}, "lokr-r16", "LOKR"),
}


def _images(folder: Path, count: int = 8) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(folder.rglob("*.png"))[::37][:count]]


def _pixels(images: list[Image.Image]) -> torch.Tensor:
    processor = lmt.load("vit", weights="tiny", task="image-classification").processor
    return processor(images=images, return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module", params=list(METHODS))
def method_run(request, digits_small, tmp_path_factory):
    sections, _, _ = METHODS[request.param]
    values = tiny_config(digits_small, tmp_path_factory.mktemp(f"runs-{request.param}"),
                         optim={"epochs": 1, "max_steps": 4, "batch_size": 16, "lr": 1e-2})
    values = with_sections(values, **sections)
    values["data"]["max_val_samples"] = 32
    return request.param, train(config_from_dict(values))


def _expected_trainable(method: str, model) -> int:
    """The count each method's formula gives on the tiny ViT (r16, lmt's default targets) plus the new head."""
    from peft.tuners.lokr.layer import factorization

    cfg = model.get_base_model().config
    hidden, inner, layers, labels, r = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, 10, 16
    head = hidden * labels + labels
    square = 2 * layers  # q_proj and v_proj, hidden x hidden, in every layer
    lora = square * 2 * hidden * r  # A (r x in) + B (out x r)
    if method == "dora":
        return lora + square * hidden + head  # + one magnitude per output feature
    if method == "rslora":
        return lora + head  # only the scale differs
    if method == "ia3":
        return layers * (hidden + hidden + inner) + head  # k_proj, v_proj outputs; fc2's input
    if method == "loha":
        return 2 * lora + head  # two rank-r pairs, multiplied elementwise
    small, large = factorization(hidden)
    # LoKr: w1 (small x small) kron w2 (large x large); w2 is kept whole unless rank r makes it smaller
    w2 = large * large if r >= max(large, large) / 2 else 2 * large * r
    return square * (small * small + w2) + head


def test_trainable_parameters_match_each_methods_formula(method_run):
    method, result = method_run
    trainable = {n: p for n, p in result.model.named_parameters() if p.requires_grad}
    assert result.trainable_parameters == sum(p.numel() for p in trainable.values())
    assert result.trainable_parameters == _expected_trainable(method, result.model)
    # nothing of the frozen base trains: only adapter tensors and the new head
    assert all("classifier" in name or "default" in name for name in trainable)


def test_run_folder_names_and_saves_the_adapter(method_run):
    method, result = method_run
    sections, tag, peft_type = METHODS[method]
    run = result.run_dir
    assert run.name == f"vit-b16-tiny_{tag}_bs16_1ep_digits"
    for name in ("adapter_config.json", "adapter_model.safetensors", "lmt_run.json", "README.md"):
        assert (run / name).is_file(), name
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["peft_type"] == peft_type and adapter["modules_to_save"] == ["classifier"]
    if method == "ia3":
        assert set(adapter["target_modules"]) == {"k_proj", "v_proj", "fc2"}
        assert adapter["feedforward_modules"] == ["fc2"]
    else:
        assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    if peft_type == "LORA":
        assert adapter["use_dora"] is (method == "dora") and adapter["use_rslora"] is (method == "rslora")
    info = json.loads((run / "lmt_run.json").read_text())
    assert info["method"] == sections["method"] and info["global_step"] == 4


def test_the_adapter_has_moved_away_from_identity(method_run, digits_small):
    """Every method starts as the identity; after 4 steps at lr 1e-2 the backbone's features must differ."""
    _, result = method_run
    pixels = _pixels(_images(digits_small))
    model = result.model
    with torch.no_grad():
        adapted = model.get_base_model().vit(pixel_values=pixels).last_hidden_state
        with model.disable_adapter():
            plain = model.get_base_model().vit(pixel_values=pixels).last_hidden_state
    assert (adapted - plain).abs().max() > 1e-4


def test_reload_and_merge_give_the_trained_outputs(method_run, digits_small):
    _, result = method_run
    images = _images(digits_small)
    pixels = _pixels(images)
    with torch.no_grad():
        expected = result.model(pixel_values=pixels).logits
    classify = lmt.ImageClassification("vit", weights="tiny", adapter=str(result.run_dir))
    for row, got in zip(expected.softmax(-1), classify(images, top_k=10), strict=True):
        scores = {p.label: p.score for p in got.predictions}
        assert [scores[str(i)] for i in range(10)] == pytest.approx(row.tolist(), abs=1e-5)
    reloaded = lmt.load("vit", weights="tiny", task="image-classification", adapter=str(result.run_dir)).model
    merged = reloaded.merge_and_unload()
    with torch.no_grad():
        assert torch.allclose(merged(pixel_values=pixels).logits, expected, atol=1e-5)


def test_ia3_scales_are_not_decayed(digits_small, tmp_path):
    """IA3 vectors start at 1: weight decay would pull them towards 0, so they sit in the no-decay group."""
    from lmt.loading import resolve
    from lmt.train.loop import _optimizer
    from lmt.train.methods import apply_method
    from lmt.train.objectives import objective_class

    config = config_from_dict(tiny_config(digits_small, tmp_path, method="ia3"))
    objective = objective_class(config.task)(config, resolve(config.model, config.weights))
    objective.setup([{"label": "0"}, {"label": "1"}], [{"label": "0"}])
    model = apply_method(objective.load_model(), config, objective)
    groups = _optimizer(model, config).param_groups
    scales = {id(p) for n, p in model.named_parameters() if ".ia3_l." in n}
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert scales and not scales & decayed


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"method": "ia3", "lora": {"use_dora": True}}, "lora.use_dora has no effect with method 'ia3'"),
        ({"method": "full", "lora": {"use_rslora": True}}, "lora.use_rslora has no effect with method 'full'"),
        ({"method": "loha", "lora": {"use_dora": True}}, "lora.use_dora has no effect with method 'loha'"),
        ({"method": "lora", "lora": {"feedforward_modules": ["fc2"]}}, "lora.feedforward_modules has no effect"),
        ({"method": "lokr", "lora": {"dropout": 0.1}}, "lora.dropout has no effect with method 'lokr'"),
        ({"method": "ia3", "lora": {"r": 8}}, "lora.r has no effect with method 'ia3'"),
        ({"method": "dora"}, "'method' must be 'full' | 'lora' | 'qlora' | 'ia3' | 'loha' | 'lokr'"),
        ({"method": "qdora"}, "Write method: qlora with lora.use_dora: true"),
        ({"method": "rslora"}, "Write method: lora with lora.use_rslora: true"),
        ({"method": "adalora"}, "not 'adalora'"),
        ({"method": "lora", "lora": {"use_dora": "yes"}}, "'lora.use_dora' must be bool"),
    ],
)
def test_bad_combinations_are_refused_before_any_work(digits_small, tmp_path, sections, needle):
    values = with_sections(tiny_config(digits_small, tmp_path), **sections)
    with pytest.raises(InvalidInputError) as info:
        config_from_dict(values)
    assert needle in str(info.value)
    assert info.value.message_zh
    assert not any(tmp_path.iterdir())


def test_ia3_targets_must_exist(digits_small, tmp_path):
    values = tiny_config(digits_small, tmp_path, method="ia3", lora={"target_modules": ["query", "value"]})
    with pytest.raises(InvalidInputError, match="Set lora.target_modules") as info:
        train(config_from_dict(values))
    assert "k_proj" in str(info.value)  # the message lists the model's real module names


def test_a_full_run_ignores_leftover_lora_numbers(digits_small, tmp_path):
    """A LoRA config switched to full by an override keeps its (unused) r/alpha: no error."""
    config = config_from_dict(tiny_config(digits_small, tmp_path, method="full", lora={"r": 8, "alpha": 16}))
    assert config.method == "full"


@pytest.mark.parametrize("name", ["vit-digits-dora", "vit-digits-ia3", "vit-digits-loha", "vit-digits-lokr"])
def test_example_configs_load(name, digits_small):
    config = load_config(REPO / "configs" / "train" / f"{name}.yaml", ["weights=tiny", f"data.train={digits_small}"])
    assert config.method == {"vit-digits-dora": "lora"}.get(name, name.rsplit("-", 1)[1])
    assert config.lora.use_dora is (name == "vit-digits-dora")


def test_ia3_config_trains_through_the_cli(digits_small, tmp_path, capsys):
    code = main(["train", str(REPO / "configs/train/vit-digits-ia3.yaml"), "weights=tiny",
                 f"data.train={digits_small}", f"run.output_dir={tmp_path}", "optim.max_steps=2",
                 "optim.epochs=1", "data.max_val_samples=16"])
    assert code == 0
    run = tmp_path / "vit-b16-tiny_ia3_bs32_1ep_digits"
    assert json.loads((run / "adapter_config.json").read_text())["peft_type"] == "IA3"
    assert "IA3 on k_proj/v_proj/fc2" in (run / "README.md").read_text()
