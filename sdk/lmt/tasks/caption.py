"""Captioning and visual question answering with BLIP-2 (and other image-text-to-text generators)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmt.errors import InvalidInputError
from lmt.images import ImageInput, load_images
from lmt.results import GeneratedText
from lmt.tasks.base import Task, is_batch, unbatch
from lmt.validate import check_float_range, check_positive_int, check_text

#: BLIP-2's VQA prompt format (from the BLIP-2 paper and model card).
VQA_TEMPLATE = "Question: {} Answer:"
MAX_NEW_TOKENS = 256


class _Generator(Task):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:  # decoder-only language models need left padding to batch prompts
            tokenizer.padding_side = "left"

    def _check_length(self, inputs: Any, max_new_tokens: int) -> None:
        """Refuse prompts that, with the answer, would not fit the language model's positions."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        limit = getattr(text_config, "max_position_embeddings", None)
        if limit is None or "input_ids" not in inputs:
            return
        needed = inputs["input_ids"].shape[1] + max_new_tokens
        if needed > limit:
            raise InvalidInputError(
                f"The prompt and answer need {needed} tokens; this model handles {limit}. Shorten the question "
                "(or the conversation history) or lower max_new_tokens.",
                f"提示加回答需要 {needed} 个词元，该模型最多处理 {limit} 个。请缩短问题（或对话历史），或减小 max_new_tokens。",
            )

    def _generate(
        self,
        images: list[Any],
        prompts: list[str | None],
        max_new_tokens: int,
        num_beams: int,
        do_sample: bool,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> list[str]:
        import torch

        max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens", maximum=MAX_NEW_TOKENS)
        num_beams = check_positive_int(num_beams, "num_beams", maximum=8)
        temperature = check_float_range(temperature, "temperature", 0.01, 5.0)
        top_p = check_float_range(top_p, "top_p", 0.01, 1.0)
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": do_sample}
        if do_sample:
            options.update(temperature=temperature, top_p=top_p)
            if seed is not None:
                torch.manual_seed(seed)
        texts: list[str] = []
        indices = list(range(len(images)))
        for batch in self._batches(indices):
            batch_images = [images[i] for i in batch]
            batch_prompts = [prompts[i] for i in batch]
            if all(prompt is None for prompt in batch_prompts):
                inputs = self.processor(images=batch_images, return_tensors="pt")
            else:
                text = [prompt or "" for prompt in batch_prompts]
                inputs = self.processor(images=batch_images, text=text, return_tensors="pt", padding=True)
            self._check_length(inputs, max_new_tokens)
            inputs = inputs.to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.loaded.dtype)
            with torch.inference_mode():
                output_ids = self.model.generate(**inputs, **options)
            prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
            if self.model.config.is_encoder_decoder or getattr(
                getattr(self.model.config, "text_config", None), "is_encoder_decoder", False
            ):
                prompt_length = 0
            new_tokens = output_ids[:, prompt_length:] if output_ids.shape[1] > prompt_length else output_ids
            texts.extend(t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True))
        return texts


class ImageToText(_Generator):
    """Caption an image, optionally continuing a ``prompt`` (e.g. "a photo of").

    >>> caption = ImageToText("blip2-opt-2.7b", weights="tiny")
    >>> isinstance(caption("examples/images/cat.png", max_new_tokens=5).text, str)
    True
    """

    task = "image-to-text"
    default_model = "blip2-opt-2.7b"

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        *,
        prompt: str | None = None,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> GeneratedText | list[GeneratedText]:
        if prompt is not None:
            prompt = check_text(prompt, "prompt", allow_empty=True) or None
        images = load_images(image)
        texts = self._generate(
            images, [prompt] * len(images), max_new_tokens, num_beams, do_sample, temperature, top_p, seed
        )
        return unbatch([GeneratedText(text, prompt) for text in texts], is_batch(image))


class VisualQuestionAnswering(_Generator):
    """Answer a question about an image. ``question`` is one string, or one per image.

    ``template`` wraps the question; BLIP-2 expects ``"Question: {} Answer:"``.

    >>> vqa = VisualQuestionAnswering("blip2-opt-2.7b", weights="tiny")
    >>> vqa("examples/images/cat.png", question="how many cats?", max_new_tokens=3).prompt
    'how many cats?'
    """

    task = "visual-question-answering"
    default_model = "blip2-opt-2.7b"

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        question: str | Sequence[str],
        *,
        template: str = VQA_TEMPLATE,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> GeneratedText | list[GeneratedText]:
        images = load_images(image)
        questions = [question] * len(images) if isinstance(question, str) else list(question)
        if len(questions) != len(images):
            raise InvalidInputError(
                f"{len(questions)} questions for {len(images)} images; give one question, or one per image.",
                f"{len(images)} 张图像配了 {len(questions)} 个问题；请给一个问题，或每张图像一个。",
            )
        questions = [check_text(q, "question") for q in questions]
        if template.count("{}") != 1:
            raise InvalidInputError(
                "The question template must contain '{}' once, e.g. 'Question: {} Answer:'.",
                "问题模板必须恰好包含一个 '{}'，例如 'Question: {} Answer:'。",
            )
        prompts = [template.format(q) for q in questions]
        texts = self._generate(images, prompts, max_new_tokens, num_beams, do_sample, temperature, top_p, seed)
        answers = [GeneratedText(text, q) for text, q in zip(texts, questions, strict=True)]
        return unbatch(answers, is_batch(image))
