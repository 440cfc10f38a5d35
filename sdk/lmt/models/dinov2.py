"""DINOv2 (Meta): self-supervised ViT features for retrieval, clustering and linear probes."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family

_FEATURES = ("image-feature-extraction",)


def build_tiny(folder: Path) -> None:
    """An ~82k-parameter Dinov2ForImageClassification (32 px, 8 px patches, 5 labels) and its processor.

    It carries a head so that one folder serves both tasks: ``Dinov2Model.from_pretrained`` drops the head.
    """
    import torch
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2ForImageClassification

    labels = ("cat", "dog", "car", "bird", "tree")
    config = Dinov2Config(
        hidden_size=64, mlp_ratio=2, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = Dinov2ForImageClassification(config).eval()
    # As facebook/dinov2-*: resize the short side, centre crop (256 -> 224 there), ImageNet mean/std.
    image_processor = BitImageProcessorPil(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    model.save_pretrained(folder, safe_serialization=True)
    image_processor.save_pretrained(folder)


DINOV2 = register_family(
    ModelFamily(
        name="dinov2",
        description="Meta DINOv2: self-supervised ViT backbones with strong general-purpose image features",
        model_types=("dinov2",),
        model_classes={
            "image-feature-extraction": "Dinov2Model",
            "image-classification": "Dinov2ForImageClassification",
        },
        checkpoints=(
            Checkpoint("dinov2-small", "facebook/dinov2-small", "ViT-S/14, 22M params, 224 px, no head", _FEATURES),
            Checkpoint("dinov2-base", "facebook/dinov2-base", "ViT-B/14, 86M params, 224 px, no head", _FEATURES),
            Checkpoint("dinov2-large", "facebook/dinov2-large", "ViT-L/14, 304M params, 224 px, no head", _FEATURES),
            Checkpoint("dinov2-giant", "facebook/dinov2-giant", "ViT-g/14, 1.1B params, 224 px, no head", _FEATURES),
            Checkpoint(
                "dinov2-small-imagenet1k", "facebook/dinov2-small-imagenet1k-1-layer",
                "ViT-S/14, 22M params, 224 px, with a linear ImageNet-1k head",
                ("image-classification", "image-feature-extraction"),
            ),
        ),
        build_tiny=build_tiny,
        processor_class="AutoImageProcessor",
        lora_target_modules=("q_proj", "v_proj"),
        tags=("vision", "features", "self-supervised", "classification"),
    )
)
