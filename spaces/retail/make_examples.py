"""Draw the retail Space's examples: a five-SKU catalog (folders and a zip), a shelf photo, a planogram.

The products are drawn, not photographed, so the files are small and free to redistribute; the shelf has known
gaps, one misplaced product and one product that is not in the catalog. Run from anywhere:
``python spaces/retail/make_examples.py``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

EXAMPLES = Path(__file__).resolve().parent / "examples"
NAMES = {"cola": "可乐", "tea": "绿茶", "milk": "牛奶", "chips": "薯片", "juice": "橙汁"}
SIZES = {"cola": (60, 110), "tea": (60, 110), "milk": (70, 90), "chips": (50, 110), "juice": (60, 110),
         "soap": (60, 110)}
ROW_BOTTOM = (130, 270, 410)
# (sku, x0, row index): "soap" is not in the catalog
SHELF = [
    ("cola", 20, 0), ("cola", 90, 0), ("cola", 160, 0), ("tea", 230, 0), ("tea", 300, 0), ("tea", 510, 0),
    ("chips", 580, 0),
    ("milk", 20, 1), ("milk", 100, 1), ("milk", 180, 1), ("cola", 260, 1), ("milk", 330, 1), ("milk", 410, 1),
    ("chips", 170, 2), ("chips", 230, 2), ("chips", 290, 2), ("soap", 350, 2), ("chips", 420, 2),
    ("juice", 480, 2), ("juice", 550, 2),
]
PLANOGRAM = "sku,count,row\ncola,3,1\ntea,4,1\nmilk,5,2\nchips,4,3\njuice,2,3\n"


def draw_product(sku: str, width: int, height: int) -> Image.Image:
    fills = {"cola": (200, 25, 35), "tea": (40, 150, 70), "milk": (40, 80, 190), "chips": (30, 30, 30),
             "juice": (245, 140, 20), "soap": (150, 60, 160)}
    image = Image.new("RGB", (width, height), fills[sku])
    draw = ImageDraw.Draw(image)
    if sku == "cola":
        draw.rectangle((0, height // 3, width - 1, height // 2), fill=(255, 255, 255))
    elif sku == "tea":
        for x in range(6, width - 6, 16):
            for y in range(8, height - 8, 20):
                draw.ellipse((x, y, x + 6, y + 6), fill=(240, 220, 40))
    elif sku == "milk":
        draw.rectangle((0, 0, width - 1, int(height * 0.4)), fill=(255, 255, 255))
    elif sku == "chips":
        for y in range(0, height, 12):
            draw.rectangle((0, y, width - 1, y + 4), fill=(240, 220, 40))
    elif sku == "juice":
        draw.ellipse((width // 4, height // 3, 3 * width // 4, height // 3 + width // 2), fill=(255, 230, 120))
    draw.text((4, height - 14), sku.upper(), fill=(255, 255, 255) if sku != "juice" else (0, 0, 0))
    return image


def draw_shelf() -> Image.Image:
    shelf = Image.new("RGB", (660, 430), (225, 215, 195))
    draw = ImageDraw.Draw(shelf)
    for bottom in ROW_BOTTOM:
        draw.rectangle((0, bottom, 659, bottom + 8), fill=(120, 90, 60))  # the shelf boards
    for sku, x0, row in SHELF:
        width, height = SIZES[sku]
        shelf.paste(draw_product(sku, width, height), (x0, ROW_BOTTOM[row] - height))
    return shelf


def main() -> None:
    catalog = EXAMPLES / "catalog"
    for sku in NAMES:
        (catalog / sku).mkdir(parents=True, exist_ok=True)
        width, height = SIZES[sku]
        draw_product(sku, width, height).save(catalog / sku / "front.png")
        draw_product(sku, width * 3 // 2, height * 3 // 2).save(catalog / sku / "large.png")
    (catalog / "names.csv").write_text("".join(f"{k},{v}\n" for k, v in NAMES.items()), encoding="utf-8")
    with zipfile.ZipFile(EXAMPLES / "catalog.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(catalog.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(EXAMPLES).as_posix())
    draw_shelf().save(EXAMPLES / "shelf.png")
    draw_product("cola", 120, 220).save(EXAMPLES / "product-cola.png")
    draw_product("soap", 120, 220).save(EXAMPLES / "product-soap.png")
    (EXAMPLES / "planogram.csv").write_text(PLANOGRAM, encoding="utf-8")


if __name__ == "__main__":
    main()
