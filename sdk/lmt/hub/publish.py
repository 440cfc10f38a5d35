"""Push a finished training run folder to the Hugging Face Hub, and pull a model or adapter repository back.

>>> plan = push_run("runs/vit-b16_lora-r16_bs32_3ep_digits", "alice/vit-b16.digits-lora", dry_run=True)  # doctest: +SKIP
>>> [path for path, _ in plan.files][:3]  # doctest: +SKIP
['README.md', 'adapter_config.json', 'adapter_model.safetensors']
>>> folder = pull("alice/vit-b16.digits-lora", revision="v1")  # doctest: +SKIP

Everything is checked before the Hub is contacted: the repository id, the revision, the run folder (model card,
weights, ``lmt_run.json``) and the base model. The run folder is never modified: what is uploaded is a staged
copy in a temporary folder, without resume checkpoints, hidden files or temporary files. The token comes from
``token=``, ``HF_TOKEN`` or ``hf auth login`` and goes to the Hub client only: it is never printed, logged or
written into a file.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lmt
from lmt.errors import InvalidInputError, LmtError, WeightsUnavailableError

logger = logging.getLogger(__name__)

RUN_FILE = "lmt_run.json"
CARD_FILE = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
#: Top-level folders of a run that are never uploaded: resume checkpoints are large and private to training.
EXCLUDED_FOLDERS = ("checkpoints",)
TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".swp", ".swo", ".lock", ".pyc", "~")
TEMP_NAMES = ("__pycache__",)
#: A git ref name as the Hub accepts it: segments of letters, digits, '.', '_' and '-', joined by '/'.
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
MAX_REVISION_CHARS = 100


# ---- validation ------------------------------------------------------------------------------------------------
def check_repo_id(repo_id: Any, *, option: str = "--repo") -> str:
    """``user/name`` as the Hub accepts it, or a bilingual error naming ``option``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    valid = isinstance(repo_id, str) and repo_id.count("/") == 1 and not repo_id.startswith((".", "/", "~"))
    if valid:
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            valid = False
    if not valid:
        shown = str(repo_id)[:100]
        raise InvalidInputError(
            f"'{shown}' is not a Hub repository id. Write {option} <user or org>/<name>, e.g. "
            f"{option} alice/vit-b16.digits-lora (letters, digits, '-', '_', '.'; no '--' or '..').",
            f"'{shown}' 不是 Hub 仓库 id。请写成 {option} <用户或组织>/<名称>，例如 {option} alice/vit-b16.digits-lora"
            "（字母、数字、'-'、'_'、'.'；不能含 '--' 或 '..'）。",
        )
    return repo_id


def check_revision(revision: Any, *, branch_only: bool = False) -> str:
    """A Hub revision: a branch or tag name (``main``, ``v1``, ``refs/pr/3``) or a 40-hex commit.

    With ``branch_only`` (what a push writes to), a commit is refused: one cannot upload onto a commit.
    """
    text = revision if isinstance(revision, str) else ""
    valid = (
        0 < len(text) <= MAX_REVISION_CHARS
        and _REVISION.fullmatch(text) is not None
        and ".." not in text
        and not text.endswith((".", ".lock"))
    )
    if valid and branch_only and _COMMIT.fullmatch(text):
        raise InvalidInputError(
            f"'{text}' is a commit; a push writes to a branch. Give a branch name such as --revision v1.",
            f"'{text}' 是一个提交；推送只能写入分支。请给出分支名，例如 --revision v1。",
        )
    if not valid:
        shown = str(revision)[:60] + ("..." if len(str(revision)) > 60 else "")
        kinds = "a branch name" if branch_only else "a branch, a tag or a 40-character commit hash"
        kinds_zh = "分支名" if branch_only else "分支、标签或 40 位提交哈希"
        raise InvalidInputError(
            f"'{shown}' is not a valid revision: give {kinds}, up to {MAX_REVISION_CHARS} characters of letters, "
            "digits, '.', '_', '-' and '/' (no spaces, no '..'), e.g. main or v1.",
            f"'{shown}' 不是有效的版本：请给出{kinds_zh}，最多 {MAX_REVISION_CHARS} 个字符，只能含字母、数字、"
            "'.'、'_'、'-' 和 '/'（不能有空格或 '..'），例如 main 或 v1。",
        )
    return text


def _is_hub_id(name: Any) -> bool:
    if not isinstance(name, str) or Path(name).expanduser().exists():
        return False
    try:
        check_repo_id(name)
    except InvalidInputError:
        return False
    return True


def _read_run(run: Path) -> dict[str, Any]:
    path = run / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidInputError(
            f"{path} is missing or unreadable ({type(err).__name__}). A run folder written by `lmt train` has one; "
            "point at the run folder itself, not at a checkpoint inside it.",
            f"{path} 缺失或无法读取（{type(err).__name__}）。`lmt train` 写出的运行目录都有该文件；"
            "请指向运行目录本身，而不是其中的检查点。",
        ) from None
    if not isinstance(info, dict):
        raise InvalidInputError(f"{path} must hold a JSON object.", f"{path} 必须是一个 JSON 对象。")
    return info


def _read_card(run: Path) -> Any:
    import yaml
    from huggingface_hub import ModelCard

    path = run / CARD_FILE
    if not path.is_file():
        raise InvalidInputError(
            f"{path} is missing: the Hub shows the model card from README.md. Render one with "
            "lmt.hub.cards.render_model_card and save it there.",
            f"缺少 {path}：Hub 以 README.md 作为模型卡。请用 lmt.hub.cards.render_model_card 生成并保存。",
        )
    try:
        card = ModelCard.load(path)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise InvalidInputError(
            f"The model card {path} does not parse ({type(err).__name__}): fix its YAML front matter or render it "
            "again with lmt.hub.cards.render_model_card.",
            f"模型卡 {path} 无法解析（{type(err).__name__}）：请修正其 YAML front matter，或用 "
            "lmt.hub.cards.render_model_card 重新生成。",
        ) from None
    if not card.data.to_dict():
        raise InvalidInputError(
            f"The model card {path} has no metadata block (--- ... --- at the top). Render it with "
            "lmt.hub.cards.render_model_card.",
            f"模型卡 {path} 缺少元数据块（开头的 --- ... ---）。请用 lmt.hub.cards.render_model_card 生成。",
        )
    return card


def _check_weights(run: Path, library_name: Any) -> None:
    has_adapter = (run / ADAPTER_CONFIG).is_file() and (run / "adapter_model.safetensors").is_file()
    has_model = (run / "config.json").is_file() and (
        (run / "model.safetensors").is_file() or (run / "model.safetensors.index.json").is_file()
    )
    if library_name == "peft" and not has_adapter:
        missing = "adapter_config.json + adapter_model.safetensors"
    elif library_name == "transformers" and not has_model:
        missing = "config.json + model.safetensors"
    elif not (has_adapter or has_model):
        missing = "adapter_config.json + adapter_model.safetensors (LoRA) or config.json + model.safetensors"
    else:
        return
    raise InvalidInputError(
        f"The run folder {run} has no weights to publish: {missing} expected. Was training finished? Only "
        "safetensors are published.",
        f"运行目录 {run} 中没有可发布的权重：应有 {missing}。训练是否已完成？只发布 safetensors 格式。",
    )


def _base_model(info: dict[str, Any], base_model: str | None) -> str:
    recorded = info.get("base_model")
    if base_model is not None:
        if not _is_hub_id(base_model):
            raise InvalidInputError(
                f"--base-model must be a Hub id such as google/vit-base-patch16-224, not {str(base_model)[:100]!r}.",
                f"--base-model 必须是 Hub id（如 google/vit-base-patch16-224），而不是 {str(base_model)[:100]!r}。",
            )
        if recorded and recorded != base_model:
            logger.warning("Publishing with base model %s instead of the recorded %s", base_model, recorded)
        return base_model
    if not _is_hub_id(recorded):
        raise InvalidInputError(
            "The run was trained from a local folder or a tiny variant, so lmt_run.json names no Hub base model, and "
            "the Hub needs one to show and load the model. Name the Hub model the weights match with "
            "--base-model org/name (e.g. --base-model google/vit-base-patch16-224).",
            "该运行是从本地目录或 tiny 变体训练的，lmt_run.json 中没有 Hub 上的基础模型，而 Hub 需要它来展示和加载模型。"
            "请用 --base-model org/name 指明权重对应的 Hub 模型（例如 --base-model google/vit-base-patch16-224）。",
        )
    return recorded


# ---- what is uploaded ------------------------------------------------------------------------------------------
def _excluded_reason(relative: Path, path: Path) -> str | None:
    parts = relative.parts
    if parts[0] in EXCLUDED_FOLDERS:
        return "checkpoint"
    if any(part.startswith(".") for part in parts):
        return "hidden"
    if any(part in TEMP_NAMES or part.endswith(TEMP_SUFFIXES) for part in parts):
        return "temporary"
    if path.is_symlink():  # a link could point anywhere, the token file included
        return "symlink"
    return None


def _collect(run: Path) -> tuple[list[Path], list[str]]:
    """(files to upload, excluded paths). An excluded folder is listed once, as ``name/``."""
    files: list[Path] = []
    excluded: list[str] = []
    pending = [run]
    while pending:
        folder = pending.pop()
        for path in sorted(folder.iterdir()):
            relative = path.relative_to(run)
            if _excluded_reason(relative, path) is not None:
                excluded.append(relative.as_posix() + ("/" if path.is_dir() and not path.is_symlink() else ""))
            elif path.is_dir():
                pending.append(path)
            elif path.is_file():
                files.append(relative)
    return sorted(files, key=Path.as_posix), sorted(excluded)


def _rewritten(run: Path, card: Any, info: dict[str, Any], base_model: str, repo_id: str) -> dict[str, bytes]:
    """The files whose uploaded copy differs from the run folder: those that must name the Hub base model and
    the repository (a card rendered at training time names neither)."""
    from lmt.hub.cards import publish_names

    changed: dict[str, bytes] = {}
    original = str(card)
    if card.data.base_model != base_model:
        card.data.base_model = base_model
    text = publish_names(str(card), run.name, repo_id, base_model)
    if text != original:
        changed[CARD_FILE] = text.encode("utf-8")
    if info.get("base_model") != base_model:
        changed[RUN_FILE] = (json.dumps({**info, "base_model": base_model}, ensure_ascii=False, indent=2) + "\n").encode()
    adapter_config = run / ADAPTER_CONFIG
    if adapter_config.is_file():
        try:
            config = json.loads(adapter_config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidInputError(
                f"{adapter_config} is unreadable ({type(err).__name__}); save the adapter again with save_pretrained.",
                f"{adapter_config} 无法读取（{type(err).__name__}）；请用 save_pretrained 重新保存适配器。",
            ) from None
        if config.get("base_model_name_or_path") != base_model:
            config["base_model_name_or_path"] = base_model
            changed[ADAPTER_CONFIG] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return changed


def _stage(run: Path, files: list[Path], changed: dict[str, bytes], staging: Path) -> None:
    for relative in files:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        content = changed.get(relative.as_posix())
        if content is None:
            shutil.copyfile(run / relative, target)
        else:
            target.write_bytes(content)


@dataclass(frozen=True)
class UploadPlan:
    """What ``push_run`` uploaded (or, with ``dry_run``, would upload). It never holds the token."""

    repo_id: str
    private: bool
    revision: str | None
    base_model: str
    files: tuple[tuple[str, int], ...]
    excluded: tuple[str, ...]
    commit_message: str
    url: str
    dry_run: bool
    commit_url: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "private": self.private,
            "revision": self.revision,
            "base_model": self.base_model,
            "files": [{"path": path, "bytes": size} for path, size in self.files],
            "total_bytes": self.total_bytes,
            "excluded": list(self.excluded),
            "commit_message": self.commit_message,
            "url": self.url,
            "dry_run": self.dry_run,
            "commit_url": self.commit_url,
        }


def _repo_url(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import constants

    url = f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"
    return f"{url}/tree/{revision}" if revision else url


# ---- Hub calls -------------------------------------------------------------------------------------------------
def hub_error(err: Exception, repo_id: str, *, action: str = "publish", action_zh: str = "发布") -> LmtError:
    """A bilingual error for a failed Hub call. Built from the status and the server's message, never the token."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, RevisionNotFoundError):
        return WeightsUnavailableError(
            f"'{repo_id}' has no such revision. List its branches and tags on {_repo_url(repo_id, None)}.",
            f"'{repo_id}' 没有这个版本。请在 {_repo_url(repo_id, None)} 查看它的分支和标签。",
        )
    if isinstance(err, RepositoryNotFoundError):
        return WeightsUnavailableError(
            f"The Hub has no repository '{repo_id}' that this token may read. Check the name; for a private "
            "repository log in with `hf auth login` or set HF_TOKEN.",
            f"Hub 上没有当前令牌可读取的仓库 '{repo_id}'。请检查名称；私有仓库请用 `hf auth login` 登录或设置 HF_TOKEN。",
        )
    if isinstance(err, OfflineModeIsEnabled):
        return LmtError(
            f"HF_HUB_OFFLINE is set, so the Hub cannot be reached. Unset it to {action}: unset HF_HUB_OFFLINE",
            f"已设置 HF_HUB_OFFLINE，无法连接 Hub。{action_zh}前请取消：unset HF_HUB_OFFLINE",
        )
    if isinstance(err, LocalEntryNotFoundError):
        return WeightsUnavailableError(
            f"'{repo_id}' is not in the local cache and the Hub cannot be reached (offline, or no network). "
            "Connect, or set HF_ENDPOINT to a mirror (e.g. https://hf-mirror.com), or unset HF_HUB_OFFLINE.",
            f"本地缓存中没有 '{repo_id}'，且无法连接 Hub（离线或无网络）。请联网，或把 HF_ENDPOINT 设为镜像"
            "（如 https://hf-mirror.com），或取消 HF_HUB_OFFLINE。",
        )
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        detail = (err.server_message or "").strip().splitlines()[0][:200] if err.server_message else ""
        if status == 401:
            return LmtError(
                "The Hub refused the token (401). Log in again with `hf auth login` or set a valid HF_TOKEN.",
                "Hub 拒绝了该令牌（401）。请用 `hf auth login` 重新登录，或设置有效的 HF_TOKEN。",
            )
        if status == 403:
            return LmtError(
                f"The token may not write to '{repo_id}' (403). Use a token with write access to that namespace. "
                f"{detail}".strip(),
                f"该令牌无权写入 '{repo_id}'（403）。请使用对该命名空间有写权限的令牌。{detail}".strip(),
            )
        if status == 409:
            return LmtError(
                f"'{repo_id}' conflicts with an existing repository (409), perhaps a model or dataset of that name. "
                f"Choose another --repo. {detail}".strip(),
                f"'{repo_id}' 与已有仓库冲突（409），可能是同名的模型或数据集仓库。请换一个 --repo。{detail}".strip(),
            )
        return LmtError(
            f"The Hub answered HTTP {status} for '{repo_id}'. {detail}".strip(),
            f"Hub 对 '{repo_id}' 返回了 HTTP {status}。{detail}".strip(),
        )
    return LmtError(
        "Cannot reach the Hugging Face Hub: check the network (or HF_ENDPOINT) and try again.",
        "无法连接 Hugging Face Hub：请检查网络（或 HF_ENDPOINT）后重试。",
    )


def hub_token(token: str | None = None) -> str:
    """The token to write with: ``token``, else ``HF_TOKEN`` / ``hf auth login``'s. Never printed or logged."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise LmtError(
            "No Hugging Face token found. Log in with `hf auth login`, or set HF_TOKEN to a token with write access.",
            "未找到 Hugging Face 令牌。请运行 `hf auth login` 登录，或把 HF_TOKEN 设为有写权限的令牌。",
        )
    return token


def _upload(staging: Path, plan: UploadPlan, token: str) -> str:
    """Create the repository (and branch), upload the staged folder; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(plan.repo_id, private=plan.private, exist_ok=True)
        if plan.revision and plan.revision != "main":
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=plan.repo_id, folder_path=staging, revision=plan.revision, commit_message=plan.commit_message
        )
    except (HTTPError, OSError) as err:  # HfHubHTTPError, transport errors and offline mode are among these
        raise hub_error(err, plan.repo_id) from None
    return str(getattr(commit, "commit_url", "") or plan.url)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    base_model: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
) -> UploadPlan:
    """Upload the run folder ``run_dir`` to the model repository ``repo_id`` (created if missing).

    ``revision`` names a branch (created if missing); ``base_model`` names the Hub model the weights were trained
    from when ``lmt_run.json`` records none. ``dry_run`` checks everything and returns the plan; nothing is sent.
    """
    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision, branch_only=True) if revision is not None else None
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise InvalidInputError(
            f"{run} is not a folder. Give the run folder that `lmt train` wrote (it holds lmt_run.json).",
            f"{run} 不是目录。请给出 `lmt train` 写出的运行目录（其中有 lmt_run.json）。",
        )
    info = _read_run(run)
    card = _read_card(run)
    _check_weights(run, info.get("library_name"))
    base = _base_model(info, base_model)
    files, excluded = _collect(run)
    changed = _rewritten(run, card, info, base, repo_id)
    sizes = tuple(
        (path.as_posix(), len(changed[path.as_posix()]) if path.as_posix() in changed else (run / path).stat().st_size)
        for path in files
    )
    what = " ".join(str(info[key]) for key in ("task", "method") if info.get(key))
    plan = UploadPlan(
        repo_id=repo_id, private=private, revision=revision, base_model=base, files=sizes, excluded=tuple(excluded),
        commit_message=f"Upload {what + ' ' if what else ''}run {run.resolve().name} (lmt {lmt.__version__})",
        url=_repo_url(repo_id, revision), dry_run=dry_run,
    )
    if dry_run:
        return plan
    write_token = hub_token(token)
    with tempfile.TemporaryDirectory(prefix="lmt-push-") as tmp:
        staging = Path(tmp) / run.resolve().name
        _stage(run, files, changed, staging)
        commit_url = _upload(staging, plan, write_token)
    logger.info("Pushed %s to %s (%d files)", run, plan.url, len(plan.files))
    return replace(plan, commit_url=commit_url)


def pull(repo_id: str, *, revision: str | None = None, local_dir: str | Path | None = None) -> Path:
    """Download the repository ``repo_id`` at ``revision`` (branch, tag or commit); returns its folder.

    The files land in the Hugging Face cache (offline, a cached revision is returned as is); with ``local_dir``
    they are also copied there, as plain files.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HTTPError

    repo_id = check_repo_id(repo_id, option="lmt hub pull")
    revision = check_revision(revision) if revision is not None else None
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision))
    except (HTTPError, OSError) as err:
        raise hub_error(err, repo_id) from None
    if local_dir is None:
        return snapshot
    target = Path(local_dir).expanduser()
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{target} is a file; give a folder.", f"{target} 是文件，请给出目录。")
    shutil.copytree(snapshot, target, dirs_exist_ok=True)  # follows the cache's symlinks: plain files land there
    logger.info("Pulled %s@%s into %s", repo_id, revision or "main", target)
    return target
