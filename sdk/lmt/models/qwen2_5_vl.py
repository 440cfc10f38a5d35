"""Qwen2.5-VL (Alibaba Qwen team): multi-turn chat over images, OCR and grounding with boxes in pixel coordinates.

Loaded with transformers' own ``Qwen2_5_VLForConditionalGeneration`` (no ``trust_remote_code``) and the image-only
processor of :mod:`lmt.models._vlm_processors`.
"""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family

#: The chat template the Qwen2-VL and Qwen2.5-VL instruct checkpoints ship (ChatML, one image pad per image).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: The special tokens of the Qwen2.5-VL vocabulary, in its order (after ``<|im_start|>``/``<|im_end|>``).
SPECIAL_TOKENS = (
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)


def build_tiny(folder: Path) -> None:
    """A ~200k-parameter Qwen2_5_VLForConditionalGeneration (2-layer ViT with window attention, 2-layer Qwen2 LM)
    and its image-only processor, with the real chat template and special tokens.

    Images are resized (``smart_resize``) to 56-112 px a side in multiples of 28, so 4-16 image tokens each: the
    same arithmetic as the real 3B/7B checkpoints, on fewer pixels.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    from lmt.models._offline_tokenizers import build_qwen2_tokenizer
    from lmt.models._vlm_processors import Qwen2_5_VLImageProcessor

    tokenizer = build_qwen2_tokenizer(SPECIAL_TOKENS, CHAT_TEMPLATE)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<|image_pad|>", "<|video_pad|>",
                                                                        "<|vision_start|>", "<|vision_end|>")}
    text_hidden, heads = 64, 4
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "out_hidden_size": text_hidden,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": text_hidden, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            # mrope splits each head's rotary half-dimension (16 / 2 = 8) over time, height and width
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
            "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # generation ends at the end of the assistant's turn, as in the real generation_config.json
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = Qwen2_5_VLImageProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


#: Default LoRA targets (``lmt train``, task vlm-sft): the language model's attention projections. peft matches a
#: target by the end of a module's name; ``self_attn.`` keeps them inside the language model, since the vision
#: tower has no ``self_attn``. Adding ``mlp.gate_proj``/``mlp.up_proj``/``mlp.down_proj`` for more capacity adapts
#: the MLPs of both the language model and the vision tower (they share those names).
LORA_TARGET_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
#: The vision tower's attention (fused ``qkv`` and its output ``proj``): add these to ``lora.target_modules`` to
#: adapt the vision tower as well (most Qwen2.5-VL fine-tunes leave it frozen).
VISION_LORA_TARGET_MODULES = ("attn.qkv", "attn.proj")


QWEN2_5_VL = register_family(
    ModelFamily(
        name="qwen2.5-vl",
        description="Qwen2.5-VL: chat about one or several images, OCR, grounding with boxes (Chinese and English)",
        model_types=("qwen2_5_vl",),
        model_classes={"image-text-to-text": "Qwen2_5_VLForConditionalGeneration"},
        checkpoints=(
            Checkpoint("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "3.8B params, ~8 GB bf16, dynamic resolution"),
            Checkpoint("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "8.3B params, ~17 GB bf16; 4-bit ~6 GB"),
            Checkpoint("qwen2.5-vl-32b", "Qwen/Qwen2.5-VL-32B-Instruct", "33B params, ~67 GB bf16"),
            Checkpoint("qwen2.5-vl-72b", "Qwen/Qwen2.5-VL-72B-Instruct", "73B params, ~146 GB bf16, multi-GPU"),
        ),
        build_tiny=build_tiny,
        processor_class="lmt.models._vlm_processors:Qwen2_5_VLImageProcessor",
        lora_target_modules=LORA_TARGET_MODULES,
        tags=("vision", "text", "chat", "vqa", "ocr", "grounding", "generative", "chinese"),
    )
)
