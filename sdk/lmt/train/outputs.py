"""Turn a trained model into a Hub-ready run folder.

The folder holds the adapter (``adapter_model.safetensors`` + ``adapter_config.json``) or the full model
(``model.safetensors`` + ``config.json``), the processor, ``train_config.yaml``, ``metrics.jsonl``,
``lmt_run.json`` (task, method, base model, labels, best metrics, parameter counts), ``plots/*.png`` and a
``README.md`` model card rendered from ``hub_cards/``. ``checkpoints/`` stays for resuming and is not uploaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmt.train import checkpoint as ckpt
from lmt.train.methods import method_description

if TYPE_CHECKING:
    from lmt.train.checkpoint import Position
    from lmt.train.config import TrainConfig
    from lmt.train.methods import ParameterCount
    from lmt.train.objectives.base import Objective

logger = logging.getLogger(__name__)


def base_model_id(config: TrainConfig, objective: Objective) -> str | None:
    """The base's Hub id for the card: the config's ``card.base_model_id``, else the Hub id it was loaded from.

    ``None`` for a local folder or a tiny variant without one: a path is never presented as a Hub id.
    """
    if config.card.base_model_id:
        return config.card.base_model_id
    resolved = objective.resolved
    if resolved.weights == "real" and not resolved.is_local:
        return resolved.source
    return None


def base_display_name(config: TrainConfig, objective: Objective) -> str:
    """How ``lmt_run.json`` names the base: registry name or Hub id; a local folder by its name only."""
    resolved = objective.resolved
    if resolved.weights == "local":
        return f"local folder '{Path(config.model).name}'"
    return resolved.name + (" (tiny random-weight variant)" if resolved.weights == "tiny" else "")


def save_model(run_dir: Path, config: TrainConfig, objective: Objective, model: Any) -> None:
    if config.method == "full":
        model.save_pretrained(run_dir, safe_serialization=True)
    else:
        base_id = base_model_id(config, objective)
        for peft_config in model.peft_config.values():
            # never a local path: the Hub id when known, else the base's display name
            peft_config.base_model_name_or_path = base_id or base_display_name(config, objective)
        # training never resizes the vocabulary: without this, peft asks the Hub whether the base's config exists
        # (and warns when the base is not on the Hub) to decide whether to save whole embedding matrices
        model.save_pretrained(run_dir, safe_serialization=True, save_embedding_layers=False)
    objective.processor.save_pretrained(run_dir)


def finish_run(
    run_dir: Path,
    config: TrainConfig,
    objective: Objective,
    model: Any,
    records: list[dict[str, Any]],
    position: Position,
    params: ParameterCount,
    *,
    seconds: float,
    num_processes: int,
    device: str,
    precision: str,
) -> tuple[dict[str, float], list[str]]:
    """Load the best checkpoint, then write the model, plots, ``lmt_run.json`` and the card. Returns (metrics, files)."""
    from lmt import __version__
    from lmt.train.plots import plot_curves

    best = run_dir / "checkpoints" / ckpt.BEST
    if ckpt.is_complete(best):
        ckpt.load_trained_tensors(model, best)
    save_model(run_dir, config, objective, model)

    val = [r for r in records if r["split"] == "val"]
    best_record = next((r for r in val if r["epoch"] == position.best_epoch), val[-1] if val else {})
    metrics = {k: float(v) for k, v in best_record.items() if k not in ("split", "epoch", "step")}
    plots = plot_curves(records, run_dir / "plots")
    extras_file = run_dir / "extras" / f"epoch-{position.best_epoch or 0:03d}.json"
    if extras_file.exists():
        plots += objective.plot_extras(json.loads(extras_file.read_text(encoding="utf-8")), run_dir / "plots")

    info = {
        "lmt_version": __version__,
        "task": config.task,
        "sdk_task": objective.sdk_task,
        "pipeline_tag": objective.pipeline_tag,
        "method": config.method,
        "library_name": "transformers" if config.method == "full" else "peft",
        "base_model": base_model_id(config, objective),
        "base": base_display_name(config, objective),
        "model_class": objective.card_model_class(),
        "metrics": metrics,
        "metric_for_best": config.eval.metric_for_best or objective.main_metric,
        "best_epoch": position.best_epoch,
        "epochs_run": position.epoch,
        "global_step": position.global_step,
        "parameters": params.to_dict(),
        "seconds": round(seconds, 2),
        "num_processes": num_processes,
        "device": device,
        "precision": precision,
        **objective.run_info(),
    }
    write_card(run_dir, config, objective, info)
    # written last: its presence marks a finished run
    (run_dir / "lmt_run.json").write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()
                   and p.relative_to(run_dir).parts[0] != "checkpoints")
    return metrics, files


def write_card(run_dir: Path, config: TrainConfig, objective: Objective, info: dict[str, Any]) -> Path:
    from lmt.hub.cards import REPO_PLACEHOLDER, render_model_card

    base_kwargs: dict[str, Any] = {}
    labels = info.get("labels")
    if labels and info["library_name"] == "peft":
        base_kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                       "label2id": {label: i for i, label in enumerate(labels)}, "ignore_mismatched_sizes": True}
    tags = [*(config.card.tags or []), objective.family.name if objective.family else "vision", config.method]
    if config.weights == "tiny":
        tags.append("tiny-random-weights")
    card = render_model_card(
        repo_id=f"{REPO_PLACEHOLDER}/{run_dir.name}",  # filled in by lmt hub push
        base_model=info["base_model"],
        library_name=info["library_name"],
        pipeline_tag=objective.pipeline_tag,
        task=objective.sdk_task,
        method=method_description(config, objective),
        metrics={k: v for k, v in info["metrics"].items() if k != "loss"},
        dataset_name=config.card.dataset_name or Path(config.data.train.rstrip("/\\")).name,
        dataset_id=config.card.dataset_id,
        license=config.card.license,
        tags=tags,
        model_class=info["model_class"],
        base_kwargs=base_kwargs,
        limitations=_limitations(config, info),
    )
    path = run_dir / "README.md"
    card.save(path)
    return path


def _limitations(config: TrainConfig, info: dict[str, Any]) -> str:
    parts = ["训练数据之外的表现未经评估。Performance outside the training data has not been evaluated."]
    if config.weights == "tiny":
        parts.append("这是用随机初始化的小模型做的演示运行，不可用于实际预测。This run used a tiny random-weight model "
                     "to exercise the code path; do not use it for real predictions.")
    trainable = info["parameters"]
    parts.append(f"可训练参数 / trainable parameters: {trainable['trainable']:,} of {trainable['total']:,} "
                 f"({trainable['percent']:.3f}%).")
    return "\n\n".join(parts)
