"""BLIP-2 captioning and visual question answering: LoRA on the language model and the Q-Former, or full
fine-tuning of everything but the vision encoder.

The loss is the language model's cross-entropy on the target tokens only. A training sequence is
``<image> x num_query_tokens, BOS, prompt tokens, target tokens, EOS`` (right-padded); the image tokens, the prompt
and the padding get label -100. The caption prompt is empty; the VQA prompt is ``Question: {question} Answer:``
and its target ``" " + answer``, the format :class:`lmt.VisualQuestionAnswering` asks in.

Evaluation also generates greedily, as the SDK's task calls do, and scores the text: BLEU-4, chrF and exact match.
"""

from __future__ import annotations

import logging
import math
import re
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lmt.errors import InvalidInputError
from lmt.tasks.caption import VQA_TEMPLATE
from lmt.train.objectives.base import Objective

logger = logging.getLogger(__name__)

#: Label of tokens the loss ignores (image tokens, prompt, padding), as in torch's cross-entropy.
IGNORE_INDEX = -100


def next_token_losses(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(per-token cross-entropy, mask of learned tokens), both (batch, length - 1): token t predicts token t+1,
    positions labelled ``IGNORE_INDEX`` cost nothing. The loss of every generative objective."""
    import torch.nn.functional as F

    shifted_logits, shifted_labels = logits[:, :-1].float(), labels[:, 1:]
    losses = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]), shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none",
    ).view(shifted_labels.shape)
    return losses, shifted_labels != IGNORE_INDEX
#: New tokens generated per example during evaluation (greedy): room for a caption of ~20 words.
GENERATE_MAX_NEW_TOKENS = 32
#: Target tokens kept per example, EOS included; longer captions/answers are cut (and a warning is logged).
MAX_TARGET_TOKENS = 64
#: Predictions and references kept in each epoch's extras, for reading what the model says.
EXAMPLES_IN_EXTRAS = 16


def normalize_answer(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: ``" A Red circle. "`` -> ``"a red circle"``."""
    return re.sub(r"\s+", " ", text.lower()).strip().strip(".,;:!?\"'").strip()


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` on whitespace tokens, one reference each, with add-one smoothing of the 2..n-gram
    precisions (Lin & Och 2004).

    The same formula as ``torchmetrics``' ``bleu_score(smooth=True)``, except that torchmetrics returns 0 as soon as
    one n-gram order has no match at all: every corpus of 3-word captions ("a red circle") or one-word answers
    would score 0 whatever the model says, and the best checkpoint could never be told apart.
    """
    matches, totals = [0] * max_n, [0] * max_n
    prediction_length = reference_length = 0
    for prediction, reference in zip(predictions, references, strict=True):
        predicted_words, reference_words = prediction.split(), reference.split()
        prediction_length += len(predicted_words)
        reference_length += len(reference_words)
        for n in range(1, max_n + 1):
            predicted, expected = _ngrams(predicted_words, n), _ngrams(reference_words, n)
            matches[n - 1] += sum(min(count, expected[gram]) for gram, count in predicted.items())
            totals[n - 1] += sum(predicted.values())
    if prediction_length == 0 or matches[0] == 0:
        return 0.0
    log_precision = math.log(matches[0] / totals[0])
    log_precision += sum(math.log((matches[n] + 1) / (totals[n] + 1)) for n in range(1, max_n))
    brevity = 1.0 if prediction_length > reference_length else math.exp(1 - reference_length / prediction_length)
    return brevity * math.exp(log_precision / max_n)


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 (smoothed, see :func:`corpus_bleu`), chrF (character n-grams) and exact match."""
    from torchmetrics.functional.text import chrf_score

    predictions, references = list(predictions), list(references)
    exact = [normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True)]
    return {
        "bleu": corpus_bleu(predictions, references),
        "chrf": float(chrf_score(predictions, [[r] for r in references])),
        "exact_match": sum(exact) / max(len(exact), 1),
    }


class _Blip2TextObjective(Objective):
    """What captioning and VQA share; subclasses say which prompt and which target each record gives."""

    #: Positions the language model handles; read from the loaded model.
    max_positions: int | None = None

    # ------------------------------------------------------------------ what a record says
    @abstractmethod
    def prompt_text(self, record: dict[str, Any]) -> str:
        """The text before the target: empty for a caption, the question in the VQA template for VQA."""

    @abstractmethod
    def target_text(self, record: dict[str, Any]) -> str:
        """The text the model learns to produce after the prompt."""

    # ------------------------------------------------------------------ model
    def load_model(self, device_map: Any = None, quantization_config: Any = None) -> Any:
        self._refuse_encoder_decoder()
        model = super().load_model(device_map=device_map, quantization_config=quantization_config)
        self.max_positions = getattr(model.config.text_config, "max_position_embeddings", None)
        return model

    def _refuse_encoder_decoder(self) -> None:
        """The loss here is a decoder-only one (OPT); a Flan-T5 BLIP-2 would need another. Checked from the config
        alone, before any weights load."""
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(
                self.resolved.source, revision=None if self.resolved.is_local else self.config.revision
            )
        except OSError:
            return  # load_model reports the missing weights with the ways out
        text_config = getattr(config, "text_config", None)
        if getattr(text_config, "is_encoder_decoder", False):
            raise InvalidInputError(
                f"Task '{self.name}' trains BLIP-2 with a decoder-only language model (OPT); '{self.config.model}' "
                "uses an encoder-decoder one (Flan-T5). Use blip2-opt-2.7b or blip2-opt-6.7b.",
                f"任务 '{self.name}' 只训练语言模型为纯解码器（OPT）的 BLIP-2；'{self.config.model}' 使用编码器-解码器"
                "（Flan-T5）。请改用 blip2-opt-2.7b 或 blip2-opt-6.7b。",
            )

    def freeze_for_full(self, model: Any) -> None:
        """Full fine-tuning trains the Q-Former, the projection and the language model; the vision encoder stays
        frozen, as in BLIP-2's own training."""
        model.vision_model.requires_grad_(False)

    # ------------------------------------------------------------------ batches
    def _pad_id(self) -> int:
        tokenizer = self.processor.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _target_ids(self, records: Sequence[dict[str, Any]]) -> list[list[int]]:
        """Each record's target tokens plus EOS, at most :data:`MAX_TARGET_TOKENS`."""
        tokenizer = self.processor.tokenizer
        encoded = tokenizer([self.target_text(r) for r in records], add_special_tokens=False)["input_ids"]
        targets = []
        for ids in encoded:
            if len(ids) >= MAX_TARGET_TOKENS:
                logger.warning("a target of %d tokens was cut to %d", len(ids) + 1, MAX_TARGET_TOKENS)
                ids = ids[: MAX_TARGET_TOKENS - 1]
            targets.append([*ids, tokenizer.eos_token_id])
        return targets

    def _check_length(self, length: int) -> None:
        limit = self.max_positions
        if limit is not None and length > limit:
            raise InvalidInputError(
                f"Training data: an example needs {length} tokens (image tokens, prompt, target or generated text); "
                f"the language model handles {limit}. Shorten the longest questions.",
                f"训练数据：有样本需要 {length} 个词元（图像词元、提示、目标或生成的文字），语言模型最多处理 {limit} 个。"
                "请缩短最长的问题。",
            )

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-padded prompt+target sequences for the loss; left-padded prompts and fixed-length references for
        generation in evaluation."""
        import torch

        images = [e["image"] for e in examples]
        # generation prompts exactly as lmt.ImageToText / lmt.VisualQuestionAnswering build them: the processor puts
        # num_query_tokens `<image>` tokens before each (left-padded) prompt
        generate = self.processor(
            images=images, text=[self.prompt_text(e) for e in examples], padding=True, padding_side="left",
            return_tensors="pt",
        )
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(generate["input_ids"], generate["attention_mask"],
                                                                   strict=True)]
        targets = self._target_ids(examples)
        pad_id = self._pad_id()
        length = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
        self._check_length(max(length, generate["input_ids"].shape[1] + GENERATE_MAX_NEW_TOKENS))
        input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        references = torch.full((len(examples), MAX_TARGET_TOKENS), pad_id, dtype=torch.long)
        for row, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
            end = len(prompt) + len(target)
            input_ids[row, :end] = torch.tensor(prompt + target)
            labels[row, len(prompt) : end] = torch.tensor(target)
            attention_mask[row, :end] = 1
            references[row, : len(target)] = torch.tensor(target)
        return {
            "pixel_values": generate["pixel_values"],
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "prompt_ids": generate["input_ids"],
            "prompt_mask": generate["attention_mask"],
            "reference_ids": references,
        }

    # ------------------------------------------------------------------ loss and evaluation
    def _token_losses(self, model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        """(per-token cross-entropy, mask of target tokens), both (batch, length - 1)."""
        logits = model(
            pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        # the logits cover the whole sequence, image query tokens included: keep the text positions
        return next_token_losses(logits[:, -batch["labels"].shape[1] :], batch["labels"])

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        losses, mask = self._token_losses(model, batch)
        return losses.sum() / mask.sum().clamp(min=1)

    def eval_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        import torch.nn.functional as F

        losses, mask = self._token_losses(model, batch)
        per_example = losses.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        output_ids = model.generate(
            pixel_values=batch["pixel_values"], input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"],
            max_new_tokens=GENERATE_MAX_NEW_TOKENS, num_beams=1, do_sample=False,
        )
        new_tokens = output_ids[:, batch["prompt_ids"].shape[1] :]
        # a fixed width, so that every process's tensors gather
        generated = F.pad(new_tokens, (0, GENERATE_MAX_NEW_TOKENS - new_tokens.shape[1]), value=self._pad_id())
        return {"loss": per_example, "generated_ids": generated, "reference_ids": batch["reference_ids"]}

    def compute_metrics(self, outputs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        decode = self.processor.tokenizer.batch_decode
        predictions = [t.strip() for t in decode(outputs["generated_ids"].tolist(), skip_special_tokens=True)]
        references = [t.strip() for t in decode(outputs["reference_ids"].tolist(), skip_special_tokens=True)]
        metrics = {"loss": float(outputs["loss"].mean()), **text_metrics(predictions, references)}
        examples = [{"prediction": p, "reference": r} for p, r in zip(predictions, references, strict=True)]
        return metrics, {"examples": examples[:EXAMPLES_IN_EXTRAS]}

    def run_info(self) -> dict[str, Any]:
        return {"generation": {"max_new_tokens": GENERATE_MAX_NEW_TOKENS, "num_beams": 1, "do_sample": False},
                "max_target_tokens": MAX_TARGET_TOKENS}


class Blip2CaptionObjective(_Blip2TextObjective):
    """Captions: the model learns to write ``caption`` after the image, with no text prompt."""

    name = "blip2-caption"
    sdk_task = "image-to-text"
    pipeline_tag = "image-to-text"
    main_metric = "bleu"
    record_columns = {"image": "image_column", "caption": "text_column"}

    def prompt_text(self, record: dict[str, Any]) -> str:
        return ""

    def target_text(self, record: dict[str, Any]) -> str:
        return str(record["caption"]).strip()


class Blip2VqaObjective(_Blip2TextObjective):
    """VQA: the model learns to write ``" " + answer`` after ``Question: {question} Answer:``."""

    name = "blip2-vqa"
    sdk_task = "visual-question-answering"
    pipeline_tag = "visual-question-answering"
    main_metric = "exact_match"
    record_columns = {"image": "image_column", "question": "question_column", "answer": "answer_column"}

    def prompt_text(self, record: dict[str, Any]) -> str:
        return VQA_TEMPLATE.format(str(record["question"]).strip())

    def target_text(self, record: dict[str, Any]) -> str:
        return " " + str(record["answer"]).strip()

    def run_info(self) -> dict[str, Any]:
        return {**super().run_info(), "question_template": VQA_TEMPLATE}
