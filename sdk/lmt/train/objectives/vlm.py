"""Supervised fine-tuning of chat vision-language models (Qwen2.5-VL, InternVL) on conversations about images.

A record is ``{"image": [paths], "messages": [{"role": ..., "content": ...}, ...]}``: a conversation that ends with
an assistant turn. User content is text, where ``<image>`` marks where each image goes (in order; with no marker at
all, every image goes before the first user text), or a list of parts ``{"type": "text", "text": ...}`` /
``{"type": "image"}``. Assistant content is text.

The conversation goes through the model's own chat template, cut into segments: each assistant turn's *prompt*
(everything the template writes before the answer, ending ``<|im_start|>assistant\\n``) and its *answer* (the
assistant's text and the end-of-turn token). Each prompt segment is tokenized as :class:`lmt.ImageTextToText` tokenizes
a generation prompt (the processor, which expands the image tokens); each answer on its own, as the model generates it.
The loss is the cross-entropy on the answer tokens only: system, user turns, image tokens, template text and padding
get label -100.

Evaluation also answers the last user turn greedily and scores it against the reference (BLEU-4, chrF, exact match).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmt.errors import InvalidInputError
from lmt.train.objectives.base import Objective
from lmt.train.objectives.blip2 import EXAMPLES_IN_EXTRAS, IGNORE_INDEX, next_token_losses, text_metrics

logger = logging.getLogger(__name__)

#: New tokens generated for the last answer during evaluation (greedy).
GENERATE_MAX_NEW_TOKENS = 32
#: Reference width kept per example for evaluation (a fixed width, so every process's tensors gather).
MAX_REFERENCE_TOKENS = 64
#: Where an image goes in a user message written as plain text (LLaMA-Factory's and ms-swift's marker).
IMAGE_MARKER = "<image>"
#: Per-token outputs of the processors (the rest, pixels and image grids, are per image).
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
#: The vision tower of each model type, frozen in full fine-tuning and left out of the default LoRA targets.
VISION_PREFIXES = {"qwen2_5_vl": "model.visual.", "internvl": "model.vision_tower."}


def _data_error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Training data: {message}", f"训练数据：{message_zh}")


@dataclass(frozen=True)
class Segment:
    """A piece of the templated conversation: a prompt (with the images it shows) or an answer to learn."""

    text: str
    images: tuple[Any, ...] = ()
    #: The assistant's text when this is an answer segment; ``None`` for a prompt.
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "images": len(self.images), "answer": self.answer}


def _user_parts(content: Any, number: int) -> list[dict[str, Any]]:
    """A user message's content as template parts; each ``{"type": "image"}`` part takes the next image."""
    if isinstance(content, str):
        parts: list[dict[str, Any]] = []
        for index, text in enumerate(content.split(IMAGE_MARKER)):
            if index:
                parts.append({"type": "image"})
            if text.strip():
                parts.append({"type": "text", "text": text.strip()})
        return parts
    if isinstance(content, list) and all(
        isinstance(p, dict) and (p.get("type") == "image" or (p.get("type") == "text" and isinstance(p.get("text"), str)))
        for p in content
    ):
        return [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]} for p in content]
    raise _data_error(
        f"example {number}: a user message's content must be text (with '{IMAGE_MARKER}' markers) or a list of "
        "{'type': 'text', 'text': ...} / {'type': 'image'} parts.",
        f"第 {number} 个样本：用户消息的 content 必须是文本（可含 '{IMAGE_MARKER}' 标记）或 "
        "{'type': 'text', 'text': ...} / {'type': 'image'} 部件列表。",
    )


def _assistant_text(content: Any, number: int) -> str:
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)
    if not isinstance(content, str) or not content.strip():
        raise _data_error(f"example {number}: every assistant message needs non-empty text.",
                          f"第 {number} 个样本：每条 assistant 消息都必须有非空文本。")
    return content.strip()


def template_messages(messages: Any, image_count: int, number: int = 0) -> list[dict[str, Any]]:
    """``messages`` checked and written as chat-template messages (content as parts, images as ``{"type": "image"}``).

    The roles must be an optional system message, then user and assistant turns in turn, ending with an assistant
    turn; the image parts must match ``image_count``.
    """
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _data_error(f"example {number}: 'messages' must be a non-empty list of {{'role', 'content'}} objects.",
                          f"第 {number} 个样本：'messages' 必须是非空的 {{'role', 'content'}} 对象列表。")
    roles = [m.get("role") for m in messages]
    turns = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(turns) // 2)
    if not turns or turns != expected:
        raise _data_error(
            f"example {number}: roles {roles} must be an optional 'system', then 'user' and 'assistant' in turn, "
            "ending with 'assistant'.",
            f"第 {number} 个样本：角色顺序 {roles} 不对，应为可选的 'system'，然后 'user' 与 'assistant' 交替，"
            "并以 'assistant' 结尾。",
        )
    result = []
    for message in messages:
        role, content = message["role"], message.get("content")
        if role == "assistant":
            parts = [{"type": "text", "text": _assistant_text(content, number)}]
        elif role == "system":
            if not isinstance(content, str) or not content.strip():
                raise _data_error(f"example {number}: the system message must be non-empty text.",
                                  f"第 {number} 个样本：system 消息必须是非空文本。")
            parts = [{"type": "text", "text": content.strip()}]
        else:
            parts = _user_parts(content, number)
        result.append({"role": role, "content": parts})
    marked = sum(p["type"] == "image" for m in result for p in m["content"])
    if marked == 0 and image_count:
        first_user = next(m for m in result if m["role"] == "user")
        first_user["content"] = [{"type": "image"}] * image_count + first_user["content"]
    elif marked != image_count:
        raise _data_error(
            f"example {number} has {image_count} images but {marked} image places ('{IMAGE_MARKER}' or "
            "{'type': 'image'}) in its messages; give one place per image, or none (all images go first).",
            f"第 {number} 个样本有 {image_count} 张图片，但消息中有 {marked} 个图片位置（'{IMAGE_MARKER}' 或 "
            "{'type': 'image'}）；请每张图片一个位置，或者一个都不写（图片全部放在最前面）。",
        )
    return result


def conversation_segments(processor: Any, messages: list[dict[str, Any]], images: Sequence[Any]) -> list[Segment]:
    """The templated conversation cut into prompt and answer segments (see the module docstring).

    Each assistant turn's prompt is what the chat template writes with ``add_generation_prompt=True`` after the
    previous answer; its answer is what the template adds for the turn. A template whose renderings are not prefixes
    of each other (one that rewrites earlier turns) is refused.
    """

    def render(count: int, generation_prompt: bool) -> str:
        return processor.apply_chat_template(messages[:count], add_generation_prompt=generation_prompt, tokenize=False)

    segments: list[Segment] = []
    consumed, image_cursor, first_new = "", 0, 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, after = render(index, True), render(index + 1, False)
        if not before.startswith(consumed) or not after.startswith(before):
            raise InvalidInputError(
                "The model's chat template rewrites earlier turns, so the answers cannot be cut out of the "
                "conversation; train on single-turn examples instead.",
                "该模型的对话模板会改写之前的轮次，无法从对话中切出回答；请改用单轮样本训练。",
            )
        shown = sum(p["type"] == "image" for m in messages[first_new:index] for p in m["content"])
        segments.append(Segment(before[len(consumed):], tuple(images[image_cursor : image_cursor + shown])))
        answer = message["content"][0]["text"]
        segments.append(Segment(after[len(before):], answer=answer))
        consumed, image_cursor, first_new = after, image_cursor + shown, index + 1
    return segments


class VlmSftObjective(Objective):
    """LoRA (or full) supervised fine-tuning of Qwen2.5-VL and InternVL on conversations about images."""

    name = "vlm-sft"
    sdk_task = "image-text-to-text"
    pipeline_tag = "image-text-to-text"
    main_metric = "loss"
    record_columns = {"image": "image_column", "messages": "messages_column"}

    #: Positions the language model handles and the tokens that end an assistant turn; read from the loaded model.
    max_positions: int | None = None
    stop_ids: frozenset[int] = frozenset()

    # ------------------------------------------------------------------ model
    def load_model(self, device_map: Any = None, quantization_config: Any = None) -> Any:
        model = super().load_model(device_map=device_map, quantization_config=quantization_config)
        self.max_positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        eos = model.generation_config.eos_token_id
        stop = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.processor.tokenizer.eos_token_id is not None:
            stop.add(self.processor.tokenizer.eos_token_id)
        self.stop_ids = frozenset(stop)
        return model

    def freeze_for_full(self, model: Any) -> None:
        """Full fine-tuning trains the projector and the language model; the vision tower stays frozen."""
        prefix = VISION_PREFIXES.get(model.config.model_type)
        for name, param in model.named_parameters():
            if prefix is not None and name.startswith(prefix):
                param.requires_grad_(False)

    # ------------------------------------------------------------------ batches
    def _pad_id(self) -> int:
        tokenizer = self.processor.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def segments(self, record: dict[str, Any], number: int = 0) -> list[Segment]:
        images = record["image"] if isinstance(record["image"], list) else [record["image"]]
        messages = template_messages(record["messages"], len(images), number)
        return conversation_segments(self.processor, messages, images)

    def _answer_ids(self, segment: Segment) -> tuple[list[int], list[int]]:
        """(token ids of the answer segment, their labels): the assistant's text and the end-of-turn token are
        learned; template text after it (a newline) is not."""
        tokenizer = self.processor.tokenizer
        if not segment.text.startswith(segment.answer or ""):
            raise InvalidInputError(
                "The model's chat template changes the assistant's text, so the answer tokens cannot be located.",
                "该模型的对话模板会改写 assistant 的文字，无法定位回答的词元。",
            )
        answer = tokenizer(segment.answer, add_special_tokens=False)["input_ids"]
        rest = tokenizer(segment.text[len(segment.answer or ""):], add_special_tokens=False)["input_ids"]
        if not rest or rest[0] not in self.stop_ids:
            raise InvalidInputError(
                "The model's chat template does not end an assistant turn with an end-of-turn token, so the model "
                "could not learn to stop.",
                "该模型的对话模板没有用结束符结束 assistant 轮次，模型将学不会停止生成。",
            )
        ids = answer + rest
        return ids, answer + rest[:1] + [IGNORE_INDEX] * (len(rest) - 1)

    def _prompt_inputs(self, segment: Segment, first: bool) -> dict[str, Any]:
        # the first prompt exactly as lmt.ImageTextToText encodes a generation prompt; later ones add no BOS
        options = {} if first else {"add_special_tokens": False}
        return self.processor(text=[segment.text], images=list(segment.images) or None, return_tensors="pt", **options)

    def encode(self, record: dict[str, Any], number: int = 0) -> dict[str, Any]:
        """One example as flat tensors: per-token ``input_ids``, ``labels`` (and the processor's other per-token
        keys), per-image tensors, the last answer's prompt length and its reference ids."""
        import torch

        per_token: dict[str, list[Any]] = {"labels": []}
        per_image: dict[str, list[Any]] = {}
        prompt_length, reference = 0, []
        segments = self.segments(record, number)
        for index, segment in enumerate(segments):
            if segment.answer is None:
                inputs = self._prompt_inputs(segment, first=index == 0)
                length = inputs["input_ids"].shape[1]
                for key, value in inputs.items():
                    if key in TOKEN_KEYS:
                        per_token.setdefault(key, []).append(value[0])
                    else:
                        per_image.setdefault(key, []).append(value)
                per_token["labels"].append(torch.full((length,), IGNORE_INDEX, dtype=torch.long))
                prompt_length = sum(len(ids) for ids in per_token["input_ids"])
            else:
                ids, labels = self._answer_ids(segment)
                for key in per_token:
                    if key == "input_ids":
                        per_token[key].append(torch.tensor(ids, dtype=torch.long))
                    elif key == "labels":
                        per_token[key].append(torch.tensor(labels, dtype=torch.long))
                    else:  # attention 1, and no image token among the answer's
                        per_token[key].append(torch.full((len(ids),), int(key == "attention_mask"), dtype=torch.long))
                reference = [i for i in labels if i != IGNORE_INDEX]
        example = {key: torch.cat(values) for key, values in per_token.items()}
        example.update({key: torch.cat(values) for key, values in per_image.items()})
        example["prompt_length"] = prompt_length
        example["reference"] = reference
        self._check_length(max(len(example["input_ids"]), prompt_length + GENERATE_MAX_NEW_TOKENS))
        return example

    def _check_length(self, length: int) -> None:
        limit = self.max_positions
        if limit is not None and length > limit:
            raise _data_error(
                f"an example needs {length} tokens (image tokens, conversation and generated text); the language "
                f"model handles {limit}. Use fewer or smaller images, or shorter conversations.",
                f"有样本需要 {length} 个词元（图像词元、对话和生成的文字），语言模型最多处理 {limit} 个。"
                "请减少或缩小图片，或缩短对话。",
            )

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-padded conversations for the loss; the last answer's left-padded prompts and fixed-width
        references for generation in evaluation."""
        import torch

        encoded = [self.encode(e) for e in examples]
        pad_id = self._pad_id()
        token_keys = [key for key in (*TOKEN_KEYS, "labels") if key in encoded[0]]
        batch: dict[str, Any] = {}
        length = max(len(e["input_ids"]) for e in encoded)
        prompt_length = max(e["prompt_length"] for e in encoded)
        for key in token_keys:
            fill = pad_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
            batch[key] = torch.full((len(encoded), length), fill, dtype=torch.long)
            if key != "labels":
                batch[f"prompt_{key}"] = torch.full((len(encoded), prompt_length), fill, dtype=torch.long)
            for row, example in enumerate(encoded):
                values = example[key]
                batch[key][row, : len(values)] = values
                if key != "labels":
                    cut = example["prompt_length"]
                    batch[f"prompt_{key}"][row, prompt_length - cut :] = values[:cut]
        image_keys = dict.fromkeys(key for e in encoded for key in e)  # an example may show no image
        for key in image_keys:
            if key not in token_keys and key not in ("prompt_length", "reference"):
                batch[key] = torch.cat([e[key] for e in encoded if key in e])
        batch["reference_ids"] = torch.full((len(encoded), MAX_REFERENCE_TOKENS), pad_id, dtype=torch.long)
        for row, example in enumerate(encoded):
            reference = example["reference"][:MAX_REFERENCE_TOKENS]
            batch["reference_ids"][row, : len(reference)] = torch.tensor(reference, dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ loss and evaluation
    @staticmethod
    def _model_inputs(batch: dict[str, Any], prompt: bool) -> dict[str, Any]:
        """The keyword arguments of the model's forward (or of ``generate`` for the last answer's prompt)."""
        inputs = {key: value for key, value in batch.items() if key not in TOKEN_KEYS and not key.startswith("prompt_")
                  and key not in ("labels", "reference_ids")}
        for key in TOKEN_KEYS:
            name = f"prompt_{key}" if prompt else key
            if name in batch:
                inputs[key] = batch[name]
        return inputs

    def _token_losses(self, model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        """(per-token cross-entropy, mask of answer tokens), both (batch, length - 1)."""

        return next_token_losses(model(**self._model_inputs(batch, prompt=False)).logits, batch["labels"])

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        losses, mask = self._token_losses(model, batch)
        return losses.sum() / mask.sum().clamp(min=1)

    def eval_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        import torch.nn.functional as F

        losses, mask = self._token_losses(model, batch)
        per_example = losses.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        prompt = self._model_inputs(batch, prompt=True)
        output_ids = model.generate(**prompt, max_new_tokens=GENERATE_MAX_NEW_TOKENS, num_beams=1, do_sample=False)
        new_tokens = output_ids[:, prompt["input_ids"].shape[1] :]
        generated = F.pad(new_tokens, (0, GENERATE_MAX_NEW_TOKENS - new_tokens.shape[1]), value=self._pad_id())
        return {"loss": per_example, "generated_ids": generated, "reference_ids": batch["reference_ids"]}

    def compute_metrics(self, outputs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        decode = self.processor.tokenizer.batch_decode
        predictions = [t.strip() for t in decode(outputs["generated_ids"].tolist(), skip_special_tokens=True)]
        references = [t.strip() for t in decode(outputs["reference_ids"].tolist(), skip_special_tokens=True)]
        # chrF and BLEU on characters' neighbours need words: Chinese has no spaces, so score characters
        spaced = [" ".join(re.sub(r"\s+", "", t)) for t in predictions], [" ".join(re.sub(r"\s+", "", t))
                                                                          for t in references]
        metrics = {"loss": float(outputs["loss"].mean()), **text_metrics(*spaced)}
        examples = [{"prediction": p, "reference": r} for p, r in zip(predictions, references, strict=True)]
        return metrics, {"examples": examples[:EXAMPLES_IN_EXTRAS]}

    def run_info(self) -> dict[str, Any]:
        return {"generation": {"max_new_tokens": GENERATE_MAX_NEW_TOKENS, "num_beams": 1, "do_sample": False},
                "loss_on": "assistant answers and their end-of-turn token"}
