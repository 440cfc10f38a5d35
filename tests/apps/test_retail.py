"""lmt.apps.retail on drawn shelves with known ground truth, then end to end with tiny CLIP/DINOv2 and OWLv2.

The ground-truth detector returns the drawn boxes, and the catalog is embedded with a deterministic colour
histogram through the same interface as lmt.ImageFeatureExtraction, so every count, share, gap, planogram
difference and export is checked exactly.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

import lmt
from lmt.apps import retail
from lmt.apps.retail import UNKNOWN, Catalog, Planogram, PlanogramEntry
from lmt.results import Detection, Detections, Embedding
from lmt.retrieval import EmbeddingIndex

# ---- drawn products and shelves ---------------------------------------------------------------------------------
RED, WHITE, GREEN, YELLOW = (220, 30, 30), (255, 255, 255), (30, 160, 60), (240, 220, 40)
BLUE, BLACK, ORANGE, PURPLE = (30, 60, 200), (20, 20, 20), (250, 140, 20), (128, 0, 128)
BACKGROUND = (150, 150, 150)
NAMES = {"cola": "可乐", "tea": "绿茶", "milk": "牛奶", "chips": "薯片", "juice": "橙汁"}
HEIGHT = {"milk": 80}  # every other product is 100 px high
W, H = 660, 400
ROW_BOTTOM = {1: 120, 2: 250, 3: 380}
# (sku, x0, width, row); "mystery" is a product that is not in the catalog
SHELF = [
    ("cola", 20, 60, 1), ("cola", 90, 60, 1), ("cola", 160, 60, 1), ("tea", 230, 60, 1), ("tea", 300, 60, 1),
    ("tea", 510, 60, 1), ("chips", 580, 40, 1),
    ("milk", 20, 60, 2), ("milk", 90, 60, 2), ("milk", 160, 60, 2), ("cola", 230, 60, 2), ("milk", 300, 60, 2),
    ("milk", 370, 60, 2), ("milk", 440, 60, 2),
    ("chips", 160, 40, 3), ("chips", 210, 40, 3), ("chips", 260, 40, 3), ("mystery", 310, 60, 3),
    ("chips", 380, 40, 3), ("chips", 430, 40, 3), ("chips", 480, 40, 3),
]
PLANOGRAM = "sku,count,row\ncola,4,1\ntea,4,1\nmilk,6,2\nchips,6,3\njuice,2,\n"


def draw_product(sku: str, width: int, height: int) -> Image.Image:
    """Each SKU has its own colours and pattern."""
    fills = {"cola": RED, "tea": GREEN, "milk": BLUE, "chips": BLACK, "juice": ORANGE, "mystery": PURPLE}
    image = Image.new("RGB", (width, height), fills[sku])
    draw = ImageDraw.Draw(image)
    if sku == "cola":
        draw.rectangle((0, height // 3, width - 1, height // 2), fill=WHITE)
    elif sku == "tea":
        for x in range(6, width - 6, 16):
            for y in range(8, height - 8, 20):
                draw.ellipse((x, y, x + 6, y + 6), fill=YELLOW)
    elif sku == "milk":
        draw.rectangle((0, 0, width - 1, int(height * 0.4)), fill=WHITE)
    elif sku == "chips":
        for y in range(0, height, 10):
            draw.rectangle((0, y, width - 1, y + 3), fill=YELLOW)
    return image


def shelf_box(sku: str, x0: int, width: int, row: int) -> tuple[float, float, float, float]:
    bottom = ROW_BOTTOM[row]
    return (float(x0), float(bottom - HEIGHT.get(sku, 100)), float(x0 + width), float(bottom))


def draw_shelf(layout=SHELF) -> Image.Image:
    shelf = Image.new("RGB", (W, H), BACKGROUND)
    for sku, x0, width, row in layout:
        box = shelf_box(sku, x0, width, row)
        shelf.paste(draw_product(sku, width, int(box[3] - box[1])), (int(box[0]), int(box[1])))
    return shelf


def references() -> dict[str, list[Image.Image]]:
    """Two references per SKU: the shelf size and 1.5x (nearest), so leave-one-out similarities are not all 1."""
    sizes = {"cola": (60, 100), "tea": (60, 100), "milk": (60, 80), "chips": (40, 100), "juice": (60, 100)}
    refs = {}
    for sku, (width, height) in sizes.items():
        image = draw_product(sku, width, height)
        refs[sku] = [image, image.resize((width * 3 // 2, height * 3 // 2), Image.Resampling.NEAREST)]
    return refs


class HistogramEmbedder:
    """Called like lmt.ImageFeatureExtraction: a 64-bin colour histogram (4 levels a channel), L2-normalised."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        images = lmt.load_images(image)
        embeddings = [Embedding(self.vector(im)) for im in images]
        return embeddings if isinstance(image, (list, tuple)) else embeddings[0]

    @staticmethod
    def vector(image: Image.Image) -> np.ndarray:
        levels = np.asarray(image, dtype=np.int64) // 64
        counts = np.bincount((levels[..., 0] * 16 + levels[..., 1] * 4 + levels[..., 2]).ravel(), minlength=64)
        vector = counts.astype(np.float32)
        return vector / np.linalg.norm(vector)


class GroundTruthDetector:
    """Called like lmt.ZeroShotObjectDetection: returns the drawn boxes, labelled with the first query."""

    def __init__(self, boxes) -> None:
        self.boxes = list(boxes)
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, image, queries, *, threshold=0.1):
        self.calls.append((list(queries), threshold))
        size = lmt.load_image(image).size
        return Detections(tuple(Detection(queries[0], 0.9, box) for box in self.boxes), size)


@pytest.fixture(scope="module")
def embedder() -> HistogramEmbedder:
    return HistogramEmbedder()


@pytest.fixture(scope="module")
def catalog(embedder) -> Catalog:
    return retail.build_catalog(references(), names=NAMES, embedder=embedder)


@pytest.fixture(scope="module")
def report(catalog, embedder):
    detector = GroundTruthDetector(shelf_box(*item) for item in SHELF)
    return retail.analyze_shelf(
        draw_shelf(), catalog, detector=detector, embedder=embedder, planogram=Planogram.from_csv(PLANOGRAM)
    )


# ---- catalog and recognition ------------------------------------------------------------------------------------
def test_catalog_holds_every_reference_with_names(catalog):
    assert catalog.skus == ["cola", "tea", "milk", "chips", "juice"]
    assert catalog.reference_counts() == dict.fromkeys(catalog.skus, 2)
    assert catalog.name_of("milk") == "牛奶" and catalog.name_of(UNKNOWN) == retail.UNKNOWN_NAME
    assert catalog.model is None and catalog.threshold_source == "calibrated"
    summary = catalog.to_dict()
    assert summary["skus"][0] == {"sku": "cola", "name": "可乐", "references": 2} and summary["dim"] == 64


@pytest.mark.parametrize("sku", ["cola", "tea", "milk", "chips", "juice"])
def test_recognize_each_product(catalog, embedder, sku):
    width, height = (40, 100) if sku == "chips" else (60, HEIGHT.get(sku, 100))
    result = retail.recognize(draw_product(sku, width, height), catalog, embedder=embedder)
    assert result.sku == sku and result.known and result.name == NAMES[sku]
    assert result.similarity == pytest.approx(1.0, abs=1e-5)
    assert result.candidates[0].sku == sku and len(result.candidates) == 3
    assert result.candidates[0].similarity >= result.candidates[1].similarity >= result.candidates[2].similarity


def test_unseen_product_is_unknown(catalog, embedder):
    result = retail.recognize(draw_product("mystery", 60, 100), catalog, embedder=embedder)
    assert result.sku == UNKNOWN and not result.known and result.name == retail.UNKNOWN_NAME
    assert result.similarity == pytest.approx(0.0, abs=1e-6) and result.similarity < result.threshold
    assert result.candidates[0].sku in catalog.skus  # the nearest SKU is still reported
    assert result.to_dict()["known"] is False


def test_recognize_a_batch_and_a_threshold_above_everything(catalog, embedder):
    images = [draw_product("cola", 60, 100), draw_product("tea", 60, 100)]
    assert [r.sku for r in retail.recognize(images, catalog, embedder=embedder)] == ["cola", "tea"]
    strict = catalog.with_threshold(1.0)  # a resized view of a product no longer passes
    half = draw_product("cola", 60, 100).resize((90, 150), Image.Resampling.BILINEAR)
    assert retail.recognize(half, strict, embedder=embedder).sku == UNKNOWN
    with pytest.raises(lmt.InvalidInputError, match="threshold"):
        catalog.with_threshold(float("nan"))


def test_calibration_on_known_vectors():
    index = EmbeddingIndex()
    vectors = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1], [0, 0.6, 0.8]], dtype=np.float32)
    index.add(vectors, ids=["a", "a", "b", "b"])
    catalog = Catalog(index, {"a": "A", "b": "B"}, 0.5)
    calibration = retail.calibrate_threshold(catalog)
    assert calibration.genuine == pytest.approx([0.8, 0.8, 0.8, 0.8], abs=1e-6)
    assert calibration.impostor == pytest.approx([0.0, 0.36, 0.0, 0.36], abs=1e-6)
    # sorted similarities 0, 0.36, 0.8: the middle of the error-free gap
    assert calibration.threshold == pytest.approx(0.58, abs=1e-6) and calibration.errors == 0


def test_calibration_with_overlap_minimises_errors():
    index = EmbeddingIndex()
    # b's two references are far apart (genuine 0.6) while a2 sits close to b2 (impostor 0.96 for a2 and b2)
    vectors = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float32)
    index.add(vectors, ids=["a", "a", "b", "b"])
    calibration = retail.calibrate_threshold(Catalog(index, {}, 0.5))
    assert calibration.genuine == pytest.approx([0.8, 0.8, 0.0, 0.0], abs=1e-6)
    assert calibration.impostor == pytest.approx([0.6, 0.96, 0.0, 0.96], abs=1e-6)
    # sorted similarities 0, 0.6, 0.8, 0.96: thresholds 0.3 / 0.7 / 0.88 make 2+3 / 2+2 / 4+2 errors
    assert calibration.errors == 4 and calibration.threshold == pytest.approx(0.7, abs=1e-6)


def test_drawn_catalog_calibrates_between_impostors_and_genuines(catalog):
    calibration = retail.calibrate_threshold(catalog)
    assert calibration.errors == 0 and len(calibration.genuine) == len(calibration.impostor) == 10
    assert max(calibration.impostor) < catalog.threshold < min(calibration.genuine)
    assert catalog.threshold == calibration.threshold


def test_uncalibratable_catalogs(embedder):
    single = retail.build_catalog({"cola": [draw_product("cola", 60, 100)]}, embedder=embedder)
    assert single.threshold == retail.DEFAULT_THRESHOLD and single.threshold_source == "default"
    with pytest.raises(lmt.InvalidInputError, match="two SKUs"):
        retail.calibrate_threshold(single)
    given = retail.build_catalog({"cola": [draw_product("cola", 60, 100)]}, embedder=embedder, threshold=0.7)
    assert given.threshold == 0.7 and given.threshold_source == "given"


def test_catalog_save_and_load_recognise_identically(catalog, embedder, tmp_path):
    folder = catalog.save(tmp_path / "catalog")
    assert sorted(p.name for p in folder.iterdir()) == ["catalog.json", "index.json", "index.npz"]
    assert "牛奶" in (folder / "catalog.json").read_text(encoding="utf-8")
    loaded = Catalog.load(folder)
    assert loaded.names == catalog.names and loaded.threshold == catalog.threshold
    np.testing.assert_array_equal(loaded.index.vectors, catalog.index.vectors)
    images = [draw_product(s, 60, 100) for s in ("cola", "tea", "mystery", "juice")]
    before = retail.recognize(images, catalog, embedder=embedder)
    assert retail.recognize(images, loaded, embedder=embedder) == before
    with pytest.raises(lmt.InvalidInputError, match="custom embedder"):
        retail.recognize(images[0], loaded)  # no model recorded: the caller must pass the embedder


def test_loading_a_broken_catalog_is_a_clear_error(tmp_path, catalog):
    with pytest.raises(lmt.InvalidInputError, match="not a readable retail catalog"):
        Catalog.load(tmp_path / "nothing")
    folder = catalog.save(tmp_path / "c")
    (folder / "catalog.json").write_text('{"format": "something else"}')
    with pytest.raises(lmt.InvalidInputError, match="version 1"):
        Catalog.load(folder)
    (folder / "index.npz").write_bytes(b"not numpy")
    with pytest.raises(lmt.InvalidInputError, match="not a readable"):
        Catalog.load(folder)


@pytest.mark.parametrize(
    ("refs", "names", "match"),
    [({}, None, "at least one SKU"), ({"unknown": ["x"]}, None, "reserved"), ({"a\nb": ["x"]}, None, "one line"),
     ({"cola": []}, None, "non-empty"), ({"cola": "cola.png"}, None, "non-empty"),
     ({"cola": [b"not an image"]}, None, "SKU 'cola'"), ({"cola": [np.zeros((20, 20, 3), np.uint8)]},
                                                         {"tea": "绿茶"}, "no reference images")],
)
def test_bad_catalog_input(embedder, refs, names, match):
    with pytest.raises(lmt.InvalidInputError, match=match) as info:
        retail.build_catalog(refs, names=names, embedder=embedder)
    assert info.value.message_zh != info.value.message


# ---- catalog files ---------------------------------------------------------------------------------------------
def test_sku_from_filename_and_names():
    assert [retail.sku_from_filename(n) for n in ("cola-1.png", "cola_02.jpg", "cola.png", "7up.png", "绿茶-3.png")] \
        == ["cola", "cola", "cola", "7up", "绿茶"]
    assert retail.references_from_files(["/x/cola-1.png", "/y/cola-2.png", "/x/tea.png"]) == {
        "cola": ["/x/cola-1.png", "/y/cola-2.png"], "tea": ["/x/tea.png"]}
    assert retail.parse_names("sku,name\ncola,可乐\n\ntea , 绿茶 \n") == {"cola": "可乐", "tea": "绿茶"}
    with pytest.raises(lmt.InvalidInputError, match="line 1"):
        retail.parse_names("cola")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_references_from_zip(tmp_path, embedder):
    path = tmp_path / "catalog.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("catalog/cola/front.png", _png(draw_product("cola", 60, 100)))
        archive.writestr("catalog/cola/side.png", _png(draw_product("cola", 40, 100)))
        archive.writestr("catalog/tea/a.png", _png(draw_product("tea", 60, 100)))
        archive.writestr("milk-1.png", _png(draw_product("milk", 60, 80)))
        archive.writestr("catalog/names.csv", "cola,可乐\ntea,绿茶\n".encode())
        archive.writestr("__MACOSX/catalog/cola/._front.png", b"junk")
        archive.writestr("catalog/readme.txt", b"ignored")
    refs, names = retail.references_from_zip(path)
    assert {sku: len(images) for sku, images in refs.items()} == {"cola": 2, "tea": 1, "milk": 1}
    assert names == {"cola": "可乐", "tea": "绿茶"}
    built = retail.build_catalog(refs, names=names, embedder=embedder)
    assert retail.recognize(draw_product("tea", 60, 100), built, embedder=embedder).name == "绿茶"


def test_bad_zips_are_refused(tmp_path):
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"this is not a zip")
    with pytest.raises(lmt.InvalidInputError, match="cannot be read as a zip"):
        retail.references_from_zip(not_zip)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("notes.txt", b"no images here")
    with pytest.raises(lmt.InvalidInputError, match="holds no images"):
        retail.references_from_zip(empty)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/big.png", b"\0" * (retail.MAX_ZIP_BYTES + 1))
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(lmt.InvalidInputError, match="MiB"):
        retail.references_from_zip(bomb)


# ---- planogram -------------------------------------------------------------------------------------------------
def test_planogram_parsing():
    plan = Planogram.from_csv(PLANOGRAM)
    assert plan.entries[0] == PlanogramEntry("cola", 4, 1)
    assert plan.entries[-1] == PlanogramEntry("juice", 2, None)
    assert Planogram.from_csv("cola,3").entries == (PlanogramEntry("cola", 3),)


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "empty"), ("cola,-1", "count"), ("cola,two", "count"), ("cola,1,0", "row"), ("cola,1\ncola,2", "twice"),
     ("cola", "sku,count"), ("cola,1,2,3", "sku,count"), ("unknown,1", "reserved"), ("cola,1e9", "count")],
)
def test_bad_planograms(text, match):
    with pytest.raises(lmt.InvalidInputError, match=match):
        Planogram.from_csv(text)


# ---- shelf analysis --------------------------------------------------------------------------------------------
def test_counts_and_recognition_on_the_shelf(report):
    assert report.counts() == {"chips": 7, "milk": 6, "cola": 4, "tea": 3, UNKNOWN: 1}
    assert len(report.products) == len(SHELF) and report.skipped == 0
    expected = sorted(((row, x0), sku if sku != "mystery" else UNKNOWN) for sku, x0, _, row in SHELF)
    assert [((p.row, int(p.box[0])), p.sku) for p in report.products] == expected
    assert all(p.recognition.similarity == pytest.approx(1.0, abs=1e-5) for p in report.products if p.sku != UNKNOWN)


def test_rows_found_by_clustering(report):
    assert [(r.index, r.y0, r.y1, r.count) for r in report.rows] == [(1, 20, 120, 7), (2, 150, 250, 7),
                                                                     (3, 280, 380, 7)]


def test_share_of_shelf(report):
    total_width = sum(width for _, _, width, _ in SHELF)
    assert total_width == 1120
    shares = {s.sku: s for s in report.shares}
    assert [s.sku for s in report.shares] == ["chips", "milk", "cola", "tea", UNKNOWN]
    assert shares["chips"].share_by_count == pytest.approx(7 / 21) and shares["chips"].facing_width == 280
    assert shares["chips"].share_by_width == pytest.approx(280 / 1120)
    assert shares["milk"].share_by_width == pytest.approx(360 / 1120)
    assert shares["cola"].name == "可乐" and shares[UNKNOWN].share_by_width == pytest.approx(60 / 1120)
    assert sum(s.share_by_count for s in report.shares) == pytest.approx(1.0)


def test_gaps(report):
    assert [(g.row, g.x0, g.x1, g.y0, g.y1, g.facings) for g in report.gaps] == [
        (1, 360, 510, 20, 120, 2),   # between two teas: 150 px, median width 60
        (2, 500, 620, 150, 250, 2),  # row end: the shelf extends to 620 (chips on row 1)
        (3, 20, 160, 280, 380, 3),   # row start, median width 40 (chips)
        (3, 520, 620, 280, 380, 2),
    ]
    assert report.gaps[0].width == 150


def test_gap_factor_and_shelf_extent(catalog, embedder):
    detector = GroundTruthDetector(shelf_box(*item) for item in SHELF)
    wide = retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder, gap_factor=2.55)
    assert [(g.row, g.x0) for g in wide.gaps] == [(3, 20)]  # 140 > 2.55 x 40; 100 < 102, 150 and 120 < 153
    full = retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder,
                                shelf_extent=(0, W))
    assert [(g.row, g.x0, g.x1) for g in full.gaps] == [
        (1, 360, 510), (2, 500, 660), (3, 0, 160), (3, 520, 660)]  # row 1's 40 px end is no gap
    assert full.compliance is None


def test_planogram_compliance(report):
    compliance = report.compliance
    rows = {c.sku: (c.expected, c.found, c.missing, c.extra, c.misplaced, c.status) for c in compliance.skus}
    assert rows == {
        "cola": (4, 4, 0, 0, 1, "misplaced"),  # one cola stands on row 2
        "tea": (4, 3, 1, 0, 0, "missing"),
        "milk": (6, 6, 0, 0, 0, "ok"),
        "chips": (6, 7, 0, 1, 1, "extra"),     # one too many, and one on row 1
        "juice": (2, 0, 2, 0, 0, "missing"),
    }
    assert [(m.sku, m.row, m.expected_row, m.box[0]) for m in compliance.misplaced] == [
        ("chips", 1, 3, 580.0), ("cola", 2, 1, 230.0)]
    assert (compliance.missing, compliance.extra, compliance.unknown, compliance.compliant) == (3, 1, 1, False)


def test_sku_outside_the_planogram_is_unexpected(catalog, embedder):
    detector = GroundTruthDetector(shelf_box(*item) for item in SHELF if item[0] != "mystery")
    report = retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder,
                                  planogram=Planogram.from_csv("cola,4\ntea,3\nchips,7"))
    milk = [c for c in report.compliance.skus if c.sku == "milk"]
    assert [(c.expected, c.found, c.extra, c.status) for c in milk] == [(0, 6, 6, "unexpected")]
    assert report.compliance.extra == 6 and report.compliance.missing == 0 and report.compliance.unknown == 0
    matched = retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder,
                                   planogram=Planogram.from_csv("cola,4\ntea,3\nchips,7\nmilk,6"))
    assert matched.compliance.compliant


def test_planogram_with_a_sku_not_in_the_catalog_is_refused_before_detection(catalog, embedder):
    detector = GroundTruthDetector([])
    with pytest.raises(lmt.InvalidInputError, match="'soda', which is not in the catalog"):
        retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder,
                             planogram=Planogram.from_csv("soda,1"))
    assert detector.calls == []


def test_rows_given_by_the_user(catalog, embedder):
    detector = GroundTruthDetector(shelf_box(*item) for item in SHELF)
    bands = [(0, 135), (135, 265), (265, 400)]
    report = retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder, rows=bands)
    assert [(r.y0, r.y1, r.count) for r in report.rows] == [(0, 135, 7), (135, 265, 7), (265, 400, 7)]
    two = retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder, rows=[(0, 60), (300, 400)])
    # centres 70 -> band 1 (10 px away); 200/210 -> band 2 is nearer (90 vs 140); 330 -> band 2
    assert [r.count for r in two.rows] == [7, 14]
    with pytest.raises(lmt.InvalidInputError, match="y0 < y1"):
        retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder, rows=[(100, 50)])


def test_detector_gets_the_query_and_overlaps_across_queries_are_merged(catalog, embedder):
    class TwoQueries(GroundTruthDetector):
        def __call__(self, image, queries, *, threshold=0.1):
            self.calls.append((list(queries), threshold))
            box = shelf_box("cola", 20, 60, 1)
            found = (Detection(queries[0], 0.8, box), Detection(queries[1], 0.6, box),
                     Detection(queries[1], 0.05, shelf_box("tea", 230, 60, 1)),  # below the threshold
                     Detection(queries[1], 0.7, (300.0, 20.0, 305.0, 120.0)))  # 5 px wide: too small to embed
            return Detections(found, lmt.load_image(image).size)

    detector = TwoQueries([])
    report = retail.analyze_shelf(draw_shelf(), catalog, detector=detector, embedder=embedder,
                                  queries="a bottle, a box", detection_threshold=0.2)
    assert detector.calls == [(["a bottle", "a box"], 0.2)]
    assert [p.sku for p in report.products] == ["cola"] and report.products[0].detection_score == 0.8
    assert report.skipped == 1 and report.queries == ("a bottle", "a box")


def test_an_empty_shelf(catalog, embedder):
    report = retail.analyze_shelf(Image.new("RGB", (200, 100), BACKGROUND), catalog, detector=GroundTruthDetector([]),
                                  embedder=embedder, planogram=Planogram.from_csv("cola,2"))
    assert report.products == () and report.gaps == () and report.counts() == {}
    assert report.compliance.missing == 2 and not report.compliance.compliant


def test_csv_and_json_reports(report, tmp_path):
    paths = retail.write_report(report, tmp_path / "out", image=draw_shelf())
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["counts"] == {"chips": 7, "milk": 6, "cola": 4, "tea": 3, UNKNOWN: 1} and data["total"] == 21
    assert data["compliance"]["missing"] == 3 and len(data["gaps"]) == 4
    products = list(csv.DictReader(io.StringIO(paths["products_csv"].read_text(encoding="utf-8"))))
    assert len(products) == 21 and products[0] == {
        "row": "1", "sku": "cola", "name": "可乐", "similarity": "1.0000", "detection_score": "0.9000",
        "xmin": "20.0000", "ymin": "20.0000", "xmax": "80.0000", "ymax": "120.0000"}
    summary = {r["sku"]: r for r in csv.DictReader(io.StringIO(paths["summary_csv"].read_text(encoding="utf-8")))}
    assert list(summary) == ["chips", "milk", "cola", "tea", UNKNOWN, "juice"]
    assert summary["chips"] == {"sku": "chips", "name": "薯片", "count": "7", "share_by_count": "0.3333",
                                "share_by_width": "0.2500", "expected": "6", "missing": "0", "extra": "1",
                                "misplaced": "1", "status": "extra"}
    assert summary["juice"]["count"] == "0" and summary["juice"]["missing"] == "2"
    assert summary[UNKNOWN]["expected"] == ""
    annotated = Image.open(paths["annotated"])
    assert annotated.size == (W, H)
    # the first gap's outline is red, a cola box is outlined in cola's colour
    assert annotated.getpixel((400, 20)) == (230, 0, 0)
    assert annotated.getpixel((50, 20)) == retail.sku_colour("cola")


def test_text_search_refuses_cjk_and_non_clip(catalog, embedder):
    with pytest.raises(lmt.InvalidInputError, match="English") as info:
        retail.find_by_text(catalog, "红色的可乐", embedder=embedder)
    assert "中文名称仅用于显示" in info.value.message_zh
    with pytest.raises(lmt.InvalidInputError, match="text encoder"):
        retail.find_by_text(catalog, "a red can", embedder=embedder)


# ---- end to end with tiny models ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_catalog() -> Catalog:
    return retail.build_catalog(references(), names=NAMES, embedder="dinov2-small", weights="tiny")


def test_tiny_dinov2_catalog_recognises_and_round_trips(tiny_catalog, tmp_path):
    assert tiny_catalog.model == "dinov2-small" and tiny_catalog.weights == "tiny"
    assert tiny_catalog.index.vectors.shape == (10, tiny_catalog.index.dim)
    images = [draw_product("cola", 60, 100), draw_product("mystery", 60, 100)]
    results = retail.recognize(images, tiny_catalog)
    assert all(isinstance(r, retail.Recognition) and (r.sku in tiny_catalog.skus or r.sku == UNKNOWN)
               for r in results)
    assert all(-1.0 <= r.similarity <= 1.0 + 1e-5 for r in results)
    loaded = Catalog.load(tiny_catalog.save(tmp_path / "tiny"))
    assert retail.recognize(images, loaded) == results  # rebuilt from the saved model name and weights


def test_tiny_clip_catalog_text_search():
    catalog = retail.build_catalog(references(), names=NAMES, embedder="clip-vit-b32", weights="tiny")
    hits = retail.find_by_text(catalog, "a red can of cola", top_k=2)
    assert len(hits) == 2 and all(h.sku in catalog.skus for h in hits) and hits[0].similarity >= hits[1].similarity
    with pytest.raises(lmt.InvalidInputError, match="Chinese"):
        retail.find_by_text(catalog, "可乐")


def test_tiny_owlv2_shelf_end_to_end(tiny_catalog, tmp_path):
    report = retail.analyze_shelf(
        draw_shelf(), tiny_catalog, detector="owlv2-b16", weights="tiny", detection_threshold=0.0,
        planogram=Planogram.from_csv(PLANOGRAM),
    )
    assert isinstance(report, retail.ShelfReport) and report.image_size == (W, H)
    assert 0 < len(report.products) + report.skipped <= retail.MAX_PRODUCTS
    assert sum(report.counts().values()) == len(report.products)
    assert all(1 <= p.row <= len(report.rows) for p in report.products)
    assert report.compliance is not None and len(report.compliance.skus) >= 5
    paths = retail.write_report(report, tmp_path, image=draw_shelf())
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["total"] == len(report.products)
