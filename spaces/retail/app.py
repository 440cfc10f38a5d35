"""Retail Space: recognise products against a catalog of reference images, and audit a shelf photo.

The logic lives in ``lmt.apps.retail``; this file lays out the UI. Run locally: ``lmt space retail --tiny``
(offline tiny weights) or ``python app.py``.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui
from lmt.apps import retail
from lmt.errors import InvalidInputError

TITLE = "零售 Retail"
EMBED_TASK = "image-feature-extraction"
DETECT_TASK = "zero-shot-object-detection"
EMBED_MODELS = ["dinov2-small", "dinov2-base", "clip-vit-b32", "clip-vit-b16"]
DETECT_MODELS = lmt.list_models("owl*", task=DETECT_TASK)
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_CATALOG = EXAMPLES / "catalog"
DISPLAY_MAX_SIDE = 1024

_example_catalogs: dict[tuple[str, str], retail.Catalog] = {}  # one per (model, weights): a handful at most
_example_lock = threading.Lock()


def _example_catalog(name: str, weights: str) -> retail.Catalog:
    with _example_lock:
        if (name, weights) not in _example_catalogs:
            references, names = retail.references_from_folder(EXAMPLE_CATALOG)
            _example_catalogs[name, weights] = retail.build_catalog(
                references, names=names, embedder=name, weights=weights
            )
        return _example_catalogs[name, weights]


def _catalog(files, names_text, auto_threshold, threshold, model, tiny_allowed) -> retail.Catalog:
    """The uploaded catalog (one zip, or images named ``<sku>-1.png``), or the bundled example one."""
    name, weights = ui.pick_model(model, EMBED_TASK, tiny_allowed=tiny_allowed, names=EMBED_MODELS)
    names = retail.parse_names(ui.short_text(names_text, "names", allow_empty=True, max_chars=20_000))
    auto = ui.flag(auto_threshold, "auto_threshold")
    value = ui.number(threshold, "threshold", -1, 1)
    if not files:
        catalog = _example_catalog(name, weights).with_names(names)
    else:
        paths = ui.gallery_paths(files)
        zips = [p for p in paths if p.lower().endswith(".zip")]
        if zips and len(paths) > 1:
            raise InvalidInputError(
                "Upload either one .zip catalog or a set of images, not both.",
                "请上传一个 .zip 商品库，或者一组图片，不要混在一起。",
            )
        if zips:
            references, zip_names = retail.references_from_zip(zips[0])
            names = {**zip_names, **names}
        else:
            references = retail.references_from_files(paths)
        catalog = retail.build_catalog(references, names=names, embedder=name, weights=weights)
    return catalog if auto else catalog.with_threshold(value)


@ui.gpu(duration=60)
@ui.guard
def recognize(image, catalog_files, names, auto_threshold, threshold, model, tiny_allowed=False,
              progress=gr.Progress()):
    """Recognise a product photo against a catalog of reference images (nearest reference, cosine similarity).

    Args:
        image: The product photo (PNG, JPEG, WebP ...).
        catalog_files: One .zip (a folder per SKU, optional names.csv) or images named like "cola-1.png"; empty
            uses the bundled example catalog (cola, tea, milk, chips, juice).
        names: Optional display names, one "sku,name" per line (Chinese allowed).
        auto_threshold: true to calibrate the "unknown" threshold on the catalog (leave-one-out), false to use
            threshold.
        threshold: Cosine similarity below which the product is "unknown" (-1 to 1), used when auto_threshold is
            false.
        model: The embedding model, e.g. "dinov2-small".

    Returns:
        A one-line answer and JSON with the SKU (or "unknown"), its name, the similarity, the threshold and the
        nearest SKUs.
    """
    picture = lmt.load_image(ui.image_path(image))  # a bad upload is refused before any model loads
    progress(0.1, desc=ui.text("构建商品库", "Building the catalog"))
    catalog = _catalog(catalog_files, names, auto_threshold, threshold, model, tiny_allowed)
    progress(0.7, desc=ui.text("识别中", "Recognising"))
    result = retail.recognize(picture, catalog)
    if result.known:
        line = f"{result.name} ({result.sku}) · 相似度 similarity {result.similarity:.3f}"
    else:
        nearest = result.candidates[0]
        line = (f"{retail.UNKNOWN_NAME} · 最接近 nearest {nearest.name} ({nearest.sku}) "
                f"{nearest.similarity:.3f} < 阈值 threshold {result.threshold:.3f}")
    return line, {**result.to_dict(), "catalog": catalog.to_dict()}


@ui.gpu(duration=120)
@ui.guard
def analyze_shelf(image, catalog_files, names, planogram, query, detection_threshold, gap_factor, full_width,
                  auto_threshold, threshold, model, detector, tiny_allowed=False, progress=gr.Progress()):
    """Audit a shelf photo: detect products (OWLv2), recognise each against the catalog, count them, measure share
    of shelf, find empty gaps on each row and compare with a planogram.

    Args:
        image: The shelf photo (PNG, JPEG, WebP ...).
        catalog_files: One .zip (a folder per SKU, optional names.csv) or images named like "cola-1.png"; empty
            uses the bundled example catalog.
        names: Optional display names, one "sku,name" per line.
        planogram: Optional expected facings, one "sku,count" or "sku,count,row" per line (row 1 = top).
        query: What the detector looks for, in English, e.g. "a product on a shelf".
        detection_threshold: Detector score threshold, 0-1.
        gap_factor: A gap is a free span wider than this many median product widths (0.1-20), e.g. 1.
        full_width: true if the shelf fills the photo's width (gaps at the photo's edges count).
        auto_threshold: true to calibrate the "unknown" threshold on the catalog, false to use threshold.
        threshold: Cosine similarity below which a product is "unknown" (-1 to 1).
        model: The embedding model, e.g. "dinov2-small".
        detector: The detection model, e.g. "owlv2-b16".

    Returns:
        The annotated shelf, a per-SKU table, the full report as JSON, and two CSV files (summary, products).
    """
    path = ui.image_path(image)
    queries = ui.short_text(query, "query", max_chars=500)
    low = ui.number(detection_threshold, "detection_threshold", 0, 1)
    factor = ui.number(gap_factor, "gap_factor", 0.1, 20)
    spans_photo = ui.flag(full_width, "full_width")
    plan_text = ui.short_text(planogram, "planogram", allow_empty=True, max_chars=20_000)
    plan = retail.Planogram.from_csv(plan_text) if plan_text else None
    detector_name, detector_weights = ui.pick_model(detector, DETECT_TASK, tiny_allowed=tiny_allowed,
                                                    names=DETECT_MODELS)
    picture = lmt.load_image(path)
    progress(0.1, desc=ui.text("构建商品库", "Building the catalog"))
    catalog = _catalog(catalog_files, names, auto_threshold, threshold, model, tiny_allowed)
    progress(0.4, desc=ui.text("检测与识别", "Detecting and recognising"))
    report = retail.analyze_shelf(
        picture, catalog, detector=detector_name, weights=detector_weights, queries=queries,
        detection_threshold=low, gap_factor=factor, planogram=plan,
        shelf_extent=(0, picture.width) if spans_photo else None,
    )
    progress(0.9, desc=ui.text("生成报告", "Writing the report"))
    paths = retail.write_report(report, tempfile.mkdtemp(prefix="lmt-retail-"))
    annotated = retail.annotate_shelf(picture, report)
    annotated.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
    table = report.summary_rows()
    return annotated, table, report.to_dict(), [str(paths["summary_csv"]), str(paths["products_csv"])]


def build_demo(tiny: bool = False) -> gr.Blocks:
    embed_choices = ui.model_choices(EMBED_TASK, tiny=tiny, names=EMBED_MODELS)
    detect_choices = ui.model_choices(DETECT_TASK, tiny=tiny, names=DETECT_MODELS)
    with gr.Blocks(title="智慧零售 · 商品识别与货架分析") as demo:
        gr.Markdown(
            "# 智慧零售：商品识别与货架分析 / Smart retail: product recognition and shelf audit\n"
            "商品库由每个 SKU 的几张参考图构成（DINOv2 或 CLIP 图像特征）；识别 = 找最相似的参考图，低于阈值则为“未知”。"
            "货架分析用 OWLv2 找出商品，逐个识别，统计数量与货架占比，按层找空位，并与陈列计划对比。"
            " The catalog is a few reference images per SKU; a product is the SKU of its most similar reference, or"
            " 'unknown' below a threshold. The shelf audit detects products with OWLv2, recognises each, and reports"
            " counts, share of shelf, empty gaps per row and planogram compliance.\n\n"
            "**局限 / Limits**：识别只和商品库比较，包装相近的 SKU 会混淆；检测框漏检会被当作空位。"
            " Look-alike packs get confused; a missed detection looks like a gap."
        )
        tiny_flag = gr.State(tiny)
        with gr.Tab(ui.text("商品识别", "Recognise a product")):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label=ui.text("商品图片", "Product photo"),
                                     elem_id="retail-product")
                    catalog_files = gr.File(
                        file_count="multiple", label=ui.text("商品库（zip 或图片，可留空用示例）",
                                                             "Catalog (zip or images; empty = example)"),
                    )
                    names = gr.Textbox(lines=2, label=ui.text("名称（sku,名称）", "Names (sku,name)"),
                                       placeholder="cola,可乐")
                    auto = gr.Checkbox(value=True, label=ui.text("自动校准阈值", "Calibrate the threshold"))
                    threshold = gr.Slider(-1, 1, value=retail.DEFAULT_THRESHOLD, step=0.01,
                                          label=ui.text("未知阈值", "Unknown threshold"))
                    model = gr.Dropdown(embed_choices, value=embed_choices[0], label=ui.text("嵌入模型", "Embedder"))
                    run = gr.Button(ui.text("识别", "Recognise"), variant="primary", elem_id="retail-recognize")
                with gr.Column():
                    answer = gr.Textbox(label=ui.text("结果", "Result"), elem_id="retail-answer")
                    raw = gr.JSON(label="JSON")
            run.click(
                recognize, [image, catalog_files, names, auto, threshold, model, tiny_flag], [answer, raw],
                api_name="recognize", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def run_recognize_example(image_file):
                return recognize(image_file, None, "", True, retail.DEFAULT_THRESHOLD, embed_choices[0], tiny)

            gr.Examples(
                [[str(EXAMPLES / "product-cola.png")], [str(EXAMPLES / "product-soap.png")]],
                inputs=[image], outputs=[answer, raw], fn=run_recognize_example, run_on_click=True,
                cache_examples=False, api_name=False,
            )
        with gr.Tab(ui.text("货架分析", "Shelf audit")):
            with gr.Row():
                with gr.Column():
                    shelf = gr.Image(type="filepath", label=ui.text("货架照片", "Shelf photo"), elem_id="retail-shelf")
                    shelf_catalog = gr.File(
                        file_count="multiple", label=ui.text("商品库（zip 或图片，可留空用示例）",
                                                             "Catalog (zip or images; empty = example)"),
                    )
                    shelf_names = gr.Textbox(lines=1, label=ui.text("名称（sku,名称）", "Names (sku,name)"))
                    planogram = gr.Textbox(lines=4, label=ui.text("陈列计划（sku,数量,层）", "Planogram (sku,count,row)"),
                                           placeholder="cola,3,1\ntea,4,1")
                    query = gr.Textbox(value=retail.DEFAULT_QUERY, label=ui.text("检测查询（英文）", "Detector query"))
                    detection_threshold = gr.Slider(0, 1, value=0.1, step=0.01,
                                                    label=ui.text("检测阈值", "Detection threshold"))
                    gap_factor = gr.Slider(0.1, 5, value=1.0, step=0.1,
                                           label=ui.text("空位宽度（中位商品宽度的倍数）", "Gap width (x median width)"))
                    full_width = gr.Checkbox(value=False, label=ui.text("货架占满整张照片宽度", "Shelf fills the photo"))
                    shelf_auto = gr.Checkbox(value=True, label=ui.text("自动校准阈值", "Calibrate the threshold"))
                    shelf_threshold = gr.Slider(-1, 1, value=retail.DEFAULT_THRESHOLD, step=0.01,
                                                label=ui.text("未知阈值", "Unknown threshold"))
                    shelf_model = gr.Dropdown(embed_choices, value=embed_choices[0],
                                              label=ui.text("嵌入模型", "Embedder"))
                    detector = gr.Dropdown(detect_choices, value=detect_choices[0],
                                           label=ui.text("检测模型", "Detector"))
                    go = gr.Button(ui.text("分析货架", "Audit the shelf"), variant="primary", elem_id="retail-analyze")
                with gr.Column():
                    annotated = gr.Image(type="pil", label=ui.text("标注结果", "Annotated shelf"),
                                         elem_id="retail-annotated")
                    summary = gr.Dataframe(headers=list(retail.SUMMARY_COLUMNS), interactive=False,
                                           label=ui.text("按 SKU 汇总", "Per SKU"))
                    report = gr.JSON(label=ui.text("报告 JSON", "Report JSON"))
                    files = gr.File(file_count="multiple", label=ui.text("CSV 报告", "CSV reports"))
            shelf_inputs = [shelf, shelf_catalog, shelf_names, planogram, query, detection_threshold, gap_factor,
                            full_width, shelf_auto, shelf_threshold, shelf_model, detector, tiny_flag]
            go.click(
                analyze_shelf, shelf_inputs, [annotated, summary, report, files],
                api_name="analyze_shelf", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def run_shelf_example(image_file, plan):
                return analyze_shelf(image_file, None, "", plan, retail.DEFAULT_QUERY, 0.1, 1.0, False, True,
                                     retail.DEFAULT_THRESHOLD, embed_choices[0], detect_choices[0], tiny)

            gr.Examples(
                [[str(EXAMPLES / "shelf.png"), (EXAMPLES / "planogram.csv").read_text(encoding="utf-8")]],
                inputs=[shelf, planogram], outputs=[annotated, summary, report, files], fn=run_shelf_example,
                run_on_click=True, cache_examples=False, api_name=False,
            )
    return demo


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Retail Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
