"""onnxruntime sessions with execution providers chosen from what is installed.

>>> from lmt.deploy.runtime import choose_providers
>>> choose_providers("cpu")
['CPUExecutionProvider']

Order when nothing is asked for: CUDA > OpenVINO > CPU. The CPU provider is always last, so that an operator a
faster provider cannot run falls back to it inside the same session (onnxruntime assigns nodes in list order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmt.errors import InvalidInputError, UnsupportedDeviceError, missing_dependency

if TYPE_CHECKING:
    import numpy as np

    from lmt.loading import LoadedModel

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


# ---- the ONNX back-end of the task calls ----------------------------------------------------------------------------
#: Back-ends a task call runs on: PyTorch, onnxruntime on the fp32 graphs, onnxruntime on dynamic-INT8 graphs.
BACKENDS = ("torch", "onnx", "onnx-int8")
_BACKEND_QUANTIZE = {"onnx": None, "onnx-int8": "int8"}


def check_backend(backend: Any) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a bilingual error that lists them."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InvalidInputError(
            f"Unknown backend {backend!r}. Use one of: {', '.join(BACKENDS)}.",
            f"未知的推理后端 {backend!r}，请使用：{'、'.join(BACKENDS)}。",
        )
    return backend


def backend_quantize(backend: str) -> str | None:
    """The graph variant an ONNX back-end runs: None (fp32) for ``onnx``, ``int8`` for ``onnx-int8``."""
    return _BACKEND_QUANTIZE[check_backend(backend)] if backend != "torch" else None


def onnx_cache_dir() -> Path:
    """Where exported graphs are kept: ``$LMT_HOME/onnx`` (default ``~/.cache/lmt/onnx``)."""
    from lmt.tiny import lmt_home

    return lmt_home() / "onnx"


class OnnxGraphs:
    """onnxruntime sessions over one exported model, by graph name (``model``; or ``image`` and ``text`` for CLIP).

    >>> import lmt
    >>> from lmt.deploy import sample_pixel_values
    >>> loaded = lmt.load("vit-b16", task="image-classification", weights="tiny")
    >>> graphs = onnx_graphs(loaded)
    >>> graphs.run("model", pixel_values=sample_pixel_values(loaded))["logits"].shape[0]
    2
    """

    def __init__(self, folder: Path, quantize: str | None, providers: list[str], threads: int | None) -> None:
        from lmt.deploy.export import MANIFEST

        self.folder = folder
        self.quantize = quantize
        self.providers = providers
        self.manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        #: The ONNX file each graph runs from (``<graph>.int8.onnx`` when quantised).
        self.files: dict[str, Path] = {
            graph["name"]: folder / (graph["quantized_file"] if quantize else graph["file"])
            for graph in self.manifest["graphs"]
        }
        self.sessions: dict[str, Any] = {name: onnx_session(path, providers, threads) for name, path in self.files.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.sessions)

    def run(self, name: str, **arrays: Any) -> dict[str, np.ndarray]:
        """Run graph ``name`` on ``arrays`` (numpy arrays or CPU tensors, by input name); outputs by name."""
        import numpy as np

        session = self.sessions[name]
        feed = {key: np.asarray(value.numpy() if hasattr(value, "numpy") else value) for key, value in arrays.items()}
        outputs = session.run(None, feed)
        return {spec.name: value for spec, value in zip(session.get_outputs(), outputs, strict=True)}

    def __repr__(self) -> str:
        return f"OnnxGraphs({self.folder.name!r}, graphs={list(self.names)}, providers={self.providers})"


def export_task(loaded: LoadedModel, task: str | None = None) -> str:
    """Which graphs to export for ``loaded`` used by ``task``: CLIP always exports its image and text towers."""
    family = loaded.family.name if loaded.family is not None else None
    if family == "clip":
        return "zero-shot-image-classification"
    if task is not None:
        return task
    base = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
    return "image-classification" if type(base).__name__.endswith("ForImageClassification") else (
        "image-feature-extraction"
    )


def onnx_graphs(
    loaded: LoadedModel,
    *,
    task: str | None = None,
    quantize: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> OnnxGraphs:
    """Sessions over ``loaded`` exported to ONNX, exporting it once into the cache.

    The cache folder is keyed by a hash of the model's weights (so a LoRA adapter, a merged or a retrained
    model each get their own graphs), its class, ``task``, ``quantize`` and the exporter's code and versions. It
    is written to a temporary folder and renamed into place under a file lock, so concurrent or interrupted runs
    never leave a half-written folder. ``device`` picks the execution providers (see :func:`choose_providers`).
    """
    providers = choose_providers(device)
    task = export_task(loaded, task)
    root = Path(cache_dir).expanduser() if cache_dir is not None else onnx_cache_dir()
    memo = loaded.cache("onnx_graphs", 8)  # a Space builds a task object per request: reuse the sessions
    key = (task, quantize, tuple(providers), threads, str(root))
    graphs = memo.get(key)
    if graphs is None:
        folder = _exported_folder(loaded, task, quantize, root)
        graphs = OnnxGraphs(folder, quantize, providers, threads)
        memo.put(key, graphs)
    return graphs


def _exported_folder(loaded: LoadedModel, task: str, quantize: str | None, root: Path) -> Path:
    from filelock import FileLock

    from lmt.deploy import export

    export._check_quantize(quantize)
    _check_exportable(loaded)
    name = Path(loaded.name).name if loaded.weights == "local" else loaded.name.replace("/", "--")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "model"
    folder = root / f"{slug}-{task}-{quantize or 'fp32'}-{_fingerprint(loaded, task, quantize)}"
    if (folder / export.MANIFEST).is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / export.MANIFEST).is_file():  # another process exported it while we waited
            return folder
        logger.info("Exporting %s to ONNX once, into %s", loaded.name, folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
        try:
            export.export_loaded(loaded, task, out=staging, quantize=quantize)
            if folder.exists():  # a folder without its manifest: someone else's interrupted copy
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _check_exportable(loaded: LoadedModel) -> None:
    import torch

    if loaded.device.type != "cpu" or loaded.dtype != torch.float32:
        raise InvalidInputError(
            f"The ONNX back-end exports from a model on CPU in float32; '{loaded.name}' is on {loaded.device} in "
            f"{loaded.dtype}. Load it with device='cpu', dtype='float32', or pass the model name instead.",
            f"ONNX 后端从 CPU 上的 float32 模型导出；'{loaded.name}' 在 {loaded.device} 上、精度为 {loaded.dtype}。"
            "请用 device='cpu'、dtype='float32' 加载，或直接传入模型名。",
        )


def _fingerprint(loaded: LoadedModel, task: str, quantize: str | None) -> str:
    """A hash of everything the exported files depend on: the weights themselves, not where they came from."""
    import inspect
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from lmt.deploy import export

    try:  # a warm cache needs no onnx; a missing one is reported by the export itself
        onnx_version = version("onnx")
    except PackageNotFoundError:
        onnx_version = "-"
    digest = hashlib.blake2b(digest_size=8)
    for part in (type(loaded.model).__name__, task, quantize, export.DEFAULT_OPSET, torch.__version__,
                 onnx_version, inspect.getsource(export)):
        digest.update(f"{part}\0".encode())
    for name, tensor in loaded.model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\0".encode())
        digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()
