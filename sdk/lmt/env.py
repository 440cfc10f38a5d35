"""What ``lmt env`` prints: versions, devices, CPU features and the settings that change behaviour.

Paste its output into bug reports. Nothing heavy is imported when this module is imported; torch,
torch_npu and onnxruntime are imported only inside :func:`environment_report`, each guarded, so a
broken install is reported instead of crashing the report.

>>> from lmt.env import environment_report, format_report
>>> print(format_report(environment_report()))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any

#: Distributions whose versions are reported (read from their metadata, never imported).
PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "huggingface_hub",
    "peft",
    "accelerate",
    "gradio",
    "onnxruntime",
    "safetensors",
    "tokenizers",
    "numpy",
    "pillow",
)

#: onnxruntime ships under several distribution names; the first one installed is reported.
_ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
)

#: Environment variables that change where models come from or where files go.
ENV_VARS: tuple[str, ...] = (
    "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "LMT_HOME", "LMT_DEVICE", "LMT_ONNX_DEVICE",
    # thread counts that torch (OpenMP/MKL) reads at start-up
    "OMP_NUM_THREADS", "MKL_NUM_THREADS",
)

#: x86 flags as /proc/cpuinfo spells them; "neon" is added separately (aarch64 calls it "asimd").
_X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni", "amx_int8")
#: Where the Ascend CANN toolkit is looked for when no environment variable names it (set_env.sh sets them).
_CANN_HOMES = ("/usr/local/Ascend/ascend-toolkit/latest", "/usr/local/Ascend/cann")


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The first core's flags ("flags" on x86, "Features" on ARM); empty where /proc/cpuinfo is missing."""
    cpuinfo = _read_text("/proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_features() -> dict[str, bool]:
    """The CPU instructions that decide what runs fast here; all False where they cannot be read (non-Linux).

    >>> sorted(cpu_features())[:3]
    ['amx_bf16', 'amx_int8', 'amx_tile']
    """
    flags = _cpu_flags()
    features = {name: name in flags for name in _X86_FLAGS}
    features["neon"] = "asimd" in flags or "neon" in flags
    return features


def cpu_has_fast_bf16() -> bool:
    """True only with AVX-512-BF16 or AMX-BF16: elsewhere bf16 on the CPU is emulated, ~300x slower than fp32."""
    features = cpu_features()
    return features["avx512_bf16"] or features["amx_bf16"]


def cpu_has_fast_int8() -> bool:
    """True with VNNI (AVX-512 or AVX) or AMX-INT8: int8 dot products in one instruction, so int8 gains most.

    Without them (AVX2 only) onnxruntime's int8 kernels still beat float32, by less.
    """
    features = cpu_features()
    return features["avx512_vnni"] or features["avx_vnni"] or features["amx_int8"]


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_versions() -> dict[str, str | None]:
    versions = {name: _distribution_version(name) for name in PACKAGES}
    if versions["onnxruntime"] is None:
        for distribution in _ONNXRUNTIME_DISTRIBUTIONS[1:]:
            versions["onnxruntime"] = _distribution_version(distribution)
            if versions["onnxruntime"] is not None:
                break
    return versions


def _describe(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def _import_torch() -> tuple[Any, str | None]:
    """torch, or None and why not. An installed torch_npu without the Ascend toolkit breaks ``import torch``."""
    try:
        import torch
    except Exception as exc:  # any failure here is what the report is for
        return None, _describe(exc)
    return torch, None


def _torch_report(torch: Any, error: str | None) -> dict[str, Any]:
    if torch is None:
        return {"importable": False, "error": error}
    return {
        "importable": True,
        "error": None,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cuda_build": torch.version.cuda,
        "hip_build": getattr(torch.version, "hip", None),
        # oneDNN runs CPU convolutions (and channels_last); OpenMP the intra-op threads
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "openmp": bool(torch.backends.openmp.is_available()),
    }


def _tf32(torch: Any) -> dict[str, str] | str:
    from lmt.device import tf32_state

    try:
        return tf32_state()
    except Exception as exc:  # the report must not fail on a torch build that lacks these switches
        return f"unknown: {_describe(exc)}"


def _cuda_report(torch: Any) -> dict[str, Any]:
    if torch is None:
        return {"available": False, "devices": []}
    try:
        available = bool(torch.cuda.is_available())
        cudnn = torch.backends.cudnn.version() if available else None
        devices = []
        for index in range(torch.cuda.device_count() if available else 0):
            major, minor = torch.cuda.get_device_capability(index)
            properties = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "name": torch.cuda.get_device_name(index),
                    "capability": f"{major}.{minor}",
                    # Native bf16 arrived with Ampere (compute capability 8.0).
                    "bf16": major >= 8,
                    "memory_gib": round(properties.total_memory / 2**30, 1),
                }
            )
    except Exception as exc:  # a driver mismatch raises here; report it instead
        return {"available": False, "devices": [], "error": _describe(exc)}
    # TF32 (Ampere and newer) trades float32 matmul precision for speed: worth seeing in a bug report
    return {"available": available, "devices": devices, "cudnn": cudnn, "tf32": _tf32(torch)}


def _cann_report() -> dict[str, str | None]:
    """The Ascend CANN toolkit: its folder and the version its install record gives (None when absent)."""
    candidates = [os.environ.get(name) for name in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH")]
    for home in [c for c in candidates if c] + list(_CANN_HOMES):
        if not os.path.isdir(home):
            continue
        info = _read_text(os.path.join(home, f"{platform.machine()}-linux", "ascend_toolkit_install.info")) or ""
        version = next((line.partition("=")[2].strip() for line in info.splitlines()
                        if line.startswith("version=")), None)
        return {"home": home, "version": version}
    return {"home": None, "version": None}


def _npu_report(torch: Any) -> dict[str, Any]:
    """Huawei Ascend through torch_npu. Found with find_spec first: importing it without CANN can break torch."""
    cann = _cann_report()
    try:
        spec = importlib.util.find_spec("torch_npu")
    except (ImportError, ValueError) as exc:
        return {"installed": False, "status": f"unknown: {_describe(exc)}", "devices": [], "cann": cann}
    if spec is None:
        return {"installed": False, "status": "not installed", "devices": [], "cann": cann}
    version = _distribution_version("torch-npu") or _distribution_version("torch_npu")
    if torch is None:
        return {"installed": True, "version": version, "status": "installed but unusable: torch does not import",
                "devices": [], "cann": cann}
    try:
        importlib.import_module("torch_npu")
        available = bool(torch.npu.is_available())
        count = torch.npu.device_count() if available else 0
        devices = [{"name": torch.npu.get_device_name(index)} for index in range(count)]
    # Without the Ascend CANN toolkit torch_npu fails in many ways (OSError, ImportError, RuntimeError...).
    except Exception as exc:
        return {"installed": True, "version": version, "status": f"installed but unusable: {_describe(exc)}",
                "devices": [], "cann": cann}
    return {
        "installed": True,
        "version": version,
        "status": "available" if available else "installed, no device",
        "devices": devices,
        "cann": cann,
    }


def _mps_available(torch: Any) -> bool:
    if torch is None:
        return False
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # old macOS builds raise instead of answering False
        return False


def _onnxruntime_providers() -> list[str] | None:
    """onnxruntime's execution providers, or None when it is not installed."""
    try:
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        import onnxruntime
    except Exception as exc:  # installed but broken: say so in the list rather than crash
        return [f"unusable: {_describe(exc)}"]
    return list(onnxruntime.get_available_providers())


def _cpu_model() -> str:
    cpuinfo = _read_text("/proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model name", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> dict[str, float | None]:
    """Total and available memory from /proc/meminfo (Linux); None elsewhere."""
    values: dict[str, float | None] = {"total_gib": None, "available_gib": None}
    meminfo = _read_text("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key in ("MemTotal", "MemAvailable") and fields and fields[0].isdigit():
            gib = round(int(fields[0]) / 2**20, 1)  # /proc/meminfo counts kB
            values["total_gib" if key == "MemTotal" else "available_gib"] = gib
    return values


def _usable_cores() -> int | None:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def environment_report() -> dict[str, Any]:
    """Everything ``lmt env`` shows, as plain JSON-serialisable data.

    >>> report = environment_report()
    >>> sorted(report)[:3]
    ['cpu', 'cuda', 'env']
    """
    torch, torch_error = _import_torch()
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "lmt": _distribution_version("large-model-tutorial"),
        "packages": _package_versions(),
        "torch": _torch_report(torch, torch_error),
        "cuda": _cuda_report(torch),
        "npu": _npu_report(torch),
        "mps": {"available": _mps_available(torch)},
        "onnxruntime": {"providers": _onnxruntime_providers()},
        "cpu": {
            "model": _cpu_model(),
            "machine": platform.machine(),
            "logical_cores": os.cpu_count(),
            "usable_cores": _usable_cores(),
            "features": cpu_features(),
            "fast_bf16": cpu_has_fast_bf16(),
            "fast_int8": cpu_has_fast_int8(),
        },
        "memory": _memory_gib(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }


def _format_value(value: Any, missing: str) -> str:
    if value is None:
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        if all(isinstance(on, bool) for on in value.values()):  # a set of flags: name the ones that are on
            flags = [name for name, on in value.items() if on]
            return " ".join(flags) if flags else "none"
        return ", ".join(f"{key}={_format_value(item, '-')}" for key, item in value.items())
    if isinstance(value, list):
        if not value:
            return "none"
        separator = "; " if isinstance(value[0], dict) else ", "
        return separator.join(_format_value(item, missing) for item in value)
    return str(value)


#: What a None means in each section.
_MISSING = {"packages": "not installed", "env": "(unset)", "onnxruntime": "not installed"}


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned text: top-level values first, then one block per section."""
    scalars = {key: value for key, value in report.items() if not isinstance(value, dict)}
    sections = {key: value for key, value in report.items() if isinstance(value, dict)}
    rows: list[tuple[str, str]] = [(key, _format_value(value, "-")) for key, value in scalars.items()]
    for section, values in sections.items():
        missing = _MISSING.get(section, "-")
        rows.append(("", ""))
        rows.append((f"[{section}]", ""))
        rows.extend((f"  {key}", _format_value(value, missing)) for key, value in values.items())
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}".rstrip() for key, value in rows)
