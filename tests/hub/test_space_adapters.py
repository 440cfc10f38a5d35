"""Spaces take an adapter as ``user/name@revision``: parsed strictly, passed through as adapter_revision."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

import lmt
from lmt import ui
from lmt.errors import InvalidInputError
from tests.hub.conftest import COMMIT_V1
from tests.spaces.conftest import EXAMPLES, app_error

TINY = "vit-b16 (tiny)"
HOSTILE = ["../../etc", "v 2", "v2; rm -rf /", "-rf", "v2/../../x", "a" * 250, "", "v2@v3", "tag.lock", "<b>x</b>"]


def test_adapter_spec_reads_hub_ids_and_revisions(monkeypatch):
    monkeypatch.delenv("LMT_SPACE_LOCAL_ADAPTERS", raising=False)
    assert ui.adapter_spec("") == (None, None)
    assert ui.adapter_spec(None) == (None, None)
    assert ui.adapter_spec(" user/my-lora ") == ("user/my-lora", None)
    assert ui.adapter_spec("user/my-lora@v1") == ("user/my-lora", "v1")
    assert ui.adapter_spec("user/my-lora@refs/pr/3") == ("user/my-lora", "refs/pr/3")
    assert ui.adapter_spec(f"user/my-lora@{COMMIT_V1}") == ("user/my-lora", COMMIT_V1)
    assert ui.adapter_value("user/my-lora") == "user/my-lora"


@pytest.mark.parametrize("revision", HOSTILE)
def test_hostile_revisions_are_refused_in_both_languages(monkeypatch, revision):
    monkeypatch.delenv("LMT_SPACE_LOCAL_ADAPTERS", raising=False)
    with pytest.raises(InvalidInputError) as info:
        ui.adapter_spec(f"user/my-lora@{revision}")
    assert info.value.message_zh != info.value.message


def test_a_revision_is_refused_where_it_cannot_be_passed_on():
    with pytest.raises(InvalidInputError, match="@revision"):
        ui.adapter_value("user/my-lora@v1")


def test_server_folders_only_with_the_operators_consent(monkeypatch, tmp_path):
    folder = str(tmp_path / "adapter@v1")
    monkeypatch.delenv("LMT_SPACE_LOCAL_ADAPTERS", raising=False)
    with pytest.raises(InvalidInputError):
        ui.adapter_spec(folder)
    monkeypatch.setenv("LMT_SPACE_LOCAL_ADAPTERS", "1")
    assert ui.adapter_spec(folder) == (folder, None)


@pytest.mark.parametrize("space_client", ["vit"], indirect=True)
def test_the_vit_space_loads_a_pinned_adapter(space_client, hub):
    repo_id = hub["repo_id"]
    cat = EXAMPLES / "cat.png"

    def space(adapter: str) -> dict[str, float]:
        _, raw = space_client.predict(handle_file(cat), 10, TINY, adapter, api_name="/classify")
        return {p["label"]: p["score"] for p in raw["predictions"]}

    def sdk(revision: str | None) -> dict[str, float]:
        classify = lmt.ImageClassification("vit-b16", weights="tiny", adapter=repo_id, adapter_revision=revision)
        return classify(cat, top_k=10).as_label_dict()

    v1, v2 = sdk(None), sdk("v2")
    assert v1 != pytest.approx(v2, abs=1e-4)
    assert space(repo_id) == pytest.approx(v1, abs=1e-6)
    assert space(f"{repo_id}@v2") == pytest.approx(v2, abs=1e-6)
    assert space(f"{repo_id}@{COMMIT_V1}") == pytest.approx(v1, abs=1e-6)


@pytest.mark.parametrize("space_client", ["vit"], indirect=True)
def test_the_vit_space_explains_bad_revisions(space_client, hub):
    cat = handle_file(EXAMPLES / "cat.png")
    for revision in ("../../etc", "v 2", "a" * 250):
        message = app_error(
            lambda revision=revision: space_client.predict(cat, 3, TINY, f"{hub['repo_id']}@{revision}", api_name="/classify")
        )
        assert "不是有效的版本" in message and "not a valid revision" in message
    message = app_error(lambda: space_client.predict(cat, 3, TINY, "user/x@" + "a" * 300, api_name="/classify"))
    assert "上限为 300" in message and "the limit is 300" in message
    message = app_error(lambda: space_client.predict(cat, 3, TINY, f"{hub['repo_id']}@v9", api_name="/classify"))
    assert "revision v9" in message and "无法加载" in message
