"""lmt.advanced.robustness: FGSM raises the loss, PGD stays in the eps-ball and in [0, 1], bad arguments are
refused, and (slow) PGD adversarial fine-tuning raises PGD accuracy on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmt.advanced import robustness as rb
from lmt.errors import InvalidInputError


@pytest.fixture(scope="module")
def trained():
    """A DigitsCNN trained briefly on clean digits, and the test split."""
    torch.manual_seed(0)
    train_x, train_y, test_x, test_y = rb.digits_tensors()
    model = rb.DigitsCNN()
    rb.train(model, train_x, train_y, epochs=3, lr=2e-3)
    return model, test_x[:200], test_y[:200]


def test_digits_tensors_are_pixels_in_unit_range():
    train_x, train_y, test_x, test_y = rb.digits_tensors()
    assert train_x.shape[1:] == (1, 8, 8) and len(train_x) + len(test_x) == 1797
    assert float(train_x.min()) == 0.0 and float(train_x.max()) == 1.0
    assert set(test_y.tolist()) == set(range(10))


def test_fgsm_increases_the_loss(trained):
    model, x, y = trained
    assert rb.accuracy(model, x, y) > 0.8
    clean = F.cross_entropy(model(x), y).item()
    attacked = rb.fgsm(model, x, y, eps=0.1)
    assert float((attacked - x).abs().max()) <= 0.1 + 1e-6
    assert F.cross_entropy(model(attacked), y).item() > clean + 0.1
    assert rb.accuracy(model, x, y, attack_name="fgsm", eps=0.1) < rb.accuracy(model, x, y)


def test_pgd_stays_in_the_eps_ball_and_in_range(trained):
    model, x, y = trained
    for eps in (0.05, 0.2):
        attacked = rb.pgd(model, x, y, eps, steps=5, generator=torch.Generator().manual_seed(1))
        assert float((attacked - x).abs().max()) <= eps + 1e-6
        assert float(attacked.min()) >= 0.0 and float(attacked.max()) <= 1.0
    # PGD, which iterates, finds at least as strong an attack as one FGSM step at the same eps
    pgd_loss = F.cross_entropy(model(rb.pgd(model, x, y, 0.1, steps=10)), y).item()
    assert pgd_loss >= F.cross_entropy(model(rb.fgsm(model, x, y, 0.1)), y).item() - 1e-3


def test_eps_zero_changes_nothing(trained):
    model, x, y = trained
    assert torch.equal(rb.fgsm(model, x, y, 0.0), x)
    assert torch.equal(rb.pgd(model, x, y, 0.0, steps=2), x)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.1", True, float("nan")])
def test_bad_eps_is_refused(trained, bad):
    model, x, y = trained
    with pytest.raises(InvalidInputError, match="eps") as info:
        rb.fgsm(model, x, y, bad)
    assert "像素" in info.value.message_zh


def test_bad_attack_and_steps_are_refused(trained):
    model, x, y = trained
    with pytest.raises(InvalidInputError, match="attack must be one of"):
        rb.attack("cw", model, x, y, 0.1)
    with pytest.raises(InvalidInputError, match="steps"):
        rb.pgd(model, x, y, 0.1, steps=0)


@pytest.mark.slow
def test_adversarial_finetuning_raises_pgd_accuracy():
    """The qualitative result the benchmark reports, on the quick settings."""
    report = rb.run_robustness_experiment(rb.RobustnessSettings(clean_epochs=8, adversarial_epochs=3,
                                                                eval_eps=(0.1,), eval_pgd_steps=10))
    before, after = report.row("standard"), report.row("pgd-at")
    assert before.clean > 0.9
    assert after.pgd["0.1"] > before.pgd["0.1"] + 0.1, report.to_dict()
