"""Traffic Space: count road users in zones, describe a scene, and check a clip for line crossings and
violations.

Run locally: ``lmt space traffic --tiny`` (offline tiny weights) or ``python app.py``.
The logic lives in :mod:`lmt.apps.traffic`; this file only lays out the page and checks what arrives.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui
from lmt.apps import traffic
from lmt.errors import InvalidInputError

TITLE = "智能交通 / Traffic"
DETECT_TASK = "zero-shot-object-detection"
CAPTION_TASK = "image-to-text"
VQA_TASK = "visual-question-answering"
DETECTORS = ["owlv2-b16", "owlv2-b16-finetuned", "owlv2-l14"]
SCENE_MODELS = ["blip2-opt-2.7b", "blip2-flan-t5-xl"]
EXAMPLES = Path(__file__).resolve().parent / "examples"
MAX_BOXES = 100  # boxes drawn and listed, best first; the counts use every detection
MAX_VIDEO_FRAMES = 60  # sampled frames per request: bounds the work of one call
MAX_FILES = 300
DIRECTION_CHOICES = ["any", *traffic.DIRECTIONS]
DEFAULT_QUERIES = ", ".join(traffic.VEHICLE_QUERIES)
DEFAULT_THRESHOLD = 0.1
# the rules that fit examples/traffic.gif (see make_examples.py)
NO_PARKING_BOX = [[380, 260], [478, 260], [478, 318], [380, 318]]
EXAMPLE_ZONES = json.dumps([{"name": "no parking", "points": NO_PARKING_BOX}])
EXAMPLE_PHASES = json.dumps([
    {"start": 0, "end": 3, "state": "red"},
    {"start": 3, "end": 9, "state": "green"},
])
ZONES_HINT = '[{"name": "lane 1", "points": [[x, y], [x, y], [x, y], ...]}]'
PHASES_HINT = '[{"start": 0, "end": 3, "state": "red"}, ...] or ["red", "red", "green", ...]'


def _natural_key(path: str) -> list:
    """frame2.png before frame10.png."""
    parts = re.split(r"(\d+)", os.path.basename(path))
    return [int(part) if part.isdigit() else part.lower() for part in parts]


def video_source(payload):
    """One uploaded animation (a path), or several frames (paths in file-name order), from a raw gr.File
    payload."""
    items = payload if isinstance(payload, list) else [payload]
    if not items or items == [None]:
        raise InvalidInputError(
            "Please upload a GIF (or animated PNG/WebP), or several frames.", "请上传 GIF（或动画 PNG/WebP），或多张帧图像。"
        )
    if len(items) > MAX_FILES:
        raise InvalidInputError(
            f"{len(items)} files; at most {MAX_FILES} frames per request.",
            f"共 {len(items)} 个文件，每次最多 {MAX_FILES} 帧。",
        )
    paths = [ui.image_path(item) for item in items]
    return paths[0] if len(paths) == 1 else sorted(paths, key=_natural_key)


def no_parking_rules(names, min_stopped_s, max_displacement):
    """Rules for the zones named in a comma-separated text."""
    text = ui.short_text(names, "no_parking_zones", allow_empty=True, max_chars=1000)
    seconds = ui.number(min_stopped_s, "min_stopped_s", 0, 3600)
    pixels = ui.number(max_displacement, "max_displacement", 0, 1000)
    zones = [name.strip() for name in text.split(",") if name.strip()]
    return [traffic.NoParkingRule(zone, seconds, pixels) for zone in zones]


@ui.gpu(duration=60)
@ui.guard
def detect(image, zones, queries, threshold, model, tiny_allowed=False, progress=gr.Progress()):
    """Count vehicles and people on one road image with OWLv2, per class and per polygon zone.

    Args:
        image: The road image (PNG, JPEG, WebP ...).
        zones: Optional zones as JSON, [{"name": "lane 1", "points": [[x, y], [x, y], [x, y]]}], in pixels
            from the top-left corner; empty for none. A box is in a zone when its bottom centre is.
        queries: What to count, comma-separated, e.g. "car, bus, truck, motorcycle, bicycle, person".
        threshold: Keep boxes scoring above this, 0-1, e.g. 0.1 (OWLv2 scores run low).
        model: An OWLv2 model from the list, e.g. "owlv2-b16".

    Returns:
        The image with boxes and zones drawn, and the counts (per class, per zone) with the boxes as JSON.
    """
    path = ui.image_path(image)
    zones_text = ui.short_text(zones, "zones", allow_empty=True, max_chars=traffic.MAX_JSON_CHARS)
    query_text = ui.short_text(queries, "queries")
    low = ui.number(threshold, "threshold", 0, 1)
    name, weights = ui.pick_model(model, DETECT_TASK, tiny_allowed=tiny_allowed, names=DETECTORS)
    parsed_zones = traffic.parse_zones(zones_text)
    picture = lmt.load_image(path)  # a bad upload is refused before any model loads
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    detector = lmt.pipeline(DETECT_TASK, name, weights=weights)
    progress(0.4, desc=ui.text("检测中", "Detecting"))
    result = traffic.count_vehicles(
        picture, detector=detector, queries=query_text, zones=parsed_zones, threshold=low
    )
    masks = [(zone.mask(picture.size), f"zone: {zone.name}") for zone in parsed_zones]
    boxes = [(d.box, f"{d.label} {d.score:.2f}") for d in list(result.detections)[:MAX_BOXES]]
    raw = result.to_dict()
    if len(raw["detections"]) > MAX_BOXES:
        raw["detections"] = raw["detections"][:MAX_BOXES]
        raw["detections_shown"] = MAX_BOXES
    return ui.annotated_image(picture, masks=masks, boxes=boxes), raw


@ui.gpu(duration=60)
@ui.guard
def scene(image, model, tiny_allowed=False, progress=gr.Progress()):
    """Describe a traffic scene with BLIP-2 and ask it about the weather, congestion and accidents.

    The answers are the model's own words, unverified: BLIP-2 can be wrong, and no rule checks them.

    Args:
        image: The road image (PNG, JPEG, WebP ...).
        model: A BLIP-2 model from the list, e.g. "blip2-opt-2.7b".

    Returns:
        The caption, a table of (topic, question, answer), and both as JSON.
    """
    path = ui.image_path(image)
    name, weights = ui.pick_model(model, VQA_TASK, tiny_allowed=tiny_allowed, names=SCENE_MODELS)
    picture = lmt.load_image(path)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    captioner = lmt.pipeline(CAPTION_TASK, name, weights=weights)
    answerer = lmt.pipeline(VQA_TASK, name, weights=weights)
    progress(0.4, desc=ui.text("生成中", "Generating"))
    report = traffic.describe_scene(picture, captioner=captioner, answerer=answerer)
    table = [[answer.topic, answer.question, answer.answer] for answer in report.answers]
    return report.caption, table, report.to_dict()


@ui.gpu(duration=120)
@ui.guard
def video(files, counting_line, fps, stop_line, phases, direction, zones, no_parking_zones, min_stopped_s,
          max_displacement, queries, threshold, model, tiny_allowed=False,
          progress=gr.Progress(track_tqdm=True)):
    """Track vehicles through a short clip: unique crossings of a counting line, and rule violations.

    Args:
        files: A GIF (or animated PNG/WebP), or several frame images taken at `fps` (ordered by file name).
        counting_line: The counting line as x0,y0,x1,y1 in pixels, e.g. "240,150,240,320"; empty for none.
        fps: Frames analysed per second of video (0.1-10); for uploaded frames, the rate they were taken at.
        stop_line: The stop line as x0,y0,x1,y1 for red-light checks; empty for none.
        phases: The signal phases as JSON: [{"start": 0, "end": 3, "state": "red"}, ...] in seconds, or one
            state per analysed frame ["red", "green", ...]; needed with a stop line.
        direction: Which crossings of the stop line are checked: "any", "right", "left", "down" or "up".
        zones: Optional zones as JSON, [{"name": "no parking", "points": [[x, y], [x, y], [x, y]]}].
        no_parking_zones: Comma-separated names of zones where stopping is forbidden; empty for none.
        min_stopped_s: Seconds a vehicle must stay put inside a no-parking zone to be reported (0-3600).
        max_displacement: Pixels a vehicle may move and still count as stopped (0-1000).
        queries: What to detect, comma-separated, e.g. "car, bus, truck, motorcycle, bicycle, person".
        threshold: Keep boxes scoring above this, 0-1.
        model: An OWLv2 model from the list, e.g. "owlv2-b16".

    Returns:
        The counts (unique tracks, crossings per direction) as JSON, the violations as JSON, and a per-frame
        CSV file.
    """
    source = video_source(files)
    line_text = ui.short_text(counting_line, "counting_line", allow_empty=True, max_chars=200)
    line = traffic.parse_line(line_text, "counting line")
    rate = ui.number(fps, "fps", 0.1, 10)
    stop_text = ui.short_text(stop_line, "stop_line", allow_empty=True, max_chars=200)
    stop = traffic.parse_line(stop_text, "stop line")
    phases_text = ui.short_text(phases, "phases", allow_empty=True, max_chars=traffic.MAX_JSON_CHARS)
    schedule = traffic.parse_phases(phases_text)
    if direction not in DIRECTION_CHOICES:
        raise InvalidInputError(
            f"direction must be one of {', '.join(DIRECTION_CHOICES)}.",
            f"direction 必须是 {', '.join(DIRECTION_CHOICES)} 之一。",
        )
    if (stop is None) != (schedule is None):
        raise InvalidInputError(
            "A red-light check needs both a stop line and the signal phases; give both or neither.",
            "闯红灯检测需要同时给出停止线和信号相位；请两者都填或都不填。",
        )
    checked = None if direction == "any" else direction
    red_light = traffic.RedLightRule(stop, schedule, checked) if stop is not None else None
    zones_text = ui.short_text(zones, "zones", allow_empty=True, max_chars=traffic.MAX_JSON_CHARS)
    parsed_zones = traffic.parse_zones(zones_text)
    rules = no_parking_rules(no_parking_zones, min_stopped_s, max_displacement)
    query_text = ui.short_text(queries, "queries")
    low = ui.number(threshold, "threshold", 0, 1)
    name, weights = ui.pick_model(model, DETECT_TASK, tiny_allowed=tiny_allowed, names=DETECTORS)
    progress(0.05, desc=ui.text("读取视频", "Reading the video"))
    frames = traffic.read_frames(source, fps=rate, max_frames=MAX_VIDEO_FRAMES)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    detector = lmt.pipeline(DETECT_TASK, name, weights=weights)
    report = traffic.analyze_video(
        frames, detector=detector, queries=query_text, fps=rate, threshold=low, zones=parsed_zones,
        counting_line=line, no_parking=rules, red_light=red_light,
    )
    summary = report.to_dict()
    violations = summary.pop("violations")
    folder = tempfile.mkdtemp(prefix="lmt-traffic-")
    csv_path = report.write_csv(Path(folder) / "traffic_frames.csv")
    return summary, violations, str(csv_path)


@ui.guard
def add_point(points, evt: gr.SelectData):
    """Append the clicked pixel to the polygon being drawn (UI only)."""
    current = traffic.parse_points(ui.short_text(points, "points", allow_empty=True, max_chars=10_000))
    x, y = evt.index[0], evt.index[1]
    return json.dumps([*[[round(px), round(py)] for px, py in current], [int(x), int(y)]])


@ui.guard
def add_zone(zones, name, points):
    """Add the drawn polygon to the zones JSON under ``name`` (UI only)."""
    existing = [zone.to_dict() for zone in traffic.parse_zones(zones)]
    new = {"name": ui.short_text(name, "zone name", max_chars=traffic.MAX_NAME_CHARS),
           "points": [list(point) for point in traffic.parse_points(points)]}
    zones_json = json.dumps([zone.to_dict() for zone in traffic.parse_zones([*existing, new])])
    return zones_json, ""


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="智能交通 · 车辆计数、场景理解与违规检测") as demo:
        gr.Markdown(
            "# 智能交通 / Intelligent traffic\n"
            "用 OWLv2 检测并按区域计数，用 BLIP-2 描述场景，再对短视频跟踪车辆、统计过线并按规则检查违停与闯红灯。"
            "违规由**你给出的规则**（区域、停止线、信号相位）判定；模型只负责找框和回答问题，可能出错。"
            " Count road users per zone (OWLv2), describe the scene (BLIP-2), and track a clip for line"
            " crossings, no-parking and red-light violations under rules you give. The models can be wrong."
        )
        tiny_flag = gr.State(tiny)
        with gr.Tab(ui.text("检测与区域计数", "Detect and count")):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        type="filepath", elem_id="traffic-image",
                        label=ui.text("道路图片（点击可画区域）", "Road image (click to draw a zone)"),
                    )
                    zones = gr.Textbox(label=ui.text("区域 JSON（可选）", "Zones JSON (optional)"), lines=3,
                                       placeholder=ZONES_HINT, elem_id="traffic-zones")
                    with gr.Accordion(ui.text("在图上画区域", "Draw a zone on the image"), open=False):
                        points = gr.Textbox(
                            label=ui.text("已点击的点", "Clicked points"), placeholder="[[x, y], ...]"
                        )
                        zone_name = gr.Textbox(label=ui.text("区域名称", "Zone name"), placeholder="lane 1")
                        with gr.Row():
                            clear_points = gr.Button(ui.text("清空点", "Clear points"))
                            save_zone = gr.Button(ui.text("加入区域", "Add zone"))
                    queries = gr.Textbox(value=DEFAULT_QUERIES, label=ui.text("要检测的类别", "Queries"))
                    threshold = gr.Slider(0, 1, value=DEFAULT_THRESHOLD, step=0.01,
                                          label=ui.text("分数阈值", "Score threshold"))
                    model = ui.model_picker(DETECT_TASK, tiny=tiny, names=DETECTORS)
                    run = gr.Button(
                        ui.text("检测并计数", "Detect and count"), variant="primary", elem_id="traffic-run"
                    )
                with gr.Column():
                    boxes = gr.AnnotatedImage(label=ui.text("检测结果", "Detections"), elem_id="traffic-boxes")
                    counts = gr.JSON(label=ui.text("计数（按类别、按区域）", "Counts (per class, per zone)"))
            run.click(
                detect, [image, zones, queries, threshold, model, tiny_flag], [boxes, counts],
                api_name="detect", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
            image.select(add_point, points, points, api_name=False)
            clear_points.click(lambda: "", outputs=points, api_name=False)
            save_zone.click(add_zone, [zones, zone_name, points], [zones, points], api_name=False)

            def run_example(image_file, example_zones):
                return detect(
                    image_file, example_zones, DEFAULT_QUERIES, DEFAULT_THRESHOLD, model.value, tiny
                )

            gr.Examples(
                [[str(EXAMPLES / "street.png"), EXAMPLE_ZONES]], inputs=[image, zones],
                outputs=[boxes, counts], fn=run_example, run_on_click=True, cache_examples=False,
                api_name=False,
            )
        with gr.Tab(ui.text("场景理解", "Scene")):
            with gr.Row():
                with gr.Column():
                    scene_image = gr.Image(type="filepath", label=ui.text("道路图片", "Road image"),
                                           elem_id="traffic-scene-image")
                    scene_model = ui.model_picker(VQA_TASK, tiny=tiny, names=SCENE_MODELS)
                    describe = gr.Button(
                        ui.text("描述场景", "Describe"), variant="primary", elem_id="traffic-describe"
                    )
                with gr.Column():
                    caption = gr.Textbox(label=ui.text("模型的描述（未经核实）", "The model's caption (unverified)"),
                                         interactive=False)
                    answers = gr.Dataframe(
                        headers=[ui.text("主题", "topic"), ui.text("问题", "question"),
                                 ui.text("模型的回答", "model's answer")],
                        datatype=["str", "str", "str"], interactive=False,
                        label=ui.text("模型的回答（未经核实）", "The model's answers (unverified)"),
                    )
                    scene_raw = gr.JSON(label="JSON")
            describe.click(
                scene, [scene_image, scene_model, tiny_flag], [caption, answers, scene_raw],
                api_name="scene", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
        with gr.Tab(ui.text("视频：过线计数与违规", "Video: crossings and violations")):
            with gr.Row():
                with gr.Column():
                    files = gr.File(
                        file_count="multiple", file_types=[".gif", ".png", ".webp", ".jpg", ".jpeg"],
                        label=ui.text("GIF / 动画，或多张帧图像", "GIF / animation, or frame images"),
                        elem_id="traffic-video",
                    )
                    counting_line = gr.Textbox(label=ui.text("计数线 x0,y0,x1,y1", "Counting line x0,y0,x1,y1"),
                                               value="240,150,240,320")
                    fps = gr.Slider(0.1, 10, value=4, step=0.1, label=ui.text("每秒分析帧数", "Frames per second"))
                    with gr.Accordion(ui.text("闯红灯", "Red light"), open=True):
                        stop_line = gr.Textbox(label=ui.text("停止线 x0,y0,x1,y1（可选）", "Stop line (optional)"))
                        phases = gr.Textbox(
                            label=ui.text("信号相位 JSON", "Signal phases JSON"), placeholder=PHASES_HINT
                        )
                        direction = gr.Dropdown(DIRECTION_CHOICES, value="any",
                                                label=ui.text("检查的过线方向", "Direction checked"))
                    with gr.Accordion(ui.text("禁停区域", "No parking"), open=True):
                        video_zones = gr.Textbox(
                            label=ui.text("区域 JSON", "Zones JSON"), lines=2, placeholder=ZONES_HINT
                        )
                        no_parking = gr.Textbox(label=ui.text("禁停区域名称（逗号分隔）", "No-parking zone names"))
                        min_stopped = gr.Slider(0, 60, value=2, step=0.5,
                                                label=ui.text("停留至少（秒）", "Stopped at least (s)"))
                        max_move = gr.Slider(0, 100, value=8, step=1,
                                             label=ui.text("视为静止的最大位移（像素）", "Max displacement (px)"))
                    video_queries = gr.Textbox(value=DEFAULT_QUERIES, label=ui.text("要检测的类别", "Queries"))
                    video_threshold = gr.Slider(0, 1, value=DEFAULT_THRESHOLD, step=0.01,
                                                label=ui.text("分数阈值", "Score threshold"))
                    video_model = ui.model_picker(DETECT_TASK, tiny=tiny, names=DETECTORS)
                    analyse = gr.Button(
                        ui.text("分析视频", "Analyse"), variant="primary", elem_id="traffic-analyse"
                    )
                with gr.Column():
                    summary = gr.JSON(label=ui.text("计数与轨迹", "Counts and tracks"))
                    violations = gr.JSON(label=ui.text("违规（按你给出的规则）", "Violations (under your rules)"))
                    csv_file = gr.File(label=ui.text("逐帧 CSV", "Per-frame CSV"))
            video_inputs = [files, counting_line, fps, stop_line, phases, direction, video_zones, no_parking,
                            min_stopped, max_move, video_queries, video_threshold, video_model, tiny_flag]
            analyse.click(
                video, video_inputs, [summary, violations, csv_file],
                api_name="video", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def run_video_example(clip, example_stop, example_phases, example_zones, example_no_parking):
                return video(clip, "240,150,240,320", 4, example_stop, example_phases, "right", example_zones,
                             example_no_parking, 2, 8, DEFAULT_QUERIES, DEFAULT_THRESHOLD, video_model.value,
                             tiny)

            gr.Examples(
                [[[str(EXAMPLES / "traffic.gif")], "300,150,300,320", EXAMPLE_PHASES, EXAMPLE_ZONES,
                  "no parking"]],
                inputs=[files, stop_line, phases, video_zones, no_parking],
                outputs=[summary, violations, csv_file], fn=run_video_example, run_on_click=True,
                cache_examples=False, api_name=False,
            )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Traffic Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
