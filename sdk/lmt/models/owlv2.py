"""OWLv2 (Google): open-vocabulary object detection from free-text queries."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family


def build_tiny(folder: Path) -> None:
    """A ~67k-parameter Owlv2ForObjectDetection (64 px, 8 px patches: 64 boxes) and an Owlv2Processor.

    OWL's box and class heads work on the text embeddings directly, so ``projection_dim`` must equal the text
    ``hidden_size``. Queries are padded to 16 tokens, as in the real checkpoints.
    """
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    from lmt.models._offline_tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = 16
    config = Owlv2Config(
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
    model = Owlv2ForObjectDetection(config).eval()
    # OWLv2 pads to a square (grey) before resizing, so boxes come back relative to the padded square.
    image_processor = Owlv2ImageProcessorPil(size={"height": 64, "width": 64})
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


OWLV2 = register_family(
    ModelFamily(
        name="owlv2",
        description="Google OWLv2: open-vocabulary object detection, boxes for any text query",
        model_types=("owlv2",),
        model_classes={"zero-shot-object-detection": "Owlv2ForObjectDetection"},
        checkpoints=(
            Checkpoint(
                "owlv2-b16", "google/owlv2-base-patch16-ensemble", "ViT-B/16, 155M params, 960 px, weight ensemble"
            ),
            Checkpoint(
                "owlv2-b16-finetuned", "google/owlv2-base-patch16-finetuned",
                "ViT-B/16, 155M params, 960 px, fine-tuned on detection data",
            ),
            Checkpoint(
                "owlv2-l14", "google/owlv2-large-patch14-ensemble", "ViT-L/14, 438M params, 1008 px, best"
            ),
        ),
        build_tiny=build_tiny,
        processor_class="Owlv2Processor",
        lora_target_modules=("q_proj", "v_proj"),
        tags=("vision", "text", "detection", "zero-shot", "open-vocabulary"),
    )
)
