"""lmt.models.sam_fast: SAM's image embeddings as transformers computes them (bit for bit against its default SDPA
attention), from the model's own parameters; where the fast path does not apply, encode_images falls back to
transformers and fast_image_encoder says why. The SAM task call uses it and its masks stay those of transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SamConfig, SamModel, SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionEncoder

import lmt
from lmt.errors import InvalidInputError
from lmt.models.sam_fast import FastSamImageEncoder, encode_images, fast_image_encoder, unsupported_reason

#: lmt's tiny SAM encoder: 8 x 8 tokens, 4 x 4 windows, a global second layer.
TINY = {
    "hidden_size": 32, "output_channels": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 64,
    "patch_size": 8, "mlp_dim": 64, "window_size": 4, "global_attn_indexes": [1], "initializer_range": 0.02,
}
#: The real SAM token grid at 1024 px: 64 x 64 tokens, 14 x 14 windows padded to 70 x 70, two global layers.
MID = TINY | {
    "hidden_size": 64, "output_channels": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 1024,
    "patch_size": 16, "mlp_dim": 128, "window_size": 14, "global_attn_indexes": [1, 3],
}


def make_encoder(attention: str = "sdpa", **overrides) -> SamVisionEncoder:
    config = SamVisionConfig(**(TINY | overrides))
    config._attn_implementation = attention
    torch.manual_seed(0)
    encoder = SamVisionEncoder(config).eval()
    with torch.no_grad():
        # transformers initialises both to zeros: random values put the relative-position path under test
        for name, param in encoder.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                param.normal_(std=0.5)
    return encoder


def pixels(encoder: SamVisionEncoder, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    size = encoder.config.image_size
    return torch.randn(batch, 3, size, size, generator=generator, dtype=encoder.patch_embed.projection.weight.dtype)


def reference(encoder: SamVisionEncoder, pixel_values: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return encoder(pixel_values).last_hidden_state


def fast(encoder: SamVisionEncoder, pixel_values: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return fast_image_encoder(encoder)(pixel_values)


# ---- parity --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"image_size": 80, "window_size": 3, "global_attn_indexes": [0]},  # 10 x 10 tokens: padded windows
        # zero padding without a q/k/v bias: the padding's keys and values are zeros
        {"image_size": 80, "window_size": 3, "global_attn_indexes": [0], "qkv_bias": False},
        {"qkv_bias": False, "use_abs_pos": False},
        {"use_rel_pos": False},
    ],
    ids=["tiny", "padded-windows", "padded-windows-no-qkv-bias", "no-qkv-bias-no-abs-pos", "no-rel-pos"],
)
def test_bit_exact_against_transformers_default_attention(overrides):
    encoder = make_encoder(**overrides)
    x = pixels(encoder, batch=2)
    ours, theirs = fast(encoder, x), reference(encoder, x)
    assert ours.shape == theirs.shape == (2, encoder.config.output_channels, *([x.shape[-1] // 8] * 2))
    assert torch.equal(ours, theirs)


def test_float64_is_bit_exact():
    encoder = make_encoder().double()
    x = pixels(encoder)
    assert fast(encoder, x).dtype == torch.float64
    assert torch.equal(fast(encoder, x), reference(encoder, x))


def test_matches_transformers_eager_attention_within_tolerance():
    encoder = make_encoder("eager", image_size=80, window_size=3)
    x = pixels(encoder, batch=2)
    theirs = reference(encoder, x)
    assert (fast(encoder, x) - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def test_the_real_token_grid_with_global_layers():
    encoder = make_encoder(**MID)
    x = pixels(encoder)
    ours, theirs = fast(encoder, x), reference(encoder, x)
    assert ours.shape == (1, 32, 64, 64)
    assert torch.equal(ours, theirs)


@pytest.mark.slow
def test_real_size_vit_b():
    encoder = make_encoder(**{key: value for key, value in SamVisionConfig().to_dict().items() if key in TINY})
    assert encoder.config.hidden_size == 768 and encoder.config.global_attn_indexes == [2, 5, 8, 11]
    x = pixels(encoder)
    ours, theirs = fast(encoder, x), reference(encoder, x)
    assert torch.equal(ours, theirs)


# ---- shared parameters, SamModel, explicit errors -----------------------------------------------------------------
def test_reads_the_models_own_parameters():
    encoder = make_encoder()
    x = pixels(encoder)
    encoded = fast_image_encoder(encoder)
    assert encoded.encoder is encoder
    assert not any(isinstance(value, torch.Tensor) for value in vars(encoded).values())  # nothing copied
    before = fast(encoder, x)
    with torch.no_grad():
        encoder.layers[1].attn.qkv.weight.mul_(1.5)  # as a fine-tuning step would change it
    after = fast(encoder, x)
    assert not torch.equal(before, after)
    assert torch.equal(after, reference(encoder, x))


def test_takes_a_sam_model():
    torch.manual_seed(0)
    model = SamModel(SamConfig(vision_config=TINY)).eval()
    x = pixels(model.vision_encoder)
    with torch.inference_mode():
        assert torch.equal(encode_images(model, x), model.get_image_embeddings(x))
    assert fast_image_encoder(model).encoder is model.vision_encoder


def test_bad_inputs_get_clear_bilingual_errors():
    encoder = make_encoder()
    with pytest.raises(InvalidInputError, match="SamModel or SamVisionEncoder") as caught:
        fast_image_encoder(torch.nn.Linear(2, 2))
    assert "SamModel" in caught.value.message_zh
    encoded = fast_image_encoder(encoder)
    for bad in (torch.zeros(1, 3, 32, 32), torch.zeros(3, 64, 64), torch.zeros(0, 3, 64, 64), [[0.0]]):
        with torch.inference_mode(), pytest.raises(InvalidInputError, match=r"\(batch, 3, 64, 64\)") as caught:
            encoded(bad)
        assert "SamProcessor" in caught.value.message_zh


# ---- where the fast path does not apply ---------------------------------------------------------------------------
@pytest.fixture
def fast_runs(monkeypatch):
    """How many times the fast path encoded a batch."""
    runs: list[int] = []
    original = FastSamImageEncoder._encode

    def counting(self, pixel_values):
        runs.append(1)
        return original(self, pixel_values)

    monkeypatch.setattr(FastSamImageEncoder, "_encode", counting)
    return runs


def test_encode_images_takes_the_fast_path_in_inference(fast_runs):
    encoder = make_encoder()
    x = pixels(encoder)
    with torch.inference_mode():
        assert torch.equal(encode_images(encoder, x), encoder(x).last_hidden_state)
    assert fast_runs == [1]


def test_with_gradients_transformers_runs_and_gradients_flow(fast_runs):
    encoder = make_encoder()
    out = encode_images(encoder, pixels(encoder))
    assert out.requires_grad and fast_runs == []
    assert "gradients are enabled" in unsupported_reason(encoder)
    with pytest.raises(InvalidInputError, match="torch.inference_mode"):
        fast_image_encoder(encoder)(pixels(encoder))


@pytest.mark.parametrize("change", ["train", "half", "hook", "lora"])
def test_falls_back_and_says_why(change, fast_runs):
    encoder = make_encoder()
    x = pixels(encoder)
    seen = []
    if change == "train":
        encoder.train()
        expected = "training mode"
    elif change == "half":
        encoder.half()
        x = x.half()
        expected = "dtype torch.float16"
    elif change == "hook":
        encoder.register_forward_hook(lambda *_: seen.append(1))
        expected = "hooks"
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(encoder, LoraConfig(target_modules=["qkv"], init_lora_weights=False))
        encoder = model.base_model.model
        expected = "in place of an nn.Linear"
    with torch.inference_mode():
        assert expected in unsupported_reason(encoder)
        if change != "half":  # float16 convolutions are not implemented on every CPU build
            assert torch.equal(encode_images(encoder, x), encoder(x).last_hidden_state)
        with pytest.raises(InvalidInputError, match=expected) as caught:
            fast_image_encoder(encoder)(x)
    assert "快速 SAM 图像编码器无法运行" in caught.value.message_zh
    assert fast_runs == []
    assert seen == ([1, 1] if change == "hook" else [])  # the hook saw both real runs


# ---- the SAM task call ------------------------------------------------------------------------------------------
def test_segment_task_uses_the_fast_encoder_and_its_masks_are_unchanged(fast_runs):
    segment = lmt.pipeline("mask-generation", model="sam-vit-base", weights="tiny")
    segment.loaded.cache("image_embeddings", segment.embedding_cache_size).clear()
    cat = Image.open("examples/images/cat.png").convert("RGB")
    ours = segment(cat, points=[(120, 80, 1)])
    assert fast_runs == [1]

    processor, model = segment.processor, segment.model  # the transformers way, end to end
    inputs = processor(images=cat, input_points=[[[[120, 80]]]], input_labels=[[[1]]], return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=True)
    masks = processor.image_processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0][0].numpy()
    scores = outputs.iou_scores[0, 0].numpy()
    order = np.argsort(-scores, kind="stable")
    assert [mask.score for mask in ours] == [float(scores[i]) for i in order]
    for mask, index in zip(ours, order, strict=True):
        assert np.array_equal(mask.mask, masks[index])
