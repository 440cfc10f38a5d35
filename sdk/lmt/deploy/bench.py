"""``lmt bench``: one model on several back-ends, measured in one run on this machine.

>>> from lmt.deploy.bench import bench
>>> result = bench("vit-b16", tiny=True, batches=(1, 2), rounds=2)   # doctest: +SKIP
>>> result.run("onnx-int8", 2).speedup                               # doctest: +SKIP

For every back-end and batch size: latency p50/p95, throughput, peak memory, model size; achieved GFLOP/s
against a float32 matmul ceiling (``torch.mm`` on large square matrices, same device and threads, timed inside
the same rounds); and for every back-end but the reference (``torch``, eager float32), how far its outputs lie
from the reference's (top-1 agreement, max abs diff, cosine). :func:`write_results` writes the JSON, a markdown
table and a PNG chart; docs quote those files.

How it measures, so that a busy machine skews the numbers as little as possible:

- every back-end is prepared (and its memory measured) before timing starts;
- each round runs every back-end once plus the matmul ceiling, in an order that rotates from round to round,
  so a busy spell slows all sides of a ratio alike; ratios (speed-up, share of the ceiling) are medians of the
  per-round ratios, not ratios of medians;
- model FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the real module at batch 1
  (matmuls and convolutions, 2 FLOPs per multiply-add; softmax, norms and activations are not counted).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import datetime
import gc
import json
import logging
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmt.errors import InvalidInputError, UnsupportedDeviceError, UnsupportedTaskError, missing_dependency

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lmt.loading import LoadedModel

logger = logging.getLogger(__name__)

#: Every back-end ``bench`` knows. ``torch`` (eager float32) is the reference the others are compared with and
#: is always measured.
BACKENDS = ("torch", "torch-fp16", "torch-bf16", "torch-int8", "onnx", "onnx-int8", "onnx-fp16")
REFERENCE = "torch"
DEFAULT_BACKENDS = ("torch", "onnx", "onnx-int8")
DEFAULT_BATCHES = (1, 8)
#: Families whose image graph takes only ``pixel_values``, and that graph's name in the export.
BENCH_GRAPHS = {"vit": "model", "resnet": "model", "dinov2": "model", "clip": "image", "sam": "image_encoder"}
#: The side of the square float32 matmuls that measure the ceiling: large enough to run at full speed.
CEILING_SIZE = 2048
MAX_BATCH = 256
MAX_ROUNDS = 1000
_TORCH_DTYPES = {"torch": "float32", "torch-fp16": "float16", "torch-bf16": "bfloat16", "torch-int8": "float32"}
_MB = 1_000_000


# ---- results --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """How far a back-end's outputs lie from eager float32's on the same inputs (one row per image)."""

    samples: int
    #: share of rows whose arg-max (top-1 class, or largest feature) is the reference's
    top1: float
    max_abs_diff: float
    #: mean cosine similarity of the output rows
    cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "top1": self.top1, "max_abs_diff": self.max_abs_diff, "cosine": self.cosine}


@dataclass(frozen=True)
class BackendRun:
    """One back-end at one batch size."""

    backend: str
    batch: int
    latency_ms_p50: float
    latency_ms_p95: float
    #: images per second at the median latency
    throughput: float
    #: over eager float32 at the same batch: median of per-round time ratios (1.0 for the reference itself)
    speedup: float
    #: model FLOPs per second at the median latency, in GFLOP/s
    gflops: float
    #: achieved FLOP/s over the float32 matmul ceiling: median of per-round ratios
    ceiling_fraction: float
    #: host RSS growth (CPU) or device memory (CUDA/NPU) while preparing the back-end and running this batch
    peak_memory_mb: float | None
    model_size_mb: float
    agreement: Agreement | None
    raw_s: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "batch": self.batch, "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p95": self.latency_ms_p95, "throughput": self.throughput, "speedup": self.speedup,
            "gflops": self.gflops, "ceiling_fraction": self.ceiling_fraction, "peak_memory_mb": self.peak_memory_mb,
            "model_size_mb": self.model_size_mb,
            "agreement": self.agreement.to_dict() if self.agreement is not None else None,
            "raw_s": list(self.raw_s),
        }


@dataclass(frozen=True)
class BenchResult:
    """Everything one ``bench`` call measured, with the settings and the machine it ran on."""

    model: str
    family: str
    weights: str
    device: str
    threads: int
    rounds: int
    backends: tuple[str, ...]
    batches: tuple[int, ...]
    #: FLOPs of one image through the module (matmuls and convolutions, 2 per multiply-add)
    flops_per_image: int
    #: float32 matmul GFLOP/s: median over every round of every batch
    ceiling_gflops: float
    ceiling_size: int
    #: "rss" (host resident memory growth) or "device" (torch's peak device allocation)
    memory_kind: str
    #: which INT8 recipe made the onnx-int8 graph (lmt.deploy.optimize), None without that back-end
    int8_recipe: dict[str, Any] | None
    runs: tuple[BackendRun, ...]
    machine: dict[str, Any]
    date: str
    seconds: float

    def run(self, backend: str, batch: int) -> BackendRun:
        for run in self.runs:
            if run.backend == backend and run.batch == batch:
                return run
        raise KeyError((backend, batch))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "family": self.family, "weights": self.weights, "device": self.device,
            "threads": self.threads, "rounds": self.rounds, "backends": list(self.backends),
            "batches": list(self.batches), "flops_per_image": self.flops_per_image,
            "ceiling_gflops": self.ceiling_gflops, "ceiling_size": self.ceiling_size,
            "memory_kind": self.memory_kind, "int8_recipe": self.int8_recipe,
            "runs": [run.to_dict() for run in self.runs], "machine": dict(self.machine), "date": self.date,
            "seconds": self.seconds,
        }


def result_from_dict(data: dict[str, Any]) -> BenchResult:
    """A :class:`BenchResult` back from its ``to_dict()`` (e.g. read from a results JSON), to re-render it."""
    runs = []
    for run in data["runs"]:
        agreement = Agreement(**run["agreement"]) if run["agreement"] is not None else None
        runs.append(BackendRun(**{**run, "agreement": agreement, "raw_s": tuple(run["raw_s"])}))
    return BenchResult(**{**data, "backends": tuple(data["backends"]), "batches": tuple(data["batches"]),
                          "runs": tuple(runs)})


# ---- checking the request -------------------------------------------------------------------------------------------
def parse_list(text: str, what: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (the CLI's comma-separated options)."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise InvalidInputError(f"--{what} needs at least one value, e.g. --{what} a,b.",
                                f"--{what} 至少需要一个值，例如 --{what} a,b。")
    return items


def check_backends(backends: Sequence[str]) -> tuple[str, ...]:
    """Known back-ends without repeats, the reference first (added when missing)."""
    if isinstance(backends, str):
        backends = parse_list(backends, "backends")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise InvalidInputError(
            f"Unknown back-end(s) {unknown or list(backends)}. Use any of: {', '.join(BACKENDS)}.",
            f"未知的后端 {unknown or list(backends)}。可选：{'、'.join(BACKENDS)}。",
        )
    ordered = [REFERENCE] + [b for b in dict.fromkeys(backends) if b != REFERENCE]
    return tuple(ordered)


def check_batches(batches: Sequence[int] | str) -> tuple[int, ...]:
    if isinstance(batches, str):
        try:
            batches = [int(item) for item in parse_list(batches, "batch")]
        except ValueError:
            batches = [-1]
    good = [b for b in batches if not isinstance(b, bool) and isinstance(b, int) and 1 <= b <= MAX_BATCH]
    if not batches or len(good) != len(batches):
        raise InvalidInputError(
            f"Batch sizes must be integers in [1, {MAX_BATCH}], e.g. 1,8; got {batches!r}.",
            f"batch 大小应为 [1, {MAX_BATCH}] 之间的整数，例如 1,8；收到的是 {batches!r}。",
        )
    return tuple(dict.fromkeys(good))


def _check_count(value: Any, name: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise InvalidInputError(f"{name} must be an integer in [1, {limit}], not {value!r}.",
                                f"{name} 应为 [1, {limit}] 之间的整数，而不是 {value!r}。")
    return value


def unsupported_reason(backend: str, device_type: str) -> tuple[str, str] | None:
    """Why ``backend`` cannot run on a ``device_type`` device at all, in English and Chinese; None when it can.

    Hardware-specific limits (bf16 on this CPU or this GPU) are checked separately, by
    :func:`lmt.device.resolve_dtype`.
    """
    if backend == "torch-int8" and device_type != "cpu":
        return ("torch-int8 (torch dynamic quantisation) runs on the CPU only. On a GPU use torch-fp16 or onnx-fp16.",
                "torch-int8（PyTorch 动态量化）只能在 CPU 上运行。GPU 上请用 torch-fp16 或 onnx-fp16。")
    if backend.startswith("onnx") and device_type not in ("cpu", "cuda"):
        return (f"The ONNX back-ends run on cpu or cuda; on {device_type} benchmark torch and torch-fp16.",
                f"ONNX 后端只在 cpu 或 cuda 上运行；在 {device_type} 上请测 torch 与 torch-fp16。")
    if backend == "onnx-int8" and device_type != "cpu":
        return ("onnx-int8 is a CPU recipe (onnxruntime's int8 kernels); on a GPU use onnx-fp16 or torch-fp16.",
                "onnx-int8 是面向 CPU 的方案（onnxruntime 的 int8 算子）；GPU 上请用 onnx-fp16 或 torch-fp16。")
    if backend == "onnx-fp16" and device_type != "cuda":
        return ("onnx-fp16 needs the CUDA execution provider: onnxruntime's CPU provider lacks most float16 kernels. "
                "On a CPU use onnx or onnx-int8.",
                "onnx-fp16 需要 CUDA 执行提供程序：onnxruntime 的 CPU 提供程序缺少大多数 float16 算子。"
                "CPU 上请用 onnx 或 onnx-int8。")
    if backend == "torch-fp16" and device_type == "cpu":
        return ("float16 on a CPU is emulated and slow: use torch, torch-int8 or onnx-int8 on a CPU (torch-bf16 where "
                "the CPU has AVX-512-BF16 or AMX).",
                "CPU 上的 float16 需软件模拟且很慢：CPU 上请用 torch、torch-int8 或 onnx-int8（有 AVX-512-BF16/AMX 时可用 torch-bf16）。")
    return None


def _check_backend_device(backend: str, device: torch.device) -> None:
    """Refuse a back-end the device cannot run, naming what would work instead (before any work starts)."""
    from lmt.device import resolve_dtype

    if backend in _TORCH_DTYPES:
        resolve_dtype(device, _TORCH_DTYPES[backend])  # bf16 on a CPU without AVX-512-BF16/AMX, on a pre-Ampere GPU
    reason = unsupported_reason(backend, device.type)
    if reason is not None:
        raise UnsupportedDeviceError(*reason)


def _family_and_task(model: str, weights: str) -> tuple[str, str]:
    from lmt.deploy.export import _family_and_task as export_family_and_task

    family, task = export_family_and_task(model, weights)
    if family not in BENCH_GRAPHS:
        raise UnsupportedTaskError(
            f"lmt bench measures image encoders; family '{family}' is not one of {', '.join(BENCH_GRAPHS)}.",
            f"lmt bench 测量图像编码器；模型族 '{family}' 不在 {'、'.join(BENCH_GRAPHS)} 之中。",
        )
    return family, task


#: What ``calibration_folder`` picks up.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def calibration_folder(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted: calibration images for static INT8."""
    path = Path(folder).expanduser()
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else []
    if not files:
        raise InvalidInputError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found directly in '{path}'; give a folder of calibration images.",
            f"在 '{path}' 中没有找到图片（{'、'.join(IMAGE_SUFFIXES)}）；请指定存放校准图片的目录。",
        )
    return files


def _model_name(model: str) -> str:
    """A task name stands for that task's default model (``lmt bench image-classification``)."""
    from lmt.registry import TASKS
    from lmt.tasks import TASK_CLASSES

    return TASK_CLASSES[model].default_model if model in TASKS else model


# ---- memory ---------------------------------------------------------------------------------------------------------
def _rss_bytes() -> int | None:
    """This process's resident set size (Linux /proc); None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _trim_heap() -> None:
    """Hand freed heap pages back to the system (glibc), so that the next baseline is not padded by them."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return
    trim(0)


class _PeakRss:
    """Samples the RSS every millisecond in a thread while active; ``peak`` is the largest value seen."""

    def __init__(self) -> None:
        self.peak = _rss_bytes() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes() or 0)


# ---- back-ends ------------------------------------------------------------------------------------------------------
@dataclass
class _Runner:
    """A prepared back-end: ``feed`` turns a CPU float32 batch into what ``call`` takes; ``call`` runs one
    forward pass and waits for it to finish; ``output`` turns its result into a float32 numpy array."""

    backend: str
    feed: Callable[[Any], Any]
    call: Callable[[Any], Any]
    output: Callable[[Any], np.ndarray]
    size_bytes: int


def _torch_forward(model: Any, family: str, task: str) -> Callable[[Any], Any]:
    """The same computation as the exported graph, in eager PyTorch (see lmt.deploy.export's graph plans)."""
    from lmt.tasks.base import features_of

    def clip_image(pixel_values: Any) -> Any:
        return features_of(model.get_image_features(pixel_values=pixel_values))

    def sam_encoder(pixel_values: Any) -> Any:
        return model.get_image_embeddings(pixel_values)

    def logits(pixel_values: Any) -> Any:
        return model(pixel_values=pixel_values).logits

    def features(pixel_values: Any) -> Any:
        outputs = model(pixel_values=pixel_values)
        if outputs.last_hidden_state.ndim == 3:
            return outputs.last_hidden_state[:, 0]
        return outputs.pooler_output.flatten(1)

    if family == "clip":
        return clip_image
    if family == "sam":
        return sam_encoder
    return logits if task == "image-classification" else features


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or tuples/lists of them, as quantised layers pack theirs)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def _state_dict_bytes(model: Any) -> int:
    """Bytes of the state dict's tensors: what a checkpoint of this model weighs (int8 packed weights included).
    Counted, not serialised: a serialised copy would inflate the memory measured around it."""
    return sum(_tensor_bytes(value) for value in model.state_dict().values())


#: Submodules the measured forward never touches (CLIP's text tower, SAM's prompt side): left out of the copy that
#: the torch back-ends run, so that their memory and size count the image encoder alone, as the ONNX graph does.
_UNUSED_SUBMODULES = {"clip": ("text_model", "text_projection"),
                      "sam": ("shared_image_embedding", "prompt_encoder", "mask_decoder")}


def image_encoder_copy(model: Any, family: str) -> Any:
    """A deep copy of ``model`` without the submodules the image forward does not use (they become None)."""
    skipped = [getattr(model, name) for name in _UNUSED_SUBMODULES.get(family, ()) if hasattr(model, name)]
    # deepcopy takes a memo entry as the copy of that object: the skipped submodules are copied as None
    return copy.deepcopy(model, memo={id(module): None for module in skipped})


def _torch_runner(backend: str, loaded: LoadedModel, family: str, task: str, device: torch.device) -> _Runner:
    import torch

    from lmt.deploy.compress import quantize_torch_dynamic
    from lmt.deploy.optimize import eager_settings
    from lmt.device import resolve_dtype, synchronize

    dtype = resolve_dtype(device, _TORCH_DTYPES[backend])  # refuses bf16 where it is emulated, with the reason
    # a copy: lmt.load's models are shared through its cache and must not be moved or converted in place
    model = image_encoder_copy(loaded.model, family)
    if backend == "torch-int8":
        model = quantize_torch_dynamic(model)
    else:
        model = model.to(device=device, dtype=dtype).eval()
    model, memory_format = eager_settings(model, family, device)
    forward = _torch_forward(model, family, task)

    def feed(pixel_values: Any) -> Any:
        return pixel_values.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)

    def call(pixel_values: Any) -> Any:
        with torch.inference_mode():
            result = forward(pixel_values)
        synchronize(device)
        return result

    def output(result: Any) -> np.ndarray:
        return result.float().cpu().numpy()

    return _Runner(backend, feed, call, output, _state_dict_bytes(model))


def _onnx_file_bytes(path: Path) -> int:
    """The graph and its external-data side files (``<name>.onnx.data``)."""
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file() and p.name.startswith(path.name))


def _onnx_runner(backend: str, path: Path, device: torch.device, threads: int) -> _Runner:
    import numpy as np

    from lmt.deploy.runtime import choose_providers, onnx_session

    session = onnx_session(path, choose_providers(device.type), threads=threads)
    input_name = session.get_inputs()[0].name

    def feed(pixel_values: Any) -> Any:
        return {input_name: np.ascontiguousarray(pixel_values.numpy(), dtype=np.float32)}

    def call(inputs: Any) -> Any:
        return session.run(None, inputs)[0]

    def output(result: Any) -> np.ndarray:
        return np.asarray(result, dtype=np.float32)

    return _Runner(backend, feed, call, output, _onnx_file_bytes(path))


@dataclass(frozen=True)
class _RunnerFactory:
    """Everything needed to build one back-end's runner (built inside the memory measurement)."""

    backend: str
    loaded: LoadedModel
    family: str
    task: str
    device: torch.device
    onnx_file: Path | None
    threads: int

    def make(self) -> _Runner:
        if self.onnx_file is not None:
            return _onnx_runner(self.backend, self.onnx_file, self.device, self.threads)
        return _torch_runner(self.backend, self.loaded, self.family, self.task, self.device)


@dataclass(frozen=True)
class _Graphs:
    """The ONNX files the ONNX back-ends run, and how the INT8 one was made."""

    files: dict[str, Path]
    int8_recipe: dict[str, Any] | None


def _onnx_graphs(loaded: LoadedModel, family: str, task: str, backends: tuple[str, ...], workdir: Path,
                 calibration: Sequence[Any] | None) -> _Graphs:
    """Export once (float32, with fp16 alongside when asked), then make the INT8 graph with the SDK's recipe."""
    from lmt.deploy.export import export_loaded
    from lmt.deploy.optimize import eager_attention, quantize_int8

    wanted = [b for b in backends if b.startswith("onnx")]
    if not wanted:
        return _Graphs({}, None)
    with eager_attention(loaded.model):  # a graph whose attention the INT8 recipe can fuse
        exported = export_loaded(loaded, task, out=workdir / "export",
                                 quantize="fp16" if "onnx-fp16" in wanted else None)
    graph = exported.graph(BENCH_GRAPHS[family])
    files: dict[str, Path] = {"onnx": workdir / "export" / graph.file}
    if graph.quantized_file is not None:
        files["onnx-fp16"] = workdir / "export" / graph.quantized_file
    recipe = None
    if "onnx-int8" in wanted:
        quantized = quantize_int8(files["onnx"], workdir / "int8" / "model.onnx", family=family, loaded=loaded,
                                  calibration_images=calibration)
        files["onnx-int8"], recipe = quantized.path, quantized.recipe.to_dict()
    return _Graphs(files, recipe)


# ---- measuring ------------------------------------------------------------------------------------------------------
def count_flops(forward: Callable[[Any], Any], pixel_values: torch.Tensor) -> int:
    """FLOPs of ``forward(pixel_values)`` per image: matmuls and convolutions, 2 per multiply-add.

    Run it with eager attention (:func:`lmt.deploy.optimize.eager_attention`): the CPU's fused sdpa kernel is
    invisible to ``FlopCounterMode``, which would leave the attention matmuls uncounted.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        forward(pixel_values)
    return int(counter.get_total_flops()) // pixel_values.shape[0]


def _ceiling_call(device: torch.device, size: int) -> Callable[[], Any]:
    """One float32 ``torch.mm`` of two size x size matrices on ``device``: 2 * size**3 FLOPs."""
    import torch

    from lmt.device import synchronize

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    result = torch.empty(size, size, device=device)

    def call() -> Any:
        torch.mm(a, b, out=result)
        synchronize(device)
        return result

    return call


def time_rounds(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each call over ``rounds`` rounds; every round runs every call once, the order rotating, so that
    a busy spell of a shared machine slows every side of a ratio alike. (Warm-up happens before, per back-end.)"""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    return float(statistics.median(a / b for a, b in zip(numerators, denominators, strict=True)))


def _agreement(got: np.ndarray, reference: np.ndarray) -> Agreement:
    import numpy as np

    got = got.reshape(got.shape[0], -1).astype(np.float64)
    reference = reference.reshape(reference.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.sum(got * reference, axis=1) / np.where(norms > 0, norms, 1.0)
    return Agreement(
        samples=int(got.shape[0]), top1=float(np.mean(got.argmax(1) == reference.argmax(1))),
        max_abs_diff=float(np.abs(got - reference).max()), cosine=float(np.mean(cosine)),
    )


@dataclass
class _Prepared:
    """A runner with its inputs per batch, warm-up outputs (for agreement) and peak memory per batch."""

    runner: _Runner
    inputs: dict[int, Any]
    outputs: dict[int, np.ndarray]
    peak_memory_mb: dict[int, float | None]


def _prepare(make: Callable[[], _Runner], pixels: dict[int, Any], device: torch.device) -> _Prepared:
    """Build a back-end and run it once per batch (its warm-up), measuring the memory that took."""
    from lmt.device import peak_memory_bytes, reset_peak_memory

    _trim_heap()
    on_device = device.type in ("cuda", "npu")
    baseline = (peak_memory_bytes(device) or 0) if on_device else (_rss_bytes() or 0)
    reset_peak_memory(device)
    with _PeakRss() as rss:
        runner = make()
    inputs, outputs, peaks = {}, {}, {}
    for batch, pixel_values in pixels.items():
        inputs[batch] = runner.feed(pixel_values)
        with _PeakRss() as sampled:
            outputs[batch] = runner.output(runner.call(inputs[batch]))
        if on_device:
            peak = peak_memory_bytes(device)
            peaks[batch] = None if peak is None else (peak - baseline) / _MB
        else:
            peaks[batch] = (max(rss.peak, sampled.peak) - baseline) / _MB if baseline else None
    return _Prepared(runner, inputs, outputs, peaks)


def _machine(device: torch.device, threads: int) -> dict[str, Any]:
    from lmt.env import environment_report

    report = environment_report()
    machine = {
        "cpu": report["cpu"]["model"], "usable_cores": report["cpu"]["usable_cores"],
        "cpu_features": [name for name, on in report["cpu"]["features"].items() if on],
        "torch": report["packages"].get("torch"), "onnxruntime": report["packages"].get("onnxruntime"),
        "transformers": report["packages"].get("transformers"), "threads": threads,
        "memory_gib": report["memory"]["total_gib"], "platform": report["platform"],
    }
    if device.type == "cuda":
        machine["gpu"] = report["cuda"]["devices"]
        machine["tf32"] = report["cuda"].get("tf32")
    if hasattr(os, "getloadavg"):
        machine["load_average_1min_start"] = round(os.getloadavg()[0], 2)
    return machine


def _runs_for_batch(batch: int, prepared: dict[str, _Prepared], times: dict[str, list[float]],
                    flops_per_image: int, ceiling_size: int) -> list[BackendRun]:
    import numpy as np

    ceiling = [2 * ceiling_size**3 / t for t in times["ceiling"]]
    reference = prepared[REFERENCE]
    runs = []
    for backend, item in prepared.items():
        seconds = times[backend]
        p50, p95 = (float(np.percentile(seconds, q)) for q in (50, 95))
        achieved = [flops_per_image * batch / t for t in seconds]
        agreement = None
        if backend != REFERENCE:
            agreement = _agreement(item.outputs[batch], reference.outputs[batch])
        runs.append(BackendRun(
            backend=backend, batch=batch, latency_ms_p50=1000 * p50, latency_ms_p95=1000 * p95,
            throughput=batch / p50, speedup=_median_ratio(times[REFERENCE], seconds),
            gflops=flops_per_image * batch / p50 / 1e9, ceiling_fraction=_median_ratio(achieved, ceiling),
            peak_memory_mb=item.peak_memory_mb[batch], model_size_mb=item.runner.size_bytes / _MB,
            agreement=agreement, raw_s=tuple(seconds),
        ))
    return runs


def _measure(prepared: dict[str, _Prepared], batches: tuple[int, ...], rounds: int, flops: int,
             device: torch.device, ceiling_size: int) -> tuple[list[BackendRun], list[float]]:
    """Time every prepared back-end with the ceiling, batch by batch; the runs and every round's ceiling GFLOP/s."""
    ceiling = _ceiling_call(device, ceiling_size)
    ceiling()  # warm-up
    runs: list[BackendRun] = []
    ceiling_rates: list[float] = []
    for batch in batches:
        calls = {backend: _bound_call(item.runner, item.inputs[batch]) for backend, item in prepared.items()}
        times = time_rounds(calls | {"ceiling": ceiling}, rounds)
        ceiling_rates += [2 * ceiling_size**3 / t / 1e9 for t in times["ceiling"]]
        runs += _runs_for_batch(batch, prepared, times, flops, ceiling_size)
        logger.info("batch %d: %s", batch, {r.backend: round(r.throughput, 2) for r in runs[-len(prepared):]})
    return runs, ceiling_rates


def bench(
    model: str,
    *,
    backends: Sequence[str] | str = DEFAULT_BACKENDS,
    batches: Sequence[int] | str = DEFAULT_BATCHES,
    device: str | None = "cpu",
    tiny: bool = False,
    threads: int | None = None,
    rounds: int = 5,
    calibration_images: Sequence[Any] | None = None,
    ceiling_size: int = CEILING_SIZE,
    out: str | Path | None = None,
) -> BenchResult:
    """Measure ``model`` (registry name, task name, Hub id or local folder) on ``backends`` at each batch size.

    ``device``: ``cpu`` (default), ``cuda``, ``npu``, ``mps`` or None for the best available. ``threads``: CPU
    threads for torch and onnxruntime alike (default: torch's current count). ``rounds``: timed rounds after one
    warm-up call per back-end and batch. ``calibration_images`` feed static INT8 where the recipe uses it
    (convolutional nets); without them it calibrates on synthetic images, which is fine for speed and not for
    accuracy. With ``out``, :func:`write_results` writes ``bench.json``, ``bench.md`` and ``bench.png`` there.
    """
    import torch

    from lmt.deploy.optimize import eager_attention
    from lmt.device import resolve_device, set_threads
    from lmt.loading import ModelCache, load

    backends = check_backends(backends)
    batches = check_batches(batches)
    rounds = _check_count(rounds, "rounds", MAX_ROUNDS)
    ceiling_size = _check_count(ceiling_size, "ceiling_size", 16384)
    torch_device = resolve_device(device)
    for backend in backends:
        _check_backend_device(backend, torch_device)
    if out is not None:
        _check_chart_dependency()
    name = _model_name(model)
    weights = "tiny" if tiny else "real"
    family, task = _family_and_task(name, weights)
    threads = torch.get_num_threads() if threads is None else threads
    previous_threads = set_threads(threads)
    started = time.perf_counter()
    try:
        # a private cache: the copy measured is not shared with (or kept alive by) the SDK's model cache
        loaded = load(name, task=task, weights=weights, device="cpu", dtype="float32", cache=ModelCache(1))
        machine = _machine(torch_device, threads)
        pixels = {batch: _pixel_values(loaded, batch) for batch in batches}
        with eager_attention(loaded.model):  # FlopCounterMode cannot see inside the fused sdpa kernel
            flops = count_flops(_torch_forward(loaded.model, family, task), pixels[batches[0]][:1])
        with tempfile.TemporaryDirectory(prefix="lmt-bench-") as scratch:
            graphs = _onnx_graphs(loaded, family, task, backends, Path(scratch), calibration_images)
            prepared = {}
            for backend in backends:
                logger.info("Preparing %s", backend)
                factory = _RunnerFactory(backend, loaded, family, task, torch_device, graphs.files.get(backend),
                                         threads)
                prepared[backend] = _prepare(factory.make, pixels, torch_device)
            runs, ceiling_rates = _measure(prepared, batches, rounds, flops, torch_device, ceiling_size)
    finally:
        set_threads(previous_threads)
    if hasattr(os, "getloadavg"):
        machine["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    result = BenchResult(
        model=loaded.name, family=family, weights=loaded.weights, device=str(torch_device), threads=threads,
        rounds=rounds, backends=backends, batches=batches, flops_per_image=flops,
        ceiling_gflops=float(statistics.median(ceiling_rates)), ceiling_size=ceiling_size,
        memory_kind="device" if torch_device.type in ("cuda", "npu") else "rss",
        int8_recipe=graphs.int8_recipe, runs=tuple(runs), machine=machine,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 1),
    )
    if out is not None:
        write_results(result, out)
    return result


def _bound_call(runner: _Runner, inputs: Any) -> Callable[[], Any]:
    def call() -> Any:
        return runner.call(inputs)

    return call


def _pixel_values(loaded: LoadedModel, batch: int) -> torch.Tensor:
    """``batch`` different deterministic noise images through the model's processor (speed does not depend on
    pixel values; agreement is measured on these same inputs)."""
    from lmt.deploy.export import sample_pixel_values

    return sample_pixel_values(loaded, batch)


# ---- writing --------------------------------------------------------------------------------------------------------
def _check_chart_dependency() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise missing_dependency("matplotlib", "train", "The benchmark chart", "基准测试图表")


def _number(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}{suffix}"


def markdown_table(result: BenchResult) -> str:
    """The result as a markdown table (one row per back-end and batch), generated from the result only."""
    lines = [
        "| back-end | batch | p50 ms | p95 ms | img/s | speed-up | GFLOP/s | of ceiling | peak MB | size MB | "
        "top-1 agree | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result.runs:
        agreement = run.agreement
        lines.append(
            f"| {run.backend} | {run.batch} | {_number(run.latency_ms_p50, 1)} | {_number(run.latency_ms_p95, 1)} | "
            f"{_number(run.throughput)} | {_number(run.speedup, 2, 'x')} | {_number(run.gflops, 1)} | "
            f"{_number(100 * run.ceiling_fraction, 0, '%')} | {_number(run.peak_memory_mb, 0)} | "
            f"{_number(run.model_size_mb, 1)} | "
            f"{_number(agreement.top1 * 100, 0, '%') if agreement else '—'} | "
            f"{f'{agreement.max_abs_diff:.2e}' if agreement else '—'} |"
        )
    return "\n".join(lines) + "\n"


def render_markdown(result: BenchResult) -> str:
    """A page for one result: what was measured, where, and the table."""
    machine = result.machine
    load = ""
    if "load_average_1min_start" in machine:
        load = (f" · 1-min load average {machine['load_average_1min_start']:.1f} at start, "
                f"{machine.get('load_average_1min_end', float('nan')):.1f} at end")
    recipe = f"\n\nINT8 recipe: `{json.dumps(result.int8_recipe)}`" if result.int8_recipe else ""
    return (
        f"# lmt bench: {result.model} ({result.weights} weights)\n\n"
        f"{result.date} · {machine['cpu']} · device {result.device} · {result.threads} threads · "
        f"torch {machine['torch']} · onnxruntime {machine['onnxruntime']}{load}\n\n"
        f"Model: {result.flops_per_image / 1e9:.3f} GFLOP per image (matmuls and convolutions). Ceiling: float32 "
        f"`torch.mm` {result.ceiling_size}x{result.ceiling_size}, {result.ceiling_gflops:.1f} GFLOP/s (median of "
        f"every round). {result.rounds} timed rounds per batch after a warm-up; speed-up and share of the ceiling "
        f"are medians of per-round ratios. Peak memory: "
        f"{'host RSS growth' if result.memory_kind == 'rss' else 'device memory'} while preparing and running each "
        f"back-end. Agreement: against eager float32 on the same inputs.{recipe}\n\n"
        + markdown_table(result)
    )


def write_chart(results: Sequence[BenchResult], path: str | Path) -> Path:
    """A PNG with one panel per result: throughput of each back-end at each batch size, speed-ups on the bars."""
    _check_chart_dependency()
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(4.8 * len(results), 4.2), layout="constrained")
    axes = figure.subplots(1, len(results), squeeze=False)[0]
    for axis, result in zip(axes, results, strict=True):
        width = 0.8 / len(result.backends)
        for index, backend in enumerate(result.backends):
            runs = [result.run(backend, batch) for batch in result.batches]
            positions = [i + (index - (len(result.backends) - 1) / 2) * width for i in range(len(result.batches))]
            bars = axis.bar(positions, [r.throughput for r in runs], width, label=backend)
            axis.bar_label(bars, labels=[f"{r.speedup:.2f}x" for r in runs], fontsize=7)
        axis.set_xticks(range(len(result.batches)), [f"batch {b}" for b in result.batches])
        axis.set_ylabel("images / s")
        axis.set_title(f"{Path(result.model).name} ({result.device}, {result.threads} threads)", fontsize=9)
        axis.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_results(result: BenchResult, out: str | Path, stem: str = "bench") -> dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in folder ``out``; returns their paths by kind."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"'{folder}' is a file; give a folder for the results.",
                                f"'{folder}' 是文件；请指定保存结果的目录。")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / f"{stem}.json", "markdown": folder / f"{stem}.md", "png": folder / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(result), encoding="utf-8")
    write_chart([result], paths["png"])
    return paths
