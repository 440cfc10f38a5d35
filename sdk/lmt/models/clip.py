"""CLIP (OpenAI): zero-shot image classification and image/text embeddings."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family


def build_tiny(folder: Path) -> None:
    """A ~60k-parameter CLIP with CLIP's exact architecture classes, a real BPE tokenizer and processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from lmt.models._offline_tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 32, "patch_size": 8,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


CLIP = register_family(
    ModelFamily(
        name="clip",
        description="OpenAI CLIP: contrastive image-text model for zero-shot classification and retrieval",
        model_types=("clip",),
        model_classes={
            "zero-shot-image-classification": "CLIPModel",
            "image-feature-extraction": "CLIPModel",
        },
        checkpoints=(
            Checkpoint("clip-vit-b32", "openai/clip-vit-base-patch32", "ViT-B/32, 151M params, fastest"),
            Checkpoint("clip-vit-b16", "openai/clip-vit-base-patch16", "ViT-B/16, 150M params, finer patches"),
            Checkpoint("clip-vit-l14", "openai/clip-vit-large-patch14", "ViT-L/14, 428M params, most accurate"),
            Checkpoint("clip-vit-l14-336", "openai/clip-vit-large-patch14-336", "ViT-L/14 at 336 px"),
        ),
        build_tiny=build_tiny,
        lora_target_modules=("q_proj", "v_proj"),
        tags=("vision", "text", "zero-shot", "retrieval"),
    )
)
