"""Adversarial robustness: FGSM and PGD attacks, and adversarial fine-tuning (PGD-AT) as a defence.

Every attack works on images in [0, 1] and bounds the perturbation in the L-infinity norm: ``eps`` is measured on
that [0, 1] pixel scale (for scikit-learn digits, whose pixels are 0-16, eps = 1/16 is one grey level), before the
model's own mean/std normalisation, and adversarial images are clipped back to [0, 1].

>>> import torch
>>> model = DigitsCNN()
>>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
>>> float((pgd(model, x, y, eps=0.1, steps=3) - x).abs().max()) <= 0.1 + 1e-6
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmt.errors import InvalidInputError

logger = logging.getLogger(__name__)

ATTACKS = ("fgsm", "pgd")


class DigitsCNN(nn.Module):
    """A small CNN for 8 x 8 digits in [0, 1]; it normalises its input itself, so attacks stay in pixel space."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((images - 0.5) / 0.5))


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= float(eps) <= 1.0:
        raise InvalidInputError(
            f"eps is an L-infinity radius on the [0, 1] pixel scale and must lie in [0, 1]; got {eps!r}.",
            f"eps 是 [0, 1] 像素尺度上的 L∞ 半径，必须在 [0, 1] 之间，收到的是 {eps!r}。",
        )
    return float(eps)


def _loss_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(images), labels)
        (gradient,) = torch.autograd.grad(loss, images)
    return gradient


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015): one step of size ``eps`` along the loss gradient's
    sign."""
    eps = _check_eps(eps)
    gradient = _loss_gradient(model, images, labels)
    return (images + eps * gradient.sign()).clamp(0.0, 1.0).detach()


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, *, steps: int = 10,
        step_size: float | None = None, random_start: bool = True, generator: torch.Generator | None = None,
        ) -> torch.Tensor:
    """Projected gradient descent (Madry et al., 2018): from a random point of the eps-ball, ``steps`` signed
    gradient steps (default size 2.5 eps / steps), each projected back into the ball and into [0, 1]."""
    eps = _check_eps(eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"steps must be a positive integer; got {steps!r}.",
                                f"steps 必须是正整数，收到的是 {steps!r}。")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    adversarial = images.detach().clone()
    if random_start:
        noise = torch.rand(images.shape, generator=generator, dtype=images.dtype) * 2 - 1
        adversarial = (adversarial + eps * noise.to(images.device)).clamp(0.0, 1.0)
    for _ in range(steps):
        gradient = _loss_gradient(model, adversarial, labels)
        adversarial = adversarial + step_size * gradient.sign()
        adversarial = torch.min(torch.max(adversarial, images - eps), images + eps).clamp(0.0, 1.0).detach()
    return adversarial


def attack(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, *,
           steps: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """``fgsm`` or ``pgd`` by name (``steps`` is PGD's)."""
    if name == "fgsm":
        return fgsm(model, images, labels, eps)
    if name == "pgd":
        return pgd(model, images, labels, eps, steps=steps, generator=generator)
    raise InvalidInputError(f"attack must be one of {', '.join(ATTACKS)}; got {name!r}.",
                            f"attack 必须是 {'、'.join(ATTACKS)} 之一，收到的是 {name!r}。")


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, attack_name: str | None = None,
             eps: float = 0.0, steps: int = 10, seed: int = 0, batch_size: int = 256) -> float:
    """Top-1 accuracy on clean images (``attack_name=None``) or on images attacked one batch at a time."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, len(labels), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        if attack_name is not None:
            x = attack(attack_name, model, x, y, eps, steps=steps, generator=generator)
        with torch.no_grad():
            correct += int((model(x).argmax(dim=-1) == y).sum())
    return correct / max(1, len(labels))


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float,
          batch_size: int = 64, adversarial_eps: float | None = None, pgd_steps: int = 7, seed: int = 0,
          ) -> list[float]:
    """Train on clean images, or, with ``adversarial_eps``, on PGD examples made against the current model each
    batch (PGD adversarial training). Returns the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            x, y = images[batch], labels[batch]
            if adversarial_eps is not None:
                model.eval()  # the attack sees the model as it will be evaluated
                x = pgd(model, x, y, adversarial_eps, steps=pgd_steps, generator=generator)
            model.train()
            loss = F.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        losses.append(total / len(labels))
    model.eval()
    return losses


def digits_tensors(test_fraction: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn digits as (train x, train y, test x, test y): x (N, 1, 8, 8) in [0, 1] (pixel / 16)."""
    from lmt.advanced.digits import digits_split

    train_x, train_y, test_x, test_y = digits_split(test_fraction=test_fraction, seed=seed)

    def images(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((array / 16.0).astype(np.float32))[:, None]

    return images(train_x), torch.from_numpy(train_y).long(), images(test_x), torch.from_numpy(test_y).long()


@dataclass(frozen=True)
class RobustnessSettings:
    """The experiment: a clean model, then PGD-AT fine-tuning from it, evaluated at each eps of ``eval_eps``."""

    clean_epochs: int = 15
    adversarial_epochs: int = 5
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    train_eps: float = 0.1
    eval_eps: tuple[float, ...] = (0.05, 0.1, 0.2)
    train_pgd_steps: int = 7
    eval_pgd_steps: int = 20
    seed: int = 0


@dataclass(frozen=True)
class RobustnessRow:
    """One model's accuracies: clean, and under each attack by eps (keys formatted as '0.1')."""

    model: str
    clean: float
    fgsm: dict[str, float] = field(default_factory=dict)
    pgd: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RobustnessReport:
    settings: RobustnessSettings
    rows: tuple[RobustnessRow, ...]
    train_size: int
    test_size: int
    losses: dict[str, list[float]]

    def row(self, model: str) -> RobustnessRow:
        return next(row for row in self.rows if row.model == model)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "rows": [row.to_dict() for row in self.rows],
                "train_size": self.train_size, "test_size": self.test_size, "losses": self.losses}


def evaluate(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             eps_values: Sequence[float], pgd_steps: int, seed: int) -> RobustnessRow:
    fgsm_acc = {f"{eps:g}": accuracy(model, images, labels, attack_name="fgsm", eps=eps) for eps in eps_values}
    pgd_acc = {f"{eps:g}": accuracy(model, images, labels, attack_name="pgd", eps=eps, steps=pgd_steps, seed=seed)
               for eps in eps_values}
    return RobustnessRow(name, accuracy(model, images, labels), fgsm_acc, pgd_acc)


def run_robustness_experiment(settings: RobustnessSettings | None = None) -> RobustnessReport:
    """Train a DigitsCNN, attack it, fine-tune a copy with PGD-AT, attack that: the before/after table."""
    import copy

    settings = settings or RobustnessSettings()
    torch.manual_seed(settings.seed)
    train_x, train_y, test_x, test_y = digits_tensors(seed=settings.seed)
    model = DigitsCNN()
    clean_losses = train(model, train_x, train_y, epochs=settings.clean_epochs, lr=settings.lr, seed=settings.seed)
    logger.info("clean model trained: final loss %.4f", clean_losses[-1])
    before = evaluate("standard", model, test_x, test_y, settings.eval_eps, settings.eval_pgd_steps, settings.seed)
    defended = copy.deepcopy(model)
    adversarial_losses = train(defended, train_x, train_y, epochs=settings.adversarial_epochs, lr=settings.finetune_lr,
                               adversarial_eps=settings.train_eps, pgd_steps=settings.train_pgd_steps,
                               seed=settings.seed + 1)
    after = evaluate("pgd-at", defended, test_x, test_y, settings.eval_eps, settings.eval_pgd_steps, settings.seed)
    return RobustnessReport(settings, (before, after), len(train_y), len(test_y),
                            {"clean": clean_losses, "pgd_at": adversarial_losses})
