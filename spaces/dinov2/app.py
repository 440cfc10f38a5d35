"""DINOv2 Space: similar-image search over an uploaded gallery, and raw image embeddings, with Meta's DINOv2.

Run locally: ``lmt space dinov2 --tiny`` (offline tiny weights) or ``python app.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui

TITLE = "DINOv2"
TASK = "image-feature-extraction"
MODELS = lmt.list_models("dinov2*", task=TASK)
EXAMPLES = Path(__file__).resolve().parent / "examples"
GALLERY_EXAMPLE = [str(EXAMPLES / f"{name}.jpg") for name in ("cat", "coffee", "rocket", "astronaut")]
PREVIEW_VALUES = 16


def _embedder(model, tiny_allowed):
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed, names=MODELS)
    return name, ui.pipeline(TASK, name, weights=weights)


@ui.gpu(duration=90)
@ui.guard
def search(query, gallery, top_k, model, tiny_allowed=False, progress=gr.Progress()):
    """Find the gallery images that look most like a query image (DINOv2 features, cosine similarity).

    Args:
        query: The image to look for (PNG, JPEG, WebP ...).
        gallery: The images to search in (upload several, at most 200).
        top_k: How many matches to return (1-20).
        model: A DINOv2 model from the list, e.g. "dinov2-small".

    Returns:
        The best matches captioned with their similarity, and the same as JSON.
    """
    query_path = ui.image_path(query)
    paths = ui.gallery_paths(gallery)
    k = ui.number(top_k, "top_k", 1, 20, integer=True)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    _, embedder = _embedder(model, tiny_allowed)
    progress(0.3, desc=ui.text("嵌入图库", "Embedding the gallery"))
    index = embedder.build_index(paths, ids=[Path(p).name for p in paths])
    progress(0.8, desc=ui.text("检索中", "Searching"))
    hits = index.search(embedder(query_path), top_k=k)
    matches = [(paths[h.index], ui.text("相似度", "similarity") + f" {h.score:.3f}") for h in hits]
    return matches, [h.to_dict() for h in hits]


@ui.gpu(duration=60)
@ui.guard
def embed(image, model, tiny_allowed=False, progress=gr.Progress()):
    """Embed an image with DINOv2: an L2-normalised feature vector (the CLS token).

    Args:
        image: The image to embed (PNG, JPEG, WebP ...).
        model: A DINOv2 model from the list, e.g. "dinov2-small".

    Returns:
        JSON with the model, the vector's dimension and length, and its first 16 values.
    """
    path = ui.image_path(image)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    name, embedder = _embedder(model, tiny_allowed)
    progress(0.5, desc=ui.text("推理中", "Running"))
    vector = embedder(path).vector
    return {
        "model": name,
        "dim": int(vector.shape[-1]),
        "length": int(vector.size),
        f"first_{PREVIEW_VALUES}": [round(float(v), 6) for v in vector[:PREVIEW_VALUES]],
    }


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="DINOv2 · 以图搜图") as demo:
        gr.Markdown(
            "# DINOv2 以图搜图 / DINOv2 similar-image search\n"
            "上传一张查询图片和一组图库图片，DINOv2 的自监督特征找出最相似的几张；也可以查看单张图片的特征向量。"
            " Upload a query image and a gallery: DINOv2's self-supervised features find the most similar images."
            " You can also inspect one image's embedding."
        )
        tiny_flag = gr.State(tiny)
        with gr.Tab(ui.text("以图搜图", "Similar-image search")):
            with gr.Row():
                with gr.Column():
                    query = gr.Image(type="filepath", label=ui.text("查询图片", "Query image"), elem_id="dinov2-query")
                    gallery = gr.File(file_count="multiple", file_types=["image"], label=ui.text("图库", "Gallery"))
                    top_k = gr.Slider(1, 20, value=3, step=1, label=ui.text("返回数量", "Top k"))
                    model = ui.model_picker(TASK, tiny=tiny, names=MODELS)
                    run = gr.Button(ui.text("检索", "Search"), variant="primary", elem_id="dinov2-run")
                with gr.Column():
                    found = gr.Gallery(label=ui.text("匹配结果", "Matches"), columns=3, elem_id="dinov2-matches")
                    found_json = gr.JSON(label="JSON")
            run.click(
                search, [query, gallery, top_k, model, tiny_flag], [found, found_json],
                api_name="search", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def run_search_example(query_file, gallery_files):
                return search(query_file, gallery_files, 3, model.value, tiny)

            gr.Examples(
                [[str(EXAMPLES / "query-cat-face.jpg"), GALLERY_EXAMPLE],
                 [str(EXAMPLES / "query-coffee-cup.jpg"), GALLERY_EXAMPLE]],
                inputs=[query, gallery], outputs=[found, found_json], fn=run_search_example, run_on_click=True,
                cache_examples=False, api_name=False,
            )
        with gr.Tab(ui.text("特征向量", "Embedding")):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label=ui.text("图片", "Image"), elem_id="dinov2-image")
                    embed_model = ui.model_picker(TASK, tiny=tiny, names=MODELS)
                    go = gr.Button(ui.text("提取特征", "Embed"), variant="primary", elem_id="dinov2-embed")
                with gr.Column():
                    vector = gr.JSON(label=ui.text("特征向量（前 16 维）", "Embedding (first 16 values)"),
                                     elem_id="dinov2-vector")
            go.click(
                embed, [image, embed_model, tiny_flag], [vector],
                api_name="embed", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="DINOv2 Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
