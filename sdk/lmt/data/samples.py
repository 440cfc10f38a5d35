"""Sample datasets written to disk in the formats ``lmt train`` reads, with no download.

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 real images), upscaled, as an ImageFolder tree,
  labelled by digit, by parity (even/odd) or rotated by 90 degrees.
- ``shapes``: synthetic images of coloured shapes with exact masks (CSV of image, mask), for SAM.
- ``shape-captions``: the same scenes with a caption and question/answer pairs (JSONL), for CLIP and BLIP-2.
- ``shape-chat``: scenes of coloured shapes with Chinese conversations (JSONL of images and messages), for
  vision-language model fine-tuning (task vlm-sft).

>>> from lmt.data.samples import write_digits
>>> # write_digits("data/digits", size=32)   # data/digits/0/00000.png ...
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lmt.errors import InvalidInputError

DigitsLabelling = Literal["digit", "parity", "rotated"]
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220)}


def _check_folder(folder: Path) -> Path:
    folder = Path(folder).expanduser()
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInputError(
            f"'{folder}' is not empty; sample data is written to a new or empty folder only.",
            f"'{folder}' 不是空目录；示例数据只写入新目录或空目录。",
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_digits(
    folder: str | Path, *, size: int = 32, labelling: DigitsLabelling = "digit", limit: int = 0
) -> Path:
    """scikit-learn's digits as PNGs in ``folder/<label>/``; ``rotated`` turns every image by 90 degrees."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if labelling not in ("digit", "parity", "rotated"):
        raise InvalidInputError(f"labelling must be digit, parity or rotated, not {labelling!r}.",
                                f"labelling 只能是 digit、parity 或 rotated，而不是 {labelling!r}。")
    folder = _check_folder(Path(folder))
    digits = load_digits()
    count = len(digits.target) if not limit else min(limit, len(digits.target))
    for index in range(count):
        pixels = (digits.images[index] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        if labelling == "rotated":
            pixels = np.rot90(pixels).copy()
        label = int(digits.target[index])
        name = ("even" if label % 2 == 0 else "odd") if labelling == "parity" else str(label)
        image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
        (folder / name).mkdir(exist_ok=True)
        image.save(folder / name / f"{index:05d}.png")
    return folder


def _draw_shape(draw: object, shape: str, box: Sequence[float], fill: object) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def write_shapes(folder: str | Path, *, count: int = 64, size: int = 64, seed: int = 0) -> Path:
    """``count`` scenes of one coloured shape on a noisy background, each with its exact mask.

    Writes ``images/*.png``, ``masks/*.png`` (255 = the shape) and ``shapes.csv`` (image, mask, label) plus
    ``captions.jsonl`` (image, caption, question, answer) describing the same scenes.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    folder = _check_folder(Path(folder))
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    rows, captions = [], []
    for index in range(count):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        side = rng.uniform(0.3, 0.6) * size
        x0, y0 = rng.uniform(0, size - side), rng.uniform(0, size - side)
        box = (x0, y0, x0 + side, y0 + side)
        background = noise.integers(90, 170, size=(size, size, 3), dtype=np.uint8)
        image = Image.fromarray(background, mode="RGB")
        _draw_shape(ImageDraw.Draw(image), shape, box, COLOURS[colour])
        mask = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask), shape, box, 255)
        image_name, mask_name = f"images/{index:04d}.png", f"masks/{index:04d}.png"
        image.save(folder / image_name)
        mask.save(folder / mask_name)
        rows.append({"image": image_name, "mask": mask_name, "label": shape})
        captions.append({"image": image_name, "caption": f"a {colour} {shape}",
                         "question": "what shape is it?", "answer": shape})
    with (folder / "shapes.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask", "label"])
        writer.writeheader()
        writer.writerows(rows)
    with (folder / "captions.jsonl").open("w", encoding="utf-8") as handle:
        for row in captions:
            handle.write(json.dumps(row) + "\n")
    return folder


SHAPE_NAMES_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
COLOUR_NAMES_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色"}


def _shape_scene(rng: random.Random, noise: object, size: int) -> tuple[object, str, str]:
    """(image, shape, colour): one coloured shape on a noisy background."""
    from PIL import Image, ImageDraw

    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    side = rng.uniform(0.4, 0.7) * size
    x0, y0 = rng.uniform(0, size - side), rng.uniform(0, size - side)
    image = Image.fromarray(noise.integers(90, 170, size=(size, size, 3), dtype="uint8"), mode="RGB")
    _draw_shape(ImageDraw.Draw(image), shape, (x0, y0, x0 + side, y0 + side), COLOURS[colour])
    return image, shape, colour


def write_shape_chat(folder: str | Path, *, count: int = 48, size: int = 64, seed: int = 0,
                     pair_every: int = 4) -> Path:
    """``count`` Chinese conversations about coloured shapes, for vision-language fine-tuning (task vlm-sft).

    Writes ``images/*.png`` and ``conversations.jsonl``, one ``{"image": [paths], "messages": [...]}`` per line.
    Most conversations show one image and ask two turns (the shape, then its colour); every ``pair_every``-th shows
    two images and asks whether their shapes are the same. ``<image>`` marks where each image goes.
    """
    import numpy as np

    folder = _check_folder(Path(folder))
    (folder / "images").mkdir()
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        pair = pair_every > 0 and index % pair_every == pair_every - 1
        scenes = [_shape_scene(rng, noise, size) for _ in range(2 if pair else 1)]
        names = []
        for number, (image, _, _) in enumerate(scenes):
            names.append(f"images/{index:04d}-{number}.png")
            image.save(folder / names[-1])
        if pair:
            (_, first, _), (_, second, _) = scenes
            answer = (f"一样，都是{SHAPE_NAMES_ZH[first]}。" if first == second else
                      f"不一样：第一张是{SHAPE_NAMES_ZH[first]}，第二张是{SHAPE_NAMES_ZH[second]}。")
            messages = [{"role": "user", "content": "<image><image>这两张图里的形状一样吗？"},
                        {"role": "assistant", "content": answer}]
        else:
            _, shape, colour = scenes[0]
            messages = [{"role": "user", "content": "<image>图中是什么形状？"},
                        {"role": "assistant", "content": f"{SHAPE_NAMES_ZH[shape]}。"},
                        {"role": "user", "content": "它是什么颜色？"},
                        {"role": "assistant", "content": f"{COLOUR_NAMES_ZH[colour]}。"}]
        rows.append({"image": names, "messages": messages})
    with (folder / "conversations.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder
