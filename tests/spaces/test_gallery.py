"""``lmt gallery``: every Space as a tab of one app; each tab's API still answers, and building loads no model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gradio_client import handle_file

from tests.spaces.conftest import EXAMPLES


@pytest.fixture(scope="module")
def gallery_client() -> Iterator:
    from gradio_client import Client

    from lmt import ui
    from lmt.ui.spaces import build_gallery

    demo = build_gallery(tiny=True, names=["clip", "vit"])
    ui.configure_queue(demo)
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None, show_error=False)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def test_both_spaces_answer_in_the_gallery(gallery_client):
    endpoints = gallery_client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    # both Spaces name an endpoint "classify": gradio keeps the first and suffixes the second
    classify = sorted(name for name in endpoints if name.startswith("/classify"))
    # the ViT Space also has /explain (Grad-CAM / attention rollout heat maps)
    assert len(classify) == 2 and {"/search", "/explain"} <= set(endpoints) and len(endpoints) == 4

    def takes(name: str) -> set[str]:
        return {p["parameter_name"] for p in endpoints[name]["parameters"]}

    (clip_classify,) = [name for name in classify if "labels" in takes(name)]
    (vit_classify,) = [name for name in classify if "top_k" in takes(name)]
    cat = handle_file(EXAMPLES / "cat.png")
    label, _ = gallery_client.predict(
        cat, "cat, dog", "a photo of a {}.", "clip-vit-b32 (tiny)", "", api_name=clip_classify
    )
    assert {c["label"] for c in label["confidences"]} == {"cat", "dog"}
    label, raw = gallery_client.predict(cat, 2, "vit-b16 (tiny)", "", api_name=vit_classify)
    assert len(label["confidences"]) == len(raw["predictions"]) == 2
    matches, hits = gallery_client.predict(
        [cat, handle_file(EXAMPLES / "coffee.jpg")], "a cat", 1, "clip-vit-b32 (tiny)", api_name="/search"
    )
    assert len(matches) == len(hits) == 1


def test_building_the_full_gallery_loads_no_model():
    from lmt.loading import MODEL_CACHE
    from lmt.ui.spaces import build_gallery, list_spaces, spaces_root

    names = list_spaces()
    # every Space folder (each has a README.md card) is present with its app.py
    assert set(names) == {card.parent.name for card in spaces_root().glob("*/README.md")}
    loads = MODEL_CACHE.loads
    gallery = build_gallery(tiny=True)
    assert MODEL_CACHE.loads == loads
    tab_ids = {block.id for block in gallery.blocks.values() if type(block).__name__ == "Tab"}
    assert set(names) <= tab_ids
