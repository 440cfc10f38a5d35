"""onnxruntime sessions with execution providers chosen from what is installed.

>>> from lmt.deploy.runtime import choose_providers
>>> choose_providers("cpu")
['CPUExecutionProvider']

Order when nothing is asked for: CUDA > OpenVINO > CPU. The CPU provider is always last, so that an operator a
faster provider cannot run falls back to it inside the same session (onnxruntime assigns nodes in list order).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError, UnsupportedDeviceError, missing_dependency

logger = logging.getLogger(__name__)

#: lmt device name -> onnxruntime provider, in the order they are preferred.
PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise missing_dependency("onnxruntime", "deploy", "The ONNX back-end", "ONNX 推理后端") from exc
    return onnxruntime


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers (e.g. ``['CPUExecutionProvider']``)."""
    return list(_onnxruntime().get_available_providers())


def choose_providers(device: str | None = None) -> list[str]:
    """Providers for ``device`` (``cuda``, ``openvino``, ``cpu``; None or ``auto``: the best installed).

    A device asked for by name that this onnxruntime build lacks is an error that names the package to install.
    """
    available = available_providers()
    requested = (device or os.environ.get("LMT_ONNX_DEVICE") or "auto").split(":")[0].lower()
    if requested == "auto":
        return [provider for provider in PROVIDERS.values() if provider in available]
    provider = PROVIDERS.get(requested)
    if provider is None:
        raise InvalidInputError(
            f"Unknown ONNX device '{device}'. Use one of: auto, {', '.join(PROVIDERS)}.",
            f"未知的 ONNX 设备 '{device}'，请使用：auto、{'、'.join(PROVIDERS)}。",
        )
    if provider not in available:
        packages = {"cuda": "onnxruntime-gpu", "openvino": "onnxruntime-openvino"}
        raise UnsupportedDeviceError(
            f"onnxruntime here has no {provider} (it has: {', '.join(available)}). "
            f"Install {packages[requested]} instead of onnxruntime, or use device='cpu'.",
            f"当前 onnxruntime 没有 {provider}（可用：{', '.join(available)}）。"
            f"请改装 {packages[requested]}，或使用 device='cpu'。",
        )
    return [provider] if provider == PROVIDERS["cpu"] else [provider, PROVIDERS["cpu"]]


def onnx_session(path: str | Path, providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An ``InferenceSession`` for the graph at ``path`` with all graph optimisations on.

    ``threads`` sets onnxruntime's intra-op threads (default: onnxruntime's own choice, one per core).
    """
    ort = _onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(
            f"No ONNX file at {path}. Export one first: lmt export MODEL --format onnx --out DIR",
            f"找不到 ONNX 文件 {path}。请先导出：lmt export MODEL --format onnx --out DIR",
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns about unused initialisers on every exported graph
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    providers = providers or choose_providers()
    logger.info("onnxruntime session for %s on %s", path.name, providers)
    return ort.InferenceSession(str(path), options, providers=providers)
