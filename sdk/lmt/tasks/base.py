"""What every task call shares: loading its model through the cache, images in, batches through."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from lmt.loading import LoadedModel, Weights, load
from lmt.validate import check_positive_int


class Task:
    """Base of the task calls. A subclass sets ``task`` and ``default_model`` and defines ``__call__``.

    The model is loaded once, through the process-wide LRU cache, when the task object is created.
    """

    task: ClassVar[str]
    default_model: ClassVar[str]

    def __init__(
        self,
        model: str | LoadedModel | None = None,
        *,
        weights: Weights = "real",
        revision: str | None = None,
        device: Any = None,
        dtype: Any = None,
        adapter: str | None = None,
        adapter_revision: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 8,
    ) -> None:
        if isinstance(model, LoadedModel):
            self.loaded = model
        else:
            self.loaded = load(
                model or self.default_model,
                task=self.task,
                weights=weights,
                revision=revision,
                device=device,
                dtype=dtype,
                adapter=adapter,
                adapter_revision=adapter_revision,
                trust_remote_code=trust_remote_code,
            )
        self.batch_size = check_positive_int(batch_size, "batch_size", maximum=1024)

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def processor(self) -> Any:
        return self.loaded.processor

    @property
    def device(self) -> Any:
        return self.loaded.device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.loaded.name!r}, weights={self.loaded.weights!r}, device={self.device})"

    def _batches(self, items: Sequence[Any]) -> Iterator[Sequence[Any]]:
        from tqdm.auto import tqdm

        starts = range(0, len(items), self.batch_size)
        for start in tqdm(starts, desc=self.task, unit="batch", disable=len(starts) <= 1, leave=False):
            yield items[start : start + self.batch_size]

    def _pixel_values(self, images: Sequence[Any]) -> Any:
        image_processor = getattr(self.processor, "image_processor", self.processor)
        pixel_values = image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixel_values.to(self.device, self.loaded.dtype)


def is_batch(image: Any) -> bool:
    """A list or tuple of images is a batch; one image (path, PIL, array, bytes) is not."""
    return isinstance(image, (list, tuple))


def unbatch(results: list[Any], batched: bool) -> Any:
    return results if batched else results[0]


def features_of(output: Any) -> Any:
    """``get_image_features``/``get_text_features`` return a tensor in transformers 4 and an output in 5."""
    return output.pooler_output if hasattr(output, "pooler_output") else output
