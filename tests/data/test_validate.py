"""lmt.data.validate: every planted defect is found, a clean set gives nothing, --fix leaves sources untouched."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lmt.cli import main
from lmt.data.validate import similar_class_names, validate_dataset, write_clean_manifest, write_report
from lmt.errors import InvalidInputError
from tests.data.synthetic import smooth_image, write_clean_folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    """train/ and val/ ImageFolder trees with one of each defect planted; returns (train, val)."""
    root = tmp_path_factory.mktemp("planted")
    train = write_clean_folder(root / "train", {"cat": 10, "dog": 8, "cta": 1}, seed=1)
    val = write_clean_folder(root / "val", {"cat": 3, "dog": 3}, seed=2)
    (train / "cat" / "corrupt.png").write_bytes(np.random.default_rng(3).bytes(500))
    whole = (train / "dog" / "001.png").read_bytes()
    (train / "cat" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    shutil.copy(train / "dog" / "000.png", train / "dog" / "dup.png")
    with Image.open(train / "cat" / "001.png") as image:
        ImageEnhance.Brightness(image.resize((44, 44))).enhance(1.1).save(train / "cat" / "near.png")
    smooth_image(np.random.default_rng(4), size=4).save(train / "dog" / "tiny.png")
    smooth_image(np.random.default_rng(5)).convert("CMYK").save(train / "cat" / "cmyk.jpg")
    shutil.copy(train / "cat" / "002.png", val / "cat" / "leak.png")
    return train, val


def _names(report, kind: str) -> list[set[str]]:
    return [{Path(item).name if "/" in item else item for item in f.items} for f in report.of_kind(kind)]


def test_every_planted_defect_is_found(planted):
    train, val = planted
    report = validate_dataset(train, splits={"val": val})
    assert _names(report, "corrupt") in ([{"corrupt.png"}, {"truncated.png"}], [{"truncated.png"}, {"corrupt.png"}])
    assert _names(report, "duplicate") == [{"000.png", "dup.png"}]
    assert _names(report, "near_duplicate") == [{"001.png", "near.png"}]
    assert [set(f.items) for f in report.of_kind("leak")] == [{str(train / "cat" / "002.png"),
                                                             str(val / "cat" / "leak.png")}]
    assert _names(report, "tiny") == [{"tiny.png"}]
    assert _names(report, "odd_mode") == [{"cmyk.jpg"}]
    assert _names(report, "class_typo") == [{"cat", "cta"}]
    # cat has 14 train images (10 + corrupt, truncated, near, cmyk), cta one: 14 > 5 x 1
    assert [f.items for f in report.of_kind("imbalance")] == [("cat", "cta")]
    assert len(report.findings) == 9 and not report.ok


def test_a_clean_dataset_gives_no_findings(tmp_path):
    train = write_clean_folder(tmp_path / "train", {"circle": 30, "square": 25, "triangle": 20}, seed=10)
    val = write_clean_folder(tmp_path / "val", {"circle": 6, "square": 5, "triangle": 4}, seed=11)
    report = validate_dataset(train, splits={"val": val})
    assert report.findings == () and report.ok and len(report.images) == 90
    assert set(report.counts().values()) == {0}


def test_fix_writes_clean_manifests_and_leaves_sources_byte_identical(planted, tmp_path):
    train, val = planted
    root = train.parent

    def digest() -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    before = digest()
    out = tmp_path / "report"
    assert main(["data", "validate", str(train), "--val", str(val), "--out", str(out), "--fix"]) == 1
    assert digest() == before
    with (out / "clean" / "train.csv").open(encoding="utf-8") as handle:
        kept = [f"{row['label']}/{Path(row['image']).name}" for row in csv.DictReader(handle)]
    assert not {"cat/corrupt.png", "cat/truncated.png", "dog/tiny.png", "dog/dup.png"} & set(kept)
    assert {"dog/000.png", "cat/near.png", "cat/cmyk.jpg", "cta/000.png"} <= set(kept)
    assert len(kept) == 19 + 6 - 4  # the clean images plus six planted files, less the four dropped
    with (out / "clean" / "val.csv").open(encoding="utf-8") as handle:
        val_names = [Path(row["image"]).name for row in csv.DictReader(handle)]
    assert "leak.png" not in val_names and len(val_names) == 6
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## corrupt (2)" in text and "class_counts.png" in text
    for name in ("class_counts.png", "image_sizes.png"):
        with Image.open(out / name) as figure:
            assert figure.format == "PNG" and figure.width > 100


def test_clean_cli_exits_zero_and_report_lists_zero_findings(tmp_path, capsys):
    data = write_clean_folder(tmp_path / "data", {"a": 6, "b": 6}, seed=20)
    assert main(["data", "validate", str(data)]) == 0
    assert "No defects found." in capsys.readouterr().out
    path = write_report(validate_dataset(data), tmp_path / "out")
    assert "| leak | 0 |" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("a", "b", "similar"), [
    ("cat", "cta", True), ("Cat", "cat", True), ("golden_retriever", "golden retreiver", True),
    ("airplane", "aeroplane", True), ("0", "1", False), ("cat", "dog", False), ("car", "bus", False),
])
def test_class_name_similarity(a, b, similar):
    assert similar_class_names(a, b) is similar


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "missing")]) == 2
    assert "数据校验" in capsys.readouterr().err
    data = write_clean_folder(tmp_path / "data", {"a": 2}, seed=30)
    assert main(["data", "validate", str(data), "--fix"]) == 2
    with pytest.raises(InvalidInputError):
        validate_dataset(data, near_distance=40)
    report = validate_dataset(data, splits={"val": data})
    with pytest.raises(InvalidInputError):
        write_clean_manifest(report, tmp_path / "x.csv", split="test")


@pytest.mark.parametrize("command", ["validate", "split"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", command, "--help"])
    assert exit_info.value.code == 0 and f"usage: lmt data {command}" in capsys.readouterr().out
