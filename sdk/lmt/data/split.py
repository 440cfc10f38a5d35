"""Train/val/test splits: stratified by label, seeded, and group-aware, written as CSV manifests ``lmt train`` reads.

With ``group_key`` (a patient, a source, a video), every record of one group lands in the same split, so that
near-identical images of one patient never sit on both sides. Groups are stratified by their majority label.

>>> from lmt.data.split import split_records, write_split_manifests
>>> # result = split_records(records, val=0.1, test=0.1, seed=0, group_key="patient")
>>> # write_split_manifests(result, "splits/")   # splits/train.csv, val.csv, test.csv
"""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitResult:
    """The records of each split, in input order, and the settings that produced them."""

    train: tuple[dict[str, Any], ...]
    val: tuple[dict[str, Any], ...]
    test: tuple[dict[str, Any], ...]
    seed: int
    group_key: str | None = None

    def split(self, name: str) -> tuple[dict[str, Any], ...]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "group_key": self.group_key,
                "counts": {name: len(self.split(name)) for name in SPLITS}}


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Dataset split: {message}", f"数据划分：{message_zh}")


def _check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise _error(f"val ({val}) and test ({test}) must each lie in [0, 1) and leave some data for training.",
                     f"val（{val}）和 test（{test}）应在 [0, 1) 之内，且须给训练集留下数据。")


def _groups(records: Sequence[dict[str, Any]], group_key: str | None) -> dict[Any, list[int]]:
    """Record indices by group; without a group key each record is its own group."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        if group_key is None:
            groups[index].append(index)
            continue
        value = record.get(group_key)
        if value is None or str(value).strip() == "":
            raise _error(f"record {index + 1} has no '{group_key}'.", f"第 {index + 1} 条记录缺少 '{group_key}'。")
        groups[str(value)].append(index)
    return groups


def _majority(records: Sequence[dict[str, Any]], indices: list[int], key: str | None) -> str:
    if key is None:
        return ""
    counts = Counter(str(records[i].get(key, "")) for i in indices)
    # ties go to the smallest label so that the result does not depend on record order
    return min(counts, key=lambda label: (-counts[label], label))


def split_records(
    records: Sequence[dict[str, Any]],
    *,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    stratify_key: str | None = "label",
    group_key: str | None = None,
) -> SplitResult:
    """Split records into train/val/test by whole groups, per stratum, in a seeded order.

    Within each stratum (label, or a group's majority label) groups are shuffled, then each goes to test
    while test is short of its share by at least half the group's size, then likewise to val, else to train:
    with one record per group this gives ``round(n * fraction)`` records per split and stratum.
    """
    _check_fractions(val, test)
    if not records:
        raise _error("there are no records to split.", "没有可划分的记录。")
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for _, indices in sorted(_groups(records, group_key).items(), key=lambda item: str(item[0])):
        strata[_majority(records, indices, stratify_key)].append(indices)
    rng = random.Random(seed)
    assignment: dict[int, str] = {}
    for label in sorted(strata):
        groups = strata[label]
        rng.shuffle(groups)
        total = sum(len(g) for g in groups)
        targets = {"test": total * test, "val": total * val}
        filled = {"test": 0, "val": 0}
        for group in groups:
            name = next((s for s in ("test", "val") if filled[s] + len(group) / 2 <= targets[s]), "train")
            if name != "train":
                filled[name] += len(group)
            assignment.update((i, name) for i in group)
    parts = {name: tuple(r for i, r in enumerate(records) if assignment[i] == name) for name in SPLITS}
    return SplitResult(parts["train"], parts["val"], parts["test"], seed, group_key)


def write_split_manifests(result: SplitResult, out_dir: str | Path) -> dict[str, Path]:
    """``train.csv``, plus ``val.csv`` and ``test.csv`` when not empty, with absolute image paths; return them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["image", "label"]
    for record in result.train + result.val + result.test:
        columns += [key for key in record if key not in columns]
    written = {}
    for name in SPLITS:
        rows = result.split(name)
        if not rows and name != "train":
            continue
        if not rows:
            raise _error("the train split is empty: use more data or smaller val/test fractions.",
                         "训练集为空：请使用更多数据或更小的 val/test 比例。")
        path = out / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for record in rows:
                row = dict(record)
                row["image"] = str(Path(str(record["image"])).expanduser().resolve())
                writer.writerow(row)
        written[name] = path
    return written
