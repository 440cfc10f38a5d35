"""Adapters by Hub id, pinned to a revision, from a Hub-style cache (offline): the SDK, plain peft, lmt hub pull."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lmt
from lmt.cli import main
from lmt.errors import WeightsUnavailableError
from lmt.hub import pull
from lmt.tiny import tiny_model_path
from tests.hub.conftest import COMMIT_V1, COMMIT_V2


def _reference(model, image) -> dict[str, float]:
    """Probabilities from the in-memory peft model, keyed by label."""
    classify = lmt.ImageClassification("vit-b16", weights="tiny")
    pixel_values = classify.processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        probabilities = model(pixel_values=pixel_values).logits.softmax(-1)[0]
    return {model.config.id2label[i]: p for i, p in enumerate(probabilities.tolist())}


def _ours(image, repo_id: str, revision: str | None) -> dict[str, float]:
    classify = lmt.ImageClassification("vit-b16", weights="tiny", adapter=repo_id, adapter_revision=revision)
    return classify(image, top_k=10).as_label_dict()


def test_pinned_revisions_give_their_own_predictions(hub, rgb_image):
    repo_id, models = hub["repo_id"], hub["models"]
    v1, v2 = _reference(models[COMMIT_V1], rgb_image), _reference(models[COMMIT_V2], rgb_image)
    assert v1 != pytest.approx(v2, abs=1e-4), "the two revisions must differ for this test to mean anything"
    plain = lmt.ImageClassification("vit-b16", weights="tiny")(rgb_image, top_k=10).as_label_dict()
    assert plain != pytest.approx(v1, abs=1e-4), "the adapter must change the predictions"
    for revision, expected in ((None, v1), ("main", v1), (COMMIT_V1, v1), ("v2", v2), (COMMIT_V2, v2)):
        assert _ours(rgb_image, repo_id, revision) == pytest.approx(expected, abs=1e-6), revision


def test_an_unknown_revision_is_a_clear_error(hub, rgb_image):
    with pytest.raises(WeightsUnavailableError) as info:
        _ours(rgb_image, hub["repo_id"], "v3")
    assert "revision v3" in str(info.value) and "--tiny" in str(info.value)


def test_the_adapter_folder_loads_with_plain_peft(hub, rgb_image):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    expected = _reference(hub["models"][COMMIT_V2], rgb_image)
    folder = pull(hub["repo_id"], revision="v2")
    assert folder.name == COMMIT_V2
    for source, revision in ((folder, None), (hub["repo_id"], "v2")):
        base = ViTForImageClassification.from_pretrained(tiny_model_path("vit"))
        model = PeftModel.from_pretrained(base, str(source), revision=revision).eval()
        assert _reference(model, rgb_image) == pytest.approx(expected, abs=1e-6)


def test_lmt_hub_pull_returns_the_files(hub, tmp_path, capsys):
    repo_id = hub["repo_id"]
    assert main(["hub", "pull", repo_id]) == 0
    main_folder = Path(capsys.readouterr().out.strip())
    assert main_folder.name == COMMIT_V1
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in main_folder.iterdir()}
    assert main(["hub", "pull", repo_id, "--revision", "v2", "--local-dir", str(tmp_path / "v2")]) == 0
    local = Path(capsys.readouterr().out.strip())
    assert local == tmp_path / "v2"
    copied = local / "adapter_model.safetensors"
    assert copied.is_file() and not copied.is_symlink()
    cached = hub["hub"] / f"models--{repo_id.replace('/', '--')}" / "snapshots" / COMMIT_V2
    assert copied.read_bytes() == (cached / "adapter_model.safetensors").read_bytes()
    assert copied.read_bytes() != (main_folder / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["lmt-tests/no-such-adapter"], "not in the local cache"),
        (["{repo}", "--revision", "v3"], "not in the local cache"),
        (["{repo}", "--revision", "../../etc"], "not a valid revision"),
        (["no-slash"], "not a Hub repository id"),
    ],
)
def test_lmt_hub_pull_errors(hub, capsys, args, expected):
    assert main(["hub", "pull", *(arg.format(repo=hub["repo_id"]) for arg in args)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
