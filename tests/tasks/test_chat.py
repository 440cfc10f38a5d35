"""The image-text-to-text chat call: the same answers as transformers' generate with the same chat template (greedy,
both families), several images and turns, streaming, decoding options, grounding parsed from real output formats."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import lmt
from lmt.tasks.chat import (
    MAX_IMAGES,
    ImageTextToText,
    build_conversation,
    parse_grounding,
    prompt,
)

FAMILIES = ["qwen2.5-vl-3b", "internvl3-1b"]


@pytest.fixture(scope="module", params=FAMILIES)
def chat(request):
    return lmt.pipeline("image-text-to-text", model=request.param, weights="tiny")


@pytest.fixture(scope="module")
def qwen():
    return lmt.pipeline("image-text-to-text", model="qwen2.5-vl-3b", weights="tiny")


def direct_answer(chat: ImageTextToText, messages: list[dict], **options) -> str:
    """What transformers gives: the processor's chat template (images in the messages), generate, decode."""
    inputs = chat.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        output = chat.model.generate(**inputs, do_sample=False, **options)
    return chat.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()


def test_the_task_is_registered():
    assert lmt.pipeline is not None and "image-text-to-text" in lmt.TASKS
    from lmt.tasks import TASK_CLASSES

    assert TASK_CLASSES["image-text-to-text"] is ImageTextToText is lmt.ImageTextToText
    assert ImageTextToText.default_model == "qwen2.5-vl-3b"


def test_one_image_matches_generate(chat, rgb_image):
    ours = chat(rgb_image, "这张图里有什么？What is in it?", max_new_tokens=12)
    messages = [{"role": "user", "content": [{"type": "image", "image": rgb_image},
                                             {"type": "text", "text": "这张图里有什么？What is in it?"}]}]
    assert ours.text == direct_answer(chat, messages, max_new_tokens=12)
    assert ours.prompt == "这张图里有什么？What is in it?" and ours.text


def test_several_images_and_turns_match_generate(chat, rgb_image, other_image, cat_path):
    history = [
        {"role": "user", "content": [{"type": "image", "image": rgb_image}, {"type": "text", "text": "Describe it."}]},
        {"role": "assistant", "content": "A noisy picture."},
    ]
    ours = chat([other_image, cat_path], "比较这几张图。", history=history, max_new_tokens=10)
    cat = lmt.load_image(cat_path)
    messages = [
        history[0],
        {"role": "assistant", "content": [{"type": "text", "text": "A noisy picture."}]},
        {"role": "user", "content": [{"type": "image", "image": other_image}, {"type": "image", "image": cat},
                                     {"type": "text", "text": "比较这几张图。"}]},
    ]
    assert ours.text == direct_answer(chat, messages, max_new_tokens=10)
    follow_up = chat(None, "它是什么颜色？", history=history, system="Answer briefly.", max_new_tokens=6)
    messages = [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]}, *messages[:2],
                {"role": "user", "content": [{"type": "text", "text": "它是什么颜色？"}]}]
    assert follow_up.text == direct_answer(chat, messages, max_new_tokens=6)


def test_stream_joins_to_the_answer(chat, rgb_image):
    whole = chat(rgb_image, "Describe this image.", max_new_tokens=16)
    pieces = list(chat.stream(rgb_image, "Describe this image.", max_new_tokens=16))
    assert pieces and all(isinstance(piece, str) and piece for piece in pieces)
    assert "".join(pieces).strip() == whole.text


def test_stream_checks_arguments_before_it_starts(qwen, rgb_image):
    with pytest.raises(lmt.InvalidInputError, match="prompt"):
        qwen.stream(rgb_image, "   ")  # raised here, not at the first next()
    with pytest.raises(lmt.InvalidInputError, match="max_new_tokens"):
        qwen.stream(rgb_image, "hi", max_new_tokens=5000)


def test_closing_a_stream_stops_generation(qwen, rgb_image):
    full = 900
    pieces = qwen.stream(rgb_image, "Describe this image.", max_new_tokens=full)
    first = next(pieces)
    start = time.monotonic()
    pieces.close()  # a visitor who leaves
    assert first and time.monotonic() - start < 5.0
    assert not [t for t in threading.enumerate() if t.name == "lmt-chat-stream" and t.is_alive()]


def test_stream_reports_a_generation_failure(qwen, rgb_image, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(qwen.model, "generate", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        list(qwen.stream(rgb_image, "hi", max_new_tokens=4))


def test_a_stalled_stream_ends_with_a_clear_error(qwen, rgb_image, monkeypatch):
    import lmt.tasks.chat as chat_module

    monkeypatch.setattr(chat_module, "STREAM_TIMEOUT_S", 0.2)
    monkeypatch.setattr(qwen.model, "generate", lambda **kwargs: time.sleep(1.0))
    with pytest.raises(lmt.LmtError, match="no text") as info:
        list(qwen.stream(rgb_image, "hi", max_new_tokens=4))
    assert "秒内没有生成" in info.value.message_zh


def test_decoding_options(qwen, rgb_image):
    greedy = qwen(rgb_image, "hi", max_new_tokens=8)
    assert qwen(rgb_image, "hi", max_new_tokens=8) == greedy, "greedy decoding is deterministic"
    options = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.3, "top_p": 0.8, "top_k": 20, "seed": 7}
    assert qwen(rgb_image, "hi", **options) == qwen(rgb_image, "hi", **options), "the same seed, the same sample"
    assert isinstance(qwen(rgb_image, "hi", max_new_tokens=6, num_beams=2, repetition_penalty=1.3).text, str)


@pytest.mark.parametrize(
    ("options", "name"),
    [({"max_new_tokens": 100_000}, "max_new_tokens"), ({"max_new_tokens": 0}, "max_new_tokens"),
     ({"temperature": float("nan")}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k"),
     ({"num_beams": 9}, "num_beams"), ({"repetition_penalty": 0.5}, "repetition_penalty"),
     ({"do_sample": "yes"}, "do_sample"), ({"seed": "1"}, "seed"), ({"seed": -1}, "seed")],
)
def test_decoding_options_are_checked(qwen, rgb_image, options, name):
    with pytest.raises(lmt.InvalidInputError, match=name) as info:
        qwen(rgb_image, "hi", **options)
    assert info.value.message_zh != info.value.message


def test_prompt_and_answer_must_fit(qwen, rgb_image):
    with pytest.raises(lmt.InvalidInputError, match="tokens") as info:
        qwen(rgb_image, "cat " * 400, max_new_tokens=700)
    assert "词元" in info.value.message_zh


@pytest.mark.parametrize(
    ("history", "fragment"),
    [("hello", "list"), ([{"role": "robot", "content": "x"}], "role"),
     ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system"),
     ([{"role": "assistant", "content": [{"type": "image", "image": "examples/images/cat.png"}]}], "image"),
     ([{"role": "user", "content": []}], "content"), ([{"role": "user", "content": [{"type": "video"}]}], "part")],
)
def test_history_is_checked(qwen, rgb_image, history, fragment):
    with pytest.raises(lmt.InvalidInputError, match=fragment):
        qwen(rgb_image, "hi", history=history)


def test_limits_on_images_and_messages(rgb_image):
    with pytest.raises(lmt.InvalidInputError, match="images"):
        build_conversation(None, [rgb_image] * (MAX_IMAGES + 1), "hi")
    with pytest.raises(lmt.InvalidInputError, match="messages"):
        build_conversation([{"role": "user", "content": "hi"}] * 1000, [], "hi")
    with pytest.raises(lmt.InvalidImageError):
        build_conversation(None, [b"not an image"], "hi")


def test_ready_made_prompts():
    assert prompt("count", "en", "cats") == "How many cats are there in the image? Answer with a number only."
    assert prompt("count", subject="猫") == "图中有多少猫？请只回答数字。"
    assert "文字" in prompt("ocr") and "text" in prompt("ocr", "en")
    assert "JSON" in prompt("locate", "zh", "汽车")
    with pytest.raises(lmt.InvalidInputError):
        prompt("poem")
    with pytest.raises(lmt.InvalidInputError):
        prompt("count", "zh")  # no subject


# ---- grounding ----------------------------------------------------------------------------------------------------
QWEN25_ANSWER = (  # as Qwen2.5-VL writes it: pixels of the resized input (here 448 x 308 for a 451 x 300 image)
    '```json\n[\n\t{"bbox_2d": [224, 154, 448, 308], "label": "cat"},\n\t{"bbox_2d": [0, 0, 112, 77], '
    '"label": "猫的耳朵"}\n]\n```'
)


def test_parse_qwen25_json_rescales_from_the_resized_image():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    height, width = smart_resize(300, 451, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    assert (width, height) == (448, 308)
    found = parse_grounding(QWEN25_ANSWER, (451, 300), resized_size=(width, height))
    assert [d.label for d in found] == ["cat", "猫的耳朵"] and found.image_size == (451, 300)
    assert found.detections[0].box == pytest.approx((225.5, 150, 451, 300))
    assert found.detections[1].box == pytest.approx((0, 0, 112 * 451 / 448, 77 * 300 / 308))
    assert all(d.score == 1.0 for d in found)
    # without the resized size, the coordinates are taken as the image's own pixels
    assert parse_grounding(QWEN25_ANSWER, (451, 300)).detections[1].box == (0, 0, 112, 77)


def test_parse_a_cut_off_or_bare_json_list():
    cut = '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "car"}, {"bbox_2d": [50, 60, 7'
    assert [d.box for d in parse_grounding(cut, (100, 100))] == [(10, 20, 30, 40)]
    bare = 'Here: [{"bbox_2d": [1, 2, 3, 4]}]'
    assert parse_grounding(bare, (10, 10), default_label="bus").detections[0].label == "bus"


def test_parse_qwen2_and_internvl_formats():
    qwen2 = "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(100,200),(500,800)<|box_end|>"
    (found,) = parse_grounding(qwen2, (1000, 500)).detections
    assert found.label == "the cat" and found.box == pytest.approx((100, 100, 500, 400))
    internvl = "<ref>dog</ref><box>[[0, 0, 500, 500], [500, 500, 1000, 1000]]</box> and <box>[[100, 100, 200, 200]]</box>"
    found = parse_grounding(internvl, (200, 100), default_label="thing")
    assert [(d.label, d.box) for d in found] == [
        ("dog", (0, 0, 100, 50)), ("dog", (100, 50, 200, 100)), ("thing", (20, 10, 40, 20))
    ]


def test_parse_clips_and_drops_bad_boxes():
    text = '[{"bbox_2d": [-20, -5, 5000, 60], "label": "a"}, {"bbox_2d": [30, 30, 10, 10], "label": "inverted"}, ' \
           '{"bbox_2d": [5, 5, 5, 9], "label": "empty"}, {"bbox_2d": ["x", 1, 2, 3]}, {"bbox_2d": [1, 2, 3]}]'
    found = parse_grounding(text, (100, 50))
    assert [(d.label, d.box) for d in found] == [("a", (0, 0, 100, 50))]
    assert len(parse_grounding("I see no cat here.", (100, 50))) == 0


def test_resized_size_is_smart_resize(qwen, cat_path):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    image_processor = qwen.processor.image_processor
    height, width = smart_resize(300, 451, factor=28, min_pixels=image_processor.size["shortest_edge"],
                                 max_pixels=image_processor.size["longest_edge"])
    assert qwen.resized_size(cat_path) == (width, height)


def fake_generate(chat: ImageTextToText, answers: list[str], monkeypatch) -> list[str]:
    """Make ``model.generate`` answer with ``answers`` (token ids of the tiny tokenizer); returns the prompts seen."""
    seen = []
    tokenizer = chat.processor.tokenizer

    def generate(input_ids, **kwargs):
        seen.append(tokenizer.decode(input_ids[0]))
        answer = tokenizer(answers[len(seen) - 1], return_tensors="pt")["input_ids"]
        return torch.cat([input_ids, answer, torch.tensor([[tokenizer.eos_token_id]])], dim=1)

    monkeypatch.setattr(chat.model, "generate", generate)
    return seen


def test_ground_with_qwen(qwen, cat_path, monkeypatch):
    width, height = qwen.resized_size(cat_path)
    answer = f'```json\n[{{"bbox_2d": [0, 0, {width // 2}, {height}], "label": "cat"}}]\n```'
    prompts = fake_generate(qwen, [answer], monkeypatch)
    found = qwen.ground(cat_path, "cat, dog")
    assert '"cat", "dog"' in prompts[0] and "JSON" in prompts[0] and "<|image_pad|>" in prompts[0]
    assert found.image_size == (451, 300) and [d.label for d in found] == ["cat"]
    assert found.detections[0].box == pytest.approx((0, 0, 451 * (width // 2) / width, 300))


def test_ground_with_internvl(cat_path, monkeypatch):
    internvl = lmt.pipeline("image-text-to-text", model="internvl3-1b", weights="tiny")
    answers = ["<ref>cat</ref><box>[[0, 0, 500, 1000]]</box>", "no dog"]
    prompts = fake_generate(internvl, answers, monkeypatch)
    found = internvl.ground(cat_path, ["cat", "dog"])
    assert "<ref>cat</ref>" in prompts[0] and "<ref>dog</ref>" in prompts[1]
    assert [(d.label, d.box) for d in found] == [("cat", pytest.approx((0, 0, 225.5, 300)))]


def test_ground_runs_on_tiny_weights(chat, rgb_image):
    found = chat.ground(rgb_image, "cat", max_new_tokens=8)  # random weights: any number of boxes, in the image
    assert found.image_size == rgb_image.size
    assert all(0 <= d.box[0] < d.box[2] <= 60 and 0 <= d.box[1] < d.box[3] <= 50 for d in found)


def test_ground_is_refused_for_other_models(qwen, rgb_image, monkeypatch):
    monkeypatch.setattr(qwen.model.config, "model_type", "llava")
    with pytest.raises(lmt.UnsupportedTaskError, match="Grounding"):
        qwen.ground(rgb_image, "cat")


def test_quantization_is_refused_on_cpu(qwen):
    with pytest.raises(lmt.UnsupportedDeviceError, match="CUDA"):
        ImageTextToText("qwen2.5-vl-3b", weights="tiny", device="cpu", quantization="4bit")
    with pytest.raises(lmt.InvalidInputError, match="loaded already"):
        ImageTextToText(qwen.loaded, quantization="8bit")


# ---- the CLI ------------------------------------------------------------------------------------------------------
def test_cli_chat_and_ground(capsys, cat_path):
    import json

    from lmt.cli import main

    assert main(["chat", "-m", "qwen2.5-vl-3b", "--tiny", "-i", str(cat_path), "-p", "图里有什么？",
                 "--max-new-tokens", "6", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    expected = lmt.pipeline("image-text-to-text", "qwen2.5-vl-3b", weights="tiny")(cat_path, "图里有什么？",
                                                                                 max_new_tokens=6)
    assert document["text"] == expected.text and document["prompt"] == "图里有什么？"
    assert main(["chat", "-m", "qwen2.5-vl-3b", "--tiny", "-i", str(cat_path), "-p", "图里有什么？",
                 "--max-new-tokens", "6", "--stream"]) == 0
    assert capsys.readouterr().out.strip() == expected.text
    assert main(["chat", "-m", "internvl3-1b", "--tiny", "-i", str(cat_path), "--ground", "cat",
                 "--max-new-tokens", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["width"] == 451
    assert main(["predict", "image-text-to-text", "-m", "qwen2.5-vl-3b", "--tiny", "-i", str(cat_path),
                 "--prompt", "图里有什么？", "--max-new-tokens", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["text"] == expected.text
    if not torch.cuda.is_available():
        assert main(["chat", "-m", "qwen2.5-vl-3b", "--tiny", "-i", str(cat_path), "--quantization", "4bit", "-p",
                     "hi"]) == 2
        assert "CUDA" in capsys.readouterr().err
