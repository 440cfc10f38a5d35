"""Medical imaging Space (research and teaching only): DICOM/PNG/JPEG in, CT windows, zero-shot modality and
finding scores with CLIP, lesion segmentation with SAM from a box or points, area and diameter in mm, mask export.

Run locally: ``lmt space medical --tiny`` (offline tiny weights) or ``python app.py``. The logic is
``lmt.apps.medical``; this file lays out the page and checks what arrives from the browser or an API client.

Privacy: nothing is stored on purpose. Gradio keeps each upload, and each file it serves, in its cache so that the
page can show and re-send it; ``delete_cache`` below removes them once they are older than ``CACHE_MAX_AGE_S``
(checked every ``CACHE_CHECK_S``), and all of them when the server stops. The PNG/NIfTI exports are written straight
into a per-request folder inside that cache, so gradio serves them without a copy and deletes them the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from lmt import ui
from lmt.apps import medical
from lmt.errors import InvalidInputError

TITLE = "医学影像"
CLIP_TASK = "zero-shot-image-classification"
SAM_TASK = "mask-generation"
EXAMPLES = Path(__file__).resolve().parent / "examples"
CT_EXAMPLE = EXAMPLES / "phantom_chest_ct.dcm"
XRAY_EXAMPLE = EXAMPLES / "phantom_xray.png"
CACHE_CHECK_S, CACHE_MAX_AGE_S = 60, 600
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
NOTICE_MD = (
    f"> ⚠️ **{medical.NOTICE_ZH}** **{medical.NOTICE_EN}**\n>\n"
    "> 上传的文件只在 Gradio 缓存中保留至多约 11 分钟（用于显示和重复提示），之后自动删除；导出文件同样如此。"
    " Uploads and exports stay in Gradio's cache for about 11 minutes at most (to show and re-prompt them),"
    " then are deleted. 请勿上传含有可识别患者信息的文件。 Do not upload files that identify a patient."
)


# ---- checking what arrives ---------------------------------------------------------------------------------
def window_value(window, width, level):
    """The window asked for: 'auto', a preset name, or (width, level) for 'custom'."""
    if not isinstance(window, str) or window not in medical.WINDOW_CHOICES:
        raise InvalidInputError(
            f"window must be one of {', '.join(medical.WINDOW_CHOICES)}.",
            f"窗的取值必须是 {', '.join(medical.WINDOW_CHOICES)} 之一。",
        )
    if window != "custom":
        return window
    limit = medical.MAX_WINDOW_VALUE
    return ui.number(width, "window_width", 1, limit), ui.number(level, "window_level", -limit, limit)


def slice_value(value):
    """The slice of a multi-frame DICOM; empty means 'not chosen' (a volume is then refused, naming its slices)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return ui.number(value, "slice_index", 0, 100_000, integer=True)


def read_scan(file, slice_index):
    return medical.read_medical_image(ui.image_path(file), slice_index=slice_value(slice_index))


def pick_clip(choice, tiny_allowed):
    """A CLIP from the list, or, when the operator allows it (LMT_SPACE_HUB_MODELS=1), a CLIPModel checkpoint on
    the Hub given as 'org/name' (e.g. a medical CLIP). Off by default: a visitor could otherwise make a public
    Space download any repository."""
    try:
        return ui.pick_model(choice, CLIP_TASK, tiny_allowed=tiny_allowed)
    except InvalidInputError:
        if isinstance(choice, str) and HUB_ID.fullmatch(choice) and ".." not in choice:
            if os.environ.get("LMT_SPACE_HUB_MODELS") == "1":
                return choice, "real"
            raise InvalidInputError(
                f"'{choice}' is not one of this Space's models. Its operator can allow Hub CLIP checkpoints by "
                "setting LMT_SPACE_HUB_MODELS=1, or run the Space locally with that setting.",
                f"'{choice}' 不是本 Space 提供的模型。Space 的运营者可以设置 LMT_SPACE_HUB_MODELS=1 以允许 Hub 上的 "
                "CLIP 检查点，你也可以在本地用该设置运行这个 Space。",
            ) from None
        raise


def export_folder():
    """A fresh folder for one request's exports inside gradio's cache: served in place (a file outside it would be
    copied in, leaving our copy behind) and deleted by ``delete_cache`` with the uploads."""
    cache = Path(get_upload_folder())
    cache.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="lmt-medical-", dir=cache))


# ---- the API -----------------------------------------------------------------------------------------------
@ui.guard
def preview(file, window, window_width, window_level, slice_index):
    """Show an image or DICOM slice under a display window, with what its header says (modality, pixel spacing).

    Args:
        file: A DICOM file (.dcm) or a PNG/JPEG image.
        window: "auto", a CT preset ("lung", "mediastinum", "bone", "brain") or "custom".
        window_width: Window width for "custom", in the image's units (HU for CT).
        window_level: Window level (centre) for "custom".
        slice_index: For a multi-frame DICOM, the slice to show (0-based); empty otherwise.

    Returns:
        The windowed image, and its description as JSON with the research-only notice.
    """
    scan = read_scan(file, slice_index)
    chosen = window_value(window, window_width, window_level)
    used = scan.window_for(chosen)
    info = {"notice": medical.NOTICE, "image": scan.info(), "window": used.to_dict() if used else None}
    return scan.display(chosen), info


@ui.gpu(duration=60)
@ui.guard
def classify(file, window, window_width, window_level, slice_index, modalities, findings, model, tiny_allowed=False,
             progress=gr.Progress()):
    """Score an image's modality and findings with a CLIP model (zero-shot). Research and teaching only: the
    scores are model scores over the labels you give, not a diagnosis.

    Args:
        file: A DICOM file (.dcm) or a PNG/JPEG image.
        window: "auto", a CT preset ("lung", "mediastinum", "bone", "brain") or "custom".
        window_width: Window width for "custom", in the image's units (HU for CT).
        window_level: Window level (centre) for "custom".
        slice_index: For a multi-frame DICOM, the slice to use (0-based); empty otherwise.
        modalities: Candidate modalities, comma-separated, e.g. "CT, MRI, X-ray, ultrasound".
        findings: Candidate findings, comma-separated, e.g. "no abnormality, a tumor, a fracture".
        model: A CLIP model from the list, or a CLIPModel checkpoint on the Hub as "org/name".

    Returns:
        The windowed image the model saw, modality scores, finding scores, and everything as JSON with the notice.
    """
    scan = read_scan(file, slice_index)
    chosen = window_value(window, window_width, window_level)
    modality_labels = ui.short_text(modalities, "modalities", max_chars=1000)
    finding_labels = ui.short_text(findings, "findings", max_chars=1000)
    name, weights = pick_clip(model, tiny_allowed)
    progress(0.2, desc=ui.text("加载模型", "Loading the model"))
    result = medical.classify_image(
        scan, modalities=modality_labels, findings=finding_labels, window=chosen, model=name, weights=weights
    )
    return scan.display(chosen), result.modality.as_label_dict(), result.findings.as_label_dict(), result.to_dict()


@ui.gpu(duration=60)
@ui.guard
def segment(file, window, window_width, window_level, slice_index, points, box, model, tiny_allowed=False,
            progress=gr.Progress()):
    """Segment one lesion with SAM from a box and/or points, keep its largest part, fill its holes, and measure
    its area and maximum diameter (mm when the DICOM gives the pixel spacing, pixels otherwise). Research and
    teaching only.

    Args:
        file: A DICOM file (.dcm) or a PNG/JPEG image.
        window: "auto", a CT preset ("lung", "mediastinum", "bone", "brain") or "custom".
        window_width: Window width for "custom", in the image's units (HU for CT).
        window_level: Window level (centre) for "custom".
        slice_index: For a multi-frame DICOM, the slice to use (0-based); empty otherwise.
        points: Clicks "x,y,label; ..." in pixels from the top left, 1 on the lesion / 0 off it, e.g. "80,110,1".
        box: One box "x0,y0,x1,y1" in pixels around the lesion, e.g. "65,95,95,125"; empty if points are given.
        model: A SAM model from the list, e.g. "sam-vit-base".

    Returns:
        The overlay (mask, outline, maximum diameter), measurements as JSON with the notice, the mask as PNG and as
        NIfTI (.nii.gz, voxel size from the pixel spacing).
    """
    scan = read_scan(file, slice_index)
    chosen = window_value(window, window_width, window_level)
    point_list = ui.number_groups(points, "points", "x,y,label", (2, 3))
    boxes = ui.number_groups(box, "box", "x0,y0,x1,y1", (4,))
    if len(boxes) > 1:
        raise InvalidInputError("Give one box: one lesion per request.", "请只给一个框：每次分割一个病灶。")
    name, weights = ui.pick_model(model, SAM_TASK, tiny_allowed=tiny_allowed)
    progress(0.2, desc=ui.text("加载模型并分割", "Loading the model and segmenting"))
    result = medical.segment_lesion(
        scan, box=boxes[0] if boxes else None, points=point_list or None, window=chosen, model=name, weights=weights
    )
    png, nifti = medical.export_mask(result, export_folder())
    return result.overlay(), result.to_dict(), str(png), str(nifti)


@ui.guard
def add_click(points, box, corner, mode, evt: gr.SelectData):
    """A click on the preview adds a point on (1) or off (0) the lesion, or one corner of the box."""
    x, y = (int(v) for v in evt.index)
    if mode != "box":
        clicked = [*ui.number_groups(points, "points", "x,y,label", (2, 3)), [x, y, 1 if mode == "include" else 0]]
        return "; ".join(",".join(f"{v:g}" for v in p) for p in clicked), box, None
    if corner is None:
        return points, box, [x, y]
    return points, f"{min(corner[0], x)},{min(corner[1], y)},{max(corner[0], x)},{max(corner[1], y)}", None


# ---- the page ----------------------------------------------------------------------------------------------
def scan_inputs(prefix):
    """The file, window and slice inputs both tabs share in layout (each tab has its own)."""
    file = gr.File(label=ui.text("DICOM 或 PNG/JPEG", "DICOM or PNG/JPEG"), file_types=[".dcm", ".dicom", "image"],
                   elem_id=f"{prefix}-file")
    window = gr.Dropdown(list(medical.WINDOW_CHOICES), value="auto", label=ui.text("窗", "Window"),
                         info=ui.text("CT 预设以 HU 计；auto 用文件自带的窗", "CT presets are in HU; auto uses the file's"))
    with gr.Row():
        width = gr.Number(value=400, label=ui.text("窗宽（custom）", "Width (custom)"))
        level = gr.Number(value=40, label=ui.text("窗位（custom）", "Level (custom)"))
        slice_index = gr.Number(value=None, precision=0, label=ui.text("层号（多帧 DICOM）", "Slice (multi-frame)"))
    return file, window, width, level, slice_index


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="医学影像 · 科研教学演示", delete_cache=(CACHE_CHECK_S, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown(
            "# 医学影像分析演示 / Medical imaging demo\n"
            "读取 DICOM（HU、窗宽窗位、像素间距）或 PNG/JPEG；用 CLIP 给出模态与所见的零样本**模型分数**；用 SAM 按框或点"
            "分割病灶，给出面积（mm²）和最大径（mm），并导出 PNG 与 NIfTI 掩码。"
            " Read DICOM (HU, windows, pixel spacing) or PNG/JPEG; zero-shot **model scores** for modality and"
            " findings with CLIP; segment a lesion with SAM from a box or points, with its area (mm²) and maximum"
            " diameter (mm), and export the mask as PNG and NIfTI.\n\n" + NOTICE_MD
        )
        tiny_flag = gr.State(tiny)
        with gr.Tab(ui.text("模态与所见", "Modality and findings")):
            with gr.Row():
                with gr.Column():
                    file, window, width, level, slice_index = scan_inputs("medical-classify")
                    modalities = gr.Textbox(value=", ".join(medical.DEFAULT_MODALITIES), lines=2,
                                            label=ui.text("候选模态", "Modalities"))
                    findings = gr.Textbox(value=", ".join(medical.DEFAULT_FINDINGS), lines=2,
                                          label=ui.text("候选所见", "Findings"),
                                          info=ui.text("英文效果最好", "English works best"))
                    clip_choices = ui.model_choices(CLIP_TASK, tiny=tiny)
                    model = gr.Dropdown(
                        clip_choices, value=clip_choices[0], label=ui.text("模型", "Model"), allow_custom_value=True,
                        info=ui.text("运营者设置 LMT_SPACE_HUB_MODELS=1 后，也可填 Hub 上的 CLIP 检查点 org/name（如医学 CLIP）",
                                     "with LMT_SPACE_HUB_MODELS=1 set by the operator, also a Hub CLIP as org/name"),
                    )
                    run = gr.Button(ui.text("打分", "Score"), variant="primary", elem_id="medical-classify-run")
                with gr.Column():
                    seen = gr.Image(label=ui.text("模型看到的图像", "What the model saw"), type="pil", format="png")
                    modality_label = gr.Label(
                        num_top_classes=5, label=ui.text("模态（模型分数）", "Modality (model scores)")
                    )
                    finding_label = gr.Label(
                        num_top_classes=5,
                        label=ui.text("所见（模型分数，非诊断）", "Findings (model scores, not a diagnosis)"),
                    )
                    raw = gr.JSON(label="JSON")
            run.click(
                classify, [file, window, width, level, slice_index, modalities, findings, model, tiny_flag],
                [seen, modality_label, finding_label, raw], api_name="classify", preprocess=False,
                concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def classify_example(example_file, example_window):
                return classify(example_file, example_window, 400, 40, None, modalities.value, findings.value,
                                model.value, tiny)

            gr.Examples(
                [[str(CT_EXAMPLE), "lung"], [str(XRAY_EXAMPLE), "auto"]], inputs=[file, window],
                outputs=[seen, modality_label, finding_label, raw], fn=classify_example, run_on_click=True,
                cache_examples=False, api_name=False,
            )
        with gr.Tab(ui.text("病灶分割与测量", "Lesion segmentation and size")):
            with gr.Row():
                with gr.Column():
                    seg_file, seg_window, seg_width, seg_level, seg_slice = scan_inputs("medical-segment")
                    show = gr.Button(ui.text("显示图像（之后可在图上点击）", "Show the image (then click on it)"))
                    mode = gr.Radio(
                        [(ui.text("病灶上的点 (1)", "Point on the lesion (1)"), "include"),
                         (ui.text("病灶外的点 (0)", "Point off the lesion (0)"), "exclude"),
                         (ui.text("框的角（点两下）", "Box corner (click twice)"), "box")],
                        value="box", label=ui.text("点击添加", "A click adds"),
                    )
                    points = gr.Textbox(label=ui.text("点", "Points"), placeholder="80,110,1",
                                        info=ui.text("x,y,标签（1 病灶 / 0 背景），分号分隔",
                                                     "x,y,label (1 lesion / 0 not), ';'-separated"))
                    box = gr.Textbox(label=ui.text("框", "Box"), placeholder="65,95,95,125",
                                     info=ui.text("x0,y0,x1,y1（像素）", "x0,y0,x1,y1 (pixels)"))
                    seg_model = ui.model_picker(SAM_TASK, tiny=tiny)
                    go = gr.Button(ui.text("分割并测量", "Segment and measure"), variant="primary",
                                   elem_id="medical-segment-run")
                with gr.Column():
                    picture = gr.Image(label=ui.text("图像（点击添加提示）/ 叠加结果", "Image (click to prompt) / overlay"),
                                       type="pil", format="png", interactive=False,
                                       elem_id="medical-picture")
                    measurements = gr.JSON(label=ui.text("测量结果", "Measurements"))
                    with gr.Row():
                        mask_png = gr.File(label=ui.text("掩码 PNG", "Mask PNG"))
                        mask_nifti = gr.File(label=ui.text("掩码 NIfTI", "Mask NIfTI"))
            corner = gr.State(None)
            seg_inputs = [seg_file, seg_window, seg_width, seg_level, seg_slice]
            show.click(preview, seg_inputs, [picture, measurements], api_name="preview", preprocess=False,
                       concurrency_limit=ui.CONCURRENCY_LIMIT)
            picture.select(add_click, [points, box, corner, mode], [points, box, corner], api_name=False)
            go.click(
                segment, [*seg_inputs, points, box, seg_model, tiny_flag],
                [picture, measurements, mask_png, mask_nifti], api_name="segment", preprocess=False,
                concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
            gr.on([seg_file.upload, seg_file.clear], lambda: ("", "", None), outputs=[points, box, corner],
                  api_name=False)

            def segment_example(example_file, example_window, example_box):
                return segment(example_file, example_window, 400, 40, None, "", example_box, seg_model.value, tiny)

            gr.Examples(
                [[str(CT_EXAMPLE), "lung", "65,95,95,125"], [str(XRAY_EXAMPLE), "auto", "145,115,177,147"]],
                inputs=[seg_file, seg_window, box], outputs=[picture, measurements, mask_png, mask_nifti],
                fn=segment_example, run_on_click=True, cache_examples=False, api_name=False,
            )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Medical imaging Space (research and teaching only)")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variants")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
