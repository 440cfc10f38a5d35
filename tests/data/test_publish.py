"""lmt data push: the dry run writes exactly what a push uploads (Parquet + card), loadable offline by datasets;
the push sends that folder to a dataset repository; nothing touches the network in a dry run; the token never
lands in a file."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard

from lmt.cli import main
from lmt.data.formats import load_dataset_dir
from lmt.data.importers import import_dataset
from lmt.data.publish import push_dataset
from lmt.errors import InvalidInputError
from tests.data.format_sources import write_coco
from tests.data.synthetic import write_clean_folder
from tests.hub.conftest import tree_digest
from tests.hub.test_publish import fake_hub  # noqa: F401  (a fixture)

REPO = "alice/tiny-pets"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("push")
    write_clean_folder(root / "src" / "train", {"cat": 3, "dog": 2}, seed=0, size=20)
    write_clean_folder(root / "src" / "val", {"cat": 1, "dog": 1}, seed=1, size=20)
    import_dataset(root / "src", root / "ds")
    return root / "ds"


def test_dry_run_writes_the_upload_and_contacts_nothing(dataset_dir, tmp_path, fake_hub):  # noqa: F811
    before = tree_digest(dataset_dir)
    plan = push_dataset(dataset_dir, REPO, dry_run=True, out=tmp_path / "preview", license="cc-by-4.0")
    assert fake_hub.calls == [], "a dry run must not touch the Hub"
    assert tree_digest(dataset_dir) == before
    files = {path for path, _ in plan.files}
    assert files == {"README.md", "lmt_dataset.json", "data/train-00000-of-00001.parquet",
                     "data/validation-00000-of-00001.parquet"}
    assert plan.out_dir == str(tmp_path / "preview") and plan.dry_run and plan.commit_url is None
    assert plan.url == f"https://huggingface.co/datasets/{REPO}"
    card = DatasetCard.load(tmp_path / "preview" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["task_categories"] == ["image-classification"]
    assert data["size_categories"] == ["n<1K"] and "large-model-tutorial" in data["tags"]
    assert data["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                {"split": "validation", "path": "data/validation-*"}]
    assert "| 0 | cat | 3 | 1 |" in card.text and f'load_dataset("{REPO}")' in card.text
    # what the Hub would serve: datasets rebuilds the same typed dataset from the staged files alone
    loaded = datasets.load_dataset(str(tmp_path / "preview"), cache_dir=str(tmp_path / "cache"))
    original = load_dataset_dir(dataset_dir)
    for split in ("train", "validation"):
        assert loaded[split].features == original[split].features
        assert loaded[split]["label"] == original[split]["label"]
        cells = loaded[split].cast_column("image", datasets.Image(decode=False))["image"]
        originals = original[split].cast_column("image", datasets.Image(decode=False))["image"]
        assert [c["bytes"] for c in cells] == [c["bytes"] for c in originals]


def test_push_uploads_the_same_files_to_a_dataset_repo(dataset_dir, tmp_path, fake_hub, monkeypatch):  # noqa: F811
    token = "hf_" + secrets.token_hex(12)
    monkeypatch.setenv("HF_TOKEN", token)
    preview = push_dataset(dataset_dir, REPO, dry_run=True, out=tmp_path / "preview")
    plan = push_dataset(dataset_dir, REPO, private=True, revision="v1")
    assert fake_hub.named("HfApi") == [{"token": token}]
    assert fake_hub.named("create_repo")[0]["repo_type"] == "dataset" and fake_hub.named("create_repo")[0]["private"]
    assert fake_hub.named("create_branch")[0] == {"repo_id": REPO, "branch": "v1", "repo_type": "dataset",
                                                  "exist_ok": True}
    upload = fake_hub.named("upload_folder")[0]
    assert upload["repo_type"] == "dataset" and upload["revision"] == "v1"
    assert fake_hub.staged == tree_digest(tmp_path / "preview")  # the dry run showed exactly this
    assert plan.files == preview.files and plan.commit_url.endswith("c" * 40)
    assert all(token.encode() not in (tmp_path / "preview" / path).read_bytes() for path, _ in preview.files)
    assert token not in json.dumps(plan.to_dict())


def test_checks_come_before_any_network_call(dataset_dir, tmp_path, fake_hub, monkeypatch):  # noqa: F811
    with pytest.raises(InvalidInputError, match="not a Hub repository id"):
        push_dataset(dataset_dir, "no-slash", dry_run=True, out=tmp_path / "a")
    with pytest.raises(InvalidInputError, match="--out"):
        push_dataset(dataset_dir, REPO, dry_run=True)
    with pytest.raises(InvalidInputError, match="not a dataset folder"):
        push_dataset(tmp_path, REPO)
    assert fake_hub.calls == []


def test_detection_card_and_shards(tmp_path, fake_hub):  # noqa: F811
    import_dataset(write_coco(tmp_path / "coco"), tmp_path / "ds")
    plan = push_dataset(tmp_path / "ds", REPO, dry_run=True, out=tmp_path / "preview")
    card = DatasetCard.load(tmp_path / "preview" / "README.md")
    assert card.data.to_dict()["task_categories"] == ["object-detection"]
    assert "| 2 | car | 2 |" in card.text and "coco" in card.text
    meta = json.loads((tmp_path / "preview" / "lmt_dataset.json").read_text())
    assert meta["category_ids"] == [1, 3, 7, 9]
    assert "data/train-00000-of-00001.parquet" in {path for path, _ in plan.files}


def test_cli_help_and_dry_run(dataset_dir, tmp_path, capsys, fake_hub):  # noqa: F811
    with pytest.raises(SystemExit) as caught:
        main(["data", "push", "--help"])
    assert caught.value.code == 0 and "--dry-run" in capsys.readouterr().out
    assert main(["data", "push", str(dataset_dir), "--repo", REPO, "--dry-run", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "Nothing was sent" in out and "README.md" in out and fake_hub.calls == []
    assert main(["data", "push", str(dataset_dir), "--repo", REPO, "--dry-run"]) == 2
