"""`lmt spaces bundle|deploy`: a self-contained Space folder, pinned requirements, no secrets, no Hub on a dry run.

The slow test installs a bundle into a fresh virtualenv, starts ``python app.py --tiny`` and asks it to classify.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lmt.bundle import bundle_files, sdk_requirements
from lmt.cli import main
from lmt.spaces_paths import spaces_root

REPO = Path(__file__).resolve().parents[2]
SECRET = "hf_secretDoNotLeak0123456789"
SPACE = "clip"


def _requirements(folder: Path) -> dict[str, Requirement]:
    lines = (folder / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in requirements}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, str]:
    """The clip Space bundled through the CLI with a fake token in the environment; (folder, printed output)."""
    folder = tmp_path_factory.mktemp("bundle") / "clip-space"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.setenv("HF_TOKEN", SECRET)
        code = main(["spaces", "bundle", SPACE, str(folder)])
    assert code == 0, err.getvalue()
    return folder, out.getvalue() + err.getvalue()


def test_bundle_holds_the_space_and_the_sdk(bundle):
    folder, output = bundle
    source = spaces_root() / SPACE
    assert (folder / "app.py").read_bytes() == (source / "app.py").read_bytes()
    assert (folder / "README.md").read_bytes() == (source / "README.md").read_bytes()  # front matter as is
    assert (folder / "README.md").read_text(encoding="utf-8").startswith("---\n")
    examples = sorted(p.name for p in (source / "examples").iterdir())
    assert examples and sorted(p.name for p in (folder / "examples").iterdir()) == examples
    sdk = REPO / "sdk" / "lmt"
    vendored = {p.relative_to(sdk).as_posix() for p in sdk.rglob("*.py") if "__pycache__" not in p.parts}
    assert {p.relative_to(folder / "lmt").as_posix() for p in (folder / "lmt").rglob("*.py")} == vendored
    assert not list(folder.rglob("__pycache__")) and not list(folder.rglob("*.pyc"))
    assert f"{len(bundle_files(folder))} files" in output


def test_requirements_are_pinned_to_what_is_installed(bundle):
    folder, _ = bundle
    pins = _requirements(folder)
    own = spaces_root() / SPACE / "requirements.txt"
    wanted = [Requirement(r) for r in sdk_requirements()]
    if own.is_file():
        wanted += [Requirement(line) for line in own.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert {canonicalize_name(r.name) for r in wanted} <= set(pins)
    for name, requirement in pins.items():
        (spec,) = requirement.specifier
        assert spec.operator == "==", requirement
        assert spec.version == Version(importlib.metadata.version(name)).public, requirement
    assert "gradio" not in pins  # Spaces install gradio from README's sdk_version


def test_no_repository_path_and_no_token_in_the_bundle(bundle):
    folder, output = bundle
    needles = [str(REPO).encode(), SECRET.encode()]
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), path
    assert SECRET not in output and str(REPO) not in output.replace(str(folder), "")


def test_bundle_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["spaces", "bundle", SPACE, str(target)]) == 2
    err = capsys.readouterr().err
    assert "不是空目录" in err and "--force" in err and "Traceback" not in err
    assert (target / "keep.txt").read_text() == "mine"
    assert main(["spaces", "bundle", SPACE, str(target), "--force"]) == 0
    assert not (target / "keep.txt").exists() and (target / "app.py").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_bundle_refuses_to_write_into_its_own_sources(capsys):
    for target in (spaces_root() / SPACE / "out", REPO / "sdk" / "lmt", REPO):
        assert main(["spaces", "bundle", SPACE, str(target), "--force"]) == 2
        assert "请打包到" in capsys.readouterr().err
    assert not (spaces_root() / SPACE / "out").exists() and (REPO / "sdk" / "lmt" / "__init__.py").is_file()


def test_bundle_refuses_names_that_are_not_spaces(tmp_path, capsys):
    for name in ("../clip", "no-such-space", "/etc"):
        assert main(["spaces", "bundle", name, str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "没有名为" in err and "No Space named" in err
    assert not (tmp_path / "out").exists()


def test_spaces_list_imports_no_gradio():
    code = (
        "import sys\nfrom lmt.cli import main\nmain(['spaces', 'list', '--json'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'gradio') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"clip"' in result.stdout and result.stdout.strip().endswith("[]")


# ---- deploy ------------------------------------------------------------------------------------------------------
class _FakeHfApi:
    """Records what a deploy asks of the Hub; ``fail`` makes create_repo raise it."""

    calls: list[tuple[str, dict]] = []
    fail: Exception | None = None

    def __init__(self, token=None, **kwargs):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/spaces/{repo_id}"

    def upload_folder(self, **kwargs):
        files = sorted(p.relative_to(kwargs["folder_path"]).as_posix() for p in Path(kwargs["folder_path"]).rglob("*"))
        self.calls.append(("upload_folder", {**kwargs, "files": files}))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    _FakeHfApi.calls = []
    _FakeHfApi.fail = None
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return _FakeHfApi


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not touch the network")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_dry_run_lists_the_files_and_sends_nothing(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    _no_network(monkeypatch)
    assert main(["spaces", "deploy", SPACE, "--repo", "alice/lmt-clip", "--dry-run"]) == 0
    captured = capsys.readouterr()
    for name in ("app.py", "README.md", "requirements.txt", "lmt/__init__.py", "lmt/ui/__init__.py"):
        assert f"  {name}\n" in captured.out
    assert "Nothing was sent" in captured.out and "alice/lmt-clip" in captured.out
    assert SECRET not in captured.out + captured.err


def test_deploy_creates_a_gradio_space_and_uploads_the_bundle(fake_hub, capsys):
    assert main(["spaces", "deploy", SPACE, "--repo", "alice/lmt-clip", "--private"]) == 0
    captured = capsys.readouterr()
    assert "https://huggingface.co/spaces/alice/lmt-clip" in captured.out
    assert SECRET not in captured.out + captured.err
    calls = dict(fake_hub.calls)
    assert calls["init"]["token"] == SECRET  # handed to the Hub client, and only there
    assert calls["create_repo"] == {
        "repo_id": "alice/lmt-clip", "repo_type": "space", "space_sdk": "gradio", "exist_ok": True, "private": True,
    }
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "alice/lmt-clip" and upload["repo_type"] == "space"
    assert {"app.py", "README.md", "requirements.txt", "lmt/__init__.py"} <= set(upload["files"])
    assert not Path(upload["folder_path"]).exists()  # the temporary bundle is gone


def _http_error(status: int):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} error", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize(
    ("failure", "zh", "en"),
    [
        ("no-token", "未找到 Hugging Face 令牌", "hf auth login"),
        ("offline", "HF_HUB_OFFLINE", "unset HF_HUB_OFFLINE"),
        ("unreachable", "无法连接", "Cannot reach the Hugging Face Hub"),
        (401, "拒绝了该令牌", "refused the token"),
        (403, "无权写入", "write access"),
        (409, "冲突", "Choose another --repo"),
        ("bad-repo", "--repo", "<user or org>/<space name>"),
    ],
)
def test_deploy_errors_are_bilingual_and_never_show_the_token(fake_hub, monkeypatch, capsys, failure, zh, en):
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    repo = "alice/lmt-clip"
    if failure == "no-token":
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    elif failure == "offline":
        fake_hub.fail = OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")
    elif failure == "unreachable":
        fake_hub.fail = ConnectionError(f"connection refused (token {SECRET[:6]}...)")
    elif failure == "bad-repo":
        repo = "no-namespace"
    else:
        fake_hub.fail = _http_error(failure)
    assert main(["spaces", "deploy", SPACE, "--repo", repo]) == 2
    captured = capsys.readouterr()
    assert zh in captured.err and en in captured.err, captured.err
    assert SECRET not in captured.out + captured.err and "Traceback" not in captured.err
    assert "upload_folder" not in dict(fake_hub.calls)


# ---- launching on the address the environment gives ------------------------------------------------------------
class _FakeDemo:
    def queue(self, **kwargs):
        return self

    def launch(self, **kwargs):
        self.kwargs = kwargs
        return kwargs


def test_launch_takes_the_address_from_gradio_environment(monkeypatch):
    from lmt import ui
    from lmt.errors import InvalidInputError

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    kwargs = ui.launch(_FakeDemo(), host="0.0.0.0")
    assert kwargs["server_name"] == "0.0.0.0" and "server_port" not in kwargs
    assert ui.launch(_FakeDemo(), host="0.0.0.0", port=7860)["server_port"] == 7860
    monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.1")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    kwargs = ui.launch(_FakeDemo(), host="0.0.0.0", port=7860)
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["server_port"] == 7999
    monkeypatch.setenv("GRADIO_SERVER_PORT", "NaN")
    with pytest.raises(InvalidInputError, match="GRADIO_SERVER_PORT"):
        ui.launch(_FakeDemo())


# ---- the bundle, installed and started from scratch (slow) ------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_venv(folder: Path) -> Path:
    """A new virtualenv with no access to this one's packages; returns its bin/ folder."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True, timeout=300)
    return folder / "bin"


def run_checked(command: list[str] | str, **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points Python at our repository or virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix))
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", GRADIO_SERVER_NAME="127.0.0.1")
    env.update(extra)
    return env


def classify_when_up(process: subprocess.Popen, url: str, image: Path, log: Path, timeout: float = 300) -> dict:
    """Wait for the server at ``url``, then ask ``/classify`` for ``image`` with tiny CLIP; returns the raw JSON."""
    from gradio_client import Client, handle_file

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"the Space exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                break
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                pytest.fail(f"the Space did not answer within {timeout:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
    client = Client(url, verbose=False)
    label, raw = client.predict(
        handle_file(image), "cat, dog, car", "a photo of a {}.", "clip-vit-b32 (tiny)", "", api_name="/classify"
    )
    assert {c["label"] for c in label["confidences"]} == {"cat", "dog", "car"}
    return raw


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bundle_installs_and_answers_in_a_fresh_venv(bundle, tmp_path):
    folder, _ = bundle
    bin_dir = fresh_venv(tmp_path / "venv")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.13.0\ntorchvision==0.0.0\n")
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    env = clean_env()
    run_checked([*pip, "-r", "requirements.txt", "-c", str(constraints)], cwd=folder, env=env, timeout=1500)
    versions = {name: importlib.metadata.version(name) for name in ("gradio", "gradio_client")}
    run_checked(
        [*pip, *(f"{name}=={version}" for name, version in versions.items()), "-c", str(constraints)],
        cwd=folder, env=env, timeout=900,
    )
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import lmt; print(lmt.__file__)"], cwd=folder, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert Path(where.stdout.strip()).resolve() == (folder / "lmt" / "__init__.py").resolve()

    port = free_port()
    log = tmp_path / "app.log"
    env = clean_env(GRADIO_SERVER_PORT=str(port), LMT_HOME=str(tmp_path / "lmt-home"))
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(bin_dir / "python"), "app.py", "--tiny"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        raw = classify_when_up(process, f"http://127.0.0.1:{port}/", folder / "examples" / "cat.jpg", log)
        assert len(raw["predictions"]) == 3
    finally:
        stop(process)
