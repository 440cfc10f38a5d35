"""Shared training fixtures: sample datasets written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_small(tmp_path_factory) -> Path:
    """300 of scikit-learn's digits, 32 px, as an ImageFolder tree (0/ ... 9/)."""
    from lmt.data.samples import write_digits

    return write_digits(tmp_path_factory.mktemp("digits-small") / "digits", size=32, limit=300)


@pytest.fixture(scope="session")
def digits_full(tmp_path_factory) -> Path:
    """All 1797 digits, 32 px, labelled by digit."""
    from lmt.data.samples import write_digits

    return write_digits(tmp_path_factory.mktemp("digits-full") / "digits", size=32)


@pytest.fixture(scope="session")
def digits_parity(tmp_path_factory) -> Path:
    """All 1797 digits, 32 px, labelled even/odd: a different labelling of the same images."""
    from lmt.data.samples import write_digits

    return write_digits(tmp_path_factory.mktemp("digits-parity") / "digits", size=32, labelling="parity")


def tiny_config(data: Path, output: Path, **sections) -> dict:
    """A small, quick image-classification config on the tiny ViT; ``sections`` override whole keys."""
    config = {
        "task": "image-classification",
        "model": "vit",
        "weights": "tiny",
        "method": "lora",
        "data": {"train": str(data)},
        "optim": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
        "run": {"output_dir": str(output), "log_every_steps": 2},
    }
    return with_sections(config, **sections)


def with_sections(config: dict, **sections) -> dict:
    """``config`` with ``sections`` applied: a dict updates that section's keys, anything else replaces the key."""
    for key, value in sections.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    return config
