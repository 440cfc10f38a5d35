"""Image-only processors for Qwen2.5-VL and InternVL, registered with ``AutoProcessor`` when this module is imported.

The stock ``Qwen2_5_VLProcessor`` and ``InternVLProcessor`` also build a video processor, which needs torchvision
(absent beside torch 2.13 on our machines). These subclasses take only the image processor and the tokenizer, so
the same checkpoints (real or tiny) load everywhere; a video input is refused instead of failing inside transformers.

Unlike the family modules, this one imports transformers: only the loading and tiny-building code imports it, and
importing it is what registers the classes (``AutoProcessor.from_pretrained`` and the transformers pipelines then
find them by the ``processor_class`` a saved folder names).
"""

from __future__ import annotations

import re
from typing import Any

from transformers import (
    AutoProcessor,
    InternVLConfig,
    InternVLProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
)
from transformers.processing_utils import ProcessorMixin

from lmt.errors import InvalidInputError


def _no_video() -> InvalidInputError:
    return InvalidInputError("This SDK runs images only; video input is not supported.", "本 SDK 只处理图像，不支持视频输入。")


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without the video processor (the same image tokens, chat template and outputs)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
        if videos is not None:
            raise _no_video()
        return super().__call__(images=images, text=text, **kwargs)


class InternVLImageProcessor(InternVLProcessor):
    """``InternVLProcessor`` without the video processor (the same ``<img>...</img>`` expansion and outputs)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, image_seq_length: int = 256,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.image_seq_length = image_seq_length
        self.start_image_token = tokenizer.start_image_token
        self.end_image_token = tokenizer.end_image_token
        self.start_image_token_id = tokenizer.start_image_token_id
        self.end_image_token_id = tokenizer.end_image_token_id
        self.image_token = tokenizer.context_image_token
        self.video_token = tokenizer.video_token
        self.image_token_id = tokenizer.context_image_token_id
        self.multimodal_pattern = re.compile(
            f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})"
        )

    def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
        if videos is not None:
            raise _no_video()
        return super().__call__(images=images, text=text, **kwargs)


AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageProcessor, exist_ok=True)
AutoProcessor.register(InternVLConfig, InternVLImageProcessor, exist_ok=True)
