"""Shared Gradio pieces for the Spaces: bilingual errors, hardened inputs, the model picker, ZeroGPU, launch.

Spaces stay thin: each ``spaces/<name>/app.py`` lays out its whole ``gr.Blocks`` and calls these helpers and the
SDK's task calls. This module imports gradio, so only Spaces (and ``lmt space``/``lmt gallery``) import it.

Hardening, in one place:

- every event runs with ``preprocess=False`` where it takes an image, so that *our* validation
  (:func:`lmt.load_image`: decodable, pixel limits, modes) decides, not gradio's PIL call that leaks temp paths;
- handlers are wrapped by :func:`guard`: an :class:`~lmt.LmtError` becomes a ``gr.Error`` with the Chinese and
  English messages; anything else is logged and shown as a generic bilingual message, never a traceback or path;
- numbers and choices arriving from API clients are checked by the SDK's validators.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import gradio as gr
import numpy as np
from PIL import Image

from lmt.errors import InvalidInputError, LmtError
from lmt.registry import list_models, lookup_checkpoint

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

TINY_SUFFIX = " (tiny)"
#: Queue bounds shared by every Space: beyond ``QUEUE_MAX_SIZE`` waiting requests a client is told the Space is busy.
QUEUE_MAX_SIZE = int(os.environ.get("LMT_QUEUE_MAX_SIZE", "16"))
CONCURRENCY_LIMIT = int(os.environ.get("LMT_CONCURRENCY_LIMIT", "2"))
MAX_TEXT_CHARS = 2000

INTERNAL_ERROR = "服务器内部错误，请稍后重试。\nInternal error; please try again later."


def text(zh: str, en: str) -> str:
    """A bilingual label: Chinese first, then English."""
    return f"{zh} / {en}"


@contextlib.contextmanager
def _user_facing_errors(name: str) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except LmtError as err:
        raise gr.Error(err.bilingual(), print_exception=False) from None
    except Exception:
        logger.exception("unexpected error in %s", name)
        raise gr.Error(INTERNAL_ERROR, print_exception=False) from None


def guard(fn: F) -> F:
    """Turn every failure of a Space handler into a clear, bilingual ``gr.Error`` with no traceback or path.

    A generator handler (a streamed answer) stays a generator, and an error at any step is turned the same way.
    """
    name = getattr(fn, "__name__", "handler")
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with _user_facing_errors(name):
                yield from fn(*args, **kwargs)

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _user_facing_errors(name):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def gpu(duration: int = 60) -> Callable[[F], F]:
    """``@spaces.GPU(duration=...)`` on Hugging Face ZeroGPU hardware; a no-op wherever ``spaces`` is absent."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


# ---- inputs ----------------------------------------------------------------------------------------------------
def image_path(payload: Any, *, required: bool = True) -> str | None:
    """The uploaded file's path from a raw (``preprocess=False``) ``gr.Image``/``gr.File`` payload.

    The SDK then validates the file itself; gradio never decodes it.
    """
    if payload is None or payload == "":
        if required:
            raise InvalidInputError("Please upload an image first.", "请先上传一张图片。")
        return None
    if isinstance(payload, dict):
        path = payload.get("path")
    elif isinstance(payload, str):
        path = payload
    else:
        path = None
    if not isinstance(path, str) or not path:
        raise InvalidInputError(
            "The image upload is malformed; upload the file again.", "图片上传数据格式不正确，请重新上传。"
        )
    if path.startswith(("http://", "https://")):  # gradio downloads URLs sent as files; a bare string is refused
        raise InvalidInputError(
            "Upload the image file itself (or send it as a file); a bare web address is not an image.",
            "请直接上传图片文件（或以文件形式发送）；单独的网址不是图片。",
        )
    return path


def gallery_paths(payload: Any) -> list[str]:
    """File paths from a raw ``gr.File(file_count="multiple")`` or ``gr.Gallery`` payload."""
    if not payload:
        raise InvalidInputError("Please upload at least one gallery image.", "请至少上传一张图库图片。")
    items = payload if isinstance(payload, list) else [payload]
    paths = []
    for item in items:
        if isinstance(item, dict) and "image" in item:  # gr.Gallery items
            item = item["image"]
        path = image_path(item)
        if path is not None:
            paths.append(path)
    if len(paths) > 200:
        raise InvalidInputError(
            f"{len(paths)} gallery images; at most 200 per request.", f"图库图片共 {len(paths)} 张，每次最多 200 张。"
        )
    return paths


def number(value: Any, name: str, low: float, high: float, *, integer: bool = False) -> float | int:
    """A number from the API, checked: strings like "NaN"/"Infinity", null, and out-of-range values are refused."""
    if isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) < 40 else math.nan
        except ValueError:
            value = math.nan
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(
            f"{name} must be a number between {low:g} and {high:g}.", f"{name} 必须是 {low:g} 到 {high:g} 之间的数。"
        )
    if not low <= value <= high:
        raise InvalidInputError(
            f"{name} must be between {low:g} and {high:g}; got {value:g}.",
            f"{name} 必须在 {low:g} 到 {high:g} 之间，收到的是 {value:g}。",
        )
    return int(round(value)) if integer else float(value)


def short_text(value: Any, name: str, *, allow_empty: bool = False, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Text from the UI or the API, checked for type and length (HTML is never rendered from it)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be text.", f"{name} 必须是文本。")
    if len(value) > max_chars:
        raise InvalidInputError(
            f"{name} is {len(value)} characters long; the limit is {max_chars}.",
            f"{name} 长达 {len(value)} 个字符，上限为 {max_chars}。",
        )
    value = value.strip()
    if not value and not allow_empty:
        raise InvalidInputError(f"{name} is empty.", f"{name} 为空，请填写。")
    return value



def number_groups(value: Any, name: str, form: str, sizes: tuple[int, ...]) -> list[list[float]]:
    """Groups of numbers typed as ``'1,2,3; 4,5,6'`` (or one per line) or sent as JSON (``[[1, 2, 3], ...]``, or
    one flat list for one group), each with a length in ``sizes``; empty text gives ``[]``. For points
    (``x,y,label``) and boxes (``x0,y0,x1,y1``) typed into a text field or sent by an API client."""
    import json

    text = short_text(value, name, allow_empty=True)
    if not text:
        return []
    if text.startswith("["):
        try:
            groups = json.loads(text)
        except json.JSONDecodeError:
            groups = None
    else:
        groups = [part.split(",") for part in re.split(r"[;\n]", text) if part.strip()]
    if isinstance(groups, list) and groups and all(isinstance(v, (int, float)) for v in groups):
        groups = [groups]  # one flat JSON list is one group
    if not isinstance(groups, list):
        raise InvalidInputError(
            f"Write {name} as '{form}; {form}' or as a JSON list of lists.",
            f"{name} 的格式应为 '{form}; {form}'，或 JSON 列表的列表。",
        )
    parsed = []
    for index, group in enumerate(groups):
        try:
            numbers = [float(v) for v in group if not isinstance(v, bool)] if isinstance(group, list) else []
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) not in sizes or len(numbers) != len(group):
            shown = (",".join(str(v) for v in group) if isinstance(group, list) else str(group))[:40]
            raise InvalidInputError(
                f"{name}: item #{index} ({shown}) is not written as {form}.",
                f"{name} 的第 {index} 项（{shown}）格式不对，应为 {form}。",
            )
        parsed.append(numbers)
    return parsed

def flag(value: Any, name: str) -> bool:
    """A checkbox value from the API: only true/false are accepted (not "yes", 1 or null)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be true or false.", f"{name} 必须是 true 或 false。")
    return value


#: A longer chat history is refused: the visitor starts a new chat.
MAX_CHAT_MESSAGES = 200


def chat_messages(history: Any, max_chars: int = MAX_TEXT_CHARS) -> list[dict[str, str]]:
    """A chat history from the UI or the API, checked: ``[{"role": "user"|"assistant", "content": str}, ...]``
    (None is an empty chat). Anything else, too many messages or a message over ``max_chars`` is a clear error."""
    if history is None:
        return []
    malformed = InvalidInputError(
        'history must be a list of {"role": "user" or "assistant", "content": text} messages; '
        "send [] to start a new chat.",
        'history 必须是 {"role": "user" 或 "assistant", "content": 文本} 组成的列表；发送 [] 可开始新对话。',
    )
    if not isinstance(history, list):
        raise malformed
    if len(history) > MAX_CHAT_MESSAGES:
        raise InvalidInputError(
            f"The chat has {len(history)} messages; the limit is {MAX_CHAT_MESSAGES}. Clear the chat to start a "
            "new one.",
            f"对话已有 {len(history)} 条消息，上限为 {MAX_CHAT_MESSAGES}。请清空对话，开始新对话。",
        )
    messages = []
    for message in history:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise malformed
        content = message.get("content")
        if not isinstance(content, str) or len(content) > max_chars:
            raise malformed
        messages.append({"role": message["role"], "content": content})
    return messages


def answered_turns(messages: list[dict[str, str]], limit: int) -> list[tuple[str, str]]:
    """The last ``limit`` (question, answer) pairs of a checked chat: a user message followed by an answer."""
    turns = [
        (asked["content"], answered["content"])
        for asked, answered in zip(messages, messages[1:], strict=False)
        if asked["role"] == "user" and answered["role"] == "assistant"
    ]
    return turns[-limit:] if limit else []


# ---- outputs ----------------------------------------------------------------------------------------------------
#: Longest side of the images a Space *shows*; the JSON results keep the original pixel coordinates.
DISPLAY_MAX_SIDE = 1024


def annotated_image(
    image: Image.Image,
    masks: Any = (),
    boxes: Any = (),
    *,
    max_side: int = DISPLAY_MAX_SIDE,
) -> tuple[Image.Image, list[tuple[Any, str]]]:
    """A ``gr.AnnotatedImage`` value: ``image`` with ``(mask, label)``/``(box, label)`` pairs, at display size.

    Masks are boolean (H, W) arrays and boxes (x0, y0, x1, y1) in the original image's pixels. Gradio turns every
    annotation into a full-size float RGBA array and a PNG, so a 12-megapixel photo with 50 masks would cost
    gigabytes and seconds; at most ``max_side`` pixels a side, it costs what a small image does.
    """
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
        )
    annotations: list[tuple[Any, str]] = []
    for mask, label in masks:
        mask = np.asarray(mask, dtype=bool)
        if scale < 1.0:
            mask = np.asarray(Image.fromarray(mask).resize(image.size, Image.Resampling.NEAREST), dtype=bool)
        annotations.append((mask, label))
    for box, label in boxes:
        x0, y0, x1, y1 = (round(float(v) * scale) for v in box)
        annotations.append(((x0, y0, x1, y1), label))
    return image, annotations


# ---- the model picker -------------------------------------------------------------------------------------------
def model_choices(task: str, *, tiny: bool, names: list[str] | None = None) -> list[str]:
    """Dropdown choices: the real checkpoints for ``task``, then (with ``tiny``) the tiny variant."""
    names = names or list_models(task=task)
    choices = list(names)
    if tiny:
        choices = [names[0] + TINY_SUFFIX, *choices]
    return choices


def model_picker(task: str, *, tiny: bool, names: list[str] | None = None, **kwargs: Any) -> gr.Dropdown:
    choices = model_choices(task, tiny=tiny, names=names)
    return gr.Dropdown(
        choices=choices, value=choices[0], label=text("模型", "Model"), allow_custom_value=False, **kwargs
    )


def adapter_box(**kwargs: Any) -> gr.Textbox:
    return gr.Textbox(
        label=text("LoRA 适配器（可选）", "LoRA adapter (optional)"),
        placeholder="user/my-lora@v1",
        info=text(
            "Hugging Face Hub id，可加 @分支、标签或提交 固定版本；留空则用基础模型",
            "Hugging Face Hub id, optionally @branch, tag or commit to pin a version; empty uses the base model",
        ),
        **kwargs,
    )


def pick_model(choice: Any, task: str, *, tiny_allowed: bool, names: list[str] | None = None) -> tuple[str, str]:
    """(model name, weights) for a dropdown value. Only this Space's models (``names``, default: every model
    for ``task``) are accepted from API clients."""
    if not isinstance(choice, str) or not choice:
        raise InvalidInputError("Choose a model.", "请选择模型。")
    weights = "real"
    name = choice
    if choice.endswith(TINY_SUFFIX):
        if not tiny_allowed:
            raise InvalidInputError(
                "Tiny weights are only offered when the Space runs with --tiny.", "只有以 --tiny 启动时才提供 tiny 权重。"
            )
        name, weights = choice[: -len(TINY_SUFFIX)], "tiny"
    allowed = names if names is not None else list_models(task=task)
    offered = model_choices(task, tiny=tiny_allowed, names=allowed)
    if choice not in offered or lookup_checkpoint(name) is None:
        raise InvalidInputError(
            f"'{choice[:80]}' is not one of this Space's models.", f"'{choice[:80]}' 不是本 Space 提供的模型。"
        )
    return name, weights


def adapter_spec(value: Any) -> tuple[str | None, str | None]:
    """(adapter, revision) named by a visitor as ``user/name`` or ``user/name@revision``, where the revision is a
    branch, tag or 40-hex commit. Server folders are accepted only when the operator sets
    ``LMT_SPACE_LOCAL_ADAPTERS=1``, so a public Space never reveals which folders exist."""
    import re

    from lmt.hub.publish import check_revision

    adapter = short_text(value, "adapter", allow_empty=True, max_chars=300)
    if not adapter:
        return None, None
    name, at, revision = adapter.partition("@")
    is_hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", name) is not None and ".." not in name
    if not is_hub_id:
        if os.environ.get("LMT_SPACE_LOCAL_ADAPTERS") == "1":
            return adapter, None
        raise InvalidInputError(
            "Give the adapter as a Hugging Face Hub id such as 'user/my-lora', optionally pinned: 'user/my-lora@v1'.",
            "请以 Hugging Face Hub id 的形式填写适配器，例如 'user/my-lora'，可加版本：'user/my-lora@v1'。",
        )
    return name, check_revision(revision) if at else None


def adapter_value(value: Any) -> str | None:
    """The adapter of :func:`adapter_spec` for callers that cannot pin a revision: one given is refused, not dropped."""
    adapter, revision = adapter_spec(value)
    if revision is not None:
        raise InvalidInputError(
            "This field takes no '@revision'; give the adapter as 'user/my-lora'.",
            "此处不能指定 '@版本'；请填写 'user/my-lora' 形式的适配器。",
        )
    return adapter


# ---- the back-end -------------------------------------------------------------------------------------------------
def backend() -> str:
    """The back-end the Spaces run their task calls on: ``$LMT_BACKEND`` (``torch``, ``onnx``, ``onnx-int8``),
    default ``torch``. Read on every call, so a bad value is shown to the visitor as a bilingual error."""
    from lmt.deploy.runtime import check_backend

    return check_backend(os.environ.get("LMT_BACKEND", "").strip() or "torch")


def pipeline(task: str, model: str, **kwargs: Any) -> Any:
    """:func:`lmt.pipeline` on the operator's back-end (:func:`backend`); ``kwargs`` as for ``lmt.pipeline``."""
    from lmt.tasks import pipeline as task_pipeline

    return task_pipeline(task, model, backend=backend(), **kwargs)


# ---- launching --------------------------------------------------------------------------------------------------
def configure_queue(demo: gr.Blocks) -> gr.Blocks:
    """A bounded queue: a request beyond ``QUEUE_MAX_SIZE`` waiting ones gets a clear 'queue is full' answer."""
    return demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)


def mcp_available() -> bool:
    try:
        import mcp  # noqa: F401
    except ImportError:
        return False
    return True


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           **kwargs: Any) -> Any:
    """Launch with the bounded queue, the MCP server where ``gradio[mcp]`` is installed, no analytics.

    ``GRADIO_SERVER_NAME`` and ``GRADIO_SERVER_PORT``, where set, win over ``host`` and ``port``: a Docker image or
    a test picks the address without editing the Space's ``app.py``. With no port anywhere, gradio picks 7860 or
    the next free one.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    host = os.environ.get("GRADIO_SERVER_NAME") or host
    port_text = os.environ.get("GRADIO_SERVER_PORT")
    if port_text:
        if not port_text.strip().isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidInputError(
                f"GRADIO_SERVER_PORT must be a port number (1-65535), not '{port_text[:20]}'.",
                f"GRADIO_SERVER_PORT 必须是端口号（1-65535），而不是 '{port_text[:20]}'。",
            )
        port = int(port_text)
    if port is not None:
        kwargs["server_port"] = port
    configure_queue(demo)
    return demo.launch(server_name=host, share=share, mcp_server=mcp_available(), show_error=False, **kwargs)
