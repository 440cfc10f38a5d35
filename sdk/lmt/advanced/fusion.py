"""Multimodal fusion: heads that combine image and text features, a synthetic task that needs both, and
CLIP + DINOv2 embedding fusion for retrieval.

Four heads, each ``head(image, text) -> logits`` (log-probabilities for the late head):

- :class:`EarlyFusion`: concatenate the two feature vectors, then one MLP sees both from its first layer.
- :class:`LateFusion`: one classifier per modality; their class probabilities are averaged ("score averaging").
- :class:`GatedFusion`: a gated multimodal unit (Arevalo et al., 2017): a learned gate mixes the two encodings
  unit by unit.
- :class:`CrossAttentionFusion`: text tokens attend to image tokens (as in Flamingo/BLIP), then pool and classify.

>>> import torch
>>> head = EarlyFusion(image_dim=64, text_dim=20, num_classes=2)
>>> head(torch.zeros(3, 64), torch.zeros(3, 20)).shape
torch.Size([3, 2])

:func:`make_fusion_data` builds the synthetic task (handwritten digit images + sentences holding a number word,
label = a function of both); :func:`run_fusion_experiment` trains every head and the single-modality baselines on
it; :func:`fuse_embeddings` and :class:`FusedEmbedder` combine the embeddings of two models for retrieval.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmt.advanced.digits import digit_images, digits_split
from lmt.errors import InvalidInputError
from lmt.validate import check_positive_int

logger = logging.getLogger(__name__)

FusionRule = Literal["xor", "product"]
RULES: tuple[str, ...] = ("xor", "product")
#: The number words the text carries (the text factor), and the filler words around them.
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FILLERS = ("the", "card", "says", "note", "reads", "tag", "shows", "a", "word", "is")
VOCAB = FILLERS + NUMBER_WORDS
TEXT_LENGTH = 6
#: 8x8 digits cut into 4x4 patches: 4 image tokens.
PATCH = 4
#: What each variant of the experiment is, in order: two baselines, then the four heads.
VARIANTS = ("image-only", "text-only", "early", "late", "gated", "cross-attention")


# ---- heads ---------------------------------------------------------------------------------------------------------
def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def _check_dims(**dims: Any) -> None:
    for name, value in dims.items():
        check_positive_int(value, name)


def _check_pair(image: torch.Tensor, text: torch.Tensor, ndim: tuple[int, ...]) -> None:
    if image.ndim not in ndim or text.ndim not in ndim or image.shape[0] != text.shape[0]:
        raise InvalidInputError(
            f"image and text features must be batches of the same size with {' or '.join(map(str, ndim))} "
            f"dimensions; got shapes {tuple(image.shape)} and {tuple(text.shape)}.",
            f"图像与文本特征必须是同样批大小、维数为 {' 或 '.join(map(str, ndim))} 的张量；"
            f"收到的形状为 {tuple(image.shape)} 和 {tuple(text.shape)}。",
        )


class UnimodalHead(nn.Module):
    """A baseline that sees one modality only: encoder + classifier, the other input is ignored."""

    inputs = "vectors"

    def __init__(self, dim: int, num_classes: int, *, modality: Literal["image", "text"], hidden: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        _check_dims(dim=dim, num_classes=num_classes, hidden=hidden)
        if modality not in ("image", "text"):
            raise InvalidInputError(f"modality must be 'image' or 'text', not {modality!r}.",
                                    f"modality 只能是 'image' 或 'text'，而不是 {modality!r}。")
        self.modality = modality
        self.encoder = _mlp(dim, hidden, hidden, dropout)
        self.classifier = _mlp(hidden, hidden, num_classes, dropout)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _check_pair(image, text, (2,))
        return self.classifier(F.gelu(self.encoder(image if self.modality == "image" else text)))


class EarlyFusion(nn.Module):
    """Concatenate the feature vectors, then one MLP: every layer can combine the two modalities."""

    inputs = "vectors"

    def __init__(self, image_dim: int, text_dim: int, num_classes: int, *, hidden: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        _check_dims(image_dim=image_dim, text_dim=text_dim, num_classes=num_classes, hidden=hidden)
        self.encoder = _mlp(image_dim + text_dim, hidden, hidden, dropout)
        self.classifier = _mlp(hidden, hidden, num_classes, dropout)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _check_pair(image, text, (2,))
        return self.classifier(F.gelu(self.encoder(torch.cat([image, text], dim=-1))))


class LateFusion(nn.Module):
    """One classifier per modality; the output is the log of their averaged class probabilities.

    The two halves never see each other's input, so the head can only add up per-modality evidence: it cannot
    represent a label that depends on an *interaction* of the two (such as the parity of a sum).
    """

    inputs = "vectors"

    def __init__(self, image_dim: int, text_dim: int, num_classes: int, *, hidden: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.image_head = UnimodalHead(image_dim, num_classes, modality="image", hidden=hidden, dropout=dropout)
        self.text_head = UnimodalHead(text_dim, num_classes, modality="text", hidden=hidden, dropout=dropout)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        probabilities = (self.image_head(image, text).softmax(-1) + self.text_head(image, text).softmax(-1)) / 2
        # log-probabilities: cross_entropy on them is the NLL of the averaged distribution
        return probabilities.clamp_min(1e-12).log()


class GatedFusion(nn.Module):
    """Gated multimodal unit: ``z * tanh(h_image) + (1 - z) * tanh(h_text)``, ``z = sigmoid(W [h_image; h_text])``.

    The gate depends on both inputs, so how much each modality counts can change from sample to sample.
    """

    inputs = "vectors"

    def __init__(self, image_dim: int, text_dim: int, num_classes: int, *, hidden: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        _check_dims(image_dim=image_dim, text_dim=text_dim, num_classes=num_classes, hidden=hidden)
        self.image_encoder = _mlp(image_dim, hidden, hidden, dropout)
        self.text_encoder = _mlp(text_dim, hidden, hidden, dropout)
        self.gate = nn.Linear(2 * hidden, hidden)
        self.classifier = _mlp(hidden, hidden, num_classes, dropout)

    def gate_values(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The gate ``z`` (batch, hidden): 1 means the image's encoding, 0 the text's."""
        return torch.sigmoid(self.gate(torch.cat([self.image_encoder(image), self.text_encoder(text)], dim=-1)))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _check_pair(image, text, (2,))
        h_image, h_text = self.image_encoder(image), self.text_encoder(text)
        z = torch.sigmoid(self.gate(torch.cat([h_image, h_text], dim=-1)))
        return self.classifier(z * torch.tanh(h_image) + (1 - z) * torch.tanh(h_text))


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class CrossAttentionFusion(nn.Module):
    """Text tokens query image tokens (multi-head cross-attention, residual, feed-forward), then both are pooled.

    Takes token sequences ``(batch, tokens, dim)``; a ``(batch, dim)`` vector counts as one token. The optional
    masks are ``True`` for real tokens: padded image tokens are never attended to, padded text tokens are left
    out of the pooling.
    """

    inputs = "tokens"

    def __init__(self, image_dim: int, text_dim: int, num_classes: int, *, hidden: int = 64, heads: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        _check_dims(image_dim=image_dim, text_dim=text_dim, num_classes=num_classes, hidden=hidden, heads=heads)
        if hidden % heads:
            raise InvalidInputError(f"hidden ({hidden}) must be a multiple of heads ({heads}).",
                                    f"hidden（{hidden}）必须是 heads（{heads}）的整数倍。")
        self.image_encoder = _mlp(image_dim, hidden, hidden, dropout)
        self.text_encoder = _mlp(text_dim, hidden, hidden, dropout)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.feed_forward = _mlp(hidden, 2 * hidden, hidden, dropout)
        self.norm2 = nn.LayerNorm(hidden)
        self.classifier = _mlp(2 * hidden, hidden, num_classes, dropout)

    def forward(self, image: torch.Tensor, text: torch.Tensor, *, image_mask: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, return_attention: bool = False) -> Any:
        _check_pair(image, text, (2, 3))
        image = image.unsqueeze(1) if image.ndim == 2 else image
        text = text.unsqueeze(1) if text.ndim == 2 else text
        image_tokens, text_tokens = self.image_encoder(image), self.text_encoder(text)
        padding = None if image_mask is None else ~image_mask.bool()
        attended, weights = self.attention(text_tokens, image_tokens, image_tokens, key_padding_mask=padding)
        text_tokens = self.norm1(text_tokens + attended)
        text_tokens = self.norm2(text_tokens + self.feed_forward(text_tokens))
        pooled = torch.cat([_masked_mean(text_tokens, text_mask), _masked_mean(image_tokens, image_mask)], dim=-1)
        logits = self.classifier(F.gelu(pooled))
        return (logits, weights) if return_attention else logits


def inputs_of(variant: str) -> str:
    """The view of the data a variant takes: ``"tokens"`` for cross-attention, ``"vectors"`` for the rest."""
    return "tokens" if variant == "cross-attention" else "vectors"


def build_head(variant: str, image_dim: int, text_dim: int, num_classes: int, *, hidden: int = 64,
               dropout: float = 0.1) -> nn.Module:
    """One of :data:`VARIANTS`, by name, with the given input sizes."""
    if variant == "image-only":
        return UnimodalHead(image_dim, num_classes, modality="image", hidden=hidden, dropout=dropout)
    if variant == "text-only":
        return UnimodalHead(text_dim, num_classes, modality="text", hidden=hidden, dropout=dropout)
    if variant == "early":
        return EarlyFusion(image_dim, text_dim, num_classes, hidden=hidden, dropout=dropout)
    if variant == "late":
        return LateFusion(image_dim, text_dim, num_classes, hidden=hidden, dropout=dropout)
    if variant == "gated":
        return GatedFusion(image_dim, text_dim, num_classes, hidden=hidden, dropout=dropout)
    if variant == "cross-attention":
        return CrossAttentionFusion(image_dim, text_dim, num_classes, hidden=hidden, dropout=dropout)
    raise InvalidInputError(f"Unknown fusion variant {variant!r}; choose one of {', '.join(VARIANTS)}.",
                            f"未知的融合方式 {variant!r}；可选：{', '.join(VARIANTS)}。")


# ---- the synthetic task --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionData:
    """Paired samples: a handwritten digit image and a sentence that holds one number word.

    Each modality is given in two fixed, information-preserving views: ``*_vectors`` for the vector heads
    (image: the 64 pixels scaled to [0, 1]; text: bag-of-words counts over :data:`VOCAB`) and ``*_tokens`` for
    cross-attention (image: 4 tokens, one per 4x4 quadrant, see :func:`image_views`; text: one-hot words with a
    one-hot position).
    """

    image_vectors: np.ndarray  # (n, 64)
    image_tokens: np.ndarray  # (n, 4, 64)
    text_vectors: np.ndarray  # (n, len(VOCAB))
    text_tokens: np.ndarray  # (n, TEXT_LENGTH, len(VOCAB) + TEXT_LENGTH)
    labels: np.ndarray  # (n,)
    digits: np.ndarray  # the image factor
    numbers: np.ndarray  # the text factor
    texts: tuple[str, ...]
    class_names: tuple[str, ...]
    rule: str

    def __len__(self) -> int:
        return len(self.labels)

    def views(self, inputs: str) -> tuple[np.ndarray, np.ndarray]:
        """(image, text) in the view a head takes: ``"vectors"`` or ``"tokens"``."""
        if inputs == "tokens":
            return self.image_tokens, self.text_tokens
        return self.image_vectors, self.text_vectors


def label_of(digit: int, number: int, rule: str) -> int:
    """``xor``: the parity of digit + number (2 classes); ``product``: (digit parity, number parity) (4 classes)."""
    if rule == "xor":
        return (digit + number) % 2
    if rule == "product":
        return 2 * (digit % 2) + number % 2
    raise InvalidInputError(f"rule must be one of {', '.join(RULES)}, not {rule!r}.",
                            f"rule 只能是 {'、'.join(RULES)} 之一，而不是 {rule!r}。")


def class_names_of(rule: str) -> tuple[str, ...]:
    if rule == "xor":
        return ("sum even", "sum odd")
    label_of(0, 0, rule)  # raises on an unknown rule
    return ("image even, text even", "image even, text odd", "image odd, text even", "image odd, text odd")


def image_views(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images with values 0-16 (scikit-learn's digits) -> (pixel vectors, patch tokens).

    Token j is the image with every pixel outside 4x4 patch j set to zero: it carries the patch's pixels *at their
    place*, so a linear layer weighs each position differently (a shared patch embedding plus a position bias
    would see the tokens as a bag of patches), and the tokens sum to the image.
    """
    pixels = np.asarray(images, dtype=np.float32) / 16.0
    n, size = pixels.shape[0], pixels.shape[1]
    grid = size // PATCH
    patch_of = (np.arange(size)[:, None] // PATCH) * grid + np.arange(size)[None, :] // PATCH  # (size, size)
    masks = (patch_of.reshape(1, -1) == np.arange(grid * grid)[:, None]).astype(np.float32)  # (tokens, pixels)
    vectors = pixels.reshape(n, -1)
    return vectors, vectors[:, None, :] * masks[None]


def text_views(sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenised sentences of :data:`TEXT_LENGTH` words -> (bag-of-words counts, one-hot tokens with positions)."""
    index = {word: i for i, word in enumerate(VOCAB)}
    ids = np.array([[index[word] for word in sentence] for sentence in sentences], dtype=np.int64)
    one_hot = np.eye(len(VOCAB), dtype=np.float32)[ids]
    positions = np.broadcast_to(np.eye(TEXT_LENGTH, dtype=np.float32), (len(ids), TEXT_LENGTH, TEXT_LENGTH))
    return one_hot.sum(axis=1), np.concatenate([one_hot, positions], axis=-1)


def _sentence(rng: np.random.Generator, number: int) -> list[str]:
    words = [FILLERS[i] for i in rng.integers(0, len(FILLERS), TEXT_LENGTH)]
    words[int(rng.integers(0, TEXT_LENGTH))] = NUMBER_WORDS[number]
    return words


def make_fusion_data(images: np.ndarray, digits: np.ndarray, *, rule: FusionRule = "xor", pairs_per_image: int = 1,
                     seed: int = 0) -> FusionData:
    """Pair each digit image with ``pairs_per_image`` random sentences; the label is ``label_of(digit, number)``.

    The number in the sentence is drawn independently of the digit, so each modality alone tells nothing about
    an ``xor`` label and half of a ``product`` label: only a model that uses both can be right.
    """
    pairs_per_image = check_positive_int(pairs_per_image, "pairs_per_image")
    names = class_names_of(rule)
    images, digits = np.asarray(images), np.asarray(digits, dtype=np.int64)
    if images.ndim != 3 or images.shape[1:] != (8, 8) or len(images) != len(digits) or not len(images):
        raise InvalidInputError(
            f"images must be a non-empty (n, 8, 8) array with one digit per image; got {images.shape} images and "
            f"{digits.shape} digits.",
            f"images 应为非空的 (n, 8, 8) 数组且每张图一个数字；收到 {images.shape} 的图像和 {digits.shape} 的数字。",
        )
    rng = np.random.default_rng(seed)
    order = np.repeat(np.arange(len(images)), pairs_per_image)
    numbers = rng.integers(0, 10, len(order))
    sentences = [_sentence(rng, int(number)) for number in numbers]
    image_vectors, image_tokens = image_views(images[order])
    text_vectors, text_tokens = text_views(sentences)
    labels = np.array([label_of(int(d), int(w), rule) for d, w in zip(digits[order], numbers, strict=True)])
    return FusionData(image_vectors, image_tokens, text_vectors, text_tokens, labels, digits[order], numbers,
                      tuple(" ".join(s) for s in sentences), names, rule)


# ---- training ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionSettings:
    """How the experiment trains each variant. The same settings for every head and baseline."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 64
    dropout: float = 0.1
    pairs_per_image: int = 2
    test_pairs_per_image: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "hidden", "pairs_per_image", "test_pairs_per_image"):
            check_positive_int(getattr(self, name), name)
        check_settings_numbers(self, ("lr",), ("weight_decay", "dropout"))

    def to_dict(self) -> dict[str, Any]:
        return {name: (list(value) if isinstance(value, tuple) else value)
                for name, value in self.__dict__.items()}


def check_settings_numbers(settings: Any, positive: Sequence[str], non_negative: Sequence[str] = ()) -> None:
    """The named fields of a settings dataclass are finite numbers (> 0, or >= 0), and ``seeds`` is not empty."""
    for name in (*positive, *non_negative):
        value = getattr(settings, name)
        valid = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not valid or value < 0 or (name in positive and value == 0):
            rule, rule_zh = ("a positive number", "正数") if name in positive else ("a non-negative number", "非负数")
            raise InvalidInputError(f"{name} must be {rule}, not {value!r:.40}.",
                                    f"{name} 应为{rule_zh}，而不是 {value!r:.40}。")
    if not settings.seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in settings.seeds):
        raise InvalidInputError(f"seeds must be one or more whole numbers, not {settings.seeds!r:.40}.",
                                f"seeds 应为一个或多个整数，而不是 {settings.seeds!r:.40}。")


@dataclass(frozen=True)
class VariantResult:
    """One variant's test accuracy per seed, with its size and its training time per seed (seconds)."""

    variant: str
    inputs: str
    accuracies: tuple[float, ...]
    parameters: int
    train_s: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "inputs": self.inputs, "accuracy_mean": round(self.mean, 4),
                "accuracy_std": round(self.std, 4), "accuracies": [round(a, 4) for a in self.accuracies],
                "parameters": self.parameters, "train_s": round(self.train_s, 2)}


@dataclass(frozen=True)
class FusionReport:
    """Every variant on one rule, with the chance level and the best single modality."""

    rule: str
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    results: tuple[VariantResult, ...]
    settings: FusionSettings = field(default_factory=FusionSettings)

    def accuracy(self, variant: str) -> float:
        return next(r.mean for r in self.results if r.variant == variant)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.class_names)

    @property
    def best_single(self) -> float:
        return max(self.accuracy("image-only"), self.accuracy("text-only"))

    def margin(self, variant: str) -> float:
        """Accuracy over the better of the two single-modality baselines."""
        return self.accuracy(variant) - self.best_single

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "class_names": list(self.class_names), "train_size": self.train_size,
                "test_size": self.test_size, "chance": round(self.chance, 4), "best_single": round(self.best_single, 4),
                "settings": self.settings.to_dict(),
                "results": {r.variant: r.to_dict() | {"margin_over_best_single": round(self.margin(r.variant), 4)}
                            for r in self.results}}


def _tensors(data: FusionData, inputs: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image, text = data.views(inputs)
    return (torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(text)),
            torch.from_numpy(data.labels))


def accuracy(head: nn.Module, data: FusionData, batch_size: int = 512) -> float:
    """The share of ``data`` that ``head`` labels right (in eval mode, no gradients)."""
    image, text, labels = _tensors(data, head.inputs)
    was_training = head.training
    head.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            stop = start + batch_size
            correct += int((head(image[start:stop], text[start:stop]).argmax(-1) == labels[start:stop]).sum())
    head.train(was_training)
    return correct / max(len(labels), 1)


def train_head(head: nn.Module, data: FusionData, settings: FusionSettings, *, seed: int = 0) -> nn.Module:
    """AdamW on cross-entropy for ``settings.epochs`` epochs, shuffled with ``seed``; returns ``head`` (trained)."""
    image, text, labels = _tensors(data, head.inputs)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(settings.batch_size):
            loss = F.cross_entropy(head(image[batch], text[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    head.eval()
    return head


def run_fusion_experiment(rule: FusionRule = "xor", settings: FusionSettings | None = None,
                          variants: Sequence[str] = VARIANTS) -> FusionReport:
    """Train each variant on the synthetic task, once per seed, and measure its accuracy on held-out images.

    The images are split once (seed 0); each seed draws new sentences and a new initialisation, the same for
    every variant.
    """
    settings = settings or FusionSettings()
    class_names = class_names_of(rule)  # an unknown rule fails here, before any training
    for variant in variants:
        build_head(variant, 1, 1, 2)  # likewise an unknown variant
    train_images, train_digits, test_images, test_digits = digits_split()
    datasets = {
        seed: (make_fusion_data(train_images, train_digits, rule=rule, pairs_per_image=settings.pairs_per_image,
                                seed=seed),
               make_fusion_data(test_images, test_digits, rule=rule, pairs_per_image=settings.test_pairs_per_image,
                                seed=10_000 + seed))
        for seed in settings.seeds
    }
    results = []
    for variant in variants:
        accuracies, parameters, seconds = [], 0, 0.0
        for seed, (train, test) in datasets.items():
            torch.manual_seed(seed)
            image, text = train.views(inputs_of(variant))
            head = build_head(variant, image.shape[-1], text.shape[-1], len(class_names), hidden=settings.hidden,
                              dropout=settings.dropout)
            start = time.perf_counter()
            train_head(head, train, settings, seed=seed)
            seconds += time.perf_counter() - start
            accuracies.append(accuracy(head, test))
            parameters = sum(p.numel() for p in head.parameters())
        result = VariantResult(variant, inputs_of(variant), tuple(accuracies), parameters, seconds / len(datasets))
        logger.info("fusion %s %s: %.3f", rule, variant, result.mean)
        results.append(result)
    train, test = next(iter(datasets.values()))
    return FusionReport(rule, class_names, len(train), len(test), tuple(results), settings)


# ---- embedding fusion for retrieval --------------------------------------------------------------------------------
def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def check_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """``count`` non-negative finite numbers, not all zero (``None``: equal weights)."""
    if weights is None:
        return [1.0] * count
    values = [weights] if isinstance(weights, str) or np.ndim(weights) == 0 else list(weights)
    real = all(isinstance(w, numbers.Real) and not isinstance(w, (bool, np.bool_)) for w in values)
    if (not real or len(values) != count or any(not math.isfinite(w) or w < 0 for w in values)
            or sum(values) <= 0):
        raise InvalidInputError(
            f"weights must be {count} non-negative numbers, not all zero; got {values!r:.80}.",
            f"weights 应为 {count} 个非负数且不全为 0；收到 {values!r:.80}。",
        )
    return [float(w) for w in values]


def fuse_embeddings(parts: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Concatenate L2-normalised embeddings from several models, each scaled by ``sqrt(weight)``, and renormalise.

    The cosine similarity of two fused vectors is then the weighted mean of the models' own cosine similarities
    (weights summing to 1): ``cos_fused = sum_k w_k * cos_k``. So it works with any index that ranks by cosine
    similarity (``lmt.EmbeddingIndex``), and no model's dimension or scale outweighs another's by accident.
    """
    matrices = [np.asarray(part, dtype=np.float32) for part in parts]
    if not matrices or any(m.ndim != 2 for m in matrices) or len({len(m) for m in matrices}) != 1:
        raise InvalidInputError(
            "parts must be one or more (n, dim) embedding matrices with the same n (one row per item).",
            "parts 应为一个或多个 (n, dim) 嵌入矩阵，且行数 n 相同（每行一个样本）。",
        )
    weights = check_weights(weights, len(matrices))
    total = sum(weights)
    scaled = [_normalise(m) * math.sqrt(w / total) for m, w in zip(matrices, weights, strict=True)]
    # each part now has squared norm w/total, so the concatenation has norm 1 already (up to rounding)
    return _normalise(np.concatenate(scaled, axis=1))


class FusedEmbedder:
    """Image embeddings of several ``lmt`` feature extractors, fused with :func:`fuse_embeddings`.

    >>> import lmt
    >>> clip = lmt.pipeline("image-feature-extraction", model="clip-vit-b32", weights="tiny")
    >>> dino = lmt.pipeline("image-feature-extraction", model="dinov2-small", weights="tiny")
    >>> fused = FusedEmbedder([clip, dino], weights=[0.5, 0.5])
    >>> index = fused.build_index(["examples/images/cat.png"], ids=["cat"])
    """

    def __init__(self, embedders: Sequence[Any], weights: Sequence[float] | None = None) -> None:
        if not embedders:
            raise InvalidInputError("Give at least one feature extractor.", "至少需要一个特征提取器。")
        self.embedders = list(embedders)
        self.weights = check_weights(weights, len(self.embedders))

    def parts(self, images: Sequence[Any]) -> list[np.ndarray]:
        """Each model's (n, dim) embeddings of ``images``."""
        return [np.stack([e.vector for e in embedder(list(images))]) for embedder in self.embedders]

    def __call__(self, images: Sequence[Any]) -> np.ndarray:
        return fuse_embeddings(self.parts(images), self.weights)

    def build_index(self, images: Sequence[Any], ids: Sequence[str] | None = None) -> Any:
        from lmt.retrieval import EmbeddingIndex

        index = EmbeddingIndex()
        index.add(self(images), ids=ids)
        return index


@dataclass(frozen=True)
class RetrievalReport:
    """Recall@k of near-duplicate retrieval for each weighting of two models' embeddings.

    ``rows[i]`` is ``{"weights": (w1, w2), "recall": {k: value}}``; the weights (1, 0) and (0, 1) are each model
    alone.
    """

    gallery_size: int
    models: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    distortion: str

    def recall(self, weights: Sequence[float], k: int = 1) -> float:
        return next(row["recall"][k] for row in self.rows if tuple(row["weights"]) == tuple(weights))

    @property
    def best(self) -> dict[str, Any]:
        """The row with the highest recall@1 (the first one on a tie)."""
        return max(self.rows, key=lambda row: row["recall"][1])

    def to_dict(self) -> dict[str, Any]:
        return {"gallery_size": self.gallery_size, "models": list(self.models), "distortion": self.distortion,
                "rows": [{"weights": list(row["weights"]),
                          "recall": {f"@{k}": round(v, 4) for k, v in row["recall"].items()}} for row in self.rows]}


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Query i's match is gallery item i: the share of queries whose match ranks in the top k by cosine."""
    similarities = _normalise(queries) @ _normalise(gallery).T
    own = similarities[np.arange(len(queries)), np.arange(len(queries))]
    # rank = how many gallery items score strictly higher than the true match
    ranks = (similarities > own[:, None]).sum(axis=1)
    return {k: float((ranks < k).mean()) for k in ks}


def distort(image: Any, rng: np.random.Generator) -> Any:
    """A near duplicate: shifted by up to 1 px, brightness scaled by 0.9-1.1, Gaussian noise (sigma 4/255)."""
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    dx, dy = (int(v) for v in rng.integers(-1, 2, 2))
    pixels = np.roll(pixels, (dy, dx), axis=(0, 1)) * rng.uniform(0.9, 1.1)
    pixels = pixels + rng.normal(0, 4, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


WEIGHT_GRID = ((1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0))


def run_retrieval_experiment(embedders: dict[str, Any], *, gallery_size: int = 200,
                             weight_grid: Sequence[Sequence[float]] = WEIGHT_GRID, seed: int = 0,
                             ks: Sequence[int] = (1, 5)) -> RetrievalReport:
    """Near-duplicate retrieval on handwritten digits: the gallery holds ``gallery_size`` test images (32 px), each
    query is a distorted copy of one of them (:func:`distort`). Recall@k for each weighting of the models.

    It measures how much of an image each embedding keeps, not semantics: with random (tiny) weights there is
    nothing else to measure. With real CLIP and DINOv2 weights, run it on pairs of your own images.
    """
    gallery_size = check_positive_int(gallery_size, "gallery_size")
    _, _, test_images, _ = digits_split()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(test_images), size=min(gallery_size, len(test_images)), replace=False)
    gallery = digit_images(test_images[chosen])
    queries = [distort(image, rng) for image in gallery]
    names = tuple(embedders)
    # each model embeds each image once; every weighting reuses these
    both = FusedEmbedder([embedders[name] for name in names])
    gallery_parts, query_parts = both.parts(gallery), both.parts(queries)
    rows = []
    for weights in weight_grid:
        fused_queries, fused_gallery = fuse_embeddings(query_parts, weights), fuse_embeddings(gallery_parts, weights)
        rows.append({"weights": tuple(float(w) for w in weights), "recall": recall_at_k(fused_queries, fused_gallery, ks)})
    return RetrievalReport(len(gallery), names, tuple(rows),
                           "shift up to 1 px, brightness x0.9-1.1, Gaussian noise sigma 4/255")
