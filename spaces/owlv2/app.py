"""OWLv2 Space: open-vocabulary object detection. Name what to find in plain words, get boxes and counts.

Run locally: ``lmt space owlv2 --tiny`` (offline tiny weights) or ``python app.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui
from lmt.validate import split_labels

TITLE = "OWLv2"
TASK = "zero-shot-object-detection"
EXAMPLES = Path(__file__).resolve().parent / "examples"
MAX_BOXES = 50  # boxes shown and returned, best first (gradio writes one PNG per box)
DEFAULT_THRESHOLD = 0.1
DEFAULT_NMS = 0.3


@ui.gpu(duration=60)
@ui.guard
def detect(image, queries, threshold, nms_threshold, model, tiny_allowed=False, progress=gr.Progress()):
    """Find and count the objects named by free-text queries with OWLv2 / OWL-ViT (zero-shot detection).

    Args:
        image: The image to search (PNG, JPEG, WebP ...).
        queries: What to find, in English, separated by commas or new lines, e.g. "car, bus, person".
        threshold: Keep boxes that score above this, 0-1, e.g. 0.1 (OWLv2 scores run low).
        nms_threshold: Overlap (IoU, 0-1) above which a weaker box of the same query is dropped; 1 keeps all.
        model: A detection model from the list, e.g. "owlv2-b16" or "owlvit-b32".

    Returns:
        The image with labelled boxes (at most 50, best first), the count per query, and the boxes as JSON.
    """
    path = ui.image_path(image)
    text = ui.short_text(queries, "queries")
    low = ui.number(threshold, "threshold", 0, 1)
    overlap = ui.number(nms_threshold, "nms_threshold", 0, 1)
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    detector = ui.pipeline(TASK, name, weights=weights)  # $LMT_BACKEND: torch, onnx or onnx-int8
    picture = lmt.load_image(path)
    progress(0.4, desc=ui.text("检测中", "Detecting"))
    result = detector(picture, queries=text, threshold=low, nms_threshold=overlap, top_k=MAX_BOXES)
    boxes = [(d.box, f"{d.label} {d.score:.2f}") for d in result]
    counts = result.count_by_label()
    table = [[query, counts.get(query, 0)] for query in split_labels(text)]
    return ui.annotated_image(picture, boxes=boxes), table, result.to_dict()


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="OWLv2 · 开放词汇目标检测") as demo:
        gr.Markdown(
            "# OWLv2 开放词汇目标检测 / OWLv2 open-vocabulary detection\n"
            "用文字说出要找的东西（英文效果最好），无需训练即可框出并计数。"
            " Name what to find in words (English works best): boxes and counts, no training needed."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label=ui.text("图片", "Image"), elem_id="owlv2-image")
                queries = gr.Textbox(
                    value="car, bus, person", lines=2, label=ui.text("要找的物体", "Queries"),
                    info=ui.text("用逗号或换行分隔", "Comma- or newline-separated"),
                )
                threshold = gr.Slider(
                    0, 1, value=DEFAULT_THRESHOLD, step=0.01, label=ui.text("分数阈值", "Score threshold"),
                )
                nms_threshold = gr.Slider(
                    0, 1, value=DEFAULT_NMS, step=0.05,
                    label=ui.text("重叠抑制 (NMS IoU)", "Overlap suppression (NMS IoU)"),
                )
                model = ui.model_picker(TASK, tiny=tiny)
                run = gr.Button(ui.text("检测", "Detect"), variant="primary", elem_id="owlv2-run")
            with gr.Column():
                boxes = gr.AnnotatedImage(label=ui.text("检测结果", "Detections"), elem_id="owlv2-boxes")
                counts = gr.Dataframe(
                    headers=[ui.text("类别", "label"), ui.text("数量", "count")], datatype=["str", "number"],
                    interactive=False, label=ui.text("计数", "Counts"),
                )
                raw = gr.JSON(label="JSON")
        tiny_flag = gr.State(tiny)
        run.click(
            detect, [image, queries, threshold, nms_threshold, model, tiny_flag], [boxes, counts, raw],
            api_name="detect", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
        )

        def run_example(image_file, example_queries):
            return detect(image_file, example_queries, DEFAULT_THRESHOLD, DEFAULT_NMS, model.value, tiny)

        gr.Examples(
            [[str(EXAMPLES / "street.jpg"), "car, bus, person"],
             [str(EXAMPLES / "astronaut.jpg"), "person, flag, helmet"],
             [str(EXAMPLES / "coffee.jpg"), "cup, spoon, saucer"]],
            inputs=[image, queries], outputs=[boxes, counts, raw], fn=run_example, run_on_click=True,
            cache_examples=False, api_name=False,
        )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="OWLv2 Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
