"""The training config is typed; unknown keys and bad values fail before any work, with the fix named."""

from __future__ import annotations

import pytest

from lmt.cli import main
from lmt.errors import InvalidInputError
from lmt.train.config import config_from_dict, load_config


def _base(tmp_path) -> dict:
    (tmp_path / "data" / "a").mkdir(parents=True, exist_ok=True)
    return {"task": "image-classification", "model": "vit-b16", "data": {"train": str(tmp_path / "data")}}


def test_defaults_and_overrides_are_typed(tmp_path):
    config = config_from_dict(_base(tmp_path), ["optim.lr=1e-4", "lora.r=8", "lora.target_modules=q_proj,v_proj",
                                                "run.deterministic=true", "optim.epochs=5"])
    assert config.optim.lr == 1e-4 and isinstance(config.optim.lr, float)
    assert config.lora.r == 8 and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.run.deterministic is True and config.optim.epochs == 5
    assert config.method == "lora" and config.optim.scheduler == "cosine"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"optim": {"learning_rate": 1e-3}}, "Did you mean 'optim.lr'"),
        ({"optimizer": {}}, "unknown key 'optimizer'"),
        ({"optim": {"epochs": "three"}}, "'optim.epochs' must be int"),
        ({"optim": {"epochs": 2.5}}, "'optim.epochs' must be int"),
        ({"method": "dora"}, "'method' must be 'full' | 'lora' | 'qlora'"),
        ({"optim": {"lr": "NaN"}}, "'optim.lr' must be float"),
        ({"optim": {"lr": 0}}, "'optim.lr' must lie in (0.0, 1.0]"),
        ({"optim": {"batch_size": 0}}, "'optim.batch_size' must be at least 1"),
        ({"data": {"val_fraction": 0.95}}, "'data.val_fraction' must lie in"),
        ({"run": {"resume": True, "overwrite": True}}, "contradict"),
        ({"run": {"name": "../escape"}}, "plain folder name"),
        ({"task": "image-classification", "model": "sam-vit-base"}, "trains vit, resnet, dinov2 models"),
        ({"lora": "r16"}, "'lora' must be a mapping"),
    ],
)
def test_bad_configs_fail_with_the_fix(tmp_path, change, needle):
    values = _base(tmp_path)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key].update(value)
        else:
            values[key] = value
    with pytest.raises(InvalidInputError) as info:
        config_from_dict(values)
    assert needle in str(info.value)
    assert info.value.message_zh  # every config error has a Chinese message too


def test_missing_data_and_model(tmp_path):
    with pytest.raises(InvalidInputError, match="'model' is required"):
        config_from_dict({"data": {"train": str(tmp_path)}})
    with pytest.raises(InvalidInputError, match="does not exist"):
        config_from_dict({"model": "vit-b16", "data": {"train": str(tmp_path / "nowhere")}})


def test_bad_override_syntax(tmp_path):
    with pytest.raises(InvalidInputError, match="is not key=value"):
        config_from_dict(_base(tmp_path), ["optim.lr"])
    with pytest.raises(InvalidInputError, match="'model' is not a section"):
        config_from_dict(_base(tmp_path), ["model.name=x"])


def test_every_example_config_is_valid(tmp_path, monkeypatch):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    configs = sorted((repo / "configs" / "train").glob("*.yaml"))
    assert len(configs) >= 5
    (tmp_path / "data" / "digits" / "0").mkdir(parents=True)
    (tmp_path / "data" / "shapes").mkdir(parents=True)
    for name in ("shapes.csv", "captions.jsonl"):
        (tmp_path / "data" / "shapes" / name).write_text("")
    (tmp_path / "data" / "shape-chat").mkdir(parents=True)
    (tmp_path / "data" / "shape-chat" / "conversations.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)  # example configs name data/... relative to where lmt train runs
    for path in configs:
        config = load_config(path)
        assert config.model, path.name


def test_cli_check_prints_the_resolved_config(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"task: image-classification\nmodel: vit-b16\ndata:\n  train: {tmp_path}\n")
    assert main(["train", str(path), "optim.epochs=7", "--check"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 7" in out and "method: lora" in out


def test_cli_reports_config_errors_in_both_languages(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"task: image-classification\nmodel: vit-b16\ndata:\n  train: {tmp_path}\nepochs: 3\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'epochs'" in err and "未知的键" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
