"""Render model cards from ``hub_cards/`` with huggingface_hub's ``ModelCard``.

>>> card = render_model_card(
...     repo_id="me/vit-b16.digits-lora", base_model="google/vit-base-patch16-224", library_name="peft",
...     pipeline_tag="image-classification", task="image-classification", method="LoRA r16 on q_proj/v_proj",
...     metrics={"accuracy": 0.97}, dataset_name="digits")
>>> card.data.base_model
'google/vit-base-patch16-224'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError

TEMPLATE = Path(__file__).resolve().parents[3] / "hub_cards" / "model_card.md"
#: What a card rendered before its Hub repository was known says instead of the names (see :func:`publish_names`).
REPO_PLACEHOLDER = "<user>"
BASE_PLACEHOLDER = "<path-or-hub-id-of-the-base-model>"
LOCAL_BASE_TEXT = "本地模型，不在 Hub 上 / a local model, not on the Hub"
LIBRARIES = ("peft", "transformers")


def _template_text() -> str:
    if not TEMPLATE.is_file():
        raise InvalidInputError(
            f"The model-card template {TEMPLATE} is missing: the templates live in the repository's hub_cards/ "
            "folder. Install the SDK from a checkout (pip install -e .).",
            f"缺少模型卡模板 {TEMPLATE}：模板位于仓库的 hub_cards/ 目录，请从仓库检出安装（pip install -e .）。",
        )
    return TEMPLATE.read_text(encoding="utf-8")


def _usage(
    repo_id: str, base_model: str, library_name: str, task: str, model_class: str, base_kwargs: Mapping[str, Any]
) -> tuple[str, str]:
    adapter = library_name == "peft"
    if adapter:
        lmt_usage = f'import lmt\n\nrun = lmt.pipeline("{task}", model="{base_model}", adapter="{repo_id}")'
        # e.g. a new label set: the base must be built with the adapter's head shape before the adapter loads
        extra = "".join(f",\n    {key}={value!r}" for key, value in base_kwargs.items())
        plain = (
            f"from peft import PeftModel\nfrom transformers import AutoProcessor, {model_class}\n\n"
            f'base = {model_class}.from_pretrained("{base_model}"{extra})\n'
            f'model = PeftModel.from_pretrained(base, "{repo_id}")\n'
            f'processor = AutoProcessor.from_pretrained("{repo_id}")'
        )
    else:
        lmt_usage = f'import lmt\n\nrun = lmt.pipeline("{task}", model="{repo_id}")'
        plain = f'from transformers import pipeline\n\nrun = pipeline("{task}", model="{repo_id}")'
    if task == "image-text-to-text":
        # a chat model is used by calling it with an image and a prompt: show that call, not only the load
        loaded = f'model="{base_model}", adapter="{repo_id}"' if adapter else f'model="{repo_id}"'
        lmt_usage = (f"import lmt\n\nchat = lmt.ImageTextToText({loaded})\n"
                     'reply = chat("image.png", "图中是什么？ What is in the image?")\nprint(reply.text)')
    return lmt_usage, plain


def results_table(metrics: Mapping[str, float]) -> str:
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items())
    return f"| metric | value |\n|---|---|\n{rows}"


def render_model_card(
    *,
    repo_id: str,
    base_model: str | None,
    library_name: str,
    pipeline_tag: str,
    task: str,
    method: str,
    metrics: Mapping[str, float] | None = None,
    dataset_name: str | None = None,
    dataset_id: str | None = None,
    license: str = "mit",  # noqa: A002  (the model card field's name)
    tags: Sequence[str] = (),
    model_class: str = "AutoModel",
    summary_zh: str = "",
    summary_en: str = "",
    limitations: str = "",
    base_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """A ``ModelCard`` with metadata (``base_model`` as a Hub id, ``model-index`` from ``metrics``) and usage code.

    ``base_model=None`` says the base is not on the Hub (a local folder or a tiny variant): the metadata then has
    no ``base_model`` and the usage code names a placeholder; a local path is never written.
    ``base_kwargs`` are extra ``from_pretrained`` arguments the base needs before the adapter loads.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    if library_name not in LIBRARIES:
        raise InvalidInputError(
            f"library_name must be one of {LIBRARIES}, not {library_name!r}.",
            f"library_name 必须是 {LIBRARIES} 之一，而不是 {library_name!r}。",
        )
    if base_model is not None and (
        "/" not in base_model or Path(base_model).expanduser().exists() or base_model.startswith((".", "/", "~"))
    ):
        raise InvalidInputError(
            f"base_model must be a Hub id such as 'google/vit-base-patch16-224', not a local path ({base_model!r}).",
            f"base_model 必须是 Hub id（如 'google/vit-base-patch16-224'），不能是本地路径（{base_model!r}）。",
        )
    eval_results = [
        EvalResult(
            task_type=pipeline_tag, dataset_type=dataset_id or dataset_name or "custom",
            dataset_name=dataset_name or "custom", metric_type=name, metric_value=float(value),
        )
        for name, value in (metrics or {}).items()
    ]
    card_data = ModelCardData(
        library_name=library_name,
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=[dataset_id] if dataset_id else None,
        tags=["large-model-tutorial", *tags] + (["lora"] if library_name == "peft" else []),
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    base_name = base_model or BASE_PLACEHOLDER
    usage_lmt, usage_plain = _usage(repo_id, base_name, library_name, task, model_class, base_kwargs or {})
    return ModelCard.from_template(
        card_data,
        template_str=_template_text(),
        model_title=repo_id.split("/")[-1],
        summary_zh=summary_zh or f"在 `{base_name}` 上用 {method} 微调得到的模型。",
        summary_en=summary_en or f"Fine-tuned from `{base_name}` with {method}.",
        base_model=base_model,
        method=method,
        pipeline_tag=pipeline_tag,
        dataset_name=dataset_name,
        license=license,
        results_table=results_table(metrics) if metrics else "",
        usage_lmt=usage_lmt,
        usage_plain=usage_plain,
        library_name=library_name,
        limitations=limitations
        or "训练数据之外的表现未经评估。Performance outside the training data has not been evaluated.",
    )


def publish_names(card_text: str, run_name: str, repo_id: str, base_model: str) -> str:
    """A card written at training time (repository ``<user>/<run>``, maybe a local base) with the names it is
    published under filled in."""
    return (
        card_text.replace(f"{REPO_PLACEHOLDER}/{run_name}", repo_id)
        .replace(BASE_PLACEHOLDER, base_model)
        .replace(LOCAL_BASE_TEXT, f"[{base_model}](https://huggingface.co/{base_model})")
    )
