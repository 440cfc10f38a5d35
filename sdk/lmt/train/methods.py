"""Fine-tuning methods: full, LoRA and QLoRA, applied to a loaded model.

>>> # LoRA on a ViT: r16 adapters on q_proj/v_proj, the new classifier trained in full
>>> # model = apply_method(model, config, objective); count_parameters(model)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmt.errors import InvalidInputError, missing_dependency

if TYPE_CHECKING:
    from lmt.train.config import TrainConfig
    from lmt.train.objectives.base import Objective


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"trainable": self.trainable, "total": self.total, "percent": round(self.percent, 4)}


def count_parameters(model: Any) -> ParameterCount:
    params = list(model.parameters())
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def quantization_config(config: TrainConfig) -> Any:
    """The 4-bit bitsandbytes config for QLoRA (after :func:`check_qlora_possible`), else ``None``."""
    if config.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    from lmt.train.objectives.base import check_qlora_possible

    check_qlora_possible()
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def lora_settings(config: TrainConfig, objective: Objective) -> tuple[list[str], list[str] | None]:
    """(target modules, modules trained in full): the config's, else the family's and the task's defaults."""
    targets = config.lora.target_modules or objective.lora_target_modules()
    to_save = config.lora.modules_to_save
    if to_save is None and objective.lora_modules_to_save:
        to_save = list(objective.lora_modules_to_save)
    return list(targets), to_save


def apply_method(model: Any, config: TrainConfig, objective: Objective) -> Any:
    """Make exactly the right parameters trainable; returns the model to train (a PeftModel for LoRA)."""
    if config.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        objective.freeze_for_full(model)
        trained = model
    else:
        try:
            import peft
        except ImportError as exc:
            raise missing_dependency("peft", "train", "LoRA fine-tuning", "LoRA 微调") from exc
        if config.method == "qlora":
            model = peft.prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=config.optim.gradient_checkpointing
            )
        targets, to_save = lora_settings(config, objective)
        lora = peft.LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=targets, modules_to_save=to_save, bias="none",
        )
        try:
            trained = peft.get_peft_model(model, lora)
        except ValueError as exc:
            names = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name})
            raise InvalidInputError(
                f"LoRA could not be applied: {str(exc).splitlines()[0][:200]} Module names in this model include: "
                f"{', '.join(names[:40])}. Set lora.target_modules to some of them.",
                f"无法应用 LoRA：目标模块不存在。该模型的模块名包括：{', '.join(names[:40])}。请据此设置 lora.target_modules。",
            ) from exc
    if config.optim.gradient_checkpointing:
        enable_gradient_checkpointing(trained)
    return trained


def enable_gradient_checkpointing(model: Any) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise InvalidInputError(
            f"{type(base).__name__} does not support gradient checkpointing; set optim.gradient_checkpointing=false.",
            f"{type(base).__name__} 不支持梯度检查点，请设置 optim.gradient_checkpointing=false。",
        )
    # non-reentrant checkpointing works when the inputs need no gradient (a frozen embedding under LoRA)
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
