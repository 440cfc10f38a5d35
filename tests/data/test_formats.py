"""lmt data import/export: typed features, COCO -> datasets -> COCO identical, YOLO <-> COCO lossless within 1e-6 of
the image size, pycocotools loads what we write, image+mask pairing, clear errors, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from lmt.cli import main
from lmt.data.exporters import export_dataset
from lmt.data.formats import load_dataset_dir, read_meta
from lmt.data.importers import detect_format, import_dataset
from lmt.errors import InvalidInputError
from tests.data.format_sources import COCO_CATEGORIES, YOLO_NAMES, write_coco, write_mask_pairs, write_yolo
from tests.data.synthetic import write_clean_folder


def _normalised(document: dict) -> dict:
    """Key order never matters; images and annotations are compared sorted by id."""
    document = json.loads(json.dumps(document, sort_keys=True))
    document["images"] = sorted(document["images"], key=lambda i: i["id"])
    document["annotations"] = sorted(document.get("annotations", []), key=lambda a: a["id"])
    return document


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _yolo_labels(root: Path, split: str) -> dict[str, list[tuple[int, list[float]]]]:
    """Every image's label lines (class, numbers); an image without a label file has none."""
    labels = {}
    for image in sorted((root / "images" / split).rglob("*.*")):
        relative = image.relative_to(root / "images" / split).with_suffix(".txt")
        file = root / "labels" / split / relative
        rows = [line.split() for line in file.read_text().splitlines()] if file.is_file() else []
        labels[relative.as_posix()] = [(int(f[0]), [float(v) for v in f[1:]]) for f in rows if f]
    return labels


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, datasets.DatasetDict, Path]:
    """(COCO json, its imported DatasetDict, the dataset folder)."""
    root = tmp_path_factory.mktemp("coco")
    source = write_coco(root / "src")
    return source, import_dataset(source, root / "ds"), root / "ds"


# ---- COCO ---------------------------------------------------------------------------------------------------------
def test_coco_import_has_typed_features(coco):
    _, dataset, folder = coco
    features = dataset["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert features["objects"].feature["category"].names == ["cat", "dog", "car", "unused"]  # ordered by id
    assert dataset["train"]["image_id"] == [1, 2, 3, 4]
    first = dataset["train"][0]
    assert [o["id"] for o in first["objects"]] == [12, 11] and first["objects"][0]["bbox"] == [2.0, 3.0, 10.0, 8.0]
    assert dataset["train"][2]["objects"] == []  # c.png has no annotations
    assert first["image"].size == (40, 30)
    meta = read_meta(folder)
    assert meta["source_format"] == "coco" and meta["category_ids"] == [1, 3, 7, 9]
    assert meta["coco"]["train"]["categories"] == COCO_CATEGORIES


def test_coco_to_datasets_to_coco_is_identical_and_loads_in_pycocotools(coco, tmp_path):
    from pycocotools.coco import COCO

    source, _, folder = coco
    result = export_dataset(folder, "coco", tmp_path / "out")
    written = tmp_path / "out" / "train" / "annotations.json"
    assert result.images == {"train": 4} and result.annotations == {"train": 5}
    assert _normalised(json.loads(written.read_text())) == _normalised(json.loads(source.read_text()))
    for name in ("imgs/a.png", "imgs/b.jpg", "imgs/c.png", "imgs/d.png"):  # byte-identical images
        assert (tmp_path / "out" / "train" / name).read_bytes() == (source.parent / name).read_bytes()
    api = COCO(str(written))
    assert sorted(api.getCatIds()) == [1, 3, 7, 9] and len(api.getAnnIds()) == 5
    original = COCO(str(source))
    for ann_id in (10, 11, 12, 14):  # compressed RLE, uncompressed RLE, polygons: the same pixels
        assert np.array_equal(api.annToMask(api.anns[ann_id]), original.annToMask(original.anns[ann_id]))
    # and the export imports again to the same dataset
    again = import_dataset(tmp_path / "out", tmp_path / "again")
    assert again["train"].features == load_dataset_dir(folder)["train"].features
    assert again["train"]["objects"] == load_dataset_dir(folder)["train"]["objects"]


def test_coco_to_yolo_to_coco_keeps_classes_and_boxes(coco, tmp_path):
    source, _, folder = coco
    result = export_dataset(folder, "yolo", tmp_path / "yolo")
    assert result.skipped_crowd == 2  # annotations 10 and 11: YOLO cannot mark a crowd
    back = import_dataset(tmp_path / "yolo", tmp_path / "yolo-ds")
    assert back["train"].features["objects"].feature["category"].names == ["cat", "dog", "car", "unused"]
    export_dataset(tmp_path / "yolo-ds", "coco", tmp_path / "coco2")
    original = json.loads(source.read_text())
    again = json.loads((tmp_path / "coco2" / "train" / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in original["categories"]}
    names_again = {c["id"]: c["name"] for c in again["categories"]}
    assert list(names.values()) == list(names_again.values())

    def boxes(document, id_names):
        by_image = {i["id"]: (i["file_name"], i["width"], i["height"]) for i in document["images"]}
        found: dict[str, list] = {name: [] for name, _, _ in by_image.values()}
        for ann in document["annotations"]:
            if ann.get("iscrowd") != 1:
                name, width, height = by_image[ann["image_id"]]
                found[name].append((id_names[ann["category_id"]], ann["bbox"], width, height))
        return {name: sorted(items) for name, items in found.items()}

    expected, got = boxes(original, names), boxes(again, names_again)
    assert expected.keys() == got.keys()
    for name in expected:
        assert [b[0] for b in expected[name]] == [b[0] for b in got[name]]
        for (_, box, width, height), (_, box_again, _, _) in zip(expected[name], got[name], strict=True):
            scale = [width, height, width, height]
            assert all(abs(a - b) <= 1e-6 * s for a, b, s in zip(box, box_again, scale, strict=True))


# ---- YOLO ---------------------------------------------------------------------------------------------------------
def test_yolo_to_coco_to_yolo_is_lossless(tmp_path):
    from pycocotools.coco import COCO

    source = write_yolo(tmp_path / "yolo")
    assert detect_format(source) == "yolo"
    dataset = import_dataset(source, tmp_path / "ds")
    assert list(dataset) == ["train", "validation"]  # data.yaml's val is Hugging Face's validation
    assert dataset["train"].features["objects"].feature["category"].names == YOLO_NAMES
    x1 = dataset["train"][0]
    assert x1["file_name"] == "x1.png" and (x1["width"], x1["height"]) == (64, 48)
    assert x1["objects"][0]["bbox"] == pytest.approx([24.0, 12.0, 16.0, 24.0])
    assert dataset["train"][1]["objects"] == []  # x2.jpg has no label file: a background image
    export_dataset(tmp_path / "ds", "coco", tmp_path / "coco")
    for split in ("train", "validation"):
        api = COCO(str(tmp_path / "coco" / split / "annotations.json"))
        assert [c["name"] for c in api.loadCats(api.getCatIds())] == YOLO_NAMES
    import_dataset(tmp_path / "coco", tmp_path / "ds2")
    export_dataset(tmp_path / "ds2", "yolo", tmp_path / "yolo2")
    for split, split_again in (("train", "train"), ("val", "validation")):
        before, after = _yolo_labels(source, split), _yolo_labels(tmp_path / "yolo2", split_again)
        assert before.keys() == after.keys()
        for name in before:
            assert [c for c, _ in before[name]] == [c for c, _ in after[name]]
            for (_, a), (_, b) in zip(before[name], after[name], strict=True):
                assert np.allclose(a, b, rtol=0, atol=1e-6)
        for image in (source / "images" / split).iterdir():
            assert (tmp_path / "yolo2" / "images" / split_again / image.name).read_bytes() == image.read_bytes()
    written = json.loads(json.dumps(yaml.safe_load((tmp_path / "yolo2" / "data.yaml").read_text())))
    assert written["names"] == {str(i): n for i, n in enumerate(YOLO_NAMES)} and written["val"] == "images/validation"
    assert (tmp_path / "yolo2" / "classes.txt").read_text().split() == YOLO_NAMES


def test_yolo_refuses_bad_lines_and_orphan_labels(tmp_path):
    source = write_yolo(tmp_path / "yolo")
    (source / "labels" / "train" / "x1.txt").write_text("0 0.5 0.5 0.2 0.2 0.1 0.1\n")
    with pytest.raises(InvalidInputError, match="YOLO-seg"):
        import_dataset(source, tmp_path / "ds")
    (source / "labels" / "train" / "x1.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(InvalidInputError, match=r"class must lie in \[0, 3\)"):
        import_dataset(source, tmp_path / "ds")
    (source / "labels" / "train" / "x1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (source / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(InvalidInputError, match="ghost.txt"):
        import_dataset(source, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # a failed import leaves nothing behind


# ---- ImageFolder, tables, masks -----------------------------------------------------------------------------------
def test_imagefolder_with_split_folders_round_trips(tmp_path):
    write_clean_folder(tmp_path / "src" / "train", {"cat": 3, "dog": 2}, seed=0, size=20)
    write_clean_folder(tmp_path / "src" / "val", {"cat": 1, "dog": 1}, seed=1, size=20)
    dataset = import_dataset(tmp_path / "src", tmp_path / "ds")
    assert {name: len(part) for name, part in dataset.items()} == {"train": 5, "validation": 2}
    assert dataset["train"].features["label"].names == ["cat", "dog"]
    assert dataset["train"]["label"] == [0, 0, 0, 1, 1]
    export_dataset(tmp_path / "ds", "imagefolder", tmp_path / "out")
    assert _tree(tmp_path / "out" / "train") == _tree(tmp_path / "src" / "train")
    assert _tree(tmp_path / "out" / "validation") == _tree(tmp_path / "src" / "val")


def test_tables_give_typed_caption_vqa_and_label_columns(tmp_path):
    from lmt.data.samples import write_shapes

    shapes = write_shapes(tmp_path / "shapes", count=6, size=32)
    captions = import_dataset(shapes / "captions.jsonl", tmp_path / "captions")["train"]
    assert dict(captions.features) == {"image": datasets.Image(), "caption": datasets.Value("string"),
                                       "question": datasets.Value("string"), "answer": datasets.Value("string")}
    assert captions[0]["caption"].startswith("a ") and captions[0]["image"].size == (32, 32)
    table = import_dataset(shapes / "shapes.csv", tmp_path / "table")["train"]
    assert isinstance(table.features["mask"], datasets.Image)
    assert set(table.features["label"].names) <= {"circle", "square", "triangle"}
    with pytest.raises(InvalidInputError, match="imagefolder export needs a classification dataset"):
        export_dataset(tmp_path / "captions", "imagefolder", tmp_path / "nope")


def test_mask_pairs_import_and_pairing_errors(tmp_path):
    source = write_mask_pairs(tmp_path / "pairs")
    assert detect_format(source) == "masks"
    dataset = import_dataset(source, tmp_path / "ds")["train"]
    assert len(dataset) == 3 and isinstance(dataset.features["mask"], datasets.Image)
    row = dataset[2]
    assert row["image"].size == row["mask"].size == (24, 20)
    assert np.array_equal(np.asarray(row["mask"]), np.asarray(Image.open(source / "masks" / "sub" / "3.png")))
    Image.new("RGB", (24, 20)).save(source / "images" / "4.png")
    Image.new("L", (24, 20)).save(source / "masks" / "5.png")
    with pytest.raises(InvalidInputError) as caught:
        import_dataset(source, tmp_path / "ds2")
    assert "images/4" in str(caught.value) and "masks/5" in str(caught.value) and "2 files" in str(caught.value)
    (source / "images" / "4.png").unlink()
    (source / "masks" / "5.png").unlink()
    Image.new("L", (10, 10)).save(source / "masks" / "1.png")
    with pytest.raises(InvalidInputError, match="differ in size"):
        import_dataset(source, tmp_path / "ds3")


# ---- errors -------------------------------------------------------------------------------------------------------
def test_coco_errors_name_the_problem(tmp_path):
    source = write_coco(tmp_path / "src")
    document = json.loads(source.read_text())
    document["images"][0]["file_name"] = "imgs/missing.png"
    source.write_text(json.dumps(document))
    with pytest.raises(InvalidInputError, match="imgs/missing.png"):
        import_dataset(source, tmp_path / "ds")
    document["images"][0]["file_name"] = "imgs/a.png"
    document["annotations"][0]["image_id"] = 99
    source.write_text(json.dumps(document))
    with pytest.raises(InvalidInputError, match="refers to image 99"):
        import_dataset(source, tmp_path / "ds")
    source.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not readable JSON"):
        import_dataset(source, tmp_path / "ds")


def test_outputs_are_never_overwritten(coco, tmp_path):
    _, _, folder = coco
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        export_dataset(folder, "coco", tmp_path / "busy")
    with pytest.raises(InvalidInputError, match="already a dataset folder"):
        import_dataset(folder, tmp_path / "again")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


# ---- the CLI ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["import", "export"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["data", command, "--help"])
    assert caught.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_cli_import_then_export(tmp_path, capsys):
    source = write_coco(tmp_path / "src")
    assert main(["data", "import", str(source), "--out", str(tmp_path / "ds"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "coco" and summary["kind"] == "detection" and summary["splits"] == {"train": 4}
    assert main(["data", "export", str(tmp_path / "ds"), "--format", "yolo", "--out", str(tmp_path / "yolo")]) == 0
    assert "Left out 2 crowd annotations" in capsys.readouterr().out
    assert (tmp_path / "yolo" / "labels" / "train" / "imgs" / "a.txt").is_file()
    assert main(["data", "export", str(tmp_path / "ds"), "--format", "imagefolder", "--out", str(tmp_path / "x")]) == 2
    assert "classification" in capsys.readouterr().err
