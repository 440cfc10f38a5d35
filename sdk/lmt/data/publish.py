"""Push a dataset folder to the Hugging Face Hub as a dataset repository, with a dataset card (``lmt data push``).

What is uploaded, and with ``dry_run`` written into a local folder instead (nothing is contacted, no token read):

- ``data/<split>-<i>-of-<n>.parquet``: each split in shards of at most ``max_shard_bytes``, images embedded;
- ``README.md``: the dataset card rendered from ``hub_cards/dataset_card.md``, its YAML declaring the license,
  the task, the size category, the data files of each split and the typed features (``ClassLabel`` names
  included), so ``datasets.load_dataset("<user>/<name>")`` rebuilds the same dataset;
- ``lmt_dataset.json`` when the folder has one (the source format, COCO's categories and info).

The token comes from ``token=``, ``HF_TOKEN`` or ``hf auth login`` and goes to the Hub client only.

>>> from lmt.data.publish import push_dataset
>>> # plan = push_dataset("data/digits-ds", "alice/digits", dry_run=True, out="preview/")
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lmt
from lmt.data.formats import (
    META_FILE,
    class_counts,
    class_names,
    dataset_kind,
    error,
    load_dataset_dir,
    new_folder,
    ordered_splits,
    read_meta,
)

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parents[3] / "hub_cards" / "dataset_card.md"
CARD_FILE = "README.md"
DEFAULT_MAX_SHARD_BYTES = 500 * 1024 * 1024
TASK_CATEGORIES = {"classification": "image-classification", "detection": "object-detection",
                   "segmentation": "image-segmentation", "vqa": "visual-question-answering",
                   "caption": "image-to-text"}
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                    (10_000_000, "1M<n<10M"))


@dataclass(frozen=True)
class DatasetUploadPlan:
    """What ``push_dataset`` uploaded (or, with ``dry_run``, wrote to ``out_dir``). It never holds the token."""

    repo_id: str
    private: bool
    revision: str | None
    files: tuple[tuple[str, int], ...]
    commit_message: str
    url: str
    dry_run: bool
    out_dir: str | None = None
    commit_url: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "private": self.private, "revision": self.revision,
                "files": [{"path": path, "bytes": size} for path, size in self.files],
                "total_bytes": self.total_bytes, "commit_message": self.commit_message, "url": self.url,
                "dry_run": self.dry_run, "out_dir": self.out_dir, "commit_url": self.commit_url}


# ---- the card -----------------------------------------------------------------------------------------------------
def _size_category(count: int) -> str:
    return next((name for limit, name in _SIZE_CATEGORIES if count < limit), "n>10M")


def _type_name(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    name = type(feature).__name__
    return f"{name}({dtype})" if name == "Value" else name


def _tables(dataset: Any) -> tuple[str, str, str]:
    """(splits, features, classes) as markdown tables; classes empty when the dataset has none."""
    splits = ["| split | examples |", "|---|---|"] + [f"| {s} | {len(dataset[s])} |" for s in dataset]
    first = dataset[next(iter(dataset))]
    features = ["| column | type |", "|---|---|"] + [
        f"| `{name}` | {_type_name(feature)} |" for name, feature in first.features.items()]
    names = class_names(first.features)
    if not names:
        return "\n".join(splits), "\n".join(features), ""
    counts = {s: class_counts(dataset[s]) for s in dataset}
    classes = ["| id | class | " + " | ".join(dataset) + " |", "|---|---|" + "---|" * len(dataset)]
    classes += [f"| {i} | {n} | " + " | ".join(str(counts[s].get(n, 0)) for s in dataset) + " |"
                for i, n in enumerate(names)]
    return "\n".join(splits), "\n".join(features), "\n".join(classes)


def render_dataset_card(
    dataset: Any,
    repo_id: str,
    *,
    license: str = "unknown",  # noqa: A002  (the card field's name)
    source_format: str = "",
    pretty_name: str | None = None,
    summary_zh: str = "",
    summary_en: str = "",
    limitations: str = "",
) -> Any:
    """A ``DatasetCard``: metadata (license, task, size, data files, typed features) and usage code."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    first = dataset[next(iter(dataset))]
    kind = dataset_kind(first.features)
    total = sum(len(part) for part in dataset.values())
    name = pretty_name or repo_id.split("/")[-1]
    card_data = DatasetCardData(
        license=license, pretty_name=name, size_categories=[_size_category(total)],
        task_categories=[TASK_CATEGORIES[kind]] if kind in TASK_CATEGORIES else None,
        tags=["large-model-tutorial", kind],
    )
    splits = SplitDict()
    for split, part in dataset.items():
        splits.add(SplitInfo(name=split, num_bytes=part.data.nbytes, num_examples=len(part)))
    info = DatasetInfo(features=first.features, splits=splits)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    files = [{"split": split, "path": f"data/{split}-*"} for split in dataset]
    MetadataConfigs({"default": {"data_files": files}}).to_dataset_card_data(card_data)
    splits_table, features_table, classes_table = _tables(dataset)
    text = TEMPLATE.read_text(encoding="utf-8") if TEMPLATE.is_file() else None
    if text is None:
        raise error(f"the dataset-card template {TEMPLATE} is missing; install the SDK from a checkout (pip install -e .).",
                    f"缺少数据集卡模板 {TEMPLATE}；请从仓库检出安装（pip install -e .）。")
    return DatasetCard.from_template(
        card_data, template_str=text, title=name,
        summary_zh=summary_zh or f"{total} 个样本的{kind}数据集，由 `lmt data import` 从 {source_format or '本地文件'} 导入。",
        summary_en=summary_en or f"A {kind} dataset of {total} examples, imported with `lmt data import` from "
                                 f"{source_format or 'local files'}.",
        kind=kind, source_format=source_format or "unknown", license=license,
        splits_table=splits_table, features_table=features_table, classes_table=classes_table,
        usage_datasets=f'from datasets import load_dataset\n\ndataset = load_dataset("{repo_id}")',
        usage_lmt=(f'from datasets import load_dataset\n\nload_dataset("{repo_id}").save_to_disk("data/{name}")\n'
                   f'# lmt train CONFIG.yaml data.train=data/{name}'),
        limitations=limitations or "未评估数据的偏差与标注质量；使用前请核对许可证。Biases and label quality have not been "
                                   "assessed; check the license before use.",
    )


# ---- staging ------------------------------------------------------------------------------------------------------
def _write_parquet(part: Any, split: str, folder: Path, max_shard_bytes: int) -> None:
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage
    from tqdm.auto import tqdm

    shards = max(1, math.ceil(part.data.nbytes / max_shard_bytes))
    for index in tqdm(range(shards), desc=f"parquet {split}", unit="shard", leave=False):
        shard = part.shard(num_shards=shards, index=index, contiguous=True)
        # images that only name a file are read into the shard: the Hub copy must stand on its own
        table = embed_table_storage(shard.with_format("arrow")[:])
        pq.write_table(table, folder / "data" / f"{split}-{index:05d}-of-{shards:05d}.parquet")


def stage_dataset(source: str | Path, repo_id: str, folder: Path, *, license: str = "unknown",  # noqa: A002
                  max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[tuple[str, int]]:
    """Write into ``folder`` every file a push uploads; return (path, bytes) of each."""
    dataset = load_dataset_dir(source)
    meta = read_meta(source)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split in ordered_splits(dataset):
        _write_parquet(dataset[split], split, folder, max_shard_bytes)
    card = render_dataset_card(dataset, repo_id, license=license, source_format=str(meta.get("source_format", "")))
    (folder / CARD_FILE).write_text(str(card), encoding="utf-8")
    if meta:
        (folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _upload(staging: Path, plan: DatasetUploadPlan, token: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HTTPError

    from lmt.hub.publish import hub_error

    api = HfApi(token=token)
    try:
        api.create_repo(plan.repo_id, repo_type="dataset", private=plan.private, exist_ok=True)
        if plan.revision and plan.revision != "main":
            api.create_branch(plan.repo_id, branch=plan.revision, repo_type="dataset", exist_ok=True)
        commit = api.upload_folder(repo_id=plan.repo_id, folder_path=staging, repo_type="dataset",
                                   revision=plan.revision, commit_message=plan.commit_message)
    except (HTTPError, OSError) as err:  # HfHubHTTPError, transport errors and offline mode are among these
        raise hub_error(err, plan.repo_id, action="push the dataset", action_zh="推送数据集") from None
    return str(getattr(commit, "commit_url", "") or plan.url)


def push_dataset(
    source: str | Path,
    repo_id: str,
    *,
    dry_run: bool = False,
    out: str | Path | None = None,
    private: bool = False,
    revision: str | None = None,
    license: str = "unknown",  # noqa: A002
    token: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> DatasetUploadPlan:
    """Upload the dataset folder ``source`` to the dataset repository ``repo_id`` (created if missing).

    With ``dry_run``, everything that would be uploaded is written to the new folder ``out`` and nothing else
    happens: no token is read and no network is touched.
    """
    from huggingface_hub import constants

    from lmt.hub.publish import check_repo_id, check_revision, hub_token

    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision, branch_only=True) if revision is not None else None
    if max_shard_bytes < 1024 * 1024:
        raise error("max_shard_bytes must be at least 1 MiB.", "max_shard_bytes 至少为 1 MiB。")
    if dry_run and out is None:
        raise error("a dry run writes what would be uploaded into a folder: give --out DIR.",
                    "试运行会把将要上传的文件写入一个目录：请给出 --out DIR。")
    load_dataset_dir(source)  # a bad source fails before any token is looked up
    url = f"{constants.ENDPOINT.rstrip('/')}/datasets/{repo_id}" + (f"/tree/{revision}" if revision else "")
    plan = DatasetUploadPlan(repo_id=repo_id, private=private, revision=revision, files=(),
                             commit_message=f"Upload dataset {Path(source).resolve().name} (lmt {lmt.__version__})",
                             url=url, dry_run=dry_run)
    if dry_run:
        folder = new_folder(out)
        files = stage_dataset(source, repo_id, folder, license=license, max_shard_bytes=max_shard_bytes)
        return replace(plan, files=tuple(files), out_dir=str(folder))
    write_token = hub_token(token)
    with tempfile.TemporaryDirectory(prefix="lmt-data-push-") as tmp:
        staging = Path(tmp) / "dataset"
        files = stage_dataset(source, repo_id, staging, license=license, max_shard_bytes=max_shard_bytes)
        plan = replace(plan, files=tuple(files))
        commit_url = _upload(staging, plan, write_token)
    logger.info("Pushed dataset %s to %s (%d files)", source, plan.url, len(plan.files))
    return replace(plan, commit_url=commit_url)
