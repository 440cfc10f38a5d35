"""lmt.env: what `lmt env` reports, including the broken installs it exists to diagnose."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmt import env

REPORT_KEYS = {
    "python",
    "platform",
    "lmt",
    "packages",
    "torch",
    "cuda",
    "npu",
    "mps",
    "onnxruntime",
    "cpu",
    "memory",
    "env",
}


def test_cpu_features_are_bools_and_match_proc_cpuinfo():
    features = env.cpu_features()

    assert set(features) == {
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "amx_bf16",
        "amx_tile",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "neon",
    }
    assert all(isinstance(value, bool) for value in features.values())
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        assert not any(features.values())
        return
    flag_lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith(("flags", "Features"))]
    first_flags = flag_lines[0].partition(":")[2].split() if flag_lines else []
    assert features["avx2"] == ("avx2" in first_flags)
    assert env.cpu_has_fast_bf16() == ("avx512_bf16" in first_flags or "amx_bf16" in first_flags)


def test_importing_lmt_env_imports_nothing_heavy():
    code = "import sys, lmt.env; print(sorted({'torch', 'onnxruntime', 'gradio', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def test_environment_report_has_every_section_and_is_json_serialisable():
    report = env.environment_report()

    assert set(report) >= REPORT_KEYS
    assert set(report["packages"]) == set(env.PACKAGES)
    assert set(report["env"]) == set(env.ENV_VARS)
    assert report["cpu"]["features"] == env.cpu_features()
    assert json.loads(json.dumps(report)) == report


def test_environment_report_reads_versions_from_metadata():
    torch = pytest.importorskip("torch")
    report = env.environment_report()

    assert report["packages"]["torch"] == torch.__version__
    assert report["torch"]["importable"] is True
    assert report["torch"]["threads"] == torch.get_num_threads()


def test_devices_match_what_torch_sees():
    torch = pytest.importorskip("torch")
    cuda = env.environment_report()["cuda"]

    assert cuda["available"] is torch.cuda.is_available()
    if not torch.cuda.is_available():  # this project's CI and dev machines: no GPU
        assert cuda["devices"] == []
        return
    assert len(cuda["devices"]) == torch.cuda.device_count()
    for device in cuda["devices"]:
        major, _, minor = device["capability"].partition(".")
        assert major.isdigit() and minor.isdigit()
        assert device["bf16"] is (int(major) >= 8)


def test_npu_on_this_machine_matches_find_spec():
    npu = env.environment_report()["npu"]

    if importlib.util.find_spec("torch_npu") is None:  # CI and dev machines never install torch-npu
        assert npu["status"] == "not installed"
    else:
        assert npu["installed"] is True


def test_npu_reported_not_installed_when_torch_npu_is_absent(monkeypatch):
    monkeypatch.setattr(env.importlib.util, "find_spec", _find_spec_without("torch_npu"))

    npu = env.environment_report()["npu"]

    assert {key: value for key, value in npu.items() if key != "cann"} == {
        "installed": False, "status": "not installed", "devices": []
    }
    assert set(npu["cann"]) == {"home", "version"}  # the CANN toolkit is looked for even without torch_npu


class _BrokenTorchNpuFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imitates torch_npu installed without the Ascend toolkit: found, but its import fails."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch_npu":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("libhccl.so: cannot open shared object file: No such file or directory")


def test_npu_installed_but_unusable_is_reported_not_raised(monkeypatch):
    pytest.importorskip("torch")  # import it before the fake torch_npu exists
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchNpuFinder(), *sys.meta_path])
    assert env.importlib.util.find_spec("torch_npu") is not None

    npu = env.environment_report()["npu"]

    assert npu["installed"] is True
    assert npu["status"].startswith("installed but unusable: ImportError: libhccl.so")
    assert npu["devices"] == []
    assert "torch_npu" not in sys.modules


def test_npu_find_spec_that_raises_is_reported(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def raising_find_spec(name, package=None):
        if name == "torch_npu":
            raise ValueError("torch_npu.__spec__ is None")
        return real_find_spec(name, package)

    monkeypatch.setattr(env.importlib.util, "find_spec", raising_find_spec)

    npu = env.environment_report()["npu"]

    assert npu["installed"] is False
    assert npu["status"] == "unknown: ValueError: torch_npu.__spec__ is None"


def test_torch_that_fails_to_import_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError

    report = env.environment_report()

    assert report["torch"]["importable"] is False
    assert report["torch"]["error"].startswith(("ImportError", "ModuleNotFoundError"))
    assert report["cuda"] == {"available": False, "devices": []}
    assert report["mps"] == {"available": False}


def test_format_report_shows_versions_aligned():
    report = env.environment_report()
    text = env.format_report(report)

    torch_version = report["packages"]["torch"] or "not installed"
    lines = text.splitlines()
    python_line = next(line for line in lines if line.startswith("python "))
    torch_line = next(line for line in lines if line.lstrip().startswith("torch "))
    assert python_line.index(report["python"]) == torch_line.index(torch_version)


def test_format_report_words_for_missing_values():
    report = {
        "python": "3.11.7",
        "packages": {"peft": None, "torch": "2.13.0"},
        "env": {"HF_HOME": None},
        "cpu": {"features": {"avx2": True, "fma": False}},
        "cuda": {"available": False, "devices": []},
    }
    lines = env.format_report(report).splitlines()

    assert lines[0].split() == ["python", "3.11.7"]
    assert ["peft", "not", "installed"] in [line.split() for line in lines]
    assert ["HF_HOME", "(unset)"] in [line.split() for line in lines]
    assert ["features", "avx2"] in [line.split() for line in lines]
    assert ["devices", "none"] in [line.split() for line in lines]


def _find_spec_without(missing: str):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        return None if name == missing else real_find_spec(name, package)

    return find_spec
