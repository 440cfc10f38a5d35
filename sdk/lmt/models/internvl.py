"""InternVL3 (Shanghai AI Lab / OpenGVLab): multi-turn chat over images, strong at Chinese text in images.

Only the native transformers checkpoints (the ``-hf`` repositories) are registered: they load with transformers' own
``InternVLForConditionalGeneration``, no ``trust_remote_code``. The original ``OpenGVLab/InternVL3-*`` repositories
need their own remote code and are not used. The processor is the image-only one of :mod:`lmt.models._vlm_processors`.
"""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family

#: The -hf checkpoints' chat template: ChatML, one ``<IMG_CONTEXT>`` per image (the processor expands it to
#: ``<img>`` + image_seq_length context tokens per tile + ``</img>``), and InternVL's default system prompt.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n你是书生·万象，英文名是InternVL，是由上海人工智能实验室、"
    "清华大学及多家合作单位联合开发的多模态大语言模型。<|im_end|>\n{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: InternVL's image, grounding and video tokens, as in the real vocabulary.
SPECIAL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
                  "<video>")
#: The names the processor looks the image tokens up by.
EXTRA_SPECIAL_TOKENS = {
    "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


def build_tiny(folder: Path) -> None:
    """A ~200k-parameter InternVLForConditionalGeneration (2-layer InternViT at 56 px, pixel-shuffle projector,
    2-layer Qwen2 LM) and its image-only processor, with the -hf chat template and special tokens.

    Each 56 px tile becomes (56 / 14)² × 0.5² = 4 image tokens; images are cut into at most 4 tiles plus a
    thumbnail, as the real checkpoints cut 448 px tiles (up to 12).
    """
    import torch
    from transformers import (
        GenerationConfig,
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
    )

    from lmt.models._offline_tokenizers import build_qwen2_tokenizer
    from lmt.models._vlm_processors import InternVLImageProcessor

    tokenizer = build_qwen2_tokenizer(SPECIAL_TOKENS, CHAT_TEMPLATE, extra_special_tokens=EXTRA_SPECIAL_TOKENS)
    image_size, patch_size, downsample_ratio = 56, 14, 0.5
    image_seq_length = int((image_size // patch_size) ** 2 * downsample_ratio**2)
    config = InternVLConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": [image_size, image_size], "patch_size": [patch_size, patch_size],
        },
        text_config={
            "model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 1024, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4},
            "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length,
        downsample_ratio=downsample_ratio,
        # untied: a random tied head mostly echoes its input token
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": image_size, "width": image_size}, crop_to_patches=True, min_patches=1, max_patches=4,
    )
    processor = InternVLImageProcessor(
        image_processor, tokenizer, image_seq_length=image_seq_length, chat_template=CHAT_TEMPLATE
    )
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


#: Default LoRA targets (``lmt train``, task vlm-sft): the language model's attention projections. peft matches a
#: target by the end of a module's name, and InternViT also has ``attention.q_proj``/``k_proj``/``v_proj``:
#: ``self_attn.`` keeps the defaults inside the language model.
LORA_TARGET_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
#: InternViT's attention projections: add these to ``lora.target_modules`` to adapt the vision tower as well.
VISION_LORA_TARGET_MODULES = ("attention.q_proj", "attention.k_proj", "attention.v_proj")


INTERNVL = register_family(
    ModelFamily(
        name="internvl",
        description="InternVL3 (native -hf checkpoints): chat about images, OCR and documents, Chinese and English",
        model_types=("internvl",),
        model_classes={"image-text-to-text": "InternVLForConditionalGeneration"},
        checkpoints=(
            Checkpoint("internvl3-1b", "OpenGVLab/InternVL3-1B-hf", "0.9B params (InternViT-300M + Qwen2.5-0.5B)"),
            Checkpoint("internvl3-2b", "OpenGVLab/InternVL3-2B-hf", "2.1B params (InternViT-300M + Qwen2.5-1.5B)"),
            Checkpoint("internvl3-8b", "OpenGVLab/InternVL3-8B-hf", "8B params (InternViT-300M + Qwen2.5-7B), ~16 GB"),
        ),
        build_tiny=build_tiny,
        processor_class="lmt.models._vlm_processors:InternVLImageProcessor",
        lora_target_modules=LORA_TARGET_MODULES,
        tags=("vision", "text", "chat", "vqa", "ocr", "generative", "chinese"),
    )
)
