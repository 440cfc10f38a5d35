"""Load a model by registry name, Hub id or local folder; keep loaded models in one bounded LRU cache.

>>> import lmt
>>> loaded = lmt.load("clip-vit-b32", weights="tiny")
>>> loaded.family.name, loaded.weights
('clip', 'tiny')

Only safetensors weights are loaded, ``trust_remote_code`` is off unless asked for, and when real weights
cannot be had the error names the way out instead of falling back to anything else.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmt.errors import (
    InvalidInputError,
    LmtError,
    MissingDependencyError,
    UnknownModelError,
    UnsupportedDeviceError,
    UnsupportedTaskError,
    WeightsUnavailableError,
    missing_dependency,
)
from lmt.lru import LRUCache
from lmt.registry import (
    TASKS,
    ModelFamily,
    families,
    family_for_hub_id,
    family_for_model_type,
    list_models,
    lookup_checkpoint,
    suggest,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Weights = Literal["real", "tiny"]

#: transformers Auto classes for models outside the registry (any AutoModelForImageClassification ...).
_AUTO_CLASSES = {
    "image-classification": "AutoModelForImageClassification",
    "zero-shot-object-detection": "AutoModelForZeroShotObjectDetection",
    "zero-shot-image-classification": "AutoModelForZeroShotImageClassification",
    "image-feature-extraction": "AutoModel",
    "mask-generation": "AutoModel",
    "image-to-text": "AutoModelForImageTextToText",
    "visual-question-answering": "AutoModelForImageTextToText",
    "image-text-to-text": "AutoModelForImageTextToText",
}

#: Weight quantizations (bitsandbytes, CUDA only) that :func:`load` accepts.
QUANTIZATIONS = ("4bit", "8bit")


@dataclass
class LoadedModel:
    """A model ready to run, with its processor and where it came from."""

    name: str
    source: str
    weights: str
    family: ModelFamily | None
    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    revision: str | None = None
    adapter: str | None = None
    #: "4bit" or "8bit" when the weights were quantized on load (bitsandbytes), else None.
    quantization: str | None = None
    #: Per-model caches that task calls keep (label embeddings, SAM image embeddings ...).
    caches: dict[str, LRUCache] = field(default_factory=dict, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def config(self) -> Any:
        return self.model.config

    def cache(self, name: str, max_entries: int) -> LRUCache:
        """The named per-model cache, created on first use."""
        with self._cache_lock:
            if name not in self.caches:
                self.caches[name] = LRUCache(max_entries=max_entries)
            return self.caches[name]

    @property
    def num_bytes(self) -> int:
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class _Resolved:
    name: str
    source: str
    weights: str
    family: ModelFamily | None
    is_local: bool


def _read_local_model_type(folder: Path) -> str | None:
    config_path = folder / "config.json"
    if not config_path.exists():
        return None
    try:
        return json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"The model folder '{folder.name}' has an unreadable config.json ({exc}). Re-save it with save_pretrained.",
            f"模型目录 '{folder.name}' 的 config.json 无法读取（{exc}），请用 save_pretrained 重新保存。",
        ) from exc


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve(model: str, weights: Weights = "real", task: str | None = None) -> _Resolved:
    """Turn what the user typed into a source to load: a Hub id or a local folder, and its family."""
    from lmt.tiny import tiny_model_path

    if weights not in ("real", "tiny"):
        raise InvalidInputError(
            f"weights must be 'real' or 'tiny', not {weights!r}.", f"weights 只能是 'real' 或 'tiny'，而不是 {weights!r}。"
        )
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError(
            "No model given. Pass a registry name (see `lmt models`), a Hub id or a local folder.",
            "未指定模型。请传入注册名（见 `lmt models`）、Hub id 或本地目录。",
        )
    model = model.strip()
    family_by_name = families().get(model)
    found = lookup_checkpoint(model)
    if found is None and family_by_name is not None:  # a family name means its default checkpoint
        found = (family_by_name, family_by_name.default_checkpoint)
    if found is not None:
        family, checkpoint = found
        if task is not None and checkpoint.tasks is not None and task not in checkpoint.tasks:
            others = ", ".join(list_models(f"{family.name}*", task=task)) or "none"
            raise UnsupportedTaskError(
                f"'{checkpoint.name}' is not made for '{task}' (it runs: {', '.join(checkpoint.tasks)}); loading it "
                f"would give an untrained head. Models of this family for '{task}': {others}.",
                f"'{checkpoint.name}' 不适用于任务 '{task}'（它支持：{', '.join(checkpoint.tasks)}），强行加载会得到未训练的"
                f"输出头。该模型族中适用的模型：{others}。",
            )
        if weights == "tiny":
            return _Resolved(checkpoint.name, str(tiny_model_path(family.name)), "tiny", family, True)
        return _Resolved(checkpoint.name, checkpoint.hub_id, "real", family, False)

    local = Path(model).expanduser()
    if local.is_dir():
        if weights == "tiny":
            raise InvalidInputError(
                f"'{model}' is a local folder; tiny weights apply to registry names only. Drop --tiny / weights='tiny'.",
                f"'{model}' 是本地目录；tiny 权重只适用于注册名。请去掉 --tiny。",
            )
        model_type = _read_local_model_type(local)
        return _Resolved(model, str(local), "local", family_for_model_type(model_type or ""), True)

    if _looks_like_hub_id(model):
        family = family_for_hub_id(model)
        if weights == "tiny":
            if family is None:
                raise InvalidInputError(
                    f"No tiny variant is registered for '{model}'. Use a registry name with --tiny (see `lmt models`).",
                    f"'{model}' 没有注册 tiny 变体。请配合 --tiny 使用注册名（见 `lmt models`）。",
                )
            return _Resolved(model, str(tiny_model_path(family.name)), "tiny", family, True)
        return _Resolved(model, model, "real", family, False)

    close = suggest(model)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model '{model}': not a registry name, not a local folder, not a Hub id (org/name).{hint} "
        "List the registered models with `lmt models`.",
        f"未知模型 '{model}'：既不是注册名，也不是本地目录或 Hub id（org/name）。{hint} 用 `lmt models` 查看已注册模型。",
    )


def _weights_unavailable(source: str, revision: str | None, reason: BaseException) -> WeightsUnavailableError:
    rev = f" (revision {revision})" if revision else ""
    offline = " HF_HUB_OFFLINE is set, so the Hub was not asked." if os.environ.get("HF_HUB_OFFLINE") else ""
    return WeightsUnavailableError(
        f"Could not load the weights of '{source}'{rev}: {type(reason).__name__}: {str(reason).splitlines()[0][:300]}."
        f"{offline} Ways out: use the offline tiny variant (--tiny / weights='tiny') to try the code path; "
        "connect to the Hugging Face Hub, or set HF_ENDPOINT to a mirror (e.g. https://hf-mirror.com); "
        "point HF_HOME at a cache that already holds the model; or pass a local folder saved with save_pretrained.",
        f"无法加载 '{source}'{rev} 的权重。解决办法：用 --tiny（weights='tiny'）先走通流程；连接 Hugging Face Hub，"
        "或设置 HF_ENDPOINT 为镜像（如 https://hf-mirror.com）；设置 HF_HOME 指向已缓存该模型的目录；或传入本地模型目录。",
    )


def _model_class(resolved: _Resolved, task: str | None) -> Any:
    import transformers

    if task is not None and task not in TASKS:
        raise UnsupportedTaskError(
            f"Unknown task '{task}'. Tasks: {', '.join(TASKS)}.", f"未知任务 '{task}'。可用任务：{', '.join(TASKS)}。"
        )
    if resolved.family is not None:
        return getattr(transformers, resolved.family.model_class_for(task))
    if task is None:
        raise InvalidInputError(
            f"'{resolved.name}' is not a registered family; say which task to load it for (task=...).",
            f"'{resolved.name}' 不属于已注册的模型族；请指定任务（task=...）。",
        )
    return getattr(transformers, _AUTO_CLASSES[task])


def _load_uncached(
    resolved: _Resolved,
    task: str | None,
    revision: str | None,
    device: torch.device,
    dtype: torch.dtype,
    adapter: str | None,
    adapter_revision: str | None,
    trust_remote_code: bool,
    quantization: str | None = None,
) -> LoadedModel:
    model_cls = _model_class(resolved, task)
    processor_cls = processor_class(resolved.family.processor_class if resolved.family is not None else "AutoProcessor")
    hub_revision = None if resolved.is_local else revision
    head_kwargs: dict[str, Any] = {}
    if adapter and model_cls.__name__.endswith("ForImageClassification"):
        head_kwargs = _adapter_head_kwargs(adapter, adapter_revision)
    if quantization is not None:  # bitsandbytes places the weights on the GPU itself
        head_kwargs.update(quantization_config=quantization_config(quantization, dtype), device_map={"": device})
    try:
        model = model_cls.from_pretrained(
            resolved.source,
            revision=hub_revision,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            **head_kwargs,
        )
        processor = processor_cls.from_pretrained(
            resolved.source, revision=hub_revision, trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        message = str(exc)
        if "safetensors" in message.lower() and "no file named" in message.lower():
            raise WeightsUnavailableError(
                f"'{resolved.source}' has no safetensors weights; only safetensors are loaded (pickle files can run "
                "code). Convert it once with `model.save_pretrained(folder, safe_serialization=True)` from a trusted "
                "environment, then load the folder.",
                f"'{resolved.source}' 没有 safetensors 权重；出于安全只加载 safetensors。请在可信环境中用 "
                "save_pretrained(safe_serialization=True) 转换后加载该目录。",
            ) from exc
        raise _weights_unavailable(resolved.source, revision, exc) from exc
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise LmtError(
                f"'{resolved.source}' needs custom code from its repository. Pass trust_remote_code=True only if you "
                "have read that code and trust it.",
                f"'{resolved.source}' 需要执行其仓库中的自定义代码。只有在审阅并信任该代码后才传入 trust_remote_code=True。",
            ) from exc
        raise
    if adapter:
        model = _apply_adapter(model, adapter, adapter_revision)
    if quantization is None:  # a quantized model is on its device already and refuses .to()
        model.to(device)
    model.eval()
    return LoadedModel(
        name=resolved.name,
        source=resolved.source,
        weights=resolved.weights,
        family=resolved.family,
        model=model,
        processor=processor,
        device=device,
        dtype=dtype,
        revision=hub_revision,
        adapter=adapter,
        quantization=quantization,
    )


def processor_class(name: str) -> Any:
    """The processor class a family names: a transformers class ("Blip2Processor"), or one of ours given as
    "package.module:ClassName" (e.g. the image-only processors of lmt.models._vlm_processors)."""
    import importlib

    import transformers

    if ":" in name:
        module, _, class_name = name.partition(":")
        return getattr(importlib.import_module(module), class_name)
    return getattr(transformers, name)


def quantization_config(quantization: str, dtype: torch.dtype) -> Any:
    """The bitsandbytes config for 4-bit (NF4, computing in ``dtype``) or 8-bit weights."""
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


def check_quantization(quantization: Any, device: torch.device) -> str | None:
    """``quantization`` checked: None, or "4bit"/"8bit" on a CUDA device with bitsandbytes installed."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise InvalidInputError(
            f"quantization must be '4bit', '8bit' or None, not {quantization!r:.40}.",
            f"quantization 只能是 '4bit'、'8bit' 或 None，而不是 {quantization!r:.40}。",
        )
    if device.type != "cuda":
        from lmt.device import available_devices

        raise UnsupportedDeviceError(
            f"{quantization} weights (bitsandbytes) load on CUDA GPUs only; this call runs on '{device.type}' "
            f"(available here: {', '.join(available_devices())}). Leave quantization unset to load full-precision "
            "weights, or run on an NVIDIA GPU.",
            f"{quantization} 量化权重（bitsandbytes）只能在 CUDA GPU 上加载；本次运行设备为 '{device.type}'"
            f"（本机可用：{', '.join(available_devices())}）。请不要设置 quantization（加载全精度权重），或在 NVIDIA GPU 上运行。",
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"{quantization} weights need the 'bitsandbytes' package, which is not installed. Install it with: "
            "pip install bitsandbytes",
            f"{quantization} 量化权重需要安装 'bitsandbytes' 包。请运行：pip install bitsandbytes",
        ) from exc
    return quantization


def _adapter_head_kwargs(adapter: str, adapter_revision: str | None) -> dict[str, Any]:
    """The label set an adapter's classification head was trained for (from its ``lmt_run.json``), as
    ``from_pretrained`` arguments: the base gets a head of that shape before the adapter loads into it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    local = Path(adapter).expanduser()
    try:
        path = local / "lmt_run.json" if local.is_dir() else Path(
            hf_hub_download(adapter, "lmt_run.json", revision=adapter_revision)
        )
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels") if path.is_file() else None
    except (OSError, EntryNotFoundError, json.JSONDecodeError):
        return {}  # an adapter not written by lmt train: the base's own head is used, as peft would
    if not labels:
        return {}
    return {
        "num_labels": len(labels), "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)}, "ignore_mismatched_sizes": True,
    }


def _apply_adapter(model: Any, adapter: str, adapter_revision: str | None) -> Any:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise missing_dependency("peft", "train", "Loading a LoRA adapter", "加载 LoRA 适配器") from exc
    local = Path(adapter).expanduser()
    source = str(local) if local.is_dir() else adapter
    try:
        return PeftModel.from_pretrained(model, source, revision=None if local.is_dir() else adapter_revision)
    except (OSError, ValueError) as exc:
        raise _weights_unavailable(f"adapter {adapter}", adapter_revision, exc) from exc


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class ModelCache:
    """Loaded models, bounded by count and bytes; each model is loaded once even under concurrent requests."""

    def __init__(self, max_models: int | None = None, max_bytes: int | None = None) -> None:
        self.max_models = max_models or _env_int("LMT_MAX_MODELS", 4)
        self.max_bytes = max_bytes or _env_int("LMT_MAX_MODEL_BYTES", 16 * 1024**3)
        self._cache: LRUCache[LoadedModel] = LRUCache(
            self.max_models, self.max_bytes, size_of=lambda loaded: loaded.num_bytes
        )
        self._locks: dict[tuple, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.loads = 0

    def get_or_load(self, key: tuple, loader: Any) -> LoadedModel:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # a second thread asking for the same model waits for the first load
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            loaded = loader()
            self.loads += 1
            self._cache.put(key, loaded)
            return loaded

    def __len__(self) -> int:
        return len(self._cache)

    def keys(self) -> list:
        return self._cache.keys()

    def clear(self) -> None:
        self._cache.clear()


#: The process-wide model cache every task call goes through.
MODEL_CACHE = ModelCache()


def load(
    model: str,
    *,
    task: str | None = None,
    weights: Weights = "real",
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    adapter: str | None = None,
    adapter_revision: str | None = None,
    trust_remote_code: bool = False,
    cache: ModelCache | None = None,
    quantization: str | None = None,
) -> LoadedModel:
    """Load ``model`` (registry name, Hub id or local folder) for ``task``, through the shared LRU cache.

    ``weights="tiny"`` loads the family's tiny random-weight variant (offline). ``adapter`` is a peft adapter
    (Hub id or folder), optionally pinned with ``adapter_revision``. ``quantization="4bit"`` or ``"8bit"`` loads
    the weights through bitsandbytes, on CUDA only (refused elsewhere with the reason).
    """
    from lmt.device import resolve_device, resolve_dtype

    try:
        resolved = resolve(model, weights, task)
    except UnsupportedTaskError:
        # a backbone (e.g. dinov2-small) is fit for classification once an adapter brings the trained head
        if not (adapter and task == "image-classification" and _adapter_head_kwargs(adapter, adapter_revision)):
            raise
        resolved = resolve(model, weights, None)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(torch_device, dtype)
    quantization = check_quantization(quantization, torch_device)
    model_cls_name = _model_class(resolved, task).__name__
    key = (
        resolved.source, revision, model_cls_name, str(torch_device), str(torch_dtype), adapter, adapter_revision,
        trust_remote_code, quantization,
    )
    return (cache if cache is not None else MODEL_CACHE).get_or_load(
        key,
        lambda: _load_uncached(
            resolved, task, revision, torch_device, torch_dtype, adapter, adapter_revision, trust_remote_code,
            quantization,
        ),
    )
