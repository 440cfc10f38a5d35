"""The training loop: one function, :func:`train`, the same on CPU, GPUs, NPUs and several processes (accelerate).

>>> from lmt.train import load_config, train
>>> # result = train(load_config("configs/train/vit-digits-lora.yaml", ["optim.epochs=1"]))
>>> # result.run_dir, result.metrics["accuracy"]
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError, LmtError
from lmt.train import checkpoint as ckpt
from lmt.train.config import TrainConfig, config_to_yaml, validate
from lmt.train.methods import method_tag, weight_decays

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_INFO = "lmt_run.json"
CONFIG_FILE = "train_config.yaml"
METRICS_LOG = "metrics.jsonl"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced: its folder, the best validation metrics, and the parameter counts."""

    run_dir: Path
    metrics: dict[str, float]
    best_epoch: int | None
    global_step: int
    trainable_parameters: int
    total_parameters: int
    seconds: float
    files: list[str] = field(default_factory=list)
    #: The trained model in memory (best checkpoint loaded), as ``Trainer.model`` would be; not serialised.
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "model"}
        data["run_dir"] = str(self.run_dir)
        return data


# ------------------------------------------------------------------------------------------------ run folder


def run_name(config: TrainConfig, resolved_name: str) -> str:
    """``vit-b16_lora-r16_bs8_3ep_digits``: what was trained, how, on what."""
    if config.run.name:
        return config.run.name
    model = Path(resolved_name).name if Path(resolved_name).expanduser().exists() else resolved_name.split("/")[-1]
    if config.weights == "tiny":
        model += "-tiny"
    method = method_tag(config)
    data = Path(config.data.train.rstrip("/\\")).stem or "data"
    return f"{model}_{method}_bs{config.optim.batch_size}_{config.optim.epochs}ep_{data}"


def _prepare_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Create, resume or (when asked) replace the run folder; never delete a folder that is not a run."""
    config_file = run_dir / CONFIG_FILE
    if config.run.resume:
        if not config_file.is_file():
            raise InvalidInputError(
                f"Nothing to resume in '{run_dir}': it holds no run started by lmt train. Drop --resume to start.",
                f"'{run_dir}' 中没有可恢复的训练（不是 lmt train 创建的运行目录）。去掉 --resume 以重新开始。",
            )
        import yaml

        saved = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        current = config.to_dict()
        for key in ("resume", "overwrite"):
            saved["run"].pop(key, None)
            current["run"].pop(key, None)
        if saved != current:
            differing = _differences(saved, current)
            raise InvalidInputError(
                f"The config differs from the one '{run_dir.name}' was started with ({', '.join(differing)}); an "
                "exact resume needs the same config. Resume with the saved train_config.yaml, or start a new run.",
                f"配置与 '{run_dir.name}' 开始时的配置不同（{', '.join(differing)}）；精确恢复需要相同的配置。"
                "请使用保存的 train_config.yaml 恢复，或开始新的运行。",
            )
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        is_run = config_file.is_file() or (run_dir / RUN_INFO).is_file()
        if not config.run.overwrite or not is_run:
            what = "a finished run" if (run_dir / RUN_INFO).is_file() else (
                "an unfinished run (resume it with --resume)" if is_run else "files that are not a run")
            raise InvalidInputError(
                f"'{run_dir}' already holds {what}. Choose another run.name"
                + (", or set run.overwrite=true to replace it." if is_run else "."),
                f"'{run_dir}' 已存在内容。请换一个 run.name" + ("，或设置 run.overwrite=true 覆盖。" if is_run else "。"),
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text_atomically(config_file, config_to_yaml(config))


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current)):
            found += _differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        return found
    return [] if saved == current else [prefix.rstrip(".")]


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class MetricsLog:
    """``metrics.jsonl``: one JSON object a line; on resume, lines written after the checkpoint are dropped."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate_after(self, global_step: int, epoch: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else None
            # train lines up to the checkpoint's step; validation lines of the epochs it completed
            if record and (record["step"] <= global_step if record["split"] == "train" else record["epoch"] < epoch):
                kept.append(line)
        _write_text_atomically(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ set-up


def _mixed_precision(config: TrainConfig, device_type: str) -> str:
    """The accelerate mixed-precision mode: only where the device runs it fast."""
    from lmt.env import cpu_has_fast_bf16

    wanted = config.optim.precision
    if device_type == "cpu" and wanted in ("fp16", "bf16") and not (wanted == "bf16" and cpu_has_fast_bf16()):
        from lmt.errors import UnsupportedDeviceError

        raise UnsupportedDeviceError(
            f"optim.precision={wanted} on this CPU would be emulated and far slower than fp32 (it lacks "
            "AVX-512-BF16/AMX). Use optim.precision=auto or no.",
            f"此 CPU 不支持 AVX-512-BF16/AMX，optim.precision={wanted} 需软件模拟，远慢于 fp32。请使用 auto 或 no。",
        )
    if wanted != "auto":
        return wanted
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device_type == "npu":
        return "fp16"
    if device_type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "no"


def _accelerator(config: TrainConfig) -> Any:
    from accelerate import Accelerator

    from lmt.device import resolve_device

    requested = None if config.run.device == "auto" else config.run.device
    device = resolve_device(requested)  # checks the device exists; names the fix when it does not
    return Accelerator(cpu=device.type == "cpu", mixed_precision=_mixed_precision(config, device.type))


def _set_determinism(config: TrainConfig) -> None:
    import torch
    from accelerate.utils import set_seed

    set_seed(config.run.seed)
    if config.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _records(config: TrainConfig, objective: Any) -> tuple[list[dict], list[dict]]:
    from lmt.train.data import read_records, stratified_split

    columns = objective.columns()
    train_records = read_records(config.data.train, columns)
    if config.data.val:
        val_records = read_records(config.data.val, columns)
    else:
        if config.data.val_fraction <= 0:
            raise InvalidInputError(
                "Training data: no validation data (data.val unset and data.val_fraction=0); the best checkpoint and "
                "early stopping need one.",
                "训练数据：没有验证集（未设置 data.val 且 data.val_fraction=0）；选择最佳检查点和早停需要验证集。",
            )
        train_records, val_records = stratified_split(
            train_records, config.data.val_fraction, config.run.seed, objective.stratify_key
        )
    if config.data.max_train_samples:
        train_records = train_records[: config.data.max_train_samples]
    if config.data.max_val_samples:
        val_records = val_records[: config.data.max_val_samples]
    if not train_records or not val_records:
        raise InvalidInputError(
            f"Training data: {len(train_records)} training and {len(val_records)} validation examples; both need "
            "at least one.",
            f"训练数据：训练样本 {len(train_records)} 个、验证样本 {len(val_records)} 个，两者都至少需要 1 个。",
        )
    return train_records, val_records


def _optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if weight_decays(name, param) else no_decay).append(param)  # none on biases, norms, IA3 scales
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.optim.lr)


# ------------------------------------------------------------------------------------------------ the loop


def train(config: TrainConfig) -> TrainResult:
    """Train as ``config`` says; write a Hub-ready run folder; return where it is and the best metrics."""
    import torch
    from transformers import get_scheduler

    from lmt.loading import resolve
    from lmt.train.data import EpochSampler, RecordDataset
    from lmt.train.methods import apply_method, count_parameters, quantization_config
    from lmt.train.objectives import objective_class

    started = time.perf_counter()
    config = validate(config)
    resolved = resolve(config.model, config.weights)
    objective = objective_class(config.task)(config, resolved)
    train_records, val_records = _records(config, objective)
    objective.setup(train_records, val_records)
    quantization = quantization_config(config)  # refuses QLoRA off CUDA before anything heavy happens

    _set_determinism(config)
    accelerator = _accelerator(config)
    main = accelerator.is_main_process
    run_dir = Path(config.run.output_dir).expanduser() / run_name(config, resolved.name)
    if main:
        _prepare_run_dir(run_dir, config)
    accelerator.wait_for_everyone()
    checkpoints = run_dir / CHECKPOINTS
    if main:
        ckpt.recover(checkpoints)

    model = objective.load_model(
        device_map={"": accelerator.local_process_index} if quantization is not None else None,
        quantization_config=quantization,
    )
    model = apply_method(model, config, objective)
    params = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.3f%%)", params.trainable, params.total, params.percent)

    sampler = EpochSampler(len(train_records), config.run.seed)
    # Each loader draws its workers' seed from its own generator when an iterator starts; with the default (the
    # global RNG) a resumed run would start its epoch's iterator from a different RNG state than the original.
    train_loader = torch.utils.data.DataLoader(
        RecordDataset(train_records), batch_size=config.optim.batch_size, sampler=sampler,
        collate_fn=objective.collate, num_workers=config.run.num_workers,
        generator=torch.Generator().manual_seed(config.run.seed),
    )
    val_loader = torch.utils.data.DataLoader(
        RecordDataset(val_records), batch_size=config.optim.batch_size, shuffle=False,
        collate_fn=objective.collate, num_workers=config.run.num_workers,
        generator=torch.Generator().manual_seed(config.run.seed),
    )
    optimizer = _optimizer(model, config)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    steps_per_epoch = math.ceil(len(train_loader) / config.optim.grad_accum)
    total_steps = config.optim.max_steps or steps_per_epoch * config.optim.epochs
    # stepped once per optimizer step by this loop (not by accelerate, which would step it once per process)
    scheduler = get_scheduler(
        config.optim.scheduler, optimizer, num_warmup_steps=int(config.optim.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )

    position = ckpt.Position()
    log = MetricsLog(run_dir / METRICS_LOG, enabled=main)
    if config.run.resume:
        found = ckpt.step_checkpoints(checkpoints)
        if not found:
            raise InvalidInputError(
                f"'{run_dir.name}' has no complete checkpoint to resume from (none was written before it stopped). "
                "Start it again without --resume and run.overwrite=true.",
                f"'{run_dir.name}' 没有完整的检查点可供恢复。请去掉 --resume 并设置 run.overwrite=true 重新开始。",
            )
        position = ckpt.load_checkpoint(found[-1], accelerator.unwrap_model(model), optimizer, scheduler)
        log.truncate_after(position.global_step, position.epoch)
        logger.info("resumed from %s (epoch %d, batch %d)", found[-1].name, position.epoch, position.batch_in_epoch)
    accelerator.wait_for_everyone()

    metric_name = config.eval.metric_for_best or objective.main_metric
    greater_is_better = not metric_name.endswith("loss")
    trainable = [p for p in model.parameters() if p.requires_grad]
    accum = config.optim.grad_accum
    stop = position.global_step >= total_steps

    def checkpoint_now() -> None:
        accelerator.wait_for_everyone()
        if main:
            ckpt.save_checkpoint(checkpoints, accelerator.unwrap_model(model), optimizer, scheduler, position,
                                 config.run.keep_checkpoints)
        accelerator.wait_for_everyone()

    from tqdm.auto import tqdm

    while position.epoch < config.optim.epochs and not stop:
        epoch = position.epoch
        loader = (accelerator.skip_first_batches(train_loader, position.batch_in_epoch)
                  if position.batch_in_epoch else train_loader)
        # accelerate's loaders set their sampler's epoch from their own iteration count when iterated, and a
        # resumed run's skipping loader starts counting at 0: name the epoch on the loader that is iterated
        sampler.set_epoch(epoch)
        loader.set_epoch(epoch)
        model.train()
        objective.on_train_mode(model)
        running, running_count = 0.0, 0
        progress = tqdm(loader, total=len(train_loader), initial=position.batch_in_epoch,
                        desc=f"epoch {epoch + 1}/{config.optim.epochs}", disable=not main, leave=False)
        for batch in progress:
            index = position.batch_in_epoch
            window_start = index - index % accum
            window = min(accum, len(train_loader) - window_start)
            sync = index + 1 - window_start == window
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                loss = objective.loss(model, batch)
                accelerator.backward(loss / window)
            running += float(loss.detach())
            running_count += 1
            position.batch_in_epoch += 1
            if not sync:
                continue
            if config.optim.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position.global_step += 1
            if position.global_step % config.run.log_every_steps == 0:
                mean = running / running_count
                log.write({"split": "train", "epoch": epoch, "step": position.global_step, "loss": mean,
                           "lr": scheduler.get_last_lr()[0]})
                progress.set_postfix(loss=f"{mean:.4f}")
                running, running_count = 0.0, 0
            if position.global_step >= total_steps:
                stop = True
                break
            if config.run.save_every_steps and position.global_step % config.run.save_every_steps == 0:
                checkpoint_now()
        progress.close()

        metrics, extras = evaluate(model, val_loader, objective, accelerator)
        log.write({"split": "val", "epoch": epoch, "step": position.global_step, **metrics})
        if main:
            _write_json(run_dir / "extras" / f"epoch-{epoch:03d}.json", extras)
        logger.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if metric_name not in metrics:
            raise InvalidInputError(
                f"eval.metric_for_best '{metric_name}' is not a metric of this task ({', '.join(metrics)}).",
                f"eval.metric_for_best '{metric_name}' 不是该任务的指标（{', '.join(metrics)}）。",
            )
        value = metrics[metric_name]
        improved = position.best_metric is None or (
            value > position.best_metric if greater_is_better else value < position.best_metric)
        if improved:
            position.best_metric, position.best_epoch, position.epochs_without_improvement = value, epoch, 0
            accelerator.wait_for_everyone()
            if main:
                ckpt.save_best(checkpoints, accelerator.unwrap_model(model))
        else:
            position.epochs_without_improvement += 1
        position.epoch, position.batch_in_epoch = epoch + 1, 0
        patience = config.eval.early_stopping_patience
        if patience and position.epochs_without_improvement >= patience:
            logger.info("early stopping: %s has not improved for %d epochs", metric_name, patience)
            stop = True
        checkpoint_now()

    accelerator.wait_for_everyone()
    result_metrics: dict[str, float] = {}
    files: list[str] = []
    if main:
        from lmt.train.outputs import finish_run

        result_metrics, files = finish_run(
            run_dir, config, objective, accelerator.unwrap_model(model), log.records(), position, params,
            seconds=time.perf_counter() - started, num_processes=accelerator.num_processes,
            device=str(accelerator.device), precision=accelerator.mixed_precision,
        )
    accelerator.wait_for_everyone()
    if not main:
        info = json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8"))
        result_metrics = info["metrics"]
        if ckpt.is_complete(checkpoints / ckpt.BEST):
            ckpt.load_trained_tensors(accelerator.unwrap_model(model), checkpoints / ckpt.BEST)
    accelerator.end_training()
    return TrainResult(
        run_dir=run_dir, metrics=result_metrics, best_epoch=position.best_epoch, global_step=position.global_step,
        trainable_parameters=params.trainable, total_parameters=params.total,
        seconds=round(time.perf_counter() - started, 2), files=files, model=accelerator.unwrap_model(model).eval(),
    )


def evaluate(model: Any, loader: Any, objective: Any, accelerator: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Run the validation set once; outputs are gathered across processes before the metrics are computed."""
    import torch

    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    gathered: dict[str, list] = {}
    with torch.no_grad():
        for batch in loader:
            outputs = objective.eval_step(unwrapped, batch)
            outputs = accelerator.gather_for_metrics(outputs)
            for key, value in outputs.items():
                gathered.setdefault(key, []).append(value.detach().cpu())
    if not gathered:
        raise LmtError("The validation set produced no batches.", "验证集没有产生任何批次。")
    merged = {key: torch.cat(values) for key, values in gathered.items()}
    return objective.compute_metrics(merged)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text_atomically(path, json.dumps(data, indent=2, ensure_ascii=False))
