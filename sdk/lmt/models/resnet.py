"""ResNet (Microsoft): convolutional ImageNet classifiers, the classic CNN baseline."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family


def build_tiny(folder: Path) -> None:
    """A ~36k-parameter bottleneck ResNetForImageClassification (5 labels) and a 32 px image processor.

    microsoft/resnet-50 ships a ``ConvNextImageProcessor`` (resize to size/crop_pct, centre crop), so the tiny
    variant does too.
    """
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

    labels = ("cat", "dog", "car", "bird", "tree")
    config = ResNetConfig(
        embedding_size=32, hidden_sizes=[64, 128], depths=[1, 1], layer_type="bottleneck",
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = ResNetForImageClassification(config).eval()
    image_processor = ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875)
    model.save_pretrained(folder, safe_serialization=True)
    image_processor.save_pretrained(folder)


RESNET = register_family(
    ModelFamily(
        name="resnet",
        description="Microsoft ResNet: residual CNNs for ImageNet classification",
        model_types=("resnet",),
        model_classes={"image-classification": "ResNetForImageClassification"},
        checkpoints=(
            Checkpoint("resnet-50", "microsoft/resnet-50", "ResNet-50, 25.6M params, 224 px, ImageNet-1k"),
            Checkpoint("resnet-18", "microsoft/resnet-18", "ResNet-18, 11.7M params, 224 px, fastest"),
            Checkpoint("resnet-101", "microsoft/resnet-101", "ResNet-101, 44.5M params, 224 px, most accurate"),
        ),
        build_tiny=build_tiny,
        processor_class="AutoImageProcessor",
        # Every Conv2d in transformers' ResNet is named `convolution` (stem, residual and shortcut convs).
        lora_target_modules=("convolution",),
        tags=("vision", "classification", "cnn"),
    )
)
