"""The docs site: `mkdocs build --strict` succeeds, every course page and the generated references are in it, the
Chinese search index is segmented, and the built site has no broken internal link."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))
from check_links import broken_links  # noqa: E402

needs_mkdocs = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the docs extra is not installed")


# Building the site takes ~30 s; `make docs` builds it in its own CI step, so here it is part of the slow suite.
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


@pytest.mark.slow
@needs_mkdocs
def test_every_course_page_is_built(site: Path) -> None:
    for doc in sorted((REPO / "tutorials").rglob("*.md")):
        relative = doc.relative_to(REPO / "tutorials").with_suffix("")
        page = site / (relative.parent if relative.name in ("README", "index") else relative) / "index.html"
        assert page.is_file(), f"{doc} was not built into {page}"


@pytest.mark.slow
@needs_mkdocs
def test_cli_reference_lists_every_command(site: Path) -> None:
    from lmt.cli import build_parser

    html = (site / "zh" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name in commands:
        assert f"lmt {name}" in html, f"the CLI reference lacks 'lmt {name}'"


@pytest.mark.slow
@needs_mkdocs
def test_api_reference_renders_docstrings(site: Path) -> None:
    html = (site / "zh" / "reference" / "api" / "lmt" / "index.html").read_text(encoding="utf-8")
    assert "lmt.pipeline" in html and "LoadedModel" in html
    # doctests are highlighted code (the prompt as a "gp" token), not triple blockquotes
    assert '<span class="gp">&gt;&gt;&gt; </span>' in html and "<blockquote>" not in html


@pytest.mark.slow
@needs_mkdocs
def test_chinese_search_is_segmented(site: Path) -> None:
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    # with jieba, the index separates Chinese words with zero-width spaces; without it, no Chinese query matches
    assert any("\u200b" in doc["text"] for doc in index["docs"] if "微调" in doc["text"])


@pytest.mark.slow
@needs_mkdocs
def test_built_site_has_no_broken_links(site: Path) -> None:
    broken, internal, _ = broken_links(site)
    assert internal > 500
    assert broken == []


def test_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<h1 id="top">x</h1><a href="#top">ok</a><a href="../b/">gone</a>'
                                                '<a href="#nowhere">bad anchor</a><a href="https://x.org">ext</a>')
    broken, internal, external = broken_links(tmp_path)
    assert internal == 3 and external == 1
    assert len(broken) == 2 and any("no such file" in b for b in broken) and any("#nowhere" in b for b in broken)
