"""Pick the device and dtype once, explicitly, and refuse choices that would be pathologically slow.

Order when nothing is asked for: ``cuda`` > ``npu`` (Huawei Ascend, through torch_npu) > ``mps`` > ``cpu``.
``LMT_DEVICE`` overrides the automatic choice. Half precision is used only where the hardware runs it fast:
never bf16 on a CPU without AVX-512-BF16/AMX (about 300x slower than fp32 there).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from typing import TYPE_CHECKING

from lmt.errors import UnsupportedDeviceError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEVICE_ORDER = ("cuda", "npu", "mps", "cpu")
_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


@lru_cache(maxsize=1)
def npu_available() -> bool:
    """True when torch_npu imports and sees an Ascend device. Never raises (see ENVIRONMENT notes in the docs)."""
    try:
        if importlib.util.find_spec("torch_npu") is None:
            return False
        import torch
        import torch_npu  # noqa: F401  (registers the 'npu' device with torch)

        return bool(torch.npu.is_available())
    except Exception as exc:  # torch_npu without the CANN toolkit fails in many ways; it then simply is absent
        logger.warning("torch_npu is installed but unusable (%s); ignoring the NPU", exc)
        return False


def available_devices() -> list[str]:
    import torch

    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if npu_available():
        found.append("npu")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``device`` if given (checked), else ``$LMT_DEVICE``, else the best available."""
    import torch

    requested = device if device is not None else os.environ.get("LMT_DEVICE") or None
    available = available_devices()
    if requested is None or str(requested) == "auto":
        return torch.device(available[0])
    # the type is read from the string: torch.device("npu") itself fails unless torch_npu is imported
    requested_type = requested.type if isinstance(requested, torch.device) else str(requested).split(":")[0]
    if requested_type not in available:
        hints = {
            "cuda": "install a CUDA build of torch and check nvidia-smi",
            "npu": "install torch-npu with the Ascend CANN toolkit (pip install 'large-model-tutorial[npu]')",
            "mps": "MPS needs Apple silicon and macOS 12.3+",
        }
        hint = hints.get(requested_type, "use one of the available devices")
        raise UnsupportedDeviceError(
            f"Device '{requested}' is not available here (available: {', '.join(available)}). "
            f"To use it, {hint}; or pass device='cpu' / --device cpu.",
            f"设备 '{requested}' 在本机不可用（可用：{', '.join(available)}）。请改用 --device cpu，或安装相应驱动与框架。",
        )
    return torch.device(requested)


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp32 on CPU/MPS, fp16 on CUDA/NPU unless asked otherwise; half precision on a CPU is refused unless fast."""
    import torch

    from lmt.env import cpu_has_fast_bf16

    if dtype is None or dtype == "auto":
        if device.type in ("cuda", "npu"):
            return torch.float16
        return torch.float32
    if isinstance(dtype, str):
        name = _DTYPE_NAMES.get(dtype.lower())
        if name is None:
            raise UnsupportedDeviceError(
                f"Unknown dtype '{dtype}'. Use one of: float32, float16, bfloat16.",
                f"未知的 dtype '{dtype}'，请使用 float32、float16 或 bfloat16。",
            )
        dtype = getattr(torch, name)
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        raise UnsupportedDeviceError(
            "bfloat16 on this CPU is emulated (no AVX-512-BF16 or AMX) and runs about 300x slower than float32. "
            "Use dtype='float32' on this machine.",
            "此 CPU 不支持 AVX-512-BF16/AMX，bfloat16 需软件模拟，比 float32 慢约 300 倍。请使用 float32。",
        )
    if device.type == "cpu" and dtype == torch.float16:
        raise UnsupportedDeviceError(
            "float16 on a CPU is emulated and slow. Use dtype='float32' on the CPU, or float16 on a GPU/NPU.",
            "CPU 上的 float16 需软件模拟且很慢。CPU 上请使用 float32，GPU/NPU 上再用 float16。",
        )
    return dtype
