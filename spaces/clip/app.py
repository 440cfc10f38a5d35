"""CLIP Space: zero-shot image classification, and image-text retrieval over an uploaded gallery.

Run locally: ``lmt space clip --tiny`` (offline tiny weights) or ``python app.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

from lmt import ui

TITLE = "CLIP"
TASK = "zero-shot-image-classification"
EXAMPLES = Path(__file__).resolve().parent / "examples"
DEFAULT_TEMPLATE = "a photo of a {}."


@ui.gpu(duration=60)
@ui.guard
def classify(image, labels, template, model, adapter, tiny_allowed=False, progress=gr.Progress()):
    """Classify an image against free-text labels with CLIP (zero-shot).

    Args:
        image: The image to classify (PNG, JPEG, WebP ...).
        labels: Candidate labels, separated by commas or new lines, e.g. "cat, dog, car".
        template: Prompt template with {} where the label goes, e.g. "a photo of a {}.".
        model: A CLIP model from the list, e.g. "clip-vit-b32".
        adapter: Optional LoRA adapter: a Hub id, pinned with @revision if wanted (user/name@v1); empty for the base model.

    Returns:
        The labels with their probabilities, and the same as JSON.
    """
    path = ui.image_path(image)
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    adapter_id, adapter_revision = ui.adapter_spec(adapter)
    classifier = ui.pipeline(TASK, name, weights=weights, adapter=adapter_id, adapter_revision=adapter_revision)
    progress(0.5, desc=ui.text("推理中", "Running"))
    result = classifier(
        path, labels=ui.short_text(labels, "labels"), template=ui.short_text(template, "template", max_chars=200)
    )
    return result.as_label_dict(), result.to_dict()


@ui.gpu(duration=90)
@ui.guard
def search(gallery, query, top_k, model, tiny_allowed=False, progress=gr.Progress()):
    """Find the gallery images that best match a text description (CLIP image-text retrieval).

    Args:
        gallery: The images to search (upload several).
        query: What to look for, in English, e.g. "a cup of coffee".
        top_k: How many matches to return (1-20).
        model: A CLIP model from the list.

    Returns:
        The best matches with their similarity, and the same as JSON.
    """
    paths = ui.gallery_paths(gallery)
    text = ui.short_text(query, "query", max_chars=200)
    k = ui.number(top_k, "top_k", 1, 20, integer=True)
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    embedder = ui.pipeline("image-feature-extraction", name, weights=weights)
    progress(0.3, desc=ui.text("嵌入图库", "Embedding the gallery"))
    index = embedder.build_index(paths, ids=[str(i) for i in range(len(paths))])
    hits = embedder.search(text, index, top_k=k)
    matches = [(paths[h.index], f"{h.score:.3f}") for h in hits]
    return matches, [h.to_dict() for h in hits]


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="CLIP · 零样本分类与图文检索") as demo:
        gr.Markdown(
            "# CLIP 零样本分类与图文检索 / CLIP zero-shot classification and retrieval\n"
            "输入任意类别名，无需训练即可分类；也可以用一句话在你上传的图库里找图。"
            " Type any labels to classify without training, or search your own gallery with a sentence."
        )
        with gr.Tab(ui.text("零样本分类", "Zero-shot classification")):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label=ui.text("图片", "Image"), elem_id="clip-image")
                    labels = gr.Textbox(
                        value="cat, dog, car", lines=2, label=ui.text("候选标签", "Labels"),
                        info=ui.text("用逗号或换行分隔（英文效果最好）", "Comma- or newline-separated (English works best)"),
                    )
                    template = gr.Textbox(value=DEFAULT_TEMPLATE, label=ui.text("提示模板", "Prompt template"))
                    model = ui.model_picker(TASK, tiny=tiny)
                    adapter = ui.adapter_box()
                    run = gr.Button(ui.text("分类", "Classify"), variant="primary", elem_id="clip-run")
                with gr.Column():
                    label = gr.Label(num_top_classes=5, label=ui.text("结果", "Result"), elem_id="clip-label")
                    raw = gr.JSON(label="JSON")
            tiny_flag = gr.State(tiny)
            run.click(
                classify, [image, labels, template, model, adapter, tiny_flag], [label, raw],
                api_name="classify", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def run_example(image_file, example_labels):
                return classify(image_file, example_labels, DEFAULT_TEMPLATE, model.value, "", tiny)

            gr.Examples(
                [[str(EXAMPLES / "cat.jpg"), "cat, dog, car"], [str(EXAMPLES / "coffee.jpg"), "coffee, tea, soup, a rocket"],
                 [str(EXAMPLES / "rocket.jpg"), "a rocket, an airplane, a bird"]],
                inputs=[image, labels], outputs=[label, raw], fn=run_example, run_on_click=True, cache_examples=False,
                api_name=False,
            )
        with gr.Tab(ui.text("图文检索", "Image-text retrieval")):
            with gr.Row():
                with gr.Column():
                    gallery = gr.File(file_count="multiple", file_types=["image"], label=ui.text("图库", "Gallery"))
                    query = gr.Textbox(value="a cup of coffee", label=ui.text("查询文本", "Text query"))
                    top_k = gr.Slider(1, 20, value=3, step=1, label=ui.text("返回数量", "Top k"))
                    search_model = ui.model_picker(TASK, tiny=tiny)
                    go = gr.Button(ui.text("检索", "Search"), variant="primary")
                with gr.Column():
                    found = gr.Gallery(label=ui.text("匹配结果", "Matches"), columns=3)
                    found_json = gr.JSON(label="JSON")
            go.click(
                search, [gallery, query, top_k, search_model, tiny_flag], [found, found_json],
                api_name="search", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="CLIP Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
