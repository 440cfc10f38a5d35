"""``lmt gallery`` in a real browser: headless Debian chromium opens the gallery, runs CLIP's first example, and
the label shows up. Saves a full-page screenshot (also to tests/browser/artifacts/ with LMT_SAVE_SCREENSHOTS=1).

Needs /usr/bin/chromium (``apt-get install -y --no-install-recommends chromium``) and the ``playwright`` package;
skips with the reason when either is missing. Never run ``playwright install``: Debian's chromium is used.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
EXAMPLE_LABELS = {"cat", "dog", "car"}  # CLIP's first example: cat.jpg with "cat, dog, car"
RESULT_TIMEOUT_MS = 60_000  # first use builds/loads the tiny CLIP
UI_TIMEOUT_MS = 30_000


def test_gallery_runs_clip_example_in_chromium(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y --no-install-recommends chromium")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip(
            "playwright is not installed: pip install -c constraints.txt playwright (never `playwright install`)"
        )

    from lmt import ui
    from lmt.ui.spaces import build_gallery

    demo = build_gallery(tiny=True)
    ui.configure_queue(demo)
    demo.launch(
        prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None, show_error=False
    )
    assert demo.local_url.startswith("http://127.0.0.1:")
    screenshot = tmp_path / "gallery.png"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=UI_TIMEOUT_MS
            )
            try:
                _run_clip_example(
                    page=browser.new_page(viewport={"width": 1280, "height": 900}),
                    url=demo.local_url,
                    screenshot=screenshot,
                    expect=expect,
                )
            finally:
                browser.close()
    finally:
        demo.close()

    assert screenshot.stat().st_size > 10_000
    if os.environ.get("LMT_SAVE_SCREENSHOTS") == "1":
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, ARTIFACTS / "gallery.png")


def _run_clip_example(page, url: str, screenshot: Path, expect) -> None:
    page.set_default_timeout(UI_TIMEOUT_MS)
    # only the local server: anything else would be a request leaving the machine
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else route.abort()
        ),
    )
    page.goto(url, wait_until="domcontentloaded", timeout=UI_TIMEOUT_MS)

    # the gallery's Space tabs (alphabetical, so CLIP is not necessarily the first): open CLIP's
    clip_tab = page.get_by_role("tab", name="CLIP", exact=True)
    expect(clip_tab).to_be_visible(timeout=UI_TIMEOUT_MS)
    clip_tab.click()
    image = page.locator("#clip-image:visible").first
    expect(image).to_be_visible(timeout=UI_TIMEOUT_MS)
    # each Space renders once: a second copy of the layout breaks its examples (gradio's load_example gets None)
    expect(page.locator("#clip-image"), "the CLIP Space is rendered more than once").to_have_count(1)

    # the examples table sits in the same tab panel as the image input; its first row is cat.jpg
    panel = image.locator("xpath=ancestor::div[@role='tabpanel'][1]")
    first_example = panel.locator("tr", has_text="cat, dog, car").first
    expect(first_example).to_be_visible(timeout=UI_TIMEOUT_MS)
    first_example.click()

    top_label = panel.locator("#clip-label [data-testid='label-output-value']").first
    expect(top_label).to_have_text(_one_of(EXAMPLE_LABELS), timeout=RESULT_TIMEOUT_MS)
    assert top_label.inner_text().strip() in EXAMPLE_LABELS
    # the example's image was loaded into the input
    expect(panel.locator("#clip-image img").first).to_be_visible(timeout=UI_TIMEOUT_MS)

    page.screenshot(path=str(screenshot), full_page=True, timeout=UI_TIMEOUT_MS)


def _one_of(labels: set[str]) -> re.Pattern[str]:
    return re.compile(r"^\s*(" + "|".join(re.escape(label) for label in sorted(labels)) + r")\s*$")
