"""lmt hub push: the upload plan, what is excluded, checks before any network call, the staged copy, tokens."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmt.cli import main
from lmt.errors import InvalidInputError, LmtError
from lmt.hub import check_revision, push_run
from tests.hub.conftest import tree_digest, write_run

REPO = "alice/vit-b16.digits-lora"
UPLOADED = {
    "README.md", "adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json", "lmt_run.json",
    "train_config.yaml", "metrics.jsonl", "plots/loss.png",
}


class FakeHub:
    """Stands in for the Hub: records each HfApi call's arguments and, at upload time, the staged folder's files."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.staged: dict[str, bytes] = {}
        self.staging: Path | None = None

    def named(self, name: str) -> list[dict]:
        return [options for call, options in self.calls if call == name]


class FakeApi:
    hub: FakeHub

    def __init__(self, token=None, **kwargs) -> None:
        self.hub.calls.append(("HfApi", {"token": token, **kwargs}))

    def create_repo(self, repo_id, **options):
        self.hub.calls.append(("create_repo", {"repo_id": repo_id, **options}))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **options):
        self.hub.calls.append(("create_branch", {"repo_id": repo_id, **options}))

    def upload_folder(self, **options):
        self.hub.calls.append(("upload_folder", options))
        self.hub.staging = Path(options["folder_path"])
        self.hub.staged = tree_digest(self.hub.staging)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{options['repo_id']}/commit/{'c' * 40}")


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    import huggingface_hub

    hub = FakeHub()
    monkeypatch.setattr(FakeApi, "hub", hub, raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return hub


def _add_clutter(run: Path) -> None:
    """What a run folder may hold that must never be uploaded."""
    (run / ".DS_Store").write_bytes(b"x")
    (run / ".cache").mkdir()
    (run / ".cache" / "state").write_text("x")
    (run / "adapter_model.safetensors.tmp").write_bytes(b"partial")
    (run / "plots" / "loss.png~").write_bytes(b"x")
    (run / "secret-link").symlink_to(run / "lmt_run.json")


# ---- the plan ----------------------------------------------------------------------------------------------------
def test_dry_run_plans_the_upload_and_leaves_the_run_alone(run_dir, fake_hub):
    _add_clutter(run_dir)
    before = tree_digest(run_dir)
    plan = push_run(run_dir, REPO, private=True, revision="v1", dry_run=True)
    assert {path for path, _ in plan.files} == UPLOADED
    for path, size in plan.files:
        assert size == (run_dir / path).stat().st_size  # the base model is recorded: nothing is rewritten
    assert set(plan.excluded) == {
        ".DS_Store", ".cache/", "adapter_model.safetensors.tmp", "checkpoints/", "plots/loss.png~", "secret-link",
    }
    assert (plan.repo_id, plan.private, plan.revision, plan.dry_run) == (REPO, True, "v1", True)
    assert plan.base_model == "google/vit-base-patch16-224"
    assert plan.url == f"https://huggingface.co/{REPO}/tree/v1"
    assert "image-classification lora" in plan.commit_message and run_dir.name in plan.commit_message
    document = json.loads(json.dumps(plan.to_dict()))
    assert document["total_bytes"] == sum(f["bytes"] for f in document["files"]) and document["commit_url"] is None
    assert fake_hub.calls == [], "a dry run must not touch the Hub"
    assert tree_digest(run_dir) == before


def test_cli_dry_run_prints_the_plan(run_dir, fake_hub, capsys):
    assert main(["hub", "push", str(run_dir), "--repo", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "adapter_model.safetensors" in out and "checkpoints/" in out and "Nothing was sent" in out
    assert main(["hub", "push", str(run_dir), "--repo", REPO, "--dry-run", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["repo_id"] == REPO and document["dry_run"] is True
    assert "checkpoints/step-000040/optimizer.pt" not in {f["path"] for f in document["files"]}


# ---- checks before any network call ------------------------------------------------------------------------------
@pytest.mark.parametrize("repo", ["alice", "alice/bob/carol", "../alice/x", "alice/x y", "alice/a--b", "a/" + "x" * 120, ""])
def test_bad_repo_ids_are_refused(run_dir, fake_hub, repo):
    with pytest.raises(InvalidInputError) as info:
        push_run(run_dir, repo, dry_run=True)
    assert "--repo" in str(info.value) and "仓库" in info.value.message_zh


@pytest.mark.parametrize("revision", ["../main", "v 1", "-rf", "a" * 101, "v1.lock", "feature//x", "a" * 40, ""])
def test_bad_push_revisions_are_refused(run_dir, fake_hub, revision):
    with pytest.raises(InvalidInputError) as info:
        push_run(run_dir, REPO, revision=revision, dry_run=True)
    assert "revision" in str(info.value) or "commit" in str(info.value)
    assert "版本" in info.value.message_zh or "提交" in info.value.message_zh


def test_revision_names():
    for good in ("main", "v1", "v1.0", "refs/pr/3", "feature/new-head", "a" * 40):
        assert check_revision(good) == good
    with pytest.raises(InvalidInputError):
        check_revision("a" * 40, branch_only=True)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda run: (run / "README.md").unlink(), "README.md"),
        (lambda run: (run / "README.md").write_text("---\nbase_model: [unclosed\n---\n# card\n"), "does not parse"),
        (lambda run: (run / "README.md").write_text("# a card without metadata\n"), "no metadata"),
        (lambda run: (run / "adapter_model.safetensors").unlink(), "no weights"),
        (lambda run: (run / "lmt_run.json").unlink(), "lmt_run.json"),
        (lambda run: (run / "lmt_run.json").write_text("{not json"), "lmt_run.json"),
        (lambda run: (run / "lmt_run.json").write_text("[1, 2]"), "JSON object"),
    ],
)
def test_incomplete_run_folders_are_refused(run_dir, fake_hub, damage, expected):
    damage(run_dir)
    with pytest.raises(InvalidInputError) as info:
        push_run(run_dir, REPO)  # not a dry run: the check still comes before any Hub call
    assert expected in str(info.value)
    assert info.value.message_zh != info.value.message
    assert fake_hub.calls == []


def test_a_run_without_a_hub_base_model_needs_one(tmp_path, fake_hub, capsys):
    run = write_run(tmp_path / "tiny-run", base_model=None)
    with pytest.raises(InvalidInputError) as info:
        push_run(run, REPO, dry_run=True)
    assert "--base-model org/name" in str(info.value) and "--base-model org/name" in info.value.message_zh
    assert main(["hub", "push", str(run), "--repo", REPO, "--dry-run"]) == 2
    assert "--base-model org/name" in capsys.readouterr().err
    for bad in ("./local-folder", str(run), "not-a-hub-id"):
        with pytest.raises(InvalidInputError, match="--base-model must be a Hub id"):
            push_run(run, REPO, base_model=bad, dry_run=True)


# ---- the push ----------------------------------------------------------------------------------------------------
def test_push_sets_the_base_model_in_the_uploaded_copy_only(tmp_path, fake_hub, monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_TOKEN", "hf_" + secrets.token_hex(16))
    run = write_run(tmp_path / "tiny-run", base_model=None)
    _add_clutter(run)
    before = tree_digest(run)
    plan = push_run(run, REPO, private=True, revision="v1", base_model="facebook/some-base")
    assert tree_digest(run) == before, "the run folder itself is never modified"
    assert set(fake_hub.staged) == UPLOADED
    assert ModelCard(fake_hub.staged["README.md"].decode()).data.base_model == "facebook/some-base"
    assert json.loads(fake_hub.staged["adapter_config.json"])["base_model_name_or_path"] == "facebook/some-base"
    assert json.loads(fake_hub.staged["lmt_run.json"])["base_model"] == "facebook/some-base"
    assert fake_hub.staged["adapter_model.safetensors"] == before["adapter_model.safetensors"]
    assert dict(plan.files) == {path: len(content) for path, content in fake_hub.staged.items()}
    assert not fake_hub.staging.exists(), "the staging folder is removed after the upload"

    assert fake_hub.named("create_repo") == [{"repo_id": REPO, "private": True, "exist_ok": True}]
    assert fake_hub.named("create_branch") == [{"repo_id": REPO, "branch": "v1", "exist_ok": True}]
    (upload,) = fake_hub.named("upload_folder")
    assert upload["repo_id"] == REPO and upload["revision"] == "v1" and upload["commit_message"] == plan.commit_message
    assert plan.commit_url.endswith("/commit/" + "c" * 40) and plan.dry_run is False


@pytest.mark.parametrize("revision", [None, "main"])
def test_push_to_main_creates_no_branch(run_dir, fake_hub, revision):
    push_run(run_dir, REPO, revision=revision, token="hf_" + secrets.token_hex(16))
    assert fake_hub.named("create_branch") == []
    assert fake_hub.named("create_repo")[0]["private"] is False
    assert fake_hub.named("upload_folder")[0]["revision"] == revision


def test_the_token_is_never_printed_logged_or_written(run_dir, fake_hub, monkeypatch, capsys, caplog):
    token = "hf_" + secrets.token_hex(20)
    monkeypatch.setenv("HF_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    before = tree_digest(run_dir)
    outputs = []
    for extra in (["--dry-run"], ["--dry-run", "--json"], ["--revision", "v2"], ["--json", "--private"]):
        assert main(["-v", "hub", "push", str(run_dir), "--repo", REPO, *extra]) == 0
        outputs.append(capsys.readouterr())
    assert [options["token"] for call, options in fake_hub.calls if call == "HfApi"] == [token, token]
    texts = [o.out for o in outputs] + [o.err for o in outputs] + [caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    assert all(token not in text for text in texts)
    assert "Uploaded" in outputs[2].out
    written = {**tree_digest(run_dir), **{f"staged/{k}": v for k, v in fake_hub.staged.items()}}
    assert written and all(token.encode() not in content for content in written.values())
    assert tree_digest(run_dir) == before


def test_a_real_push_without_a_token_says_how_to_log_in(run_dir, fake_hub, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["hub", "push", str(run_dir), "--repo", REPO]) == 2
    err = capsys.readouterr().err
    assert "hf auth login" in err and "HF_TOKEN" in err and "令牌" in err and "Traceback" not in err
    assert fake_hub.calls == []


def test_hub_unreachable_is_a_clear_error(run_dir, monkeypatch):
    from huggingface_hub import constants

    token = "hf_" + secrets.token_hex(16)
    with pytest.raises(LmtError, match="HF_HUB_OFFLINE") as info:  # the tests run offline
        push_run(run_dir, REPO, token=token)
    assert token not in info.value.bilingual()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(LmtError, match="Cannot reach the Hugging Face Hub") as info:
        push_run(run_dir, REPO, token=token)
    assert "无法连接" in info.value.message_zh and token not in info.value.bilingual()


@pytest.mark.parametrize("status, expected", [(401, "hf auth login"), (403, "write access"), (500, "HTTP 500")])
def test_hub_refusals_are_explained(run_dir, fake_hub, monkeypatch, status, expected):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    response = httpx2.Response(status, request=request, json={"error": "nope"})

    def refuse(self, repo_id, **options):
        raise HfHubHTTPError("refused", response=response)

    monkeypatch.setattr(FakeApi, "create_repo", refuse)
    with pytest.raises(LmtError, match=expected):
        push_run(run_dir, REPO, token="hf_" + secrets.token_hex(16))
    assert fake_hub.named("upload_folder") == []
