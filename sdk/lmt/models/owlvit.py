"""OWL-ViT (Google): open-vocabulary object detection from free-text queries, OWLv2's predecessor."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family


def build_tiny(folder: Path) -> None:
    """A ~65k-parameter OwlViTForObjectDetection (64 px, 8 px patches: 64 boxes) and an OwlViTProcessor.

    OWL's box and class heads work on the text embeddings directly, so ``projection_dim`` must equal the text
    ``hidden_size``. Queries are padded to 16 tokens, as in the real checkpoints.
    """
    import torch
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessorPil, OwlViTProcessor

    from lmt.models._offline_tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = 16
    config = OwlViTConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 64, "patch_size": 8,
        },
        projection_dim=32,
        # The top-level config has no initializer_range, so the box/class heads get std 1.0 (from
        # initializer_factor) and saturate: zero-size boxes, scores of exactly 0 or 1. 0.1 gives grid-like
        # boxes and scores of 0.1-0.8.
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    model = OwlViTForObjectDetection(config).eval()
    # As google/owlvit-*: resize (no padding, unlike OWLv2) then centre crop to the model's input size.
    image_processor = OwlViTImageProcessorPil(
        size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}
    )
    processor = OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


OWLVIT = register_family(
    ModelFamily(
        name="owlvit",
        description="Google OWL-ViT: open-vocabulary object detection, the first OWL generation",
        model_types=("owlvit",),
        model_classes={"zero-shot-object-detection": "OwlViTForObjectDetection"},
        checkpoints=(
            Checkpoint("owlvit-b32", "google/owlvit-base-patch32", "ViT-B/32, 153M params, 768 px, fastest"),
            Checkpoint("owlvit-b16", "google/owlvit-base-patch16", "ViT-B/16, 153M params, 768 px"),
            Checkpoint("owlvit-l14", "google/owlvit-large-patch14", "ViT-L/14, 433M params, 840 px, best"),
        ),
        build_tiny=build_tiny,
        processor_class="OwlViTProcessor",
        lora_target_modules=("q_proj", "v_proj"),
        tags=("vision", "text", "detection", "zero-shot", "open-vocabulary"),
    )
)
