"""SAM (Meta): promptable segmentation from points and boxes, and automatic mask generation."""

from __future__ import annotations

from pathlib import Path

from lmt.registry import Checkpoint, ModelFamily, register_family


def build_tiny(folder: Path) -> None:
    """A ~77k-parameter SamModel (64 px input, 8x8 image embedding) and a SamProcessor sized to match.

    The vision neck, the positional embedding (2 x ``num_pos_feats``), the prompt encoder and the mask decoder
    must share one width; the mask decoder upsamples the image embedding 4x, so masks are 32 px here
    (256 px for the real 1024 px models).
    """
    import torch
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    image_size, patch_size, width = 64, 8, 32
    mask_side = 4 * (image_size // patch_size)
    config = SamConfig(
        vision_config={
            "hidden_size": 32, "output_channels": width, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": image_size, "patch_size": patch_size, "mlp_dim": 64,
            "window_size": 4, "global_attn_indexes": [1], "num_pos_feats": width // 2,
            # The default (1e-10) leaves a random encoder outputting all-zero embeddings.
            "initializer_range": 0.02,
        },
        prompt_encoder_config={
            "hidden_size": width, "image_size": image_size, "patch_size": patch_size,
            "mask_input_channels": 8,
        },
        mask_decoder_config={
            "hidden_size": width, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "iou_head_hidden_dim": width,
        },
        # With the default 0.02 a 32-wide decoder gives mask logits of ~1e-5 and IoU predictions of ~1e-4;
        # 0.3 gives both a scale of a few units, as a trained SAM's. Random masks are still never "stable"
        # (stability scores stay below 0.2): run automatic mask generation on it with stability_score_thresh=0.
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    model = SamModel(config).eval()
    image_processor = SamImageProcessorPil(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_side}, mask_pad_size={"height": mask_side, "width": mask_side},
    )
    processor = SamProcessor(image_processor=image_processor)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


SAM = register_family(
    ModelFamily(
        name="sam",
        description="Meta Segment Anything: masks from point or box prompts, and automatic mask generation",
        model_types=("sam",),
        model_classes={"mask-generation": "SamModel"},
        checkpoints=(
            Checkpoint("sam-vit-base", "facebook/sam-vit-base", "ViT-B encoder, 94M params, 1024 px, fastest"),
            Checkpoint("sam-vit-large", "facebook/sam-vit-large", "ViT-L encoder, 312M params, 1024 px"),
            Checkpoint("sam-vit-huge", "facebook/sam-vit-huge", "ViT-H encoder, 641M params, 1024 px, best"),
        ),
        build_tiny=build_tiny,
        processor_class="SamProcessor",
        # The image encoder's fused attention projection, as in SAM LoRA/adapter papers.
        lora_target_modules=("qkv",),
        tags=("vision", "segmentation", "promptable"),
    )
)
