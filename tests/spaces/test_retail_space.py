"""The retail Space answers every api_name through gradio_client with tiny weights (shapes and types; tiny
models answer at random, so contents are checked in tests/apps/test_retail.py)."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file
from PIL import Image

from tests.spaces.conftest import app_error

pytestmark = pytest.mark.parametrize("space_client", ["retail"], indirect=True)

EXAMPLES = Path(__file__).resolve().parents[2] / "spaces" / "retail" / "examples"
EMBED = "dinov2-small (tiny)"
DETECT = "owlv2-b16 (tiny)"
PLANOGRAM = (EXAMPLES / "planogram.csv").read_text(encoding="utf-8")
SKUS = ["chips", "cola", "juice", "milk", "tea"]


def recognize(client, image, files=None, names="", auto=True, threshold=0.5, model=EMBED):
    return client.predict(image, files, names, auto, threshold, model, api_name="/recognize")


def analyze(client, image, files=None, names="", planogram=PLANOGRAM, query="a product on a shelf", detection=0.3,
            gap=1.0, full=False, auto=True, threshold=0.5, model=EMBED, detector=DETECT):
    return client.predict(image, files, names, planogram, query, detection, gap, full, auto, threshold, model,
                          detector, api_name="/analyze_shelf")


def test_api_names(space_client):
    endpoints = space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/recognize", "/analyze_shelf"}


def test_recognize_with_the_example_catalog(space_client):
    answer, raw = recognize(space_client, handle_file(EXAMPLES / "product-cola.png"))
    catalog = raw["catalog"]
    assert sorted(s["sku"] for s in catalog["skus"]) == SKUS and catalog["model"] == "dinov2-small"
    assert {s["sku"]: s["name"] for s in catalog["skus"]}["cola"] == "可乐"
    assert catalog["threshold_source"] == "calibrated" and raw["threshold"] == catalog["threshold"]
    assert raw["sku"] in [*SKUS, "unknown"] and raw["known"] == (raw["sku"] != "unknown")
    assert len(raw["candidates"]) == 3 and all(c["sku"] in SKUS for c in raw["candidates"])
    assert raw["candidates"][0]["similarity"] == pytest.approx(raw["similarity"])
    assert ("相似度" in answer) if raw["known"] else ("未知" in answer and "阈值" in answer)


def test_recognize_with_a_manual_threshold_and_names(space_client):
    _, raw = recognize(space_client, handle_file(EXAMPLES / "product-soap.png"), names="cola,可口可乐",
                       auto=False, threshold=-1)
    assert raw["threshold"] == -1 and raw["known"]  # every similarity is at least -1
    assert {s["sku"]: s["name"] for s in raw["catalog"]["skus"]}["cola"] == "可口可乐"
    assert raw["catalog"]["threshold_source"] == "given"


def test_recognize_with_an_uploaded_zip_and_images(space_client, tmp_path):
    _, raw = recognize(space_client, handle_file(EXAMPLES / "product-cola.png"),
                       files=[handle_file(EXAMPLES / "catalog.zip")])
    assert sorted(s["sku"] for s in raw["catalog"]["skus"]) == SKUS
    assert {s["sku"]: s["references"] for s in raw["catalog"]["skus"]} == dict.fromkeys(SKUS, 2)
    paths = []
    for sku, index in (("cola", 1), ("cola", 2), ("tea", 1)):
        path = tmp_path / f"{sku}-{index}.png"
        Image.open(EXAMPLES / "catalog" / sku / "front.png").save(path)
        paths.append(handle_file(path))
    _, raw = recognize(space_client, handle_file(EXAMPLES / "product-cola.png"), files=paths, names="tea,绿茶")
    assert raw["catalog"]["skus"] == [{"sku": "cola", "name": "cola", "references": 2},
                                      {"sku": "tea", "name": "绿茶", "references": 1}]
    assert raw["sku"] in ("cola", "tea", "unknown")


def test_analyze_shelf(space_client):
    annotated, table, report, files = analyze(space_client, handle_file(EXAMPLES / "shelf.png"))
    assert Image.open(annotated).size == (660, 430)
    assert (report["width"], report["height"]) == (660, 430) and report["queries"] == ["a product on a shelf"]
    assert report["total"] == len(report["products"]) == sum(report["counts"].values())
    assert all(p["sku"] in [*SKUS, "unknown"] for p in report["products"])
    compliance = report["compliance"]
    assert [c["sku"] for c in compliance["skus"]][:5] == ["cola", "tea", "milk", "chips", "juice"]
    assert isinstance(compliance["compliant"], bool) and isinstance(report["gaps"], list)
    assert table["headers"][:3] == ["sku", "name", "count"]
    assert {row[0] for row in table["data"]} >= {"cola", "tea", "milk", "chips", "juice"}
    summary, products = (Path(f) for f in files)
    assert summary.name == "summary.csv" and products.name == "products.csv"
    rows = list(csv.DictReader(io.StringIO(products.read_text(encoding="utf-8"))))
    assert len(rows) == report["total"]
    assert next(csv.reader(io.StringIO(summary.read_text(encoding="utf-8"))))[:3] == ["sku", "name", "count"]


def test_analyze_shelf_without_planogram_on_the_full_width(space_client):
    _, table, report, _ = analyze(space_client, handle_file(EXAMPLES / "shelf.png"), planogram="", full=True,
                                  detection=1.0)
    assert report["compliance"] is None and report["total"] == 0 and report["counts"] == {}
    assert table["data"] == []


def test_errors_are_bilingual_and_clean(space_client, tmp_path):
    shelf = handle_file(EXAMPLES / "shelf.png")
    message = app_error(lambda: recognize(space_client, None))
    assert "请先上传" in message and "upload an image" in message
    message = app_error(lambda: recognize(space_client, shelf, auto=False, threshold="NaN"))
    assert "threshold" in message
    message = app_error(lambda: recognize(space_client, shelf, names="soda,汽水"))
    assert "soda" in message
    message = app_error(lambda: recognize(space_client, shelf, model="google/evil"))
    assert "不是本 Space" in message
    message = app_error(lambda: recognize(
        space_client, shelf, files=[handle_file(EXAMPLES / "catalog.zip"), handle_file(EXAMPLES / "shelf.png")]))
    assert "zip" in message and "不要混在一起" in message
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    message = app_error(lambda: recognize(space_client, shelf, files=[handle_file(junk)]))
    assert "zip" in message
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "nothing")
    assert "没有图片" in app_error(lambda: recognize(space_client, shelf, files=[handle_file(empty)]))
    message = app_error(lambda: analyze(space_client, shelf, planogram="cola,-3"))
    assert "count" in message and "陈列计划" in message
    message = app_error(lambda: analyze(space_client, shelf, planogram="soda,1"))
    assert "soda" in message
    message = app_error(lambda: analyze(space_client, shelf, gap="Infinity"))
    assert "gap_factor" in message
    message = app_error(lambda: analyze(space_client, shelf, full="yes"))
    assert "full_width" in message
    message = app_error(lambda: analyze(space_client, shelf, query=" , "))
    assert "查询词" in message
    message = app_error(lambda: analyze(space_client, shelf, detector="clip-vit-b32 (tiny)"))
    assert "不是本 Space" in message
