"""BLIP-2 (Salesforce): image captioning and visual question answering with a frozen LLM behind a Q-Former."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family


def build_tiny(folder: Path) -> None:
    """A ~92k-parameter Blip2ForConditionalGeneration (tiny ViT + Q-Former + OPT) and a Blip2Processor.

    As in the real checkpoints, the tokenizer holds an ``<image>`` special token, the processor prepends it
    ``num_query_tokens`` times, and ``config.image_token_index`` names it so the model swaps in the Q-Former
    outputs there.
    """
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessorPil,
    )

    from lmt.models._offline_tokenizers import build_gpt2_tokenizer

    num_query_tokens = 4  # 32 in the real checkpoints; the processor repeats `<image>` this often
    # OPT's tokenizer starts every text with `</s>`; the processor puts the `<image>` tokens before it.
    tokenizer = build_gpt2_tokenizer(("<image>",), add_bos_token=True)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = Blip2Config(
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 32, "patch_size": 8,
            # The default (1e-10) leaves a random vision tower outputting all-zero features.
            "initializer_range": 0.02,
        },
        qformer_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "cross_attention_frequency": 1, "vocab_size": len(tokenizer), "max_position_embeddings": 64,
        },
        text_config={
            "model_type": "opt", "vocab_size": len(tokenizer), "hidden_size": 32, "ffn_dim": 37,
            "num_hidden_layers": 2, "num_attention_heads": 4, "word_embed_proj_dim": 32,
            "max_position_embeddings": 128,
            # Untied (OPT ties them): a random tied head mostly echoes its input token, so captions would end
            # at once (BOS is also EOS) and answers repeat the prompt's last token.
            "tie_word_embeddings": False,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_id,
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=num_query_tokens)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


BLIP2 = register_family(
    ModelFamily(
        name="blip2",
        description="Salesforce BLIP-2: captions and answers questions about images (Q-Former + LLM)",
        model_types=("blip-2",),
        model_classes={
            "image-to-text": "Blip2ForConditionalGeneration",
            "visual-question-answering": "Blip2ForConditionalGeneration",
        },
        checkpoints=(
            Checkpoint("blip2-opt-2.7b", "Salesforce/blip2-opt-2.7b", "OPT-2.7B, 3.9B params, 224 px, ~8 GB fp16"),
            Checkpoint("blip2-opt-6.7b", "Salesforce/blip2-opt-6.7b", "OPT-6.7B, 7.8B params, 224 px, ~16 GB fp16"),
            Checkpoint(
                "blip2-flan-t5-xl", "Salesforce/blip2-flan-t5-xl", "Flan-T5-XL, 3.9B params, 224 px, stronger at VQA"
            ),
            Checkpoint(
                "blip2-opt-2.7b-coco", "Salesforce/blip2-opt-2.7b-coco", "OPT-2.7B fine-tuned for COCO captions, 3.9B"
            ),
        ),
        build_tiny=build_tiny,
        processor_class="Blip2Processor",
        # OPT's attention projections (language model) and the Q-Former's self/cross-attention query, value.
        lora_target_modules=("q_proj", "v_proj", "query", "value"),
        tags=("vision", "text", "captioning", "vqa", "generative"),
    )
)
