"""lmt.data.augment: boxes and masks stay on their objects under rotation, scale, flips, crops and shifts; seeded
determinism; classification shapes; preview PNG; whole datasets (ImageFolder, CSV with masks, COCO) written as new
files with manifests, sources untouched; the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lmt.cli import main
from lmt.data.augment import (
    PRESETS,
    Augment,
    AugmentConfig,
    ClassificationAugment,
    augment_config,
    augment_dataset,
    box_iou,
    mask_to_box,
    parse_overrides,
    preview_grid,
)
from lmt.data.samples import write_shapes
from lmt.errors import InvalidInputError
from tests.data.synthetic import write_clean_folder

WIDTH, HEIGHT = 96, 80
OBJECT = (34, 24, 62, 52)  # xyxy, pixel edges: columns 34..61, rows 24..51
GEOMETRY_ONLY = {"color_p": 0.0, "blur_p": 0.0, "grayscale_p": 0.0}
SEEDS = range(8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # 100-pixel images: a second thread only adds synchronisation (several times slower on a busy 2-core machine)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def scene(shape: str = "rectangle", box: tuple[int, int, int, int] = OBJECT) -> tuple[Image.Image, np.ndarray]:
    """A white object on black, and its exact mask."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    corners = (box[0], box[1], box[2] - 1, box[3] - 1)
    for target, fill in ((image, (255, 255, 255)), (mask, 255)):
        draw = ImageDraw.Draw(target)
        if shape == "rectangle":
            draw.rectangle(corners, fill=fill)
        else:
            draw.ellipse(corners, fill=fill)
    return image, np.asarray(mask) > 0


def object_pixels(image: Image.Image) -> np.ndarray:
    """Where the (white, geometry-only augmented) object is: interpolated edges count from half brightness."""
    return np.asarray(image.convert("L")) >= 128


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


TRANSFORMS = {
    "rotation": {"rotate": 35.0, "hflip": 0.0},
    "scale": {"scale": (0.6, 1.4), "hflip": 0.0},
    "flip": {"hflip": 1.0, "vflip": 1.0},
    "crop": {"crop_scale": (0.4, 0.8), "crop_p": 1.0, "hflip": 0.0},
    "shift": {"translate": 0.15, "hflip": 0.0},
    "strong": {},
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_box_and_mask_follow_the_object(name):
    """For every seed, the moved box covers the moved object (IoU >= 0.9), and so does the moved mask."""
    image, mask = scene()
    preset = "strong" if name == "strong" else AugmentConfig(hflip=0.0)
    augment = Augment(preset, **{**GEOMETRY_ONLY, **TRANSFORMS[name]})
    kept = 0
    for seed in SEEDS:
        sample = augment(image, boxes=[OBJECT], masks=[mask], labels=["thing"], seed=seed)
        visible = object_pixels(sample.image)
        if not sample.boxes:  # pushed (mostly) out of the image: then little of it may be left
            assert visible.sum() < 0.5 * mask.sum(), f"{name} seed {seed}: a visible object lost its box"
            continue
        kept += 1
        assert sample.labels == ("thing",) and sample.kept == (0,)
        assert box_iou(sample.boxes[0], mask_to_box(visible)) >= 0.9, f"{name} seed {seed}: {sample.boxes[0]}"
        assert mask_iou(sample.masks[0], visible) >= 0.9, f"{name} seed {seed}"
        assert sample.image.size == (WIDTH, HEIGHT)
    assert kept >= len(SEEDS) - 1


def test_the_transforms_really_move_things():
    """The IoU test means something: each transform set moves the box on most seeds."""
    image, mask = scene()
    for name, params in TRANSFORMS.items():
        preset = "strong" if name == "strong" else AugmentConfig(hflip=0.0)
        augment = Augment(preset, **{**GEOMETRY_ONLY, **params})
        moved = [augment(image, boxes=[OBJECT], seed=seed).boxes for seed in SEEDS]
        assert sum(1 for boxes in moved if boxes and box_iou(boxes[0], OBJECT) < 0.9) >= 4, name


def test_round_objects_get_tight_boxes_from_their_masks():
    """Rotating a box around a disc inflates it; boxes_from_masks re-measures it from the moved mask."""
    image, mask = scene("ellipse", (28, 20, 68, 60))
    augment = Augment(AugmentConfig(hflip=0.0, rotate=45.0))
    inflated = tight = 1.0
    for seed in SEEDS:
        loose = augment(image, boxes=[(28, 20, 68, 60)], masks=[mask], seed=seed)
        exact = augment(image, boxes=[(28, 20, 68, 60)], masks=[mask], boxes_from_masks=True, seed=seed)
        truth = mask_to_box(object_pixels(exact.image))
        inflated = min(inflated, box_iou(loose.boxes[0], truth))
        tight = min(tight, box_iou(exact.boxes[0], truth))
    assert tight >= 0.9
    assert inflated < 0.8  # documented: around 45 degrees a disc's rotated box is half again as large


def test_coco_xywh_boxes_give_the_same_result_as_xyxy():
    image, _ = scene()
    x0, y0, x1, y1 = OBJECT
    augment = Augment("default", **GEOMETRY_ONLY)
    xyxy = augment(image, boxes=[OBJECT], seed=5)
    xywh = augment(image, boxes=[(x0, y0, x1 - x0, y1 - y0)], box_format="xywh", seed=5)
    (a0, b0, w, h), (c0, d0, c1, d1) = xywh.boxes[0], xyxy.boxes[0]
    assert np.allclose((a0, b0, a0 + w, b0 + h), (c0, d0, c1, d1), atol=1e-4)
    assert xywh.box_format == "xywh"


def test_label_maps_keep_their_values_and_colour_leaves_geometry_alone():
    image, mask = scene()
    label_map = mask.astype(np.uint8) * 7  # a semantic mask: class id 7
    sample = Augment("strong")(image, masks=[label_map], seed=2)
    assert sample.masks[0].dtype == np.uint8 and set(np.unique(sample.masks[0])) <= {0, 7}
    colour_only = Augment(AugmentConfig(hflip=0.0, brightness=0.4, contrast=0.4, color_p=1.0))
    moved = colour_only(image, boxes=[OBJECT], masks=[mask], seed=1)
    assert moved.boxes[0] == tuple(float(v) for v in OBJECT)
    assert np.array_equal(moved.masks[0], mask)
    assert not np.array_equal(np.asarray(moved.image), np.asarray(image))


def test_boxes_pushed_out_are_dropped_with_their_labels_and_masks():
    image, mask_a = scene(box=(0, 30, 14, 50))
    _, mask_b = scene(box=(40, 30, 60, 50))
    augment = Augment(AugmentConfig(hflip=0.0, translate=0.3), **GEOMETRY_ONLY)
    dropped = 0
    for seed in range(16):
        sample = augment(image, boxes=[(0, 30, 14, 50), (40, 30, 60, 50)], masks=[mask_a, mask_b],
                         labels=["edge", "middle"], seed=seed)
        assert len(sample.boxes) == len(sample.labels) == len(sample.masks) == len(sample.kept)
        assert sample.labels == tuple(["edge", "middle"][i] for i in sample.kept)
        dropped += "edge" not in sample.labels
        for box in sample.boxes:
            assert 0 <= box[0] < box[2] <= WIDTH and 0 <= box[1] < box[3] <= HEIGHT
    assert dropped >= 1


def test_seeded_calls_repeat_and_leave_torch_rng_alone():
    image, mask = scene()

    def run(seed):
        augment = Augment("strong", seed=seed)
        return [augment(image, boxes=[OBJECT], masks=[mask]) for _ in range(3)]

    first, second, other = run(3), run(3), run(4)
    for a, b in zip(first, second, strict=True):
        assert a.seed == b.seed and a.boxes == b.boxes
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks, strict=True))
    assert [s.seed for s in first] != [s.seed for s in other]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Augment("strong")(image, boxes=[OBJECT])
    assert torch.equal(torch.rand(3), expected)


def test_classification_pipeline_shapes_and_determinism():
    image, _ = scene()
    augment = ClassificationAugment("default", size=32, seed=0)
    one = augment(image)
    assert one.size == (32, 32) and one.mode == "RGB"
    batch = augment([image, image, image])
    assert [b.size for b in batch] == [(32, 32)] * 3
    tensor = augment.tensor(torch.rand(4, 3, 50, 60), seed=1)
    assert tensor.shape == (4, 3, 32, 32) and float(tensor.min()) >= 0 and float(tensor.max()) <= 1
    assert ClassificationAugment("default", size=(24, 40))(image).size == (40, 24)
    a = ClassificationAugment("strong", size=32, seed=9)([image, image])
    b = ClassificationAugment("strong", size=32, seed=9)([image, image])
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))  # each image of a batch drawn on its own


def test_presets_overrides_and_bad_parameters():
    assert set(PRESETS) == {"light", "default", "strong"}
    assert augment_config("light", rotate=30).rotate == 30
    assert parse_overrides(["rotate=30", "scale=0.5,1.5", "crop_scale=none"]) == {
        "rotate": 30.0, "scale": (0.5, 1.5), "crop_scale": None}
    with pytest.raises(InvalidInputError, match="Did you mean 'rotate'"):
        augment_config("default", rotation=10)
    bad = [{"rotate": -1}, {"scale": (2.0, 1.0)}, {"hflip": 1.5}, {"translate": float("nan")}, {"hue": "x"}]
    for params in bad:
        with pytest.raises(InvalidInputError):
            augment_config("default", **params)
    for preset in ("huge", 3):
        with pytest.raises(InvalidInputError, match="unknown preset"):
            Augment(preset)
    with pytest.raises(InvalidInputError):
        parse_overrides(["rotate"])


def test_bad_annotations_are_refused():
    image, mask = scene()
    augment = Augment("light")
    cases = [
        {"boxes": [(100, 100, 120, 120)]},  # outside the image
        {"boxes": [(10, 10, 5, 20)]},  # x1 < x0
        {"boxes": [(1, 2, 3)]},
        {"boxes": [OBJECT], "box_format": "cxcywh"},
        {"boxes": [OBJECT], "masks": [mask, mask]},  # two masks for one box
        {"labels": ["a"]},  # labels without boxes
        {"masks": [np.zeros((10, 10), bool)]},  # wrong size
        {"masks": [np.zeros((HEIGHT, WIDTH), np.float32)]},  # not integer/bool
        {"masks": [mask], "boxes_from_masks": True},
    ]
    for kwargs in cases:
        with pytest.raises(InvalidInputError):
            augment(image, **kwargs)
    with pytest.raises(InvalidInputError):
        ClassificationAugment(size=4)


def test_preview_grid_writes_a_png(tmp_path):
    image, mask = scene()
    path = preview_grid(image, tmp_path / "nested" / "preview.png", boxes=[OBJECT], masks=[mask], labels=["thing"],
                        augment="strong", count=5, columns=3, cell=96)
    with Image.open(path) as grid:
        assert grid.format == "PNG" and grid.size == (3 * 96, 2 * (96 + 14))
        pixels = np.asarray(grid.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # something was drawn
    classification = preview_grid(image, tmp_path / "c.png", augment=ClassificationAugment(size=32), count=3)
    assert classification.is_file()
    with pytest.raises(InvalidInputError):
        preview_grid(image, tmp_path / "bad.png", augment=ClassificationAugment(size=32), boxes=[OBJECT])


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_image_folder_dataset_is_written_beside_untouched_sources(tmp_path):
    from lmt.data.validate import validate_dataset
    from lmt.train.data import read_records

    source = write_clean_folder(tmp_path / "src", {"cat": 3, "dog": 2}, seed=0)
    before = digest(source)
    result = augment_dataset(source, tmp_path / "out", augment="light", copies=2, seed=1)
    assert digest(source) == before
    assert (result.kind, result.written, result.originals) == ("classification", 10, 5)
    records = read_records(result.manifest, {"image": "image", "label": "label"})
    assert len(records) == 15 and sum(r["label"] == "cat" for r in records) == 9
    assert Path(result.preview).is_file()
    report = validate_dataset(result.manifest)
    assert not report.of_kind("corrupt") and not report.of_kind("duplicate")
    again = augment_dataset(source, tmp_path / "again", augment="light", copies=2, seed=1)
    assert digest(Path(again.out_dir) / "images") == digest(Path(result.out_dir) / "images")
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        augment_dataset(source, tmp_path / "out")
    with pytest.raises(InvalidInputError, match="inside the source"):
        augment_dataset(source, source / "aug")


def test_segmentation_manifest_moves_masks_with_images(tmp_path):
    from lmt.train.data import read_records

    source = write_shapes(tmp_path / "shapes", count=3, size=64)
    result = augment_dataset(source / "shapes.csv", tmp_path / "out", augment="strong", copies=2, seed=0,
                             include_originals=False, **GEOMETRY_ONLY)
    assert result.kind == "segmentation"
    records = read_records(result.manifest, {"image": "image", "mask": "mask", "label": "label"})
    assert len(records) == 6
    with (Path(result.manifest)).open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row, record in zip(rows, records, strict=True):
        source_row = int(Path(row["source"]).stem)
        with Image.open(source / f"images/{source_row:04d}.png") as original, Image.open(record["image"]) as new, \
                Image.open(record["mask"]) as new_mask:
            assert new.size == original.size
            moved_mask = np.asarray(new_mask) > 0
            # the shape is the only saturated colour in the scene: its pixels and the moved mask coincide
            rgb = np.asarray(new).astype(int)
            shape_pixels = (rgb.max(axis=2) - rgb.min(axis=2)) > 90
            assert mask_iou(moved_mask, shape_pixels) >= 0.75, row["image"]


def coco_source(folder: Path) -> Path:
    folder.mkdir()
    image, _ = scene()
    image.save(folder / "a.png")
    x0, y0, x1, y1 = OBJECT
    polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "segmentation": [polygon]}],
        "categories": [{"id": 3, "name": "thing"}],
    }
    (folder / "annotations.json").write_text(json.dumps(data), encoding="utf-8")
    return folder / "annotations.json"


def test_coco_boxes_and_segmentations_move_with_their_images(tmp_path):
    from pycocotools import mask as mask_utils

    source = coco_source(tmp_path / "coco")
    before = digest(source.parent)
    result = augment_dataset(source, tmp_path / "out", augment="strong", copies=3, seed=0, **GEOMETRY_ONLY)
    assert digest(source.parent) == before
    data = json.loads(Path(result.manifest).read_text(encoding="utf-8"))
    assert result.kind == "detection" and len(data["images"]) == 4 and data["categories"][0]["name"] == "thing"
    assert Path(data["images"][0]["file_name"]).is_absolute()  # the original, listed where it is
    for entry in data["images"][1:]:
        anns = [a for a in data["annotations"] if a["image_id"] == entry["id"]]
        with Image.open(Path(result.out_dir) / entry["file_name"]) as new:
            visible = object_pixels(new)
        for ann in anns:
            x, y, w, h = ann["bbox"]
            segmentation = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert ann["category_id"] == 3
            assert box_iou((x, y, x + w, y + h), mask_to_box(visible)) >= 0.9
            assert mask_iou(segmentation, visible) >= 0.9
            # COCO's bbox is its segmentation's tight box: re-measured from the moved mask
            assert np.allclose((x, y, x + w, y + h), mask_to_box(segmentation), atol=0.01)
            assert ann["area"] == segmentation.sum()
    data = json.loads(source.read_text(encoding="utf-8"))
    del data["annotations"][0]["bbox"]
    source.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InvalidInputError, match="a.png"):
        augment_dataset(source, tmp_path / "broken")
    assert not any((tmp_path / "broken").iterdir())  # nothing half-written left behind


def test_cli_augment(tmp_path, capsys):
    source = write_clean_folder(tmp_path / "src", {"a": 2, "b": 2}, seed=3)
    assert main(["data", "augment", str(source), "--out", str(tmp_path / "out"), "--copies", "1", "--json",
                 "--set", "rotate=10", "crop_scale=none"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["written"] == 4 and document["config"]["rotate"] == 10 and document["config"]["crop_scale"] is None
    assert main(["data", "augment", str(source), "--out", str(tmp_path / "bad"), "--set", "rotaet=10"]) == 2
    assert "rotate" in capsys.readouterr().err
    assert main(["data", "augment", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["data", "augment", "--help"])
    assert exit_.value.code == 0
