"""Fine-tuning methods: full, LoRA (with its DoRA and rsLoRA options), QLoRA, IA3, LoHa and LoKr, applied to a
loaded model.

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

#: Methods that build a peft adapter (everything but ``full``).
ADAPTER_METHODS = ("lora", "qlora", "ia3", "loha", "lokr")

#: IA3's default targets per model family, as in the IA3 paper (Liu et al. 2022): the attention keys and values,
#: and the MLP's second layer, which IA3 scales on its input (peft's "feedforward" modules). peft ships such
#: defaults for language models only; a family not listed here gets its LoRA targets and no feedforward module.
IA3_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "vit": ("k_proj", "v_proj", "fc2"),
    "dinov2": ("k_proj", "v_proj", "fc2"),
    "clip": ("k_proj", "v_proj", "fc2"),
}
IA3_FEEDFORWARD_MODULES = ("fc2",)


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
    return list(targets), _modules_to_save(config, objective)


def ia3_settings(config: TrainConfig, objective: Objective) -> tuple[list[str], list[str], list[str] | None]:
    """(target modules, feedforward modules, modules trained in full) for IA3.

    Targets: ``lora.target_modules``, else :data:`IA3_TARGET_MODULES` for the family, else the family's LoRA targets.
    Feedforward modules (scaled on their input): ``lora.feedforward_modules`` (added to the targets), else those
    of :data:`IA3_FEEDFORWARD_MODULES` that are targets.
    """
    family = objective.family.name if objective.family is not None else None
    if config.lora.target_modules:
        targets = list(config.lora.target_modules)
    elif family in IA3_TARGET_MODULES:
        targets = list(IA3_TARGET_MODULES[family])
    else:
        targets = list(objective.lora_target_modules())
    if config.lora.feedforward_modules is not None:
        feedforward = list(config.lora.feedforward_modules)
        targets += [name for name in feedforward if name not in targets]
    else:
        feedforward = [name for name in IA3_FEEDFORWARD_MODULES if name in targets]
    return targets, feedforward, _modules_to_save(config, objective)


def _modules_to_save(config: TrainConfig, objective: Objective) -> list[str] | None:
    if config.lora.modules_to_save is not None:
        return list(config.lora.modules_to_save)
    return list(objective.lora_modules_to_save) if objective.lora_modules_to_save else None


def peft_config(config: TrainConfig, objective: Objective) -> Any:
    """The peft config ``method`` asks for (any method but ``full``)."""
    import peft

    if config.method == "ia3":
        targets, feedforward, to_save = ia3_settings(config, objective)
        return peft.IA3Config(target_modules=targets, feedforward_modules=feedforward, modules_to_save=to_save)
    targets, to_save = lora_settings(config, objective)
    if config.method == "loha":
        return peft.LoHaConfig(r=config.lora.r, alpha=config.lora.alpha, target_modules=targets,
                               modules_to_save=to_save)
    if config.method == "lokr":
        return peft.LoKrConfig(r=config.lora.r, alpha=config.lora.alpha, target_modules=targets,
                               modules_to_save=to_save)
    return peft.LoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=targets, modules_to_save=to_save, bias="none",
        use_dora=config.lora.use_dora, use_rslora=config.lora.use_rslora,
    )


def method_tag(config: TrainConfig) -> str:
    """The method part of a run folder's name: ``full``, ``lora-r16``, ``dora-r16``, ``lora-r16-rs``, ``ia3`` ..."""
    if config.method == "full":
        return "full"
    if config.method == "ia3":
        return "ia3"  # IA3 has no rank
    name = config.method.replace("lora", "dora") if config.lora.use_dora else config.method
    return f"{name}-r{config.lora.r}" + ("-rs" if config.lora.use_rslora else "")


def method_description(config: TrainConfig, objective: Objective) -> str:
    """One line for the model card: ``LoRA r16 (alpha 32) on q_proj/v_proj, classifier trained in full``."""
    if config.method == "full":
        return "full fine-tuning"
    if config.method == "ia3":
        targets, feedforward, to_save = ia3_settings(config, objective)
        text = f"IA3 on {'/'.join(targets)}" + (f" ({'/'.join(feedforward)} scaled on its input)" if feedforward else "")
    else:
        targets, to_save = lora_settings(config, objective)
        name = {"lora": "LoRA", "qlora": "QLoRA (4-bit base)", "loha": "LoHa", "lokr": "LoKr"}[config.method]
        options = [option for option, used in (("DoRA", config.lora.use_dora), ("rsLoRA scaling",
                                                                                 config.lora.use_rslora)) if used]
        text = f"{name}{''.join(' + ' + option for option in options)} r{config.lora.r} (alpha {config.lora.alpha})"
        text += f" on {'/'.join(targets)}"
    return text + (f", {'/'.join(to_save)} trained in full" if to_save else "")


def weight_decays(name: str, param: Any) -> bool:
    """Whether AdamW's weight decay applies to a trainable parameter: not to biases and norm scales (1-D), nor to
    IA3's scaling vectors, which start at 1 (decay would pull them towards 0 and switch the activations off)."""
    return param.ndim >= 2 and ".ia3_l." not in name


def apply_method(model: Any, config: TrainConfig, objective: Objective) -> Any:
    """Make exactly the right parameters trainable; returns the model to train (a PeftModel for adapter methods)."""
    if config.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        objective.freeze_for_full(model)
        trained = model
    else:
        try:
            import peft
        except ImportError as exc:
            raise missing_dependency("peft", "train", f"{config.method} fine-tuning",
                                     f"{config.method} 微调") from exc
        if config.method == "qlora":
            model = peft.prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=config.optim.gradient_checkpointing
            )
        try:
            trained = peft.get_peft_model(model, peft_config(config, objective))
        except ValueError as exc:
            names = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name})
            raise InvalidInputError(
                f"{config.method} could not be applied: {str(exc).splitlines()[0][:200].rstrip('.')}. Module names in this model "
                f"include: {', '.join(names[:40])}. Set lora.target_modules to some of them.",
                f"无法应用 {config.method}：目标模块不存在或不受支持。该模型的模块名包括：{', '.join(names[:40])}。"
                "请据此设置 lora.target_modules。",
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
