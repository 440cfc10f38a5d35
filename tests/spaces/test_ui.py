"""lmt.ui helpers: values from API clients are checked, errors become bilingual gr.Errors without internals."""

from __future__ import annotations

import gradio as gr
import pytest

import lmt
from lmt import ui


@pytest.mark.parametrize("value", ["NaN", "Infinity", None, "x" * 100_000, float("inf"), True, [], -1, 11])
def test_number_refuses_anything_but_a_number_in_range(value):
    with pytest.raises(lmt.InvalidInputError, match="top_k"):
        ui.number(value, "top_k", 1, 10, integer=True)


def test_number_accepts_numbers_and_numeric_strings():
    assert ui.number("3", "top_k", 1, 10, integer=True) == 3
    assert ui.number(0.25, "threshold", 0, 1) == 0.25


def test_short_text_limits():
    assert ui.short_text("  cat  ", "labels") == "cat"
    with pytest.raises(lmt.InvalidInputError):
        ui.short_text("", "labels")
    with pytest.raises(lmt.InvalidInputError):
        ui.short_text("a" * 3000, "labels")
    with pytest.raises(lmt.InvalidInputError):
        ui.short_text({"html": "<script>"}, "labels")
    assert ui.short_text("<b>cat</b>", "labels") == "<b>cat</b>"  # text is never rendered as HTML by the Spaces


def test_adapters_from_visitors_must_be_hub_ids(monkeypatch):
    assert ui.adapter_value("") is None
    assert ui.adapter_value("user/my-lora") == "user/my-lora"
    for value in ("../../etc", "/etc/passwd", "user/../x", "a/b/c", "~/adapters/x"):
        with pytest.raises(lmt.InvalidInputError, match="Hub id"):
            ui.adapter_value(value)
    monkeypatch.setenv("LMT_SPACE_LOCAL_ADAPTERS", "1")
    assert ui.adapter_value("/srv/adapters/x") == "/srv/adapters/x"


def test_pick_model_accepts_only_the_space_models():
    assert ui.pick_model("vit-b16", "image-classification", tiny_allowed=False) == ("vit-b16", "real")
    assert ui.pick_model("vit-b16 (tiny)", "image-classification", tiny_allowed=True) == ("vit-b16", "tiny")
    with pytest.raises(lmt.InvalidInputError, match="--tiny"):
        ui.pick_model("vit-b16 (tiny)", "image-classification", tiny_allowed=False)
    with pytest.raises(lmt.InvalidInputError):
        ui.pick_model("resnet-50", "image-classification", tiny_allowed=False, names=["vit-b16"])
    with pytest.raises(lmt.InvalidInputError):
        ui.pick_model(None, "image-classification", tiny_allowed=False)


def test_guard_turns_errors_into_bilingual_messages():
    @ui.guard
    def fails_clearly():
        raise lmt.InvalidInputError("Bad labels.", "标签有误。")

    @ui.guard
    def crashes():
        raise RuntimeError("secret /tmp/path details")

    with pytest.raises(gr.Error) as info:
        fails_clearly()
    assert info.value.message == "标签有误。\nBad labels."
    with pytest.raises(gr.Error) as info:
        crashes()
    assert "/tmp/path" not in info.value.message and "Internal error" in info.value.message


def test_image_path_reads_raw_payloads():
    assert ui.image_path({"path": "/x/cat.png", "orig_name": "cat.png"}) == "/x/cat.png"
    assert ui.image_path(None, required=False) is None
    with pytest.raises(lmt.InvalidInputError, match="upload"):
        ui.image_path(None)
    with pytest.raises(lmt.InvalidInputError):
        ui.image_path({"nope": 1})
    with pytest.raises(lmt.InvalidInputError):
        ui.image_path("https://example.com/cat.png")
