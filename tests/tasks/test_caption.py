"""BLIP-2 captioning and VQA: same text as transformers' generate / pipeline, batching, decoding options."""

from __future__ import annotations

import pytest
import torch
from transformers import pipeline as hf_pipeline

import lmt


@pytest.fixture(scope="module")
def caption():
    return lmt.pipeline("image-to-text", model="blip2-opt-2.7b", weights="tiny")


@pytest.fixture(scope="module")
def vqa():
    return lmt.pipeline("visual-question-answering", model="blip2-opt-2.7b", weights="tiny")


def test_caption_matches_pipeline_and_generate(caption, rgb_image):
    ours = caption(rgb_image, max_new_tokens=8)
    reference = hf_pipeline("image-text-to-text", model=caption.loaded.source)
    assert ours.text == reference(rgb_image, text="", max_new_tokens=8)[0]["generated_text"].strip()
    inputs = caption.processor(images=rgb_image, return_tensors="pt")
    with torch.inference_mode():
        output = caption.model.generate(**inputs, max_new_tokens=8)
    assert ours.text == caption.processor.batch_decode(output, skip_special_tokens=True)[0].strip()
    assert ours.prompt is None


def test_vqa_matches_generate_with_the_blip2_prompt(vqa, rgb_image):
    ours = vqa(rgb_image, question="how many cats?", max_new_tokens=6)
    prompt = "Question: how many cats? Answer:"
    inputs = vqa.processor(images=rgb_image, text=prompt, return_tensors="pt")
    with torch.inference_mode():
        output = vqa.model.generate(**inputs, max_new_tokens=6)
    answer = vqa.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    assert ours.text == answer.strip()
    assert ours.prompt == "how many cats?"
    reference = hf_pipeline("image-text-to-text", model=vqa.loaded.source)
    generated = reference(rgb_image, text=prompt, max_new_tokens=6)[0]["generated_text"]
    assert generated.startswith(prompt) and generated[len(prompt) :].strip() == ours.text


def test_single_equals_batched(caption, vqa, rgb_image, other_image):
    assert caption([other_image, rgb_image], max_new_tokens=5)[1] == caption(rgb_image, max_new_tokens=5)
    batch = vqa([rgb_image, other_image], question=["how many cats?", "what color is the car?"], max_new_tokens=4)
    assert batch[0] == vqa(rgb_image, question="how many cats?", max_new_tokens=4)
    assert batch[1] == vqa(other_image, question="what color is the car?", max_new_tokens=4)


def test_decoding_options(caption, rgb_image):
    greedy = caption(rgb_image, max_new_tokens=6)
    beams = caption(rgb_image, max_new_tokens=6, num_beams=3)
    assert isinstance(beams.text, str)
    sampled_a = caption(rgb_image, max_new_tokens=6, do_sample=True, temperature=1.5, top_p=0.9, seed=1)
    sampled_b = caption(rgb_image, max_new_tokens=6, do_sample=True, temperature=1.5, top_p=0.9, seed=1)
    assert sampled_a == sampled_b, "the same seed must give the same sample"
    assert caption(rgb_image, max_new_tokens=6) == greedy, "greedy decoding is deterministic"
    prompted = caption(rgb_image, prompt="a photo of", max_new_tokens=4)
    assert prompted.prompt == "a photo of"


def test_generation_limits_are_enforced(caption, vqa, rgb_image):
    with pytest.raises(lmt.InvalidInputError, match="max_new_tokens"):
        caption(rgb_image, max_new_tokens=100_000)
    with pytest.raises(lmt.InvalidInputError, match="temperature"):
        caption(rgb_image, do_sample=True, temperature=float("nan"))
    with pytest.raises(lmt.InvalidInputError, match="question"):
        vqa(rgb_image, question="   ")
    with pytest.raises(lmt.InvalidInputError, match="one per image"):
        vqa([rgb_image, rgb_image], question=["only one"])
