"""SAM Space: segment what you click (include/exclude points, boxes), or everything in the image.

Run locally: ``lmt space sam --tiny`` (offline tiny weights) or ``python app.py``.
Re-prompting the same image reuses its cached image embedding, so only SAM's light mask decoder runs again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui
from lmt.errors import InvalidInputError

TITLE = "SAM"
TASK = "mask-generation"
EXAMPLES = Path(__file__).resolve().parent / "examples"
MAX_MASKS = 64  # segment-everything masks shown and returned, best first
POINT_FORM = "x,y,label"
BOX_FORM = "x0,y0,x1,y1"


def format_groups(groups):
    return "; ".join(",".join(f"{v:g}" for v in group) for group in groups)


def result_json(result):
    """The segmentation as JSON without the (large) RLE masks: score, box and area per mask."""
    masks = [{k: v for k, v in m.to_dict().items() if k != "rle"} for m in result.masks]
    return {"width": result.image_size[0], "height": result.image_size[1], "masks": masks}


def mask_labels(result):
    return [(m.mask, f"mask {i} · {m.score:.2f}") for i, m in enumerate(result.masks, start=1)]


@ui.gpu(duration=60)
@ui.guard
def segment(image, points, boxes, multimask, model, tiny_allowed=False, progress=gr.Progress()):
    """Segment the object(s) marked by points and/or boxes with SAM (Segment Anything).

    Args:
        image: The image to segment (PNG, JPEG, WebP ...).
        points: Clicks "x,y,label; ..." in pixels from the top left, label 1 include / 0 exclude, e.g. "120,80,1".
        boxes: Boxes "x0,y0,x1,y1; ..." in pixels, e.g. "10,20,200,180": one object each (one box at most with points).
        multimask: True returns SAM's three candidate masks for an ambiguous prompt, best first.
        model: A SAM model from the list, e.g. "sam-vit-base".

    Returns:
        The image with the masks, and per mask its score, box and area as JSON.
    """
    path = ui.image_path(image)
    point_list = ui.number_groups(points, "points", POINT_FORM, (2, 3))
    box_list = ui.number_groups(boxes, "boxes", BOX_FORM, (4,))
    if not point_list and not box_list:
        raise InvalidInputError(
            "Add at least one point or box (click on the image, or type them); to segment the whole image, "
            "use 'Segment everything'.",
            "请至少添加一个点或框（在图上点击，或直接输入）；要分割整张图，请用“全图分割”。",
        )
    multimask = ui.flag(multimask, "multimask")
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    segmenter = ui.pipeline(TASK, name, weights=weights)  # $LMT_BACKEND: torch, onnx or onnx-int8
    picture = lmt.load_image(path)
    progress(0.4, desc=ui.text("分割中（同一张图只编码一次）", "Segmenting (each image is encoded once)"))
    result = segmenter(picture, points=point_list or None, boxes=box_list or None, multimask=multimask)
    return ui.annotated_image(picture, mask_labels(result)), result_json(result)


@ui.gpu(duration=120)
@ui.guard
def segment_everything(image, points_per_side, pred_iou_threshold, stability_threshold, model, tiny_allowed=False,
                       progress=gr.Progress()):
    """Find every object in the image with SAM's automatic mask generation over a grid of points.

    Args:
        image: The image to segment (PNG, JPEG, WebP ...).
        points_per_side: Grid density, 4-32: SAM is prompted with points_per_side² points; more finds smaller objects.
        pred_iou_threshold: Keep masks whose predicted quality (IoU) is at least this, 0-1 (e.g. 0.88).
        stability_threshold: Keep masks that stay the same when the mask threshold moves, 0-1 (e.g. 0.95).
        model: A SAM model from the list, e.g. "sam-vit-base".

    Returns:
        The image with the masks (at most 64, best first), and per mask its score, box and area as JSON.
    """
    path = ui.image_path(image)
    side = ui.number(points_per_side, "points_per_side", 4, 32, integer=True)
    iou = ui.number(pred_iou_threshold, "pred_iou_threshold", 0, 1)
    stability = ui.number(stability_threshold, "stability_threshold", 0, 1)
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    segmenter = ui.pipeline(TASK, name, weights=weights)  # $LMT_BACKEND: torch, onnx or onnx-int8
    picture = lmt.load_image(path)
    progress(0.3, desc=ui.text(f"用 {side}×{side} 个点分割", f"Segmenting with {side}×{side} points"))
    result = segmenter(
        picture, points_per_side=side, pred_iou_threshold=iou, stability_threshold=stability, top_k=MAX_MASKS
    )
    return ui.annotated_image(picture, mask_labels(result)), result_json(result)


@ui.guard
def add_click(points, boxes, corner, mode, evt: gr.SelectData):
    """A click on the image adds an include/exclude point, or one corner of a box (the second click closes it)."""
    x, y = (int(v) for v in evt.index)
    if mode != "box":
        clicked = [*ui.number_groups(points, "points", POINT_FORM, (2, 3)), [x, y, 1 if mode == "include" else 0]]
        return format_groups(clicked), boxes, None
    if corner is None:
        return points, boxes, [x, y]
    box = [min(corner[0], x), min(corner[1], y), max(corner[0], x), max(corner[1], y)]
    return points, format_groups([*ui.number_groups(boxes, "boxes", BOX_FORM, (4,)), box]), None


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="SAM · 分割一切") as demo:
        gr.Markdown(
            "# SAM 分割一切 / Segment Anything\n"
            "在图上点击添加前景点、背景点或框，SAM 即给出物体的掩码；也可以一键分割全图。同一张图只编码一次，之后每次点击都很快。"
            " Click to add include/exclude points or boxes and SAM masks the object, or segment everything at once."
            " Each image is encoded once, so every further click is fast."
        )
        tiny_flag = gr.State(tiny)
        with gr.Tab(ui.text("点/框提示", "Points and boxes")):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label=ui.text("图片（点击添加提示）", "Image (click to prompt)"),
                                     elem_id="sam-image")
                    mode = gr.Radio(
                        [(ui.text("前景点 (1)", "Include point (1)"), "include"),
                         (ui.text("背景点 (0)", "Exclude point (0)"), "exclude"),
                         (ui.text("框的角（点两下）", "Box corner (click twice)"), "box")],
                        value="include", label=ui.text("点击添加", "A click adds"),
                    )
                    points = gr.Textbox(
                        label=ui.text("点", "Points"), placeholder="120,80,1; 200,90,0",
                        info=ui.text("x,y,标签（1 前景 / 0 背景），分号分隔", "x,y,label (1 include / 0 exclude), ';'-separated"),
                    )
                    boxes = gr.Textbox(
                        label=ui.text("框", "Boxes"), placeholder="10,20,200,180",
                        info=ui.text("x0,y0,x1,y1，分号分隔", "x0,y0,x1,y1, ';'-separated"),
                    )
                    multimask = gr.Checkbox(
                        value=True, label=ui.text("返回 3 个候选掩码", "Three candidate masks"),
                        info=ui.text("提示有歧义时（如单个点）有用", "Useful when a prompt is ambiguous, e.g. one point"),
                    )
                    model = ui.model_picker(TASK, tiny=tiny)
                    with gr.Row():
                        clear = gr.Button(ui.text("清除提示", "Clear prompts"))
                        run = gr.Button(ui.text("分割", "Segment"), variant="primary", elem_id="sam-run")
                with gr.Column():
                    masks = gr.AnnotatedImage(label=ui.text("掩码", "Masks"), elem_id="sam-masks")
                    raw = gr.JSON(label="JSON")
            corner = gr.State(None)  # the first corner of a box being drawn
            run.click(
                segment, [image, points, boxes, multimask, model, tiny_flag], [masks, raw],
                api_name="segment", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def segment_if_prompted(image_file, points_text, boxes_text, multi, model_name, tiny_allowed):
                if not (points_text or "").strip() and not (boxes_text or "").strip():
                    return gr.skip(), gr.skip()  # only half a box so far
                return segment(image_file, points_text, boxes_text, multi, model_name, tiny_allowed)

            image.select(add_click, [points, boxes, corner, mode], [points, boxes, corner], api_name=False).success(
                segment_if_prompted, [image, points, boxes, multimask, model, tiny_flag], [masks, raw],
                api_name=False, preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
            gr.on(
                [clear.click, image.upload, image.clear], lambda: ("", "", None, None, None),
                outputs=[points, boxes, corner, masks, raw], api_name=False,
            )

            def run_example(image_file, example_points, example_boxes):
                return segment(image_file, example_points, example_boxes, True, model.value, tiny)

            gr.Examples(
                [[str(EXAMPLES / "cat.jpg"), "150,100,1", ""], [str(EXAMPLES / "street.jpg"), "", "0,90,320,213"],
                 [str(EXAMPLES / "coffee.jpg"), "160,100,1; 40,40,0", ""]],
                inputs=[image, points, boxes], outputs=[masks, raw], fn=run_example, run_on_click=True,
                cache_examples=False, api_name=False,
            )
        with gr.Tab(ui.text("全图分割", "Segment everything")):
            with gr.Row():
                with gr.Column():
                    every_image = gr.Image(type="filepath", label=ui.text("图片", "Image"))
                    points_per_side = gr.Slider(
                        4, 32, value=16, step=1, label=ui.text("每边点数", "Points per side"),
                        info=ui.text("越多越能找到小物体，也越慢", "More finds smaller objects, and is slower"),
                    )
                    pred_iou = gr.Slider(0, 1, value=0.88, step=0.01, label=ui.text("质量阈值", "Predicted IoU threshold"))
                    stability = gr.Slider(0, 1, value=0.95, step=0.01, label=ui.text("稳定性阈值", "Stability threshold"))
                    every_model = ui.model_picker(TASK, tiny=tiny)
                    go = gr.Button(ui.text("全图分割", "Segment everything"), variant="primary")
                with gr.Column():
                    every_masks = gr.AnnotatedImage(label=ui.text("掩码", "Masks"))
                    every_raw = gr.JSON(label="JSON")
            go.click(
                segment_everything, [every_image, points_per_side, pred_iou, stability, every_model, tiny_flag],
                [every_masks, every_raw], api_name="segment_everything", preprocess=False,
                concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="SAM Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
