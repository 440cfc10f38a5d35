"""lmt.data.split: proportions, seeded determinism, groups kept whole, stratified; lmt train reads the manifests."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from lmt.cli import main
from lmt.data.split import split_records, write_split_manifests
from lmt.errors import InvalidInputError
from tests.data.synthetic import write_clean_folder


def grouped_records() -> list[dict]:
    """200 records of 40 patients (5 each): 30 patients labelled 'a', 10 'b'."""
    return [{"image": f"p{p}_{i}.png", "label": "a" if p < 30 else "b", "patient": f"p{p}"}
            for p in range(40) for i in range(5)]


def test_ungrouped_split_is_exact_per_label_and_seeded():
    records = [{"image": f"{i}.png", "label": "a" if i < 150 else "b"} for i in range(200)]
    result = split_records(records, val=0.1, test=0.2, seed=3)
    assert result.to_dict()["counts"] == {"train": 140, "val": 20, "test": 40}
    assert Counter(r["label"] for r in result.test) == {"a": 30, "b": 10}
    assert Counter(r["label"] for r in result.val) == {"a": 15, "b": 5}
    again = split_records(records, val=0.1, test=0.2, seed=3)
    assert again == result
    other = split_records(records, val=0.1, test=0.2, seed=4)
    assert {r["image"] for r in other.test} != {r["image"] for r in result.test}
    images = [r["image"] for part in (result.train, result.val, result.test) for r in part]
    assert sorted(images) == sorted(r["image"] for r in records)


def test_groups_never_straddle_and_strata_hold():
    result = split_records(grouped_records(), val=0.1, test=0.2, seed=0, group_key="patient")
    seen = {}
    for name in ("train", "val", "test"):
        for record in result.split(name):
            assert seen.setdefault(record["patient"], name) == name
    counts = result.to_dict()["counts"]
    assert counts == {"train": 140, "val": 20, "test": 40}  # 28 / 4 / 8 patients of five
    assert Counter(r["label"] for r in result.test) == {"a": 30, "b": 10}
    assert split_records(grouped_records(), val=0.1, test=0.2, seed=0, group_key="patient") == result


def test_mixed_label_groups_follow_their_majority():
    records = [{"image": f"{g}_{i}.png", "label": "a" if i < 2 else "b", "video": str(g)}
               for g in range(20) for i in range(3)]  # each video: 2 'a', 1 'b' -> majority 'a'
    result = split_records(records, val=0.25, test=0.25, seed=1, group_key="video")
    assert [len(result.split(n)) for n in ("train", "val", "test")] == [30, 15, 15]


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions_are_refused(val, test):
    with pytest.raises(InvalidInputError):
        split_records(grouped_records(), val=val, test=test, seed=0)


def test_missing_group_value_is_refused():
    with pytest.raises(InvalidInputError, match="patient"):
        split_records([{"image": "x.png", "label": "a"}], val=0.1, test=0.1, seed=0, group_key="patient")


def test_cli_split_with_a_group_column(tmp_path, capsys):
    folder = write_clean_folder(tmp_path / "images", {"a": 12, "b": 12}, seed=40)
    table = tmp_path / "data.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "patient"])
        for index, path in enumerate(sorted(folder.rglob("*.png"))):
            writer.writerow([path.relative_to(tmp_path).as_posix(), path.parent.name, f"{path.parent.name}{index // 3}"])
    out = tmp_path / "splits"
    assert main(["data", "split", str(table), "--out", str(out), "--val", "0.25", "--test", "0.25",
                 "--group-column", "patient"]) == 0
    places = {}
    for name in ("train", "val", "test"):
        with (out / f"{name}.csv").open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                assert Path(row["image"]).is_absolute() and Path(row["image"]).is_file()
                assert places.setdefault(row["patient"], name) == name
    assert len(places) == 8
    assert main(["data", "split", str(folder), "--out", str(out), "--group-column", "patient"]) == 2
    assert "--group-column" in capsys.readouterr().err


def test_lmt_train_consumes_the_split_manifests(tmp_path):
    from lmt.train import config_from_dict, train

    folder = write_clean_folder(tmp_path / "images", {"a": 10, "b": 10}, seed=50, size=32)
    result = split_records([{"image": str(p), "label": p.parent.name} for p in sorted(folder.rglob("*.png"))],
                           val=0.2, test=0.1, seed=0)
    paths = write_split_manifests(result, tmp_path / "splits")
    assert set(paths) == {"train", "val", "test"}
    config = config_from_dict({
        "task": "image-classification", "model": "vit", "weights": "tiny", "method": "full",
        "data": {"train": str(paths["train"]), "val": str(paths["val"])},
        "optim": {"epochs": 1, "batch_size": 8, "lr": 1e-3},
        "run": {"output_dir": str(tmp_path / "runs")},
    })
    trained = train(config)
    assert trained.global_step == 2  # 14 training images in batches of 8
    assert "accuracy" in trained.metrics and 0.0 <= trained.metrics["accuracy"] <= 1.0
    assert Path(trained.run_dir).is_dir()
