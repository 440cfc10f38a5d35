"""What every training objective provides to the training loop.

An objective knows one task: which records it reads, how to load the model for it, how to batch records,
the training loss, and the evaluation metrics. The loop (``lmt.train.loop``) knows nothing task-specific.

To add an objective: subclass :class:`Objective`, fill in the class attributes and its abstract methods
(a subclass that misses one cannot be instantiated), and add it to ``OBJECTIVES`` in ``lmt/train/objectives/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmt.errors import InvalidInputError, UnsupportedDeviceError, missing_dependency

if TYPE_CHECKING:
    import torch

    from lmt.loading import _Resolved
    from lmt.train.config import TrainConfig


class Objective(ABC):
    #: The ``task`` value in the config.
    name: str = ""
    #: The SDK task (``lmt.pipeline`` name) that runs the trained model, for the card's usage code.
    sdk_task: str = ""
    #: The Hub ``pipeline_tag`` of the trained model.
    pipeline_tag: str = ""
    #: transformers class to load (by name); ``None``: the registry family's class for ``sdk_task``.
    model_class_name: str | None = None
    #: The metric that selects the best checkpoint unless ``eval.metric_for_best`` says otherwise.
    main_metric: str = "loss"
    #: Record keys this objective reads, mapped to ``DataConfig`` attributes holding the column names.
    record_columns: dict[str, str] = {"image": "image_column"}
    #: Record key used to stratify the automatic train/val split (``None``: random split).
    stratify_key: str | None = None
    #: Modules trained in full next to LoRA (e.g. a new classification head); ``None``: none.
    lora_modules_to_save: tuple[str, ...] | None = None

    def __init__(self, config: TrainConfig, resolved: _Resolved) -> None:
        self.config = config
        self.resolved = resolved
        self.family = resolved.family or _family_from_config(resolved.source, config.revision, resolved.is_local)
        self.processor: Any = None

    # ------------------------------------------------------------------ data
    def columns(self) -> dict[str, str]:
        """Record key -> column name in the user's CSV/JSONL."""
        return {key: getattr(self.config.data, attr) for key, attr in self.record_columns.items()}

    def setup(self, train_records: Sequence[dict], val_records: Sequence[dict]) -> None:  # noqa: B027 (optional hook)
        """Learn what the data says before the model loads (e.g. the label set). Default: nothing."""

    # ------------------------------------------------------------------ model
    def load_model(self, device_map: Any = None, quantization_config: Any = None) -> Any:
        """The transformers model, in float32 (mixed precision is applied by autocast, not by casting)."""
        import torch
        import transformers

        class_name = self.model_class_name or self._family_class_name()
        model_cls = getattr(transformers, class_name)
        kwargs = dict(self.model_kwargs())
        if quantization_config is not None:
            kwargs.update(quantization_config=quantization_config, device_map=device_map)
        else:
            kwargs["dtype"] = torch.float32
        try:
            model = model_cls.from_pretrained(
                self.resolved.source, revision=None if self.resolved.is_local else self.config.revision,
                use_safetensors=True, **kwargs,
            )
        except OSError as exc:
            from lmt.loading import _weights_unavailable

            raise _weights_unavailable(self.resolved.source, self.config.revision, exc) from exc
        self.processor = self.load_processor()
        return model

    def _family_class_name(self) -> str:
        if self.family is None:
            raise InvalidInputError(
                f"'{self.config.model}' is not a model of a registered family; task '{self.name}' needs one of the "
                "families `lmt models` lists.",
                f"'{self.config.model}' 不属于已注册的模型族；任务 '{self.name}' 需要 `lmt models` 列出的模型族。",
            )
        return self.family.model_class_for(self.sdk_task)

    def model_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments (e.g. a new label set). Default: none."""
        return {}

    def load_processor(self) -> Any:
        from lmt.loading import processor_class

        # a family may name one of our own processors ("module:Class"), e.g. the image-only VLM processors
        class_name = self.family.processor_class if self.family is not None else "AutoProcessor"
        return processor_class(class_name).from_pretrained(
            self.resolved.source, revision=None if self.resolved.is_local else self.config.revision
        )

    def lora_target_modules(self) -> list[str]:
        """LoRA targets when the config names none: the family's defaults."""
        if self.family is None or not self.family.lora_target_modules:
            raise InvalidInputError(
                f"No default LoRA targets for '{self.config.model}'; set lora.target_modules in the config.",
                f"'{self.config.model}' 没有默认的 LoRA 目标模块，请在配置中设置 lora.target_modules。",
            )
        return list(self.family.lora_target_modules)

    def freeze_for_full(self, model: Any) -> None:  # noqa: B027 (optional hook)
        """Which parameters full fine-tuning trains. Default: all of them."""

    def on_train_mode(self, model: Any) -> None:
        """Called after every ``model.train()``. Default: frozen BatchNorm layers keep their statistics, so a
        LoRA adapter (which does not carry the base's buffers) reproduces the trained model exactly."""
        import torch

        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters(recurse=False)
            ):
                module.eval()

    # ------------------------------------------------------------------ steps (every objective has its own)
    @abstractmethod
    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Records (images opened) -> a batch of tensors."""

    @abstractmethod
    def loss(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        """The scalar training loss of one batch."""

    @abstractmethod
    def eval_step(self, model: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-example tensors (first dimension = batch), always including ``loss``; gathered across processes."""

    @abstractmethod
    def compute_metrics(self, outputs: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, Any]]:
        """(scalar metrics, extras such as a confusion matrix) from all gathered ``eval_step`` outputs."""

    # ------------------------------------------------------------------ outputs
    def run_info(self) -> dict[str, Any]:
        """Extra facts saved in ``lmt_run.json`` (e.g. the labels). Default: none."""
        return {}

    def card_model_class(self) -> str:
        return self.model_class_name or self._family_class_name()

    def plot_extras(self, extras: dict[str, Any], folder: Path) -> list[Path]:
        """PNG files drawn from the best epoch's extras. Default: none."""
        return []


def _family_from_config(source: str, revision: str | None, is_local: bool) -> Any:
    """The registered family of an unregistered Hub model (e.g. a community ViT), read from its config.json."""
    from transformers import AutoConfig

    from lmt.registry import family_for_model_type

    try:
        model_type = AutoConfig.from_pretrained(source, revision=None if is_local else revision).model_type
    except (OSError, ValueError):
        return None  # the weights load later fails with the loader's actionable message
    return family_for_model_type(model_type)


def check_qlora_possible() -> None:
    """QLoRA needs bitsandbytes on a CUDA GPU; say so plainly everywhere else."""
    import torch

    if not torch.cuda.is_available():
        from lmt.device import available_devices

        raise UnsupportedDeviceError(
            "QLoRA (4-bit weights through bitsandbytes) runs on CUDA GPUs only; this machine has "
            f"{', '.join(available_devices())}. Use method: lora (same adapters, full-precision base) here, or run "
            "the same config on an NVIDIA GPU.",
            f"QLoRA（bitsandbytes 4 比特权重）只能在 CUDA GPU 上运行；本机设备为 {', '.join(available_devices())}。"
            "请改用 method: lora，或在 NVIDIA GPU 上运行同一配置。",
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise missing_dependency("bitsandbytes", "train", "QLoRA", "QLoRA 训练") from exc
