"""The training configuration: typed dataclasses, read from YAML plus ``key=value`` overrides.

Every key is checked before any work starts: an unknown key is an error that suggests the closest known one,
and every value is checked against its field's type and choices.

>>> from lmt.train.config import config_from_dict
>>> cfg = config_from_dict({"task": "image-classification", "model": "vit-b16", "data": {"train": "digits/"}},
...                        overrides=["optim.lr=1e-3", "lora.r=8"])
>>> cfg.optim.lr, cfg.lora.r, cfg.method
(0.001, 8, 'lora')
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from lmt.errors import InvalidInputError

#: What ``lmt train`` can train, and the model families each objective accepts.
TRAIN_TASKS: dict[str, tuple[str, ...]] = {
    "image-classification": ("vit", "resnet", "dinov2"),
    "clip-contrastive": ("clip",),
    "clip-zero-shot-head": ("clip",),
    "sam-mask-decoder": ("sam",),
    "blip2-caption": ("blip2",),
    "blip2-vqa": ("blip2",),
    "vlm-sft": ("qwen2.5-vl", "internvl"),
}

#: The ``task`` values, checked like any other Literal field (derived, so the two never disagree).
TrainTask = Literal[tuple(TRAIN_TASKS)]  # type: ignore[valid-type]


@dataclass
class DataConfig:
    """Where the examples are. ``train``/``val`` are an ImageFolder tree, a .csv/.jsonl file of records, or a
    dataset folder from ``lmt data import`` (its ``train`` split; a split's own folder, e.g. ``ds/validation``,
    as ``val``)."""

    train: str = ""
    val: str | None = None
    #: Share of ``train`` held out for validation (stratified by label, seeded) when ``val`` is not given.
    val_fraction: float = 0.2
    image_column: str = "image"
    label_column: str = "label"
    text_column: str = "caption"
    question_column: str = "question"
    answer_column: str = "answer"
    mask_column: str = "mask"
    #: vlm-sft: the conversation, a list of {"role": "system"|"user"|"assistant", "content": ...} messages.
    messages_column: str = "messages"
    #: clip-zero-shot-head: the prompt each label becomes ('{}' is the label). The default is
    #: lmt.ZeroShotImageClassification's, so the trained model runs there with its default template.
    label_template: str = "This is a photo of {}."
    #: SAM prompts drawn from each ground-truth mask: its box (jittered), one inside point, or both.
    prompt: Literal["box", "point", "box+point"] = "box"
    #: Use at most this many training examples (0: all), handy for smoke runs.
    max_train_samples: int = 0
    max_val_samples: int = 0


@dataclass
class LoraConfig:
    """Adapter settings for every method but ``full``. ``None`` means the model family's and the task's defaults.

    ``r``/``alpha`` are the rank and scale of LoRA, QLoRA, LoHa and LoKr (IA3 has neither); ``dropout``,
    ``use_dora`` and ``use_rslora`` are LoRA/QLoRA options; ``feedforward_modules`` is IA3's.
    """

    r: int = 16
    alpha: int = 32
    #: peft's default. Dropout on every adapted layer's input draws random numbers for each activation: on a
    #: CPU it costs ViT-B/16 a tenth of its LoRA step (benchmarks/bench_finetune.py); raise it for regularisation.
    dropout: float = 0.0
    target_modules: list[str] | None = None
    modules_to_save: list[str] | None = None
    #: DoRA: each adapted weight split into a magnitude (trained) and a direction (LoRA-updated).
    use_dora: bool = False
    #: rsLoRA: scale the update by alpha/sqrt(r) instead of alpha/r, so higher ranks keep learning.
    use_rslora: bool = False
    #: IA3: targets scaled on their input rather than their output (an MLP's second layer); added to the targets.
    feedforward_modules: list[str] | None = None


@dataclass
class OptimConfig:
    epochs: int = 3
    #: Stop after this many optimizer steps (0: run all epochs).
    max_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.1
    #: ``auto``: bf16 on GPUs/NPUs/CPUs that run it fast, fp16 on older GPUs, fp32 elsewhere.
    precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    #: Recompute activations in the backward pass: less memory, more time.
    gradient_checkpointing: bool = False


@dataclass
class EvalConfig:
    #: Metric that selects the best checkpoint; ``None`` means the task's main metric.
    metric_for_best: str | None = None
    #: Stop after this many epochs without improvement (0: never stop early).
    early_stopping_patience: int = 0


@dataclass
class RunConfig:
    """Where the run goes and how it is checkpointed."""

    output_dir: str = "runs"
    #: Run folder name; ``None`` derives one from what is trained, e.g. ``vit-b16_lora-r16_bs8_3ep_digits``.
    name: str | None = None
    seed: int = 42
    #: Deterministic algorithms (bit-exact resume); slightly slower on GPUs.
    deterministic: bool = False
    #: Also checkpoint every N optimizer steps (0: at epoch ends only).
    save_every_steps: int = 0
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    #: Continue from the newest complete checkpoint in the run folder.
    resume: bool = False
    #: Replace a finished run folder of the same name.
    overwrite: bool = False
    device: Literal["auto", "cpu", "cuda", "npu", "mps"] = "auto"
    num_workers: int = 0


@dataclass
class CardConfig:
    """Model-card metadata for the run folder's README.md."""

    #: Hub id of the base model, needed when ``model`` is a local folder (it is never written as a path).
    base_model_id: str | None = None
    license: str = "mit"
    dataset_name: str | None = None
    dataset_id: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """One training run. ``model`` is a registry name, a Hub id or a local folder (e.g. an earlier run)."""

    task: TrainTask = "image-classification"
    model: str = ""
    weights: Literal["real", "tiny"] = "real"
    revision: str | None = None
    method: Literal["full", "lora", "qlora", "ia3", "loha", "lokr"] = "lora"
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    card: CardConfig = field(default_factory=CardConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------- parsing


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Training config: {message}", f"训练配置：{message_zh}")


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(choice) for choice in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against (and, for numbers written as text like ``1e-4``, converted to) ``annotation``."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(annotation):
            return None
        for arg in get_args(annotation):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InvalidInputError:
                continue
    elif origin is Literal:
        if value in get_args(annotation):
            return value
    elif origin is list:
        if isinstance(value, str):  # "a,b" from the command line
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [_coerce(item, get_args(annotation)[0], key) for item in value]
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if number == number and abs(number) != float("inf"):
                    return number
    elif annotation is str and isinstance(value, str):
        return value
    raise _error(
        f"'{key}' must be {_type_name(annotation)}, not {value!r}.",
        f"'{key}' 应为 {_type_name(annotation)}，而不是 {value!r}。",
    )


#: ``method`` values people write for LoRA variants that are LoRA options here: (method, option) to write instead.
_METHOD_OPTIONS = {"dora": ("lora", "use_dora"), "rslora": ("lora", "use_rslora"), "qdora": ("qlora", "use_dora")}

#: Names users bring from transformers' TrainingArguments and peft, mapped to ours.
_ALIASES = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs", "train_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "scheduler", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_r": "r",
    "output": "output_dir", "fp16": "precision", "bf16": "precision",
}


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        where = prefix.rstrip(".")
        raise _error(
            f"'{where or 'the config'}' must be a mapping of keys to values, not {type(values).__name__}.",
            f"'{where or '配置'}' 应为键值映射，而不是 {type(values).__name__}。",
        )
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in known:
            close = [_ALIASES[key]] if _ALIASES.get(key) in known else difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise _error(
                f"unknown key '{full}'.{hint} Known keys here: {', '.join(known)}.",
                f"未知的键 '{full}'。{hint} 此处可用的键：{', '.join(known)}。",
            )
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, f"{full}.")
        elif full == "method" and value in _METHOD_OPTIONS:
            method, option = _METHOD_OPTIONS[value]
            raise _error(
                f"'method' must be {_type_name(annotation)}, not {value!r}: {value} is a LoRA option here. Write "
                f"method: {method} with lora.{option}: true.",
                f"'method' 应为 {_type_name(annotation)}，而不是 {value!r}：{value} 在这里是 LoRA 的选项，"
                f"请写 method: {method} 并设置 lora.{option}: true。",
            )
        else:
            kwargs[key] = _coerce(value, annotation, full)
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise _error(
            f"override '{text}' is not key=value (for example optim.lr=1e-4).",
            f"覆盖项 '{text}' 不是 key=value 形式（例如 optim.lr=1e-4）。",
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply_overrides(values: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = _parse_override(text)
        node = values
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _error(f"'{text}': '{part}' is not a section.", f"'{text}'：'{part}' 不是一个配置段。")
            node = child
        node[path[-1]] = value
    return values


def validate(config: TrainConfig) -> TrainConfig:
    """Checks across fields, run before any model or data is touched."""
    from lmt.registry import families, lookup_checkpoint

    if not config.model.strip():
        raise _error("'model' is required (a registry name, a Hub id or a local folder).",
                     "必须指定 'model'（注册名、Hub id 或本地目录）。")
    if not config.data.train.strip():
        raise _error("'data.train' is required (an ImageFolder folder, a .csv/.jsonl file or a dataset folder).",
                     "必须指定 'data.train'（ImageFolder 目录、.csv/.jsonl 文件或数据集目录）。")
    for name in ("train", "val"):
        path = getattr(config.data, name)
        if path and not Path(path).expanduser().exists():
            raise _error(f"data.{name} '{path}' does not exist.", f"data.{name} '{path}' 不存在。")
    found = lookup_checkpoint(config.model)
    registered = found[0] if found is not None else families().get(config.model)
    if registered is not None and registered.name not in TRAIN_TASKS[config.task]:
        raise _error(
            f"task '{config.task}' trains {', '.join(TRAIN_TASKS[config.task])} models, not '{config.model}'.",
            f"任务 '{config.task}' 支持的模型族为 {', '.join(TRAIN_TASKS[config.task])}，不支持 '{config.model}'。",
        )
    positive = {
        "optim.epochs": config.optim.epochs, "optim.batch_size": config.optim.batch_size,
        "optim.grad_accum": config.optim.grad_accum, "lora.r": config.lora.r, "lora.alpha": config.lora.alpha,
        "run.keep_checkpoints": config.run.keep_checkpoints, "run.log_every_steps": config.run.log_every_steps,
    }
    for key, value in positive.items():
        if value < 1:
            raise _error(f"'{key}' must be at least 1, not {value}.", f"'{key}' 至少为 1，而不是 {value}。")
    non_negative = {
        "optim.max_steps": config.optim.max_steps, "run.save_every_steps": config.run.save_every_steps,
        "eval.early_stopping_patience": config.eval.early_stopping_patience, "run.num_workers": config.run.num_workers,
        "data.max_train_samples": config.data.max_train_samples, "data.max_val_samples": config.data.max_val_samples,
        "optim.weight_decay": config.optim.weight_decay, "optim.max_grad_norm": config.optim.max_grad_norm,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise _error(f"'{key}' must not be negative ({value}).", f"'{key}' 不能为负（{value}）。")
    ranges = {
        "optim.lr": (config.optim.lr, 0.0, 1.0, False), "optim.warmup_ratio": (config.optim.warmup_ratio, 0.0, 1.0, True),
        "data.val_fraction": (config.data.val_fraction, 0.0, 0.9, True), "lora.dropout": (config.lora.dropout, 0.0, 0.9, True),
    }
    for key, (value, low, high, low_inclusive) in ranges.items():
        if not (low <= value <= high) or (not low_inclusive and value == low):
            raise _error(f"'{key}' must lie in {'[' if low_inclusive else '('}{low}, {high}], not {value}.",
                         f"'{key}' 应在 {'[' if low_inclusive else '('}{low}, {high}] 之内，而不是 {value}。")
    if config.run.name is not None and (not config.run.name.strip() or any(c in config.run.name for c in "/\\")
                                        or config.run.name.startswith(".")):
        raise _error(f"run.name '{config.run.name}' must be a plain folder name.",
                     f"run.name '{config.run.name}' 必须是普通目录名。")
    if not _is_label_template(config.data.label_template):
        raise _error(f"data.label_template must contain '{{}}' exactly once and no other braces, e.g. "
                     f"'a photo of a {{}}.'; got {config.data.label_template!r:.80}.",
                     "data.label_template 必须恰好包含一个 '{}' 且没有其他花括号，例如 'a photo of a {}.'。")
    if config.run.resume and config.run.overwrite:
        raise _error("run.resume and run.overwrite contradict each other; pick one.",
                     "run.resume 与 run.overwrite 互相矛盾，请只选一个。")
    _check_method_options(config)
    return config


def _check_method_options(config: TrainConfig) -> None:
    """Refuse adapter options the chosen method would silently ignore (e.g. lora.use_dora with method ia3).

    With ``method: full`` the numbers r/alpha/dropout are left alone (a LoRA config switched to full by an override
    keeps them, unused); the opt-in switches are refused everywhere they do nothing.
    """
    lora, defaults = config.lora, LoraConfig()
    ignored = []
    if config.method not in ("lora", "qlora"):
        ignored += [key for key in ("use_dora", "use_rslora") if getattr(lora, key)]
    if config.method != "ia3" and lora.feedforward_modules is not None:
        ignored.append("feedforward_modules")
    if config.method in ("ia3", "loha", "lokr") and lora.dropout != defaults.dropout:
        ignored.append("dropout")
    if config.method == "ia3":
        ignored += [key for key in ("r", "alpha") if getattr(lora, key) != getattr(defaults, key)]
    if ignored:
        keys = ", ".join(f"lora.{key}" for key in ignored)
        raise _error(
            f"{keys} has no effect with method '{config.method}'. use_dora, use_rslora and dropout are LoRA/QLoRA "
            "options, feedforward_modules is IA3's, r and alpha belong to lora, qlora, loha and lokr. Remove "
            f"{keys} or pick the method it belongs to.",
            f"{keys} 对 method '{config.method}' 不起作用：use_dora、use_rslora、dropout 属于 LoRA/QLoRA，"
            f"feedforward_modules 属于 IA3，r 和 alpha 属于 lora、qlora、loha、lokr。请删除 {keys} 或换用对应的方法。",
        )


def _is_label_template(template: str) -> bool:
    try:
        return template.count("{}") == 1 and bool(template.format("x").strip())
    except (IndexError, KeyError, ValueError):  # stray braces such as '{label}' or '{'
        return False


def config_from_dict(values: dict, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A validated :class:`TrainConfig` from a mapping (as read from YAML) and ``key=value`` overrides."""
    import copy

    merged = _apply_overrides(copy.deepcopy(values or {}), list(overrides))
    return validate(_build(TrainConfig, merged, ""))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config file, apply ``key=value`` overrides, check every key and value."""
    import yaml

    path = Path(path).expanduser()
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise _error(f"config file '{path}' not found.", f"找不到配置文件 '{path}'。") from exc
    except yaml.YAMLError as exc:
        raise _error(f"'{path}' is not valid YAML: {exc}", f"'{path}' 不是合法的 YAML：{exc}") from exc
    return config_from_dict(values or {}, overrides)


def config_to_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
