"""Chat about images with vision-language models (Qwen2.5-VL, InternVL): one or several images, several turns,
Chinese or English prompts, answers whole or streamed, and grounding boxes as :class:`~lmt.results.Detections`.

The conversation goes through the model's own chat template (``processor.apply_chat_template``), then the processor
and ``model.generate``: with greedy decoding the answer is exactly what transformers gives for the same messages.

>>> chat = ImageTextToText("qwen2.5-vl-3b", weights="tiny")
>>> reply = chat("examples/images/cat.png", "图里有什么？", max_new_tokens=4)
>>> reply.prompt
'图里有什么？'
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from lmt.errors import InvalidInputError, LmtError, UnsupportedTaskError
from lmt.images import ImageInput, load_image
from lmt.loading import LoadedModel, load
from lmt.results import Detection, Detections, GeneratedText
from lmt.tasks.caption import _Generator
from lmt.validate import check_float_range, check_labels, check_positive_int, check_text

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 1024
MAX_IMAGES = 8  # per conversation: each image costs hundreds to thousands of tokens on the real checkpoints
MAX_MESSAGES = 64
MAX_MESSAGE_CHARS = 8000
#: A generation thread that produces nothing for this long ends the stream with an error instead of hanging.
STREAM_TIMEOUT_S = 300.0
#: Keyword arguments of :class:`~lmt.tasks.base.Task` that go to :func:`lmt.load`.
_LOAD_OPTIONS = ("weights", "revision", "device", "dtype", "adapter", "adapter_revision", "trust_remote_code")

#: Ready-made prompts (Chinese, English). ``{}`` is filled with the object to count or find (plural in English).
PROMPTS: dict[str, tuple[str, str]] = {
    "describe": ("请详细描述这张图片。", "Describe this image in detail."),
    "caption": ("用一句话描述这张图片。", "Describe this image in one sentence."),
    "ocr": ("请识别图片中的所有文字，按原来的顺序逐行输出。", "Read all the text in the image and write it out line by line."),
    "count": ("图中有多少{}？请只回答数字。", "How many {} are there in the image? Answer with a number only."),
    "locate": ("请找出图中所有的{}，并以 JSON 格式输出它们的边界框。",
               "Find all {} in the image and output their bounding boxes in JSON format."),
}


def prompt(kind: str, language: str = "zh", subject: str | None = None) -> str:
    """A ready-made prompt: ``kind`` is one of :data:`PROMPTS`, ``language`` "zh" or "en", ``subject`` fills ``{}``.

    >>> prompt("count", "en", "cats")
    'How many cats are there in the image? Answer with a number only.'
    """
    if kind not in PROMPTS or language not in ("zh", "en"):
        raise InvalidInputError(
            f"No prompt '{kind}' in '{language}'. Kinds: {', '.join(PROMPTS)}; languages: zh, en.",
            f"没有 '{kind}'（{language}）这种提示。可选：{', '.join(PROMPTS)}；语言：zh、en。",
        )
    template = PROMPTS[kind][0 if language == "zh" else 1]
    if "{}" in template:
        return template.format(check_text(subject, "subject", max_chars=200))
    return template


# ---- grounding: three output formats --------------------------------------------------------------------------------
_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|\Z)", re.DOTALL)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_QWEN2_BOX = re.compile(
    r"(?:<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>\s*)?"
    r"<\|box_start\|>\s*\(\s*(?P<x0>-?\d+(?:\.\d+)?)\s*,\s*(?P<y0>-?\d+(?:\.\d+)?)\s*\)\s*,\s*"
    r"\(\s*(?P<x1>-?\d+(?:\.\d+)?)\s*,\s*(?P<y1>-?\d+(?:\.\d+)?)\s*\)\s*<\|box_end\|>",
    re.DOTALL,
)
_INTERNVL_BOX = re.compile(r"(?:<ref>(?P<label>.*?)</ref>\s*)?<box>(?P<boxes>.*?)</box>", re.DOTALL)
_NUMBER = r"-?\d+(?:\.\d+)?"
_FOUR_NUMBERS = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")


def _json_boxes(text: str) -> list[tuple[str | None, list[float]]]:
    """(label, [x0, y0, x1, y1]) for each ``{"bbox_2d": [...], "label": ...}`` object, even in a cut-off list."""
    fenced = _JSON_FENCE.search(text)
    body = fenced.group(1) if fenced else text
    found = []
    for match in _JSON_OBJECT.finditer(body):
        try:
            item = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        box = item.get("bbox_2d", item.get("bbox")) if isinstance(item, dict) else None
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
            label = item.get("label")
            found.append((label if isinstance(label, str) else None, [float(v) for v in box]))
    return found


def parse_grounding(
    text: str,
    image_size: tuple[int, int],
    *,
    resized_size: tuple[int, int] | None = None,
    default_label: str = "object",
) -> Detections:
    """Boxes a vision-language model wrote in ``text``, in the pixels of the original image (``image_size`` =
    (width, height)). Three formats are read:

    - **Qwen2.5-VL** JSON, fenced or not: ``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}]``, in absolute pixels
      of the *resized* image the model saw (``smart_resize``: each side a multiple of 28). Pass that size as
      ``resized_size`` (width, height) and the boxes are scaled to ``image_size``; without it they are taken to be
      in ``image_size`` pixels already.
    - **Qwen2-VL** text: ``<|object_ref_start|>cat<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``,
      coordinates normalised to 0-1000.
    - **InternVL**: ``<ref>cat</ref><box>[[x1, y1, x2, y2], ...]</box>``, normalised to 0-1000.

    Boxes are clipped to the image; empty or inverted ones are dropped. These models give no confidence, so every
    score is 1.0. A label missing from the text is ``default_label``.
    """
    width, height = image_size
    boxes: list[tuple[str | None, list[float]]] = []
    for match in _QWEN2_BOX.finditer(text):
        values = [float(match.group(k)) for k in ("x0", "y0", "x1", "y1")]
        boxes.append((match.group("label"), [v * s / 1000 for v, s in zip(values, (width, height) * 2, strict=True)]))
    for match in _INTERNVL_BOX.finditer(text):
        for numbers in _FOUR_NUMBERS.findall(match.group("boxes")):
            values = [float(v) for v in numbers]
            boxes.append(
                (match.group("label"), [v * s / 1000 for v, s in zip(values, (width, height) * 2, strict=True)])
            )
    if not boxes:
        scale_x, scale_y = (width / resized_size[0], height / resized_size[1]) if resized_size else (1.0, 1.0)
        boxes = [(label, [x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y])
                 for label, (x0, y0, x1, y1) in _json_boxes(text)]
    detections = []
    for label, (x0, y0, x1, y1) in boxes:
        x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
        y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
        if x1 > x0 and y1 > y0:
            name = label.strip() if label and label.strip() else default_label
            detections.append(Detection(name, 1.0, (x0, y0, x1, y1)))
    return Detections(tuple(detections), (width, height))


# ---- the conversation ---------------------------------------------------------------------------------------------
def _malformed(detail: str, detail_zh: str) -> InvalidInputError:
    return InvalidInputError(
        f"history is malformed ({detail}). Give a list of {{'role': 'system'|'user'|'assistant', 'content': text or "
        "[{'type': 'text', 'text': ...}, {'type': 'image', 'image': ...}]}} messages.",
        f"history 格式不正确（{detail_zh}）。应为消息列表：{{'role': 'system'|'user'|'assistant', 'content': 文本，或 "
        "[{'type': 'text', 'text': ...}, {'type': 'image', 'image': ...}]}}。",
    )


def _message_parts(content: Any, role: str) -> list[dict[str, Any]]:
    """A message's content as template parts: text parts, and image parts that hold a loaded PIL image."""
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _malformed("content must be text or a non-empty list of parts", "content 必须是文本或非空的部件列表")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": check_text(part["text"], "message", allow_empty=True,
                                                            max_chars=MAX_MESSAGE_CHARS)})
        elif kind == "image" and role == "user" and part.get("image") is not None:
            parts.append({"type": "image", "image": load_image(part["image"])})
        else:
            raise _malformed(
                f"a {role} message has a part that is neither text nor (for users) an image",
                f"{role} 消息中有既不是文本、也不是（用户消息中的）图片的部件",
            )
    return parts


def build_conversation(
    history: Sequence[dict[str, Any]] | None,
    images: Sequence[ImageInput],
    text: str,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """The messages for the chat template: ``system``, then ``history``, then a user turn with ``images`` and
    ``text``. Images in the result are loaded (and checked) PIL images."""
    history = [] if history is None else history
    if not isinstance(history, (list, tuple)):
        raise _malformed("it must be a list", "它必须是列表")
    if len(history) > MAX_MESSAGES:
        raise InvalidInputError(
            f"The conversation has {len(history)} messages; the limit is {MAX_MESSAGES}. Start a new one, or keep "
            "only the last turns.",
            f"对话已有 {len(history)} 条消息，上限为 {MAX_MESSAGES}。请开始新对话，或只保留最近几轮。",
        )
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": check_text(system, "system")}]})
    for index, message in enumerate(history):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant"):
            raise _malformed(f"message #{index} has no role 'system', 'user' or 'assistant'",
                             f"第 {index} 条消息的 role 不是 'system'、'user' 或 'assistant'")
        if role == "system" and messages:
            raise _malformed("a system message may only come first", "system 消息只能放在第一条")
        messages.append({"role": role, "content": _message_parts(message.get("content"), role)})
    new_turn = [{"type": "image", "image": load_image(image)} for image in images]
    messages.append({"role": "user", "content": [*new_turn, {"type": "text", "text": text}]})
    count = sum(part["type"] == "image" for message in messages for part in message["content"])
    if count > MAX_IMAGES:
        raise InvalidInputError(
            f"The conversation holds {count} images; the limit is {MAX_IMAGES}. Start a new conversation.",
            f"对话中共有 {count} 张图片，上限为 {MAX_IMAGES} 张。请开始新对话。",
        )
    return messages


def generation_options(
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    top_k: int,
    num_beams: int,
    repetition_penalty: float,
) -> dict[str, Any]:
    """``generate`` keyword arguments, each checked; the sampling ones only when sampling."""
    if not isinstance(do_sample, bool):
        raise InvalidInputError("do_sample must be True or False.", "do_sample 必须是 True 或 False。")
    options: dict[str, Any] = {
        "max_new_tokens": check_positive_int(max_new_tokens, "max_new_tokens", maximum=MAX_NEW_TOKENS),
        "num_beams": check_positive_int(num_beams, "num_beams", maximum=8),
        # below 1.0 the penalty rewards repetition, which only makes answers loop
        "repetition_penalty": check_float_range(repetition_penalty, "repetition_penalty", 1.0, 2.0),
        "do_sample": do_sample,
    }
    temperature = check_float_range(temperature, "temperature", 0.01, 5.0)
    top_p = check_float_range(top_p, "top_p", 0.01, 1.0)
    top_k = check_positive_int(top_k, "top_k", maximum=1000)
    if do_sample:
        options.update(temperature=temperature, top_p=top_p, top_k=top_k)
    return options


def _seed(seed: Any) -> int | None:
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise InvalidInputError(
            f"seed must be a whole number ≥ 0 or None; got {seed!r:.40}.", f"seed 必须是非负整数或 None，收到的是 {seed!r:.40}。"
        )
    return seed


class ImageTextToText(_Generator):
    """Chat about images: ``chat(image, prompt, history=...)`` answers one user turn.

    ``image`` is one image, a list of images (all shown in this turn), or None (a follow-up about images earlier in
    ``history``). ``history`` holds earlier messages as ``{"role", "content"}`` dicts, content being text or parts
    ``{"type": "text", "text": ...}`` / ``{"type": "image", "image": ...}``. One conversation per call: a list of
    images is *not* a batch. ``quantization="4bit"``/``"8bit"`` loads bitsandbytes weights (CUDA only).

    >>> chat = ImageTextToText("internvl3-1b", weights="tiny")
    >>> first = chat("examples/images/cat.png", "What is this?", max_new_tokens=3)
    >>> history = [{"role": "user", "content": [{"type": "image", "image": "examples/images/cat.png"},
    ...                                          {"type": "text", "text": "What is this?"}]},
    ...            {"role": "assistant", "content": first.text}]
    >>> isinstance(chat(None, "它是什么颜色？", history=history, max_new_tokens=3).text, str)
    True
    """

    task = "image-text-to-text"
    default_model = "qwen2.5-vl-3b"

    def __init__(self, model: str | LoadedModel | None = None, *, quantization: str | None = None,
                 **kwargs: Any) -> None:
        if quantization is not None:
            if isinstance(model, LoadedModel):
                raise InvalidInputError(
                    "quantization applies when a model is loaded; this one is loaded already. Pass its name instead.",
                    "quantization 只在加载模型时生效，而这个模型已经加载好了。请改为传入模型名。",
                )
            load_options = {name: kwargs.pop(name) for name in _LOAD_OPTIONS if name in kwargs}
            model = load(model or self.default_model, task=self.task, quantization=quantization, **load_options)
        super().__init__(model, **kwargs)

    # ---- preparing -------------------------------------------------------------------------------------------------
    def _inputs(self, messages: list[dict[str, Any]], max_new_tokens: int) -> Any:
        """Token ids and pixels for ``messages`` through the chat template, checked to fit the model."""
        images = [part["image"] for message in messages for part in message["content"] if part["type"] == "image"]
        template_messages = [
            {"role": m["role"], "content": [{"type": "image"} if p["type"] == "image" else p for p in m["content"]]}
            for m in messages
        ]
        text = self.processor.apply_chat_template(template_messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
        self._check_length(inputs, max_new_tokens)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:  # the vision tower runs in the load dtype (quantized models too)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.loaded.dtype)
        return inputs

    def _prepare(self, image: Any, prompt: Any, history: Any, system: Any, options: dict[str, Any]) -> Any:
        text = check_text(prompt, "prompt")
        images = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
        messages = build_conversation(history, images, text, system)
        return self._inputs(messages, options["max_new_tokens"])

    def _decode(self, new_tokens: Any, *, skip_special_tokens: bool = True) -> str:
        return self.processor.decode(new_tokens, skip_special_tokens=skip_special_tokens).strip()

    # ---- answering -------------------------------------------------------------------------------------------------
    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput] | None,
        prompt: str,
        *,
        history: Sequence[dict[str, Any]] | None = None,
        system: str | None = None,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 50,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
    ) -> GeneratedText:
        """The answer to ``prompt`` about ``image`` (and the conversation in ``history``)."""
        import torch

        options = generation_options(max_new_tokens, do_sample, temperature, top_p, top_k, num_beams,
                                     repetition_penalty)
        seed = _seed(seed)
        inputs = self._prepare(image, prompt, history, system, options)
        if do_sample and seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **options)
        return GeneratedText(self._decode(output[0, inputs["input_ids"].shape[1] :]), prompt.strip())

    def stream(
        self,
        image: ImageInput | Sequence[ImageInput] | None,
        prompt: str,
        *,
        history: Sequence[dict[str, Any]] | None = None,
        system: str | None = None,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 50,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """The same answer as ``__call__``, as pieces of text while they are generated (``"".join`` them).

        Arguments are checked before this returns; generation runs in a thread. Closing the iterator early (a
        visitor who leaves) stops the generation at the next token. Beam search cannot stream.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        options = generation_options(max_new_tokens, do_sample, temperature, top_p, top_k, 1, repetition_penalty)
        seed = _seed(seed)
        inputs = self._prepare(image, prompt, history, system, options)
        streamer = TextIteratorStreamer(
            self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S
        )
        stop = threading.Event()

        class _StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        failures: list[BaseException] = []

        def generate() -> None:
            try:
                if do_sample and seed is not None:
                    torch.manual_seed(seed)
                with torch.inference_mode():
                    self.model.generate(
                        **inputs, **options, streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopWhenAsked()])
                    )
            except BaseException as exc:  # handed to the reader, which raises it
                failures.append(exc)
                streamer.end()

        thread = threading.Thread(target=generate, name="lmt-chat-stream", daemon=True)
        thread.start()
        return self._pieces(streamer, stop, thread, failures)

    @staticmethod
    def _pieces(streamer: Any, stop: threading.Event, thread: threading.Thread,
                failures: list[BaseException]) -> Iterator[str]:
        try:
            for piece in streamer:
                if piece:
                    yield piece
        except queue.Empty:
            raise LmtError(
                f"The model produced no text for {STREAM_TIMEOUT_S:.0f} s; generation was stopped. Try a shorter "
                "answer (max_new_tokens), a smaller image or a smaller model.",
                f"模型 {STREAM_TIMEOUT_S:.0f} 秒内没有生成任何文字，已停止生成。请减小 max_new_tokens、换小一些的图片或模型。",
            ) from None
        finally:
            stop.set()
            thread.join(timeout=STREAM_TIMEOUT_S)
        if failures:
            raise failures[0]

    # ---- grounding -------------------------------------------------------------------------------------------------
    def resized_size(self, image: ImageInput) -> tuple[int, int] | None:
        """(width, height) of ``image`` as Qwen2.5-VL sees it after ``smart_resize``; None for other models."""
        if self.model.config.model_type != "qwen2_5_vl":
            return None
        image_processor = self.processor.image_processor
        grid = image_processor(images=[load_image(image)], return_tensors="pt")["image_grid_thw"][0]
        return int(grid[2]) * image_processor.patch_size, int(grid[1]) * image_processor.patch_size

    def boxes(self, text: str, image: ImageInput, default_label: str = "object") -> Detections:
        """The boxes in an answer about ``image`` (see :func:`parse_grounding`), in ``image``'s pixels."""
        picture = load_image(image)
        return parse_grounding(text, picture.size, resized_size=self.resized_size(picture), default_label=default_label)

    def ground(self, image: ImageInput, queries: str | Sequence[str], *, max_new_tokens: int = 256) -> Detections:
        """Boxes for every object named in ``queries`` (e.g. ``"cat, dog"``), as OWLv2 gives them, by asking the
        model in its grounding format (greedy decoding): Qwen2.5-VL answers all queries in one JSON list, InternVL
        one ``<ref>query</ref>`` at a time."""
        import torch

        queries = check_labels(queries, what="query", max_count=20)
        picture = load_image(image)
        model_type = self.model.config.model_type
        if model_type == "qwen2_5_vl":
            listed = ", ".join(f'"{query}"' for query in queries)
            asks = [(f"Locate every instance of {listed} in the image. Output the bounding boxes in JSON format, "
                     'like [{"bbox_2d": [x1, y1, x2, y2], "label": "name"}].', queries[0])]
        elif model_type == "internvl":
            asks = [(f"Please provide the bounding box coordinate of the region this sentence describes: "
                     f"<ref>{query}</ref>", query) for query in queries]
        else:
            raise UnsupportedTaskError(
                f"Grounding is supported for Qwen2.5-VL and InternVL, not '{model_type}'.",
                f"只有 Qwen2.5-VL 和 InternVL 支持定位（grounding），'{model_type}' 不支持。",
            )
        options = generation_options(max_new_tokens, False, 1.0, 1.0, 1, 1, 1.0)
        resized = self.resized_size(picture)
        found: list[Detection] = []
        for ask, default_label in asks:
            inputs = self._inputs(build_conversation(None, [picture], ask), options["max_new_tokens"])
            with torch.inference_mode():
                output = self.model.generate(**inputs, **options)
            # grounding tags are special tokens: keep them, the parser reads them
            text = self._decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=False)
            logger.debug("grounding answer: %s", text)
            found += parse_grounding(text, picture.size, resized_size=resized, default_label=default_label).detections
        return Detections(tuple(found), picture.size)
