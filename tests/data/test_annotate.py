"""Auto-annotation (tiny OWLv2 + SAM -> COCO), the review gallery, sharded runs with resume, and ``lmt data embed``.

The tiny models have random weights: their boxes mean nothing, but they exist at a low threshold, which is all the
pipeline needs to be checked end to end (valid COCO, masks inside boxes, identical bytes across runs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lmt
from lmt.cli import main
from lmt.data import annotate as annotate_module
from lmt.data.annotate import Ontology, annotate_folder, load_ontology
from lmt.data.embed import embed_folder
from lmt.data.gallery import draw_annotations, write_gallery
from lmt.data.sharding import ProcessSlot, current_process, list_image_files, plan_chunks, run_sharded
from lmt.errors import InvalidInputError

from .synthetic import smooth_image

CLASSES = "car:a photo of a car,person"
OPTIONS = {"weights": "tiny", "box_threshold": 0.05, "max_detections": 3}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four small images in two folders and one file that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for name, size in (("a.png", 48), ("b.jpg", 40), ("sub/c.png", 56), ("d.png", 44)):
        smooth_image(rng, size).save(root / name)
    (root / "broken.png").write_bytes(b"not an image")
    (root / ".hidden.png").write_bytes(b"skipped: hidden")
    return root


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Path:
    """An uninterrupted one-process run (chunks of 3) with a gallery: what every other run must equal."""
    out = tmp_path_factory.mktemp("reference")
    run = annotate_folder(photos, out, CLASSES, chunk_size=3, gallery=3, **OPTIONS)
    assert run.coco_path == out / "annotations.json" and run.shards.computed == (0, 1)
    return out


# ---- the ontology ---------------------------------------------------------------------------------------------------
def test_ontology_from_text_and_files(tmp_path):
    ontology = Ontology.parse("car:a photo of a car, car：a truck, person")
    assert ontology.to_dict() == {"a photo of a car": "car", "a truck": "car", "person": "person"}
    assert ontology.categories == ("car", "person") and ontology.category_id("person") == 2
    (tmp_path / "o.yaml").write_text("a photo of a dog: dog\na cat: cat\n", encoding="utf-8")
    (tmp_path / "o.json").write_text(json.dumps({"a cat": "cat"}), encoding="utf-8")
    assert load_ontology(tmp_path / "o.yaml").categories == ("dog", "cat")
    assert load_ontology(str(tmp_path / "o.json")).to_dict() == {"a cat": "cat"}
    assert load_ontology({"x": "y"}).prompts == ("x",)


@pytest.mark.parametrize("spec", ["", "car:", ":a car", "car:a car,bus:a car", "car,car"])
def test_bad_ontologies_are_refused_in_both_languages(spec):
    with pytest.raises(InvalidInputError) as info:
        load_ontology(spec)
    assert info.value.message_zh != info.value.message


def test_bad_ontology_files_are_refused(tmp_path):
    (tmp_path / "list.yaml").write_text("- car\n- person\n", encoding="utf-8")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    for path in (tmp_path / "list.yaml", tmp_path / "broken.json", tmp_path / "missing.yaml"):
        with pytest.raises(InvalidInputError):
            load_ontology(path)


# ---- sharding, with cheap work ----------------------------------------------------------------------------------------
def test_chunks_depend_on_items_and_size_only():
    chunks = plan_chunks([f"{i:02d}.png" for i in reversed(range(7))], chunk_size=3)
    assert [c.items for c in chunks] == [("00.png", "01.png", "02.png"), ("03.png", "04.png", "05.png"), ("06.png",)]
    assert [c.file_name for c in chunks] == [f"shard-0000{i}-of-00003.json" for i in range(3)]
    assert [c.index for c in chunks if ProcessSlot(1, 2).owns(c)] == [1]
    with pytest.raises(InvalidInputError):
        plan_chunks(["a", "a"], 2)
    with pytest.raises(InvalidInputError):
        plan_chunks([], 2)
    with pytest.raises(InvalidInputError):
        current_process(0, None)
    with pytest.raises(InvalidInputError):
        current_process(2, 2)
    assert current_process() == ProcessSlot(0, 1)


def test_image_listing_skips_hidden_files_and_the_output_folder(tmp_path):
    for name in ("b.png", "a/c.JPG", ".cache/d.png", "out/gallery/thumbs/000001.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_image_files(tmp_path, exclude=tmp_path / "out") == ["a/c.JPG", "b.png"]
    with pytest.raises(InvalidInputError):
        list_image_files(tmp_path / "a", exclude=tmp_path / "a")


def _lengths(calls: list[str]):
    def work(items):
        calls.extend(items)
        return [{"length": len(item)} for item in items]
    return work


def test_resume_reuses_only_matching_shards(tmp_path):
    items = [f"{'x' * i}.png" for i in range(1, 8)]
    calls: list[str] = []
    first = run_sharded(items, _lengths(calls), tmp_path, settings={"v": 1}, chunk_size=3)
    assert first.computed == (0, 1, 2) and len(calls) == 7
    assert [record["length"] for _, record in first.records] == [len(item) for item in sorted(items)]
    calls.clear()
    assert run_sharded(items, _lengths(calls), tmp_path, settings={"v": 1}, chunk_size=3, resume=True).reused == (0, 1, 2)
    assert calls == []
    # other settings, a corrupt shard, another chunk size: recomputed, never mixed in
    assert run_sharded(items, _lengths(calls), tmp_path, settings={"v": 2}, chunk_size=3, resume=True).computed == (
        0, 1, 2)
    (tmp_path / "shards" / "shard-00001-of-00003.json").write_text("{broken", encoding="utf-8")
    calls.clear()
    again = run_sharded(items, _lengths(calls), tmp_path, settings={"v": 2}, chunk_size=3, resume=True)
    assert again.computed == (1,) and len(calls) == 3
    by_two = run_sharded(items, _lengths(calls), tmp_path, settings={"v": 2}, chunk_size=2, resume=True)
    assert by_two.computed == (0, 1, 2, 3) and by_two.records == again.records


def test_explicit_processes_merge_when_the_last_one_finishes(tmp_path):
    items = [f"{i}.png" for i in range(5)]
    calls: list[str] = []
    second = run_sharded(items, _lengths(calls), tmp_path, settings={}, chunk_size=2, process=ProcessSlot(1, 2))
    assert second.computed == (1,) and not second.complete and calls == ["2.png", "3.png"]
    first = run_sharded(items, _lengths(calls), tmp_path, settings={}, chunk_size=2, process=ProcessSlot(0, 2))
    assert first.computed == (0, 2) and first.complete and [item for item, _ in first.records] == items


# ---- annotation, end to end ---------------------------------------------------------------------------------------
def test_annotations_are_valid_coco(reference, photos):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = COCO(str(reference / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["car", "person"]
    # ids from the sorted file names; the undecodable file keeps its id slot and is listed as skipped
    images = coco.loadImgs(coco.getImgIds())
    assert [(i["id"], i["file_name"]) for i in images] == [(1, "a.png"), (2, "b.jpg"), (4, "d.png"), (5, "sub/c.png")]
    assert [(i["width"], i["height"]) for i in images] == [(48, 48), (40, 40), (44, 44), (56, 56)]
    assert [s["file_name"] for s in coco.dataset["info"]["skipped"]] == ["broken.png"]
    annotations = coco.loadAnns(coco.getAnnIds())
    assert annotations, "a low threshold must leave some boxes even with random weights"
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    for annotation in annotations:
        image = coco.imgs[annotation["image_id"]]
        mask = mask_utils.decode(annotation["segmentation"]).astype(bool)
        assert mask.shape == (image["height"], image["width"]) and mask.sum() == annotation["area"] > 0
        x, y, w, h = annotation["bbox"]
        rows, cols = np.nonzero(mask)
        assert cols.min() >= int(x) and cols.max() < x + w + 1 and rows.min() >= int(y) and rows.max() < y + h + 1
        assert 0.05 <= annotation["score"] <= 1 and annotation["category_id"] in (1, 2)
    assert len([a for a in annotations if a["image_id"] == 1]) <= 3
    # evaluable: the annotations scored as detections against themselves reach AP 1
    evaluation = COCOeval(coco, coco.loadRes([dict(a) for a in annotations]), "segm")  # loadRes edits its input
    evaluation.params.areaRng = [[0, 1e10]] * 4  # the tiny masks are "small"; count them in every range
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all recalls, all categories
    assert np.allclose(precision[precision > -1], 1.0)


def test_review_gallery(reference):
    gallery = reference / "gallery"
    page = (gallery / "index.html").read_text(encoding="utf-8")
    assert sorted(p.name for p in (gallery / "thumbs").iterdir()) == ["000001.png", "000002.png", "000004.png"]
    assert "thumbs/000001.png" in page and "sub/c.png" not in page  # the first three images only
    assert page.count('<a href="../../') == 3 and page.count("<td>car</td>") + page.count("<td>person</td>") > 0
    with Image.open(gallery / "contact_sheet.png") as sheet:
        assert sheet.size == (3 * 256, 256 + 16)
    with Image.open(gallery / "thumbs" / "000001.png") as thumb:
        assert thumb.size == (256, 256) and len(thumb.getcolors(1 << 16)) > 10


def test_gallery_reads_any_coco(photos, tmp_path):
    """Polygons and boxes without masks, as other tools write them; a missing image gets a placeholder."""
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 48, "height": 48},
                   {"id": 9, "file_name": "gone.png", "width": 10, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [4, 4, 20, 20], "segmentation": [[4, 4, 24, 4, 14, 24]]},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [30, 30, 10, 10], "score": 0.5},
        ],
        "categories": [{"id": 1, "name": "<tri&angle>"}, {"id": 2, "name": "box"}],
    }
    result = write_gallery(coco, photos, tmp_path, size=64, embed=True)
    page = result.html.read_text(encoding="utf-8")
    assert "&lt;tri&amp;angle&gt;" in page and "<tri&angle>" not in page and "data:image/png;base64," in page
    assert [p.name for p in result.thumbnails] == ["000007.png", "000009.png"]
    plain = draw_annotations(Image.open(photos / "a.png"), [], {}, size=64)
    with Image.open(result.thumbnails[0]) as thumb:
        assert thumb.getpixel((14, 10)) != plain.getpixel((14, 10))  # tinted inside the triangle
        assert thumb.getpixel((60, 60)) == plain.getpixel((60, 60))  # untouched outside every annotation
    del coco["annotations"][1]["bbox"]
    with pytest.raises(InvalidInputError):
        write_gallery(coco, photos, tmp_path)


def test_interrupted_run_resumes_without_recomputing(reference, photos, tmp_path, monkeypatch):
    """Chunks of 2 (the reference used 3): interrupt inside the second chunk, then resume as two processes."""
    calls: list[int] = []
    original = annotate_module.annotate_image

    def interrupted(image, *args, **kwargs):
        calls.append(image.width)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(image, *args, **kwargs)

    monkeypatch.setattr(annotate_module, "annotate_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        annotate_folder(photos, tmp_path, CLASSES, chunk_size=2, **OPTIONS)
    shards = tmp_path / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["shard-00000-of-00003.json"]  # no half-written file
    first_mtime = (shards / "shard-00000-of-00003.json").stat().st_mtime_ns

    def counted(image, *args, **kwargs):
        calls.append(image.width)
        return original(image, *args, **kwargs)

    monkeypatch.setattr(annotate_module, "annotate_image", counted)
    calls.clear()
    # process 2 of 2 owns chunk 1 (broken.png, d.png): one image to annotate, then the merge waits for chunk 2
    second = annotate_folder(photos, tmp_path, CLASSES, chunk_size=2, resume=True, process_index=1, num_processes=2,
                             **OPTIONS)
    assert second.coco_path is None and second.shards.computed == (1,) and calls == [44]
    calls.clear()
    first = annotate_folder(photos, tmp_path, CLASSES, chunk_size=2, resume=True, process_index=0, num_processes=2,
                            **OPTIONS)
    assert first.shards.reused == (0,) and first.shards.computed == (2,) and calls == [56]
    assert (shards / "shard-00000-of-00003.json").stat().st_mtime_ns == first_mtime
    assert (tmp_path / "annotations.json").read_bytes() == (reference / "annotations.json").read_bytes()


def test_swap_models_boxes_only(photos, tmp_path):
    detector = lmt.pipeline("zero-shot-object-detection", model="owlvit-b32", weights="tiny")
    run = annotate_folder(photos, tmp_path, {"a photo of a dog": "dog"}, detector=detector, segmenter=None,
                          weights="tiny", box_threshold=0.05, max_detections=2)
    coco = json.loads(run.coco_path.read_text(encoding="utf-8"))
    assert coco["info"]["detector"]["name"] == "owlvit-b32" and coco["info"]["segmenter"] is None
    assert coco["categories"] == [{"id": 1, "name": "dog", "supercategory": "object"}]
    assert coco["annotations"] and all("segmentation" not in a for a in coco["annotations"])
    for annotation in coco["annotations"]:
        assert annotation["area"] == pytest.approx(annotation["bbox"][2] * annotation["bbox"][3], abs=0.05)


def test_bad_arguments_fail_before_any_model_loads(photos, tmp_path):
    for options in ({"box_threshold": 2}, {"max_detections": 0}, {"chunk_size": 0}, {"detector": ""}):
        with pytest.raises(InvalidInputError):
            annotate_folder(photos, tmp_path, CLASSES, **{**OPTIONS, **options})
    with pytest.raises(InvalidInputError):
        annotate_folder(tmp_path / "missing", tmp_path, CLASSES, **OPTIONS)
    assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").iterdir())


# ---- the CLI --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["annotate", "embed"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--resume" in text and "--chunk-size" in text and "accelerate launch --multi_gpu" in text


def test_cli_resumes_the_reference_run_and_reports_json(reference, photos, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    code = main(["data", "annotate", str(photos), "--out", str(out), "--classes", CLASSES, "--tiny",
                 "--box-threshold", "0.05", "--max-detections", "3", "--chunk-size", "3", "--resume",
                 "--gallery", "0", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shards"]["computed"] == [] and report["shards"]["reused"] == [0, 1]
    assert report["images"] == 4 and report["skipped"] == 1
    assert (out / "annotations.json").read_bytes() == (reference / "annotations.json").read_bytes()


def test_cli_errors_are_bilingual(photos, tmp_path, capsys):
    assert main(["data", "annotate", str(photos), "--out", str(tmp_path), "--classes", "car:", "--tiny"]) == 2
    assert "自动标注" in capsys.readouterr().err
    assert main(["data", "embed", str(tmp_path / "none"), "--out", str(tmp_path), "--tiny"]) == 2


# ---- embeddings ---------------------------------------------------------------------------------------------------
def test_embed_matches_the_task_and_resumes(photos, tmp_path):
    run = embed_folder(photos, tmp_path / "npy", model="dinov2-small", weights="tiny", chunk_size=2)
    index = json.loads(run.index.read_text(encoding="utf-8"))
    assert index["items"] == ["a.png", "b.jpg", "d.png", "sub/c.png"]
    assert [s["file_name"] for s in index["skipped"]] == ["broken.png"]
    matrix = np.load(run.embeddings)
    assert matrix.shape == (4, index["dim"]) and matrix.dtype == np.float32
    task = lmt.pipeline("image-feature-extraction", model="dinov2-small", weights="tiny")
    expected = np.stack([task(str(photos / item)).vector for item in index["items"]])
    assert np.allclose(matrix, expected, atol=1e-6)
    other = embed_folder(photos, tmp_path / "st", model=task, chunk_size=3, file_format="safetensors")
    from safetensors.numpy import load_file

    assert np.array_equal(load_file(other.embeddings)["embeddings"], matrix)
    resumed = embed_folder(photos, tmp_path / "npy", model="dinov2-small", weights="tiny", chunk_size=2, resume=True)
    assert resumed.shards.computed == () and resumed.embeddings.read_bytes() == run.embeddings.read_bytes()
