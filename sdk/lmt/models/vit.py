"""ViT (Google): supervised image classification and patch/CLS features."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family


def build_tiny(folder: Path) -> None:
    """An ~81k-parameter ViTForImageClassification (32 px, 8 px patches, 5 labels) and its image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    labels = ("cat", "dog", "car", "bird", "tree")
    config = ViTConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    model.save_pretrained(folder, safe_serialization=True)
    image_processor.save_pretrained(folder)


VIT = register_family(
    ModelFamily(
        name="vit",
        description="Google ViT: Vision Transformer for ImageNet classification and image features",
        model_types=("vit",),
        model_classes={
            "image-classification": "ViTForImageClassification",
            "image-feature-extraction": "ViTModel",
        },
        checkpoints=(
            Checkpoint("vit-b16", "google/vit-base-patch16-224", "ViT-B/16, 86M params, 224 px, ImageNet-1k"),
            Checkpoint("vit-b16-384", "google/vit-base-patch16-384", "ViT-B/16, 86M params, 384 px, finer"),
            Checkpoint("vit-l16", "google/vit-large-patch16-224", "ViT-L/16, 304M params, 224 px, larger"),
        ),
        build_tiny=build_tiny,
        processor_class="AutoImageProcessor",
        lora_target_modules=("q_proj", "v_proj"),
        tags=("vision", "classification", "features"),
    )
)
