"""lmt train on a dataset folder: sample digits -> split -> `lmt data import` -> a tiny ViT trains one epoch on the
saved dataset's train split and validates on its validation split, with the dataset's records and labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest

import lmt.train.data
from lmt.cli import main
from lmt.data.formats import load_dataset_dir
from lmt.errors import InvalidInputError
from lmt.tiny import lmt_home
from lmt.train import config_from_dict, train

from .conftest import tiny_config


@pytest.fixture(scope="module")
def digits_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits-ds")
    assert main(["data", "sample", "digits", str(root / "digits")]) == 0
    assert main(["data", "split", str(root / "digits"), "--out", str(root / "splits"), "--val", "0.2",
                 "--test", "0"]) == 0
    assert main(["data", "import", str(root / "splits"), "--out", str(root / "ds")]) == 0
    return root / "ds"


def test_trains_on_the_saved_dataset(digits_dataset, tmp_path, monkeypatch):
    dataset = load_dataset_dir(digits_dataset)
    names = dataset["train"].features["label"].names
    assert names == [str(d) for d in range(10)] and set(dataset) == {"train", "validation"}
    read: list[tuple[str, list[dict]]] = []
    real_read_records = lmt.train.data.read_records

    def spy(source, columns):
        records = real_read_records(source, columns)
        read.append((str(source), records))
        return records

    monkeypatch.setattr(lmt.train.data, "read_records", spy)
    config = tiny_config(digits_dataset, tmp_path / "runs", optim={"epochs": 1, "batch_size": 64, "lr": 3e-3})
    # a short epoch: the records are read whole (checked below), then the loop keeps the first 256 / 64
    config["data"].update(val=str(digits_dataset / "validation"), max_train_samples=256, max_val_samples=64)
    result = train(config_from_dict(config))

    assert [source for source, _ in read] == [str(digits_dataset), str(digits_dataset / "validation")]
    for (_, records), split in zip(read, ("train", "validation"), strict=True):
        assert [r["label"] for r in records] == [names[i] for i in dataset[split]["label"]]
        assert all(Path(r["image"]).is_relative_to(lmt_home() / "datasets") for r in records)
    stored = dataset["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert Path(read[0][1][0]["image"]).read_bytes() == stored["bytes"]  # the dataset's own image bytes
    assert result.global_step == math.ceil(256 / 64)
    info = json.loads((result.run_dir / "lmt_run.json").read_text())
    # the split's CSV (so the dataset) is ordered by class: its first 256 rows hold the digits 0 and 1
    assert info["labels"] == sorted({names[i] for i in dataset["train"]["label"][:256]}) == ["0", "1"]
    assert result.run_dir.name.endswith("_1ep_ds")
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_a_dataset_without_the_column_is_refused(digits_dataset):
    with pytest.raises(InvalidInputError, match="has no column 'caption'"):
        lmt.train.data.read_records(digits_dataset, {"image": "image", "caption": "caption"})


def test_mask_and_caption_datasets_give_the_records_sam_and_blip2_read(tmp_path):
    import csv

    import numpy as np

    from lmt.data.samples import write_shapes

    shapes = write_shapes(tmp_path / "shapes", count=4, size=32)
    assert main(["data", "import", str(shapes / "shapes.csv"), "--out", str(tmp_path / "masks")]) == 0
    assert main(["data", "import", str(shapes / "captions.jsonl"), "--out", str(tmp_path / "captions")]) == 0
    records = lmt.train.data.read_records(tmp_path / "masks", {"image": "image", "mask": "mask"})
    with (shapes / "shapes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(records) == len(rows) == 4
    for record, row in zip(records, rows, strict=True):
        assert np.array_equal(lmt.train.data.load_mask(record["mask"]), lmt.train.data.load_mask(shapes / row["mask"]))
        assert Path(record["image"]).read_bytes() == (shapes / row["image"]).read_bytes()
    columns = {"image": "image", "caption": "caption", "question": "question", "answer": "answer"}
    captions = lmt.train.data.read_records(tmp_path / "captions", columns)
    first = json.loads((shapes / "captions.jsonl").read_text().splitlines()[0])
    assert {k: captions[0][k] for k in ("caption", "question", "answer")} == {k: first[k] for k in
                                                                             ("caption", "question", "answer")}
