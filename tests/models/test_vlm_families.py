"""Qwen2.5-VL and InternVL: registered checkpoints, tiny variants that match the real formats (chat template, image
tokens, mrope), image-only processors found by AutoProcessor and transformers' pipeline, and CUDA-only quantization.

Building, determinism and the generic reload checks are in test_tiny_families.py (it covers every family)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import lmt
from lmt import registry
from lmt.tiny import tiny_model_path

QWEN_NAMES = ["qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen2.5-vl-32b", "qwen2.5-vl-72b"]
INTERNVL_NAMES = ["internvl3-1b", "internvl3-2b", "internvl3-8b"]


@pytest.fixture(scope="module")
def qwen():
    return lmt.load("qwen2.5-vl-3b", weights="tiny", task="image-text-to-text")


@pytest.fixture(scope="module")
def internvl():
    return lmt.load("internvl3-1b", weights="tiny", task="image-text-to-text")


def user_turn(text: str, images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [*({"type": "image"} for _ in range(images)), {"type": "text", "text": text}]}]


def test_registry_lists_both_families():
    assert registry.list_models(task="image-text-to-text") == QWEN_NAMES + INTERNVL_NAMES
    assert registry.list_models("internvl*") == INTERNVL_NAMES
    family, checkpoint = registry.lookup_checkpoint("qwen2.5-vl-7b")
    assert (family.name, checkpoint.hub_id) == ("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert registry.family_for_hub_id("OpenGVLab/InternVL3-1B-hf").name == "internvl"
    assert registry.family_for_model_type("qwen2_5_vl").name == "qwen2.5-vl"
    # only transformers-native classes: no remote code is ever needed
    for name in ("qwen2.5-vl", "internvl"):
        class_name = registry.get_family(name).model_class_for("image-text-to-text")
        assert hasattr(transformers, class_name)
    # BLIP-2 keeps its own tasks; the chat task is a new one
    assert "image-text-to-text" not in registry.get_family("blip2").tasks
    assert "blip2-opt-2.7b" in registry.list_models(task="image-to-text")


def test_loaded_classes(qwen, internvl):
    assert type(qwen.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(internvl.model).__name__ == "InternVLForConditionalGeneration"
    assert type(qwen.processor).__name__ == "Qwen2_5_VLImageProcessor"
    assert type(internvl.processor).__name__ == "InternVLImageProcessor"
    for loaded in (qwen, internvl):
        assert not hasattr(loaded.processor, "video_processor")  # no torchvision needed
        assert type(loaded.processor.image_processor).__name__.endswith("Pil")
        assert sum(p.numel() for p in loaded.model.parameters()) < 300_000
        assert loaded.quantization is None


def test_qwen_config_follows_the_real_layout(qwen):
    config = qwen.model.config
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert config.vision_config.out_hidden_size == text.hidden_size
    tokenizer = qwen.processor.tokenizer
    assert tokenizer.convert_ids_to_tokens(config.image_token_id) == "<|image_pad|>"
    assert tokenizer.convert_ids_to_tokens(config.vision_start_token_id) == "<|vision_start|>"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_qwen_chat_template_and_image_tokens(qwen, rgb_image, other_image):
    processor = qwen.processor
    text = processor.apply_chat_template(user_turn("图里有什么？", images=2), add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>图里有什么？<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    inputs = processor(text=[text], images=[rgb_image, other_image], return_tensors="pt")
    grid = inputs["image_grid_thw"]
    merge = processor.image_processor.merge_size
    # each image becomes (t * h * w) / merge² pad tokens, as in the real processor
    assert int((inputs["input_ids"] == qwen.model.config.image_token_id).sum()) == int(grid.prod(-1).sum()) // merge**2
    # smart_resize: sides are multiples of patch * merge = 28 px, within the tiny's 56-112 px bounds
    sides = grid[:, 1:] * processor.image_processor.patch_size
    assert ((sides % 28) == 0).all() and (sides >= 28).all() and (sides.prod(-1) <= 112 * 112).all()


def test_internvl_chat_template_and_image_tokens(internvl, rgb_image):
    processor = internvl.processor
    text = processor.apply_chat_template(user_turn("What is this?"), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n你是书生·万象")
    assert text.endswith("<|im_start|>user\n<IMG_CONTEXT>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[rgb_image], return_tensors="pt")
    tiles = inputs["pixel_values"].shape[0]
    context = int((inputs["input_ids"] == internvl.model.config.image_token_id).sum())
    assert context == tiles * processor.image_seq_length == tiles * internvl.model.config.image_seq_length
    decoded = processor.decode(inputs["input_ids"][0])
    assert decoded.count("<img>") == decoded.count("</img>") == 1
    # a large image is cut into tiles plus a thumbnail (max_patches 4 in the tiny, 12 in the real checkpoints)
    wide = Image.fromarray((np.random.RandomState(2).rand(100, 300, 3) * 255).astype(np.uint8))
    assert processor(text=[text], images=[wide], return_tensors="pt")["pixel_values"].shape[0] > 1


def test_tokenizer_handles_chinese_and_special_tokens(qwen, internvl):
    for loaded, special in ((qwen, "<|box_start|>"), (internvl, "<ref>")):
        tokenizer = loaded.processor.tokenizer
        text = f"一只猫 a cat {special}"
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.convert_tokens_to_ids(special) in ids  # one token, never split
    assert internvl.processor.tokenizer.context_image_token == "<IMG_CONTEXT>"


def test_video_input_is_refused(qwen, internvl):
    for loaded in (qwen, internvl):
        with pytest.raises(lmt.InvalidInputError, match="video") as info:
            loaded.processor(text=["x"], videos=[np.zeros((2, 28, 28, 3), dtype=np.uint8)])
        assert "视频" in info.value.message_zh


def test_transformers_pipeline_runs_the_tiny_folders(rgb_image):
    """AutoProcessor finds the image-only processors, so transformers' own pipeline runs the saved folders."""
    for family in ("qwen2.5-vl", "internvl"):
        pipe = transformers.pipeline("image-text-to-text", model=str(tiny_model_path(family)))
        messages = [{"role": "user", "content": [{"type": "image", "image": rgb_image},
                                                 {"type": "text", "text": "hi"}]}]
        result = pipe(text=messages, max_new_tokens=3, do_sample=False)
        assert result[0]["generated_text"][-1]["role"] == "assistant"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantization_is_refused_without_cuda(quantization):
    with pytest.raises(lmt.UnsupportedDeviceError, match="CUDA") as info:
        lmt.load("qwen2.5-vl-3b", weights="tiny", task="image-text-to-text", quantization=quantization)
    assert "CUDA GPU" in info.value.message_zh and "quantization" in info.value.message_zh


def test_unknown_quantization_is_refused():
    with pytest.raises(lmt.InvalidInputError, match="4bit"):
        lmt.load("qwen2.5-vl-3b", weights="tiny", task="image-text-to-text", quantization="3bit")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and bitsandbytes")
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_tiny_chat_on_cuda(quantization, rgb_image):
    pytest.importorskip("bitsandbytes")
    chat = lmt.pipeline("image-text-to-text", "qwen2.5-vl-3b", weights="tiny", quantization=quantization)
    assert chat.loaded.quantization == quantization and chat.device.type == "cuda"
    linear = chat.model.model.language_model.layers[0].self_attn.q_proj
    assert type(linear).__module__.startswith("bitsandbytes")
    assert isinstance(chat(rgb_image, "hi", max_new_tokens=3).text, str)
