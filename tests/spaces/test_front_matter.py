"""Every Space folder is ready for Hugging Face: valid front matter, real checkpoints, pins that match what we test."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import gradio
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lmt.registry import families

SPACES = Path(__file__).resolve().parents[2] / "spaces"
READMES = sorted(SPACES.glob("*/README.md"))
REQUIRED = (
    "title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file", "license",
    "short_description", "models", "tags",
)
# the colours the Hub accepts for a Space card
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
# preinstalled on the Hub from sdk_version, or impossible there (the SDK is vendored in when bundling)
NOT_LISTED = {"gradio", "gradio-client", "large-model-tutorial"}


def front_matter(readme: Path) -> tuple[dict, str]:
    match = re.match(r"\A---\n(.*?)\n---\n(.*)\Z", readme.read_text(encoding="utf-8"), re.DOTALL)
    assert match, f"{readme} does not start with a --- front matter block ---"
    return yaml.safe_load(match.group(1)), match.group(2)


def test_every_space_has_a_card():
    assert READMES, "no spaces/*/README.md found"
    for app in SPACES.glob("*/app.py"):
        assert (app.parent / "README.md").is_file() and (app.parent / "requirements.txt").is_file(), app.parent.name


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.parent.name)
def test_front_matter(readme):
    meta, body = front_matter(readme)
    assert set(REQUIRED) <= set(meta), f"missing: {set(REQUIRED) - set(meta)}"
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gradio.__version__
    assert meta["python_version"] == "3.11"  # a string: unquoted 3.10 would read as 3.1
    assert (readme.parent / meta["app_file"]).is_file()
    assert meta["colorFrom"] in COLORS and meta["colorTo"] in COLORS
    assert meta["license"] == "mit"
    assert 0 < len(meta["short_description"]) <= 60
    hub_ids = {checkpoint.hub_id for family in families().values() for checkpoint in family.checkpoints}
    assert meta["models"] and set(meta["models"]) <= hub_ids, set(meta["models"]) - hub_ids
    assert isinstance(meta["tags"], list) and all(isinstance(tag, str) for tag in meta["tags"])
    # bilingual body, Chinese first, with the local run command
    assert re.search(r"[\u4e00-\u9fff]", body) and body.index("## English") > body.index("本地运行")
    assert f"lmt space {readme.parent.name} --tiny" in body


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.parent.name)
def test_readme_names_every_api(readme):
    if not (readme.parent / "app.py").is_file():
        pytest.skip("app.py not written yet (test_front_matter reports it)")
    from lmt.ui.spaces import load_space

    demo = load_space(readme.parent.name).build_demo(tiny=True)
    api_names = {name.lstrip("/") for name in demo.get_api_info()["named_endpoints"]}
    _, body = front_matter(readme)
    assert api_names and all(f"`/{name}`" in body for name in api_names), api_names


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.parent.name)
def test_requirements_are_pinned_to_what_we_test(readme):
    path = readme.parent / "requirements.txt"
    assert path.is_file()
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    assert requirements
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name not in NOT_LISTED, f"{requirement.name} must not be listed"
        (spec,) = requirement.specifier  # exactly one specifier: an == pin
        assert spec.operator == "==", f"{requirement} is not pinned"
        installed = Version(importlib.metadata.version(requirement.name)).public  # 2.13.0+cpu -> 2.13.0
        assert Version(spec.version) == Version(installed), f"{requirement}: installed {installed}"
