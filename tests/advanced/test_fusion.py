"""Multimodal fusion: each head's shapes, gradients and masks; the synthetic data; embedding fusion; and the
benchmark, whose quick run must show fusion beating both single modalities on the xor rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmt.advanced.digits import digits_split
from lmt.advanced.fusion import (
    NUMBER_WORDS,
    TEXT_LENGTH,
    VARIANTS,
    VOCAB,
    CrossAttentionFusion,
    EarlyFusion,
    FusedEmbedder,
    GatedFusion,
    LateFusion,
    UnimodalHead,
    build_head,
    fuse_embeddings,
    inputs_of,
    label_of,
    make_fusion_data,
    recall_at_k,
)
from lmt.errors import InvalidInputError
from tests.benchscripts import imported, run_script

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data():
    images, digits, _, _ = digits_split()
    return make_fusion_data(images[:50], digits[:50], rule="xor", pairs_per_image=2, seed=3)


def _inputs(data, variant: str, count: int = 8):
    image, text = data.views(inputs_of(variant))
    return torch.from_numpy(image[:count]), torch.from_numpy(text[:count])


# ---- heads -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_head_gives_logits_and_trains_every_parameter(data, variant):
    torch.manual_seed(0)
    image, text = _inputs(data, variant)
    head = build_head(variant, image.shape[-1], text.shape[-1], num_classes=3)
    logits = head(image, text)
    assert logits.shape == (8, 3) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_late_fusion_returns_the_log_of_averaged_probabilities(data):
    torch.manual_seed(0)
    image, text = _inputs(data, "late")
    head = LateFusion(image.shape[-1], text.shape[-1], 4).eval()
    expected = (head.image_head(image, text).softmax(-1) + head.text_head(image, text).softmax(-1)) / 2
    assert torch.allclose(head(image, text).exp(), expected, atol=1e-6)
    assert torch.allclose(head(image, text).exp().sum(-1), torch.ones(8), atol=1e-5)


def test_single_modality_heads_ignore_the_other_input(data):
    torch.manual_seed(0)
    image, text = _inputs(data, "image-only")
    image_only = UnimodalHead(image.shape[-1], 2, modality="image").eval()
    text_only = UnimodalHead(text.shape[-1], 2, modality="text").eval()
    assert torch.equal(image_only(image, text), image_only(image, torch.rand_like(text)))
    assert torch.equal(text_only(image, text), text_only(torch.rand_like(image), text))
    assert not torch.equal(image_only(image, text), image_only(torch.rand_like(image), text))


def test_gate_values_lie_between_zero_and_one(data):
    torch.manual_seed(0)
    image, text = _inputs(data, "gated")
    gate = GatedFusion(image.shape[-1], text.shape[-1], 2).gate_values(image, text)
    assert gate.shape == (8, 64) and bool(((gate > 0) & (gate < 1)).all())


def test_cross_attention_masks_leave_padding_out(data):
    """Padded image tokens get no attention and padded text tokens are not pooled: the logits do not change."""
    torch.manual_seed(0)
    image, text = _inputs(data, "cross-attention", count=4)
    head = CrossAttentionFusion(image.shape[-1], text.shape[-1], 2).eval()
    logits, weights = head(image, text, return_attention=True)
    assert weights.shape == (4, TEXT_LENGTH, image.shape[1])
    assert torch.allclose(weights.sum(-1), torch.ones(4, TEXT_LENGTH), atol=1e-5)
    padded_image = torch.cat([image, 100 * torch.rand(4, 3, image.shape[-1])], dim=1)
    padded_text = torch.cat([text, 100 * torch.rand(4, 2, text.shape[-1])], dim=1)
    image_mask = torch.cat([torch.ones(4, image.shape[1]), torch.zeros(4, 3)], dim=1).bool()
    text_mask = torch.cat([torch.ones(4, TEXT_LENGTH), torch.zeros(4, 2)], dim=1).bool()
    masked = head(padded_image, padded_text, image_mask=image_mask, text_mask=text_mask)
    assert torch.allclose(masked, logits, atol=1e-5)
    assert not torch.allclose(head(padded_image, padded_text), logits, atol=1e-3)  # without the masks it differs


def test_cross_attention_takes_vectors_as_one_token():
    torch.manual_seed(0)
    head = CrossAttentionFusion(10, 6, 2, hidden=8, heads=2)
    assert head(torch.rand(5, 10), torch.rand(5, 6)).shape == (5, 2)


@pytest.mark.parametrize(("image", "text"), [
    (torch.rand(4, 64), torch.rand(3, len(VOCAB))),  # batch sizes differ
    (torch.rand(4, 2, 64), torch.rand(4, len(VOCAB))),  # a token sequence for a vector head
])
def test_heads_refuse_mismatched_inputs(image, text):
    with pytest.raises(InvalidInputError, match="same size"):
        EarlyFusion(64, len(VOCAB), 2)(image, text)


def test_bad_head_arguments_are_clear_errors():
    with pytest.raises(InvalidInputError, match="Unknown fusion variant"):
        build_head("mid", 4, 4, 2)
    with pytest.raises(InvalidInputError, match="multiple of heads"):
        CrossAttentionFusion(4, 4, 2, hidden=10, heads=4)
    with pytest.raises(InvalidInputError, match="num_classes"):
        EarlyFusion(4, 4, 0)
    with pytest.raises(InvalidInputError, match="modality"):
        UnimodalHead(4, 2, modality="audio")


# ---- data ------------------------------------------------------------------------------------------------------------
def test_labels_follow_the_rule():
    assert [label_of(d, w, "xor") for d, w in ((2, 4), (2, 5), (3, 4), (3, 5))] == [0, 1, 1, 0]
    assert [label_of(d, w, "product") for d, w in ((2, 4), (2, 5), (3, 4), (3, 5))] == [0, 1, 2, 3]
    with pytest.raises(InvalidInputError, match="rule"):
        label_of(1, 1, "sum")


def test_fusion_data_views_hold_both_factors(data):
    assert len(data) == 100 and data.class_names == ("sum even", "sum odd")
    assert data.image_vectors.shape == (100, 64) and data.image_tokens.shape == (100, 4, 64)
    assert data.text_vectors.shape == (100, len(VOCAB))
    assert data.text_tokens.shape == (100, TEXT_LENGTH, len(VOCAB) + TEXT_LENGTH)
    # the patch tokens keep every pixel in place: they add up to the image, and do not overlap
    assert np.allclose(data.image_tokens.sum(axis=1), data.image_vectors)
    assert ((data.image_tokens != 0).sum(axis=1) <= 1).all()
    assert np.allclose(data.text_vectors.sum(axis=1), TEXT_LENGTH)
    for text, number, digit, label in zip(data.texts, data.numbers, data.digits, data.labels, strict=True):
        words = text.split()
        assert len(words) == TEXT_LENGTH and words.count(NUMBER_WORDS[number]) == 1
        assert label == (digit + number) % 2
    again = make_fusion_data(*digits_split()[:2], rule="xor", pairs_per_image=1, seed=3)
    assert again.texts == make_fusion_data(*digits_split()[:2], rule="xor", pairs_per_image=1, seed=3).texts


def test_neither_modality_alone_predicts_an_xor_label():
    """The number is drawn independently of the digit: given the digit, the label is even or odd about equally."""
    images, digits, _, _ = digits_split()
    full = make_fusion_data(images, digits, rule="xor", pairs_per_image=4, seed=0)
    for digit in range(10):
        assert 0.4 < full.labels[full.digits == digit].mean() < 0.6, digit
    for number in range(10):
        assert 0.4 < full.labels[full.numbers == number].mean() < 0.6, number


def test_bad_fusion_data_arguments():
    with pytest.raises(InvalidInputError, match="8, 8"):
        make_fusion_data(np.zeros((3, 4, 4)), np.zeros(3))
    with pytest.raises(InvalidInputError, match="pairs_per_image"):
        make_fusion_data(np.zeros((3, 8, 8)), np.zeros(3), pairs_per_image=0)


# ---- embedding fusion ------------------------------------------------------------------------------------------------
def _cos(a, b):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T


def test_fused_cosine_is_the_weighted_mean_of_cosines():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(6, 5)), rng.normal(size=(6, 12)) * 30  # different sizes and scales
    fused = fuse_embeddings([first, second], [0.3, 0.9])
    assert np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-6)
    assert np.allclose(fused @ fused.T, 0.25 * _cos(first, first) + 0.75 * _cos(second, second), atol=1e-5)
    only_first = fuse_embeddings([first, second], [1, 0])
    assert np.allclose(only_first @ only_first.T, _cos(first, first), atol=1e-5)


@pytest.mark.parametrize(("parts", "weights"), [
    ([], None),
    ([np.zeros((2, 3)), np.zeros((3, 3))], None),
    ([np.zeros((2, 3))], [-1.0]),
    ([np.zeros((2, 3)), np.zeros((2, 3))], [0.0, 0.0]),
    ([np.zeros((2, 3)), np.zeros((2, 3))], [1.0]),
    ([np.zeros((2, 3))], [float("nan")]),
    ([np.zeros((2, 3))], ["heavy"]),
    ([np.zeros((2, 3))], [True]),
])
def test_fuse_embeddings_refuses_bad_input(parts, weights):
    with pytest.raises(InvalidInputError):
        fuse_embeddings(parts, weights)


def test_recall_at_k_counts_where_the_match_ranks():
    gallery = np.eye(4)
    assert recall_at_k(gallery, gallery, (1,)) == {1: 1.0}
    # queries 0 and 1 find each other's item first; their own match ties with items 2 and 3 (a tie counts for
    # the match), so it ranks second
    swapped = gallery[[1, 0, 2, 3]]
    assert recall_at_k(swapped, gallery, (1, 2)) == {1: 0.5, 2: 1.0}
    behind = np.array([[0.1, 1.0, 0.5, 0.0]])  # one query, its match is item 0: items 1 and 2 score higher
    assert recall_at_k(behind, gallery, (1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}


def test_fused_embedder_indexes_clip_and_dinov2_together(cat_path, rgb_image, other_image):
    import lmt

    clip = lmt.pipeline("image-feature-extraction", model="clip-vit-b32", weights="tiny")
    dino = lmt.pipeline("image-feature-extraction", model="dinov2-small", weights="tiny")
    fused = FusedEmbedder([clip, dino], weights=[0.5, 0.5])
    images = [str(cat_path), rgb_image, other_image]
    parts = fused.parts(images)
    assert [p.shape[0] for p in parts] == [3, 3]
    vectors = fused(images)
    assert vectors.shape == (3, parts[0].shape[1] + parts[1].shape[1])
    expected = 0.5 * _cos(parts[0], parts[0]) + 0.5 * _cos(parts[1], parts[1])
    assert np.allclose(vectors @ vectors.T, expected, atol=1e-5)
    index = fused.build_index(images, ids=["cat", "noise", "other"])
    assert [hit.id for hit in index.search(fused([rgb_image])[0], top_k=3)][0] == "noise"
    with pytest.raises(InvalidInputError):
        FusedEmbedder([clip, dino], weights=[1.0])
    with pytest.raises(InvalidInputError):
        FusedEmbedder([])


# ---- the benchmark ---------------------------------------------------------------------------------------------------
def _run_bench(out: Path, *args: str) -> dict:
    return run_script("bench_fusion", out, *args, timeout=1800)[0]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "fusion-quick.json"
    return _run_bench(out, "--quick"), out


@pytest.fixture(scope="module")
def bench():
    with imported("bench_fusion") as module:
        yield module


def test_quick_results_file_has_every_field(quick, bench):
    data, out = quick
    for key in ("benchmark", "date", "command", "machine", "settings", "setup", "fusion", "retrieval", "goals"):
        assert key in data, key
    assert data["command"] == f"python benchmarks/bench_fusion.py --quick --out {out}"
    assert set(data["fusion"]) == {"xor"}
    assert list(data["fusion"]["xor"]["results"]) == list(VARIANTS)
    assert out.with_suffix(".md").read_text(encoding="utf-8") == bench.render_markdown(data)
    weights = [tuple(row["weights"]) for row in data["retrieval"]["rows"]]
    assert weights[0] == (1.0, 0.0) and weights[-1] == (0.0, 1.0)
    for row in data["retrieval"]["rows"]:
        assert 0.0 <= row["recall"]["@1"] <= row["recall"]["@5"] <= 1.0


def test_quick_run_fusion_beats_both_single_modalities_on_xor(quick):
    """The qualitative result: early and gated fusion clear the better single modality by 20 points; late fusion
    (score averaging), which cannot model an interaction, does not. Cross-attention learns more slowly: the full
    run checks it (test_full_run_every_goal_holds)."""
    report = quick[0]["fusion"]["xor"]
    results = report["results"]
    assert report["best_single"] < 0.6  # neither modality alone gets far above chance (50 %)
    for head in ("early", "gated"):
        assert results[head]["margin_over_best_single"] >= 0.2, (head, results[head])
    assert results["late"]["margin_over_best_single"] <= 0.1
    goals = {goal["name"]: goal for goal in quick[0]["goals"]}
    assert goals["xor_early_margin"]["passed"] and goals["xor_gated_margin"]["passed"]
    assert goals["xor_late_no_gain"]["passed"]


@pytest.mark.slow
def test_full_run_every_goal_holds(tmp_path):
    """The full benchmark (both rules, 3 seeds): every fusion head that can model the label beats both single
    modalities by 20 points, late fusion included on the product rule."""
    data = _run_bench(tmp_path / "fusion.json")
    failed = [goal for goal in data["goals"] if not goal["passed"]]
    assert not failed, failed


def test_importing_lmt_advanced_is_cheap_and_names_resolve():
    """``import lmt.advanced`` loads no torch; each lazy name resolves to the object its module defines."""
    code = ("import sys, lmt.advanced as a; assert 'torch' not in sys.modules, 'torch imported'; "
            "names = a.__all__; assert all(getattr(a, n) is not None for n in names); print(len(names))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) >= 20
    import lmt.advanced

    with pytest.raises(AttributeError):
        lmt.advanced.no_such_name  # noqa: B018


@pytest.mark.parametrize(("field", "value"), [
    ("epochs", 0), ("pairs_per_image", -1), ("lr", -1e-3), ("dropout", float("inf")), ("seeds", (0.5,)),
])
def test_fusion_settings_refuse_bad_values(field, value):
    from lmt.advanced.fusion import FusionSettings

    with pytest.raises(InvalidInputError, match=field):
        FusionSettings(**{field: value})
