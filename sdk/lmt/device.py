"""Pick the device and dtype once, explicitly, and refuse choices that would be pathologically slow.

Order when nothing is asked for: ``cuda`` > ``npu`` (Huawei Ascend, through torch_npu) > ``mps`` > ``cpu``.
``LMT_DEVICE`` overrides the automatic choice. Half precision is used only where the hardware runs it fast:
never bf16 on a CPU without AVX-512-BF16/AMX (about 300x slower than fp32 there), nor on a GPU older than Ampere.

The per-device settings that change speed live here too: :func:`set_threads` (CPU intra-op threads) and
:func:`set_tf32` (TensorFloat-32 on CUDA). ``torch_npu`` is imported only by :func:`import_torch_npu` and
:func:`npu_available`, each guarded: installed without the Ascend CANN toolkit it breaks in many ways, and its
absence must never break ``import torch`` or ``import lmt``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING

from lmt.errors import InvalidInputError, UnsupportedDeviceError, missing_dependency

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEVICE_ORDER = ("cuda", "npu", "mps", "cpu")
_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
#: Native bf16 (and TF32) arrived with NVIDIA Ampere, compute capability 8.0.
_AMPERE = 8
_CANN_HINT = (
    "install the Ascend CANN toolkit that matches torch-npu and run "
    "`source /usr/local/Ascend/ascend-toolkit/set_env.sh`"
)


def _torch_npu_installed() -> bool:
    try:
        return importlib.util.find_spec("torch_npu") is not None
    except (ImportError, ValueError):  # a half-removed install leaves a spec that cannot be read
        return False


def import_torch_npu() -> ModuleType:
    """``torch_npu`` (which registers the ``npu`` device with torch), or a clear error saying what is missing.

    Not installed: :class:`~lmt.errors.MissingDependencyError` naming the ``npu`` extra. Installed but unable to
    load (no CANN toolkit, mismatched versions): :class:`~lmt.errors.UnsupportedDeviceError` naming the fix.
    """
    if not _torch_npu_installed():
        raise missing_dependency("torch-npu", "npu", "The Ascend NPU device", "昇腾 NPU 设备")
    try:
        import torch_npu
    except Exception as exc:  # without CANN: OSError (libhccl.so), ImportError, RuntimeError ... all mean the same
        raise UnsupportedDeviceError(
            f"torch_npu is installed but cannot load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            f"To use the NPU, {_CANN_HINT}; or pass device='cpu'.",
            f"已安装 torch_npu 但无法加载（{type(exc).__name__}）。请安装与 torch-npu 版本匹配的昇腾 CANN 工具包并执行 "
            "`source /usr/local/Ascend/ascend-toolkit/set_env.sh`，或改用 device='cpu'。",
        ) from exc
    return torch_npu


@lru_cache(maxsize=1)
def npu_available() -> bool:
    """True when torch_npu imports and sees an Ascend device. Never raises (see ENVIRONMENT notes in the docs)."""
    if not _torch_npu_installed():
        return False
    try:
        import torch

        import_torch_npu()
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


def _device_hint(device_type: str) -> str:
    if device_type == "npu" and _torch_npu_installed():
        return f"torch-npu is installed but sees no NPU: {_CANN_HINT}"
    hints = {
        "cuda": "install a CUDA build of torch and check nvidia-smi",
        "npu": "install torch-npu with the Ascend CANN toolkit (pip install 'large-model-tutorial[npu]')",
        "mps": "MPS needs Apple silicon and macOS 12.3+",
    }
    return hints.get(device_type, "use one of the available devices")


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
        raise UnsupportedDeviceError(
            f"Device '{requested}' is not available here (available: {', '.join(available)}). "
            f"To use it, {_device_hint(requested_type)}; or pass device='cpu' / --device cpu.",
            f"设备 '{requested}' 在本机不可用（可用：{', '.join(available)}）。请改用 --device cpu，或安装相应驱动与框架。",
        )
    return torch.device(requested)


def _cuda_capability(device: torch.device) -> tuple[int, int]:
    import torch

    return torch.cuda.get_device_capability(device)


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp32 on CPU/MPS, fp16 on CUDA/NPU unless asked otherwise; half precision is refused where it is not fast."""
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
    if device.type == "cuda" and dtype == torch.bfloat16:
        major, minor = _cuda_capability(device)
        if major < _AMPERE:
            raise UnsupportedDeviceError(
                f"This GPU (compute capability {major}.{minor}) has no native bfloat16; it arrived with Ampere "
                "(8.0: A100, RTX 30xx). Use dtype='float16' on this GPU.",
                f"这块 GPU（计算能力 {major}.{minor}）不原生支持 bfloat16（Ampere 即 8.0 起才支持，如 A100、RTX 30 系列）。"
                "请改用 float16。",
            )
    return dtype


# ---- settings that change speed -------------------------------------------------------------------------------------
def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), which can be fewer than the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Run torch's CPU operators on ``threads`` threads (intra-op); returns the previous count to restore later.

    More threads than usable cores only adds contention, so that is logged as a warning. onnxruntime sessions
    take their own count (``lmt.deploy.runtime.onnx_session(..., threads=...)``).
    """
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInputError(
            f"threads must be a positive integer, not {threads!r}.",
            f"threads 应为正整数，而不是 {threads!r}。",
        )
    cores = usable_cores()
    if threads > cores:
        logger.warning("%d threads on %d usable cores: the extra threads only compete for the same cores",
                       threads, cores)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def set_tf32(enabled: bool) -> None:
    """Let CUDA float32 matmuls and convolutions use TensorFloat-32 (Ampere and newer), or make them exact.

    TF32 keeps float32's range with a 10-bit mantissa: several times faster matmuls, at about 1e-3 relative error.
    Set through torch's ``fp32_precision`` switches (torch >= 2.9 raises when they are mixed with the older
    ``allow_tf32`` flags); harmless on a machine without CUDA, where nothing reads them.
    """
    import torch

    if not isinstance(enabled, bool):
        raise InvalidInputError(f"tf32 must be True or False, not {enabled!r}.",
                                f"tf32 应为 True 或 False，而不是 {enabled!r}。")
    value = "tf32" if enabled else "ieee"
    try:
        torch.backends.cuda.matmul.fp32_precision = value
        torch.backends.cudnn.conv.fp32_precision = value
    except AttributeError:  # torch < 2.9 has only the older flags
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> dict[str, str]:
    """What CUDA float32 matmuls and cuDNN convolutions may use: ``tf32``, ``ieee``, or ``none`` (torch's default)."""
    import torch

    try:
        return {"matmul": str(torch.backends.cuda.matmul.fp32_precision),
                "cudnn_conv": str(torch.backends.cudnn.conv.fp32_precision)}
    except AttributeError:  # torch < 2.9
        return {"matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
                "cudnn_conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"}


# ---- timing and memory on any device --------------------------------------------------------------------------------
def _accelerator_module(device: torch.device) -> ModuleType | None:
    """``torch.cuda`` / ``torch.npu`` / ``torch.mps`` for an accelerator, None for the CPU."""
    import torch

    if device.type == "cpu":
        return None
    return getattr(torch, device.type, None)


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished its queued work: accelerators run asynchronously, so timing needs it."""
    module = _accelerator_module(device)
    if module is not None:
        module.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for :func:`peak_memory_bytes` (CUDA and NPU; nothing elsewhere)."""
    module = _accelerator_module(device)
    if module is not None and hasattr(module, "reset_peak_memory_stats"):
        module.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """The most device memory torch has held since :func:`reset_peak_memory` (CUDA, NPU); None on CPU and MPS."""
    module = _accelerator_module(device)
    if module is None or not hasattr(module, "max_memory_allocated"):
        return None
    return int(module.max_memory_allocated(device))
