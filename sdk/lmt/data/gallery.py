"""A review gallery for COCO annotations: PNG thumbnails with boxes and masks drawn, an HTML page, a contact sheet.

Auto-annotations are a draft: someone has to look at them before they train anything. The gallery shows the first
``limit`` images (by image id) with every annotation drawn (mask tinted, box outlined, ``class score`` written on
it), an HTML page listing each image's annotations, and one contact-sheet PNG to glance over or paste in a report.
It reads any COCO file (RLE or polygon segmentations, or boxes only), not only the ones ``lmt data annotate`` writes.

>>> from lmt.data.gallery import write_gallery
>>> # write_gallery("labels/annotations.json", "photos/", "labels/gallery", limit=24).html
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lmt.errors import InvalidImageError, InvalidInputError, missing_dependency
from lmt.validate import check_positive_int

#: Distinct, colour-blind-friendly colours (Okabe-Ito plus two), one per category id.
PALETTE = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (120, 120, 120), (170, 68, 153), (68, 170, 153))
MASK_ALPHA = 0.45
CAPTION_HEIGHT = 16


@dataclass(frozen=True)
class GalleryResult:
    """The files a gallery wrote."""

    html: Path
    contact_sheet: Path
    thumbnails: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"html": str(self.html), "contact_sheet": str(self.contact_sheet),
                "thumbnails": [str(p) for p in self.thumbnails]}


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Gallery: {message}", f"标注预览：{message_zh}")


def colour(category_id: int) -> tuple[int, int, int]:
    return PALETTE[(category_id - 1) % len(PALETTE)]


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """A COCO ``segmentation`` (compressed or uncompressed RLE, or polygons) as a bool (H, W) mask; None if absent."""
    if not segmentation:
        return None
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise missing_dependency("pycocotools", "data", "Drawing COCO masks", "绘制 COCO 掩码") from None
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def draw_annotations(
    image: Image.Image, annotations: Sequence[Mapping[str, Any]], names: Mapping[int, str], *, size: int = 256
) -> Image.Image:
    """``image`` scaled so its longer side is ``size``, with each annotation's mask tinted and box outlined."""
    scale = size / max(image.size)
    shown = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # nearest-neighbour when enlarging keeps small images' pixels (and mask edges) readable
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    canvas = np.asarray(image.convert("RGB").resize(shown, resample), dtype=np.float32)
    for annotation in annotations:
        mask = decode_segmentation(annotation.get("segmentation"), image.height, image.width)
        if mask is None:
            continue
        small = np.asarray(Image.fromarray(mask).resize(shown, Image.Resampling.NEAREST), dtype=bool)
        tint = np.array(colour(int(annotation["category_id"])), dtype=np.float32)
        canvas[small] = (1 - MASK_ALPHA) * canvas[small] + MASK_ALPHA * tint
    picture = Image.fromarray(canvas.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for annotation in annotations:
        x, y, w, h = (float(v) * scale for v in annotation["bbox"])
        rgb = colour(int(annotation["category_id"]))
        draw.rectangle((x, y, x + max(w, 1), y + max(h, 1)), outline=rgb, width=2)
        text = names.get(int(annotation["category_id"]), str(annotation["category_id"]))
        if "score" in annotation:
            text += f" {float(annotation['score']):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        # the label sits above the box, moved inside the picture when the box touches an edge
        text_x = max(0.0, min(x, picture.width - (right - left) - 2))
        text_y = max(0.0, y - (bottom - top) - 2)
        draw.rectangle((text_x, text_y, text_x + (right - left) + 2, text_y + (bottom - top) + 2), fill=rgb)
        draw.text((text_x + 1, text_y - top), text, fill=(0, 0, 0), font=font)
    return picture


def _placeholder(size: int, reason: str) -> Image.Image:
    picture = Image.new("RGB", (size, size), (200, 200, 200))
    ImageDraw.Draw(picture).text((4, 4), reason[:40], fill=(0, 0, 0), font=ImageFont.load_default())
    return picture


def contact_sheet(
    thumbnails: Sequence[Image.Image], captions: Sequence[str], *, size: int = 256, columns: int = 6
) -> Image.Image:
    """The thumbnails in a grid of ``columns``, each in a ``size`` square with its caption underneath."""
    columns = max(1, min(columns, len(thumbnails)))
    rows = math.ceil(len(thumbnails) / columns)
    sheet = Image.new("RGB", (columns * size, rows * (size + CAPTION_HEIGHT)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (thumb, caption) in enumerate(zip(thumbnails, captions, strict=True)):
        left, top = (index % columns) * size, (index // columns) * (size + CAPTION_HEIGHT)
        sheet.paste(thumb, (left + (size - thumb.width) // 2, top + (size - thumb.height) // 2))
        draw.text((left + 2, top + size + 2), caption[: max(4, size // 6)], fill=(0, 0, 0), font=font)
    return sheet


def _load_coco(coco: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(coco, Mapping):
        return coco
    path = Path(coco).expanduser()
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _error(f"cannot read the COCO file '{path}': {exc}.", f"无法读取 COCO 文件 '{path}'：{exc}。") from None


def _summary(annotations: Sequence[Mapping[str, Any]], names: Mapping[int, str]) -> str:
    counts = Counter(names.get(int(a["category_id"]), str(a["category_id"])) for a in annotations)
    return ", ".join(f"{name} ×{count}" for name, count in sorted(counts.items())) or "no annotations / 无标注"


def _row(annotation: Mapping[str, Any], names: Mapping[int, str]) -> str:
    name = names.get(int(annotation["category_id"]), str(annotation["category_id"]))
    score = f"{float(annotation['score']):.3f}" if "score" in annotation else ""
    cells = (annotation.get("id", ""), name, score, annotation.get("area", ""), annotation["bbox"])
    return "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>"


def _card(image: Mapping[str, Any], annotations: Sequence[Mapping[str, Any]], names: Mapping[int, str],
          src: str, original: str) -> str:
    rows = "".join(_row(annotation, names) for annotation in annotations)
    return (
        f'<figure><a href="{html.escape(original)}"><img src="{html.escape(src)}" alt=""></a>'
        f"<figcaption><b>#{image['id']} {html.escape(str(image['file_name']))}</b> "
        f"({image.get('width')}×{image.get('height')}): {html.escape(_summary(annotations, names))}</figcaption>"
        f"<table><tr><th>id</th><th>class</th><th>score</th><th>area</th><th>bbox [x, y, w, h]</th></tr>{rows}"
        "</table></figure>"
    )


PAGE = """<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
main {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; width: {size}px; }}
img {{ max-width: {size}px; image-rendering: pixelated; border: 1px solid #ccc; }}
table {{ font-size: 11px; border-collapse: collapse; }} td, th {{ padding: 0 4px; border-bottom: 1px solid #eee; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<p><a href="{sheet}">contact sheet / 总览图</a></p>
<main>
{cards}
</main></body></html>
"""


def write_gallery(
    coco: Mapping[str, Any] | str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    limit: int = 24,
    size: int = 256,
    columns: int = 6,
    embed: bool = False,
) -> GalleryResult:
    """Write ``index.html``, ``contact_sheet.png`` and ``thumbs/<image id>.png`` for the first ``limit`` images.

    With ``embed=True`` the page carries the thumbnails as data URIs, so the HTML file alone can be sent around;
    otherwise it links ``thumbs/``. Each thumbnail links to the original image, relative to the page.
    """
    from lmt.data.sharding import write_atomic
    from lmt.images import load_image

    limit = check_positive_int(limit, "limit", maximum=10_000)
    size = check_positive_int(size, "size", maximum=2048)
    columns = check_positive_int(columns, "columns", maximum=100)
    document = _load_coco(coco)
    try:
        names = {int(c["id"]): str(c["name"]) for c in document["categories"]}
        images = sorted(document["images"], key=lambda image: image["id"])[:limit]
        by_image: dict[Any, list[Mapping[str, Any]]] = {image["id"]: [] for image in images}
        for annotation in document["annotations"]:
            if annotation["image_id"] in by_image:
                by_image[annotation["image_id"]].append(annotation)
    except (KeyError, TypeError, ValueError) as exc:
        raise _error(f"the COCO document lacks or mangles a field ({exc!r}).",
                     f"COCO 文档缺少或损坏了字段（{exc!r}）。") from None
    if not images:
        raise _error("the COCO document lists no images.", "COCO 文档中没有图片。")
    root, out = Path(images_root).expanduser(), Path(out_dir).expanduser()
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    thumbnails, paths, cards = [], [], []
    for image in images:
        annotations = by_image[image["id"]]
        try:
            picture = draw_annotations(load_image(root / image["file_name"]), annotations, names, size=size)
        except InvalidImageError as err:
            picture = _placeholder(size, err.message)
        except (KeyError, TypeError, ValueError) as exc:  # a bbox or segmentation that is missing or malformed
            raise _error(f"image {image['id']} has an annotation that cannot be drawn ({exc!r}).",
                         f"图片 {image['id']} 的某个标注无法绘制（{exc!r}）。") from None
        path = out / "thumbs" / f"{int(image['id']):06d}.png"
        picture.save(path)
        thumbnails.append(picture)
        paths.append(path)
        if embed:
            src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        else:
            src = f"thumbs/{path.name}"
        original = quote(Path(os.path.relpath(root / image["file_name"], out)).as_posix())
        cards.append(_card(image, annotations, names, src, original))
    sheet = out / "contact_sheet.png"
    contact_sheet(thumbnails, [f"#{image['id']} {image['file_name']}" for image in images], size=size,
                  columns=columns).save(sheet)
    shown = sum(len(by_image[image["id"]]) for image in images)
    summary = (f"{len(images)} of {len(document['images'])} images, {shown} annotations shown / "
               f"显示 {len(document['images'])} 张中的 {len(images)} 张，{shown} 个标注。")
    page = PAGE.format(title="Annotation review / 标注预览", size=size, summary=html.escape(summary),
                       sheet=sheet.name, cards="\n".join(cards))
    html_path = out / "index.html"
    write_atomic(html_path, page.encode("utf-8"))
    return GalleryResult(html_path, sheet, tuple(paths))
