"""Bundle a Space into a self-contained folder, and deploy that folder to Hugging Face Spaces.

A bundle needs nothing from our repository: the Space's ``app.py``, its ``README.md`` (front matter as is), its
``examples/``, the SDK copied in as ``lmt/`` (``python app.py`` finds it beside the app), and a
``requirements.txt`` pinned to the versions installed here: the Space's own requirements plus the SDK's runtime
dependencies. gradio is not added: Spaces install it from the README's ``sdk_version``.

>>> from lmt.bundle import bundle_space, bundle_files
>>> folder = bundle_space("clip", "build/clip-space")  # doctest: +SKIP
>>> bundle_files(folder)[:2]  # doctest: +SKIP
[('README.md', 1234), ('app.py', 5678)]

Nothing here imports gradio, so ``lmt spaces bundle`` runs without it; the Hub client is imported only to deploy.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import lmt
from lmt.errors import InvalidInputError, LmtError
from lmt.hub.publish import hub_error, hub_token
from lmt.spaces_paths import list_spaces, spaces_root

logger = logging.getLogger(__name__)

#: What a bundle copies from ``spaces/<name>/``; ``requirements.txt`` is written anew, pinned.
SPACE_FILES = ("app.py", "README.md")
SPACE_FOLDERS = ("examples",)
DISTRIBUTION = "large-model-tutorial"
_NOT_VENDORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


# ---- requirements ----------------------------------------------------------------------------------------------
def sdk_requirements() -> list[str]:
    """The SDK's runtime dependencies: ``pyproject.toml``'s ``dependencies`` in a checkout, else the installed
    distribution's metadata (its requirements without an ``extra`` marker)."""
    pyproject = Path(lmt.__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        with pyproject.open("rb") as file:
            project = tomllib.load(file).get("project", {})
        if project.get("name") == DISTRIBUTION:
            return list(project.get("dependencies", []))
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise LmtError(
            "Cannot find the SDK's dependencies: no pyproject.toml beside it and 'large-model-tutorial' is not "
            "installed. Install it with: pip install -e .",
            "找不到 SDK 的依赖：旁边没有 pyproject.toml，也没有安装 'large-model-tutorial'。请运行：pip install -e .",
        ) from err
    return [line for line in requires if "extra" not in str(Requirement(line).marker or "")]


def _installed_version(name: str) -> str | None:
    """The installed version without a local label (``2.13.0+cpu`` -> ``2.13.0``: PyPI has no ``+cpu``)."""
    try:
        return Version(importlib.metadata.version(name)).public
    except importlib.metadata.PackageNotFoundError:
        return None


def pin_requirements(lines: list[str]) -> list[str]:
    """``name[extras]==installed ; marker`` for each requirement line, in order, each package once."""
    pinned: dict[str, str] = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement as err:
            raise InvalidInputError(
                f"Cannot read the requirement '{text[:80]}': write one package per line, e.g. 'torch==2.13.0'.",
                f"无法解析依赖 '{text[:80]}'：每行写一个包，例如 'torch==2.13.0'。",
            ) from err
        key = canonicalize_name(requirement.name)
        if key in pinned:
            continue
        version = _installed_version(requirement.name)
        if version is None:
            raise LmtError(
                f"'{requirement.name}' is required by the Space but not installed here, so it cannot be pinned. "
                f"Install it first: pip install {requirement.name}",
                f"Space 需要 '{requirement.name}'，但本机未安装，无法锁定版本。请先安装：pip install {requirement.name}",
            )
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        marker = f" ; {requirement.marker}" if requirement.marker else ""
        pinned[key] = f"{requirement.name}{extras}=={version}{marker}"
    return list(pinned.values())


def bundle_requirements(space_dir: Path) -> str:
    """The bundle's ``requirements.txt``: the Space's own lines, then the SDK's dependencies, all pinned."""
    own = space_dir / "requirements.txt"
    lines = own.read_text(encoding="utf-8").splitlines() if own.is_file() else []
    pins = pin_requirements(lines + sdk_requirements())
    header = (
        f"# Written by `lmt spaces bundle` (lmt {lmt.__version__}): the Space's requirements and the vendored SDK's\n"
        "# runtime dependencies, pinned to the versions installed when it was bundled. gradio comes from README's sdk_version.\n"
    )
    return header + "\n".join(pins) + "\n"


# ---- bundling --------------------------------------------------------------------------------------------------
def space_dir(name: str) -> Path:
    """``spaces/<name>/`` of a Space that exists (names only: no paths, no parent folders)."""
    if not isinstance(name, str) or name not in list_spaces():
        known = ", ".join(list_spaces()) or "none found"
        raise InvalidInputError(
            f"No Space named '{str(name)[:80]}' under {spaces_root()}. Spaces: {known}.",
            f"在 {spaces_root()} 下没有名为 '{str(name)[:80]}' 的 Space。可用：{known}。",
        )
    folder = spaces_root() / name
    if not (folder / "README.md").is_file():
        raise InvalidInputError(
            f"The Space '{name}' has no README.md; Hugging Face reads a Space's settings from its front matter. "
            f"Write {folder / 'README.md'} first.",
            f"Space '{name}' 缺少 README.md；Hugging Face 从其 front matter 读取 Space 设置。请先编写 {folder / 'README.md'}。",
        )
    return folder


def _write_bundle(source: Path, target: Path) -> None:
    for file_name in SPACE_FILES:
        shutil.copy2(source / file_name, target / file_name)
    for folder_name in SPACE_FOLDERS:
        if (source / folder_name).is_dir():
            shutil.copytree(source / folder_name, target / folder_name, ignore=_NOT_VENDORED)
    shutil.copytree(Path(lmt.__file__).resolve().parent, target / "lmt", ignore=_NOT_VENDORED)
    (target / "requirements.txt").write_text(bundle_requirements(source), encoding="utf-8")


def _check_destination(dest: Path, source: Path, force: bool) -> None:
    sdk = Path(lmt.__file__).resolve().parent
    for protected in (source.resolve(), sdk):
        if dest == protected or dest in protected.parents or protected in dest.parents:
            raise InvalidInputError(
                f"Bundle into a folder outside {protected}, not {dest}: it would overwrite or copy into itself.",
                f"请打包到 {protected} 之外的目录，而不是 {dest}：否则会覆盖或复制到自身。",
            )
    if dest.exists() and not dest.is_dir():
        raise InvalidInputError(f"{dest} is a file; give a folder.", f"{dest} 是文件，请给出目录。")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise InvalidInputError(
            f"{dest} is not empty. Choose an empty folder, or add --force to replace its contents.",
            f"{dest} 不是空目录。请换一个空目录，或加 --force 替换其内容。",
        )


def bundle_space(name: str, dest: str | Path, *, force: bool = False) -> Path:
    """Write the self-contained folder of Space ``name`` at ``dest``; returns ``dest``.

    Built in a temporary folder beside ``dest`` and renamed into place, so ``dest`` is never left half-written.
    A non-empty ``dest`` is replaced only with ``force``.
    """
    source = space_dir(name)
    dest = Path(dest).expanduser().resolve()
    _check_destination(dest, source, force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    old = dest.parent / f"{staging.name}-old"
    try:
        _write_bundle(source, staging)
        staging.chmod(0o755)  # mkdtemp's 0700 would make the Space folder private to its builder
        if dest.exists():
            dest.rename(old)
        try:
            staging.rename(dest)
        except OSError:
            if old.exists():
                old.rename(dest)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    logger.info("Bundled the '%s' Space into %s", name, dest)
    return dest


def bundle_files(folder: str | Path) -> list[tuple[str, int]]:
    """``(relative path, size in bytes)`` of every file under ``folder``, sorted: what an upload sends."""
    root = Path(folder)
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*") if p.is_file())


# ---- deploying -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Deployment:
    """What ``deploy_space`` sent (or, for a dry run, would send). ``url`` is None for a dry run."""

    repo_id: str
    files: tuple[tuple[str, int], ...]
    url: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def _check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = ""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise InvalidInputError(
            "Give the Space repository as --repo <user or org>/<space name>, e.g. --repo alice/lmt-clip.",
            "请以 --repo <用户或组织>/<Space 名> 的形式给出仓库，例如 --repo alice/lmt-clip。",
        )
    return repo_id


def deploy_space(name: str, repo_id: str, *, private: bool = False, dry_run: bool = False) -> Deployment:
    """Bundle Space ``name`` and upload it to the Space repository ``repo_id`` (created if missing).

    The token comes from ``HF_TOKEN`` or ``hf auth login``; it is handed to the Hub client and nowhere else.
    ``dry_run`` bundles and lists the files without contacting the Hub.
    """
    repo_id = _check_repo_id(repo_id)
    token = None if dry_run else hub_token()
    with tempfile.TemporaryDirectory(prefix="lmt-space-") as tmp:
        folder = bundle_space(name, Path(tmp) / name)
        files = tuple(bundle_files(folder))
        if dry_run:
            return Deployment(repo_id, files)
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HTTPError

        api = HfApi(token=token)
        try:
            repo = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True, private=private)
            api.upload_folder(
                repo_id=repo_id, folder_path=folder, repo_type="space",
                commit_message=f"Deploy the {name} Space (lmt {lmt.__version__})",
            )
        except (HTTPError, OSError) as err:  # HfHubHTTPError, transport errors and offline mode are among these
            raise hub_error(err, repo_id, action="deploy", action_zh="部署") from None
    return Deployment(repo_id, files, url=str(repo))
