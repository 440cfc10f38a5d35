"""What every task call shares: loading its model through the cache, images in, batches through, and the
back-end that computes (PyTorch, or onnxruntime on graphs exported once from the same model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from lmt.errors import InvalidInputError, UnsupportedTaskError
from lmt.loading import LoadedModel, Weights, load
from lmt.validate import check_positive_int


class Task:
    """Base of the task calls. A subclass sets ``task`` and ``default_model`` and defines ``__call__``.

    The model is loaded once, through the process-wide LRU cache, when the task object is created.
    ``backend="onnx"`` (or ``"onnx-int8"``) runs the model's compute step with onnxruntime instead of PyTorch:
    the model is loaded on CPU in float32, exported once into ``$LMT_HOME/onnx``, and ``device`` then picks the
    execution provider (``cuda``, ``openvino``, ``cpu``; default: the best installed). Pre- and post-processing
    are the same code for both back-ends.
    """

    task: ClassVar[str]
    default_model: ClassVar[str]
    #: Model families whose compute step this task can run on the ONNX back-end (empty: PyTorch only).
    onnx_families: ClassVar[tuple[str, ...]] = ()

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
        backend: str = "torch",
    ) -> None:
        from lmt.deploy.runtime import check_backend

        self.backend = check_backend(backend)
        self.batch_size = check_positive_int(batch_size, "batch_size", maximum=1024)
        onnx_device = None
        if self.backend != "torch":
            onnx_device = self._check_onnx_request(device, dtype)
            device, dtype = "cpu", "float32"  # the model the graphs are exported from
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
        #: onnxruntime sessions by graph name when the back-end is ONNX, else None.
        self.graphs: Any = None
        if self.backend != "torch":
            self.graphs = self._onnx_graphs(onnx_device)

    def _check_onnx_request(self, device: Any, dtype: Any) -> str | None:
        """Refuse an ONNX back-end this task cannot honour before any model loads; the provider device."""
        from lmt.deploy.runtime import choose_providers

        if not self.onnx_families:
            raise UnsupportedTaskError(
                f"'{self.task}' has no ONNX back-end yet; use backend='torch'.",
                f"任务 '{self.task}' 暂不支持 ONNX 后端，请使用 backend='torch'。",
            )
        if dtype is not None and str(dtype).removeprefix("torch.") not in ("float32", "fp32"):
            raise InvalidInputError(
                f"dtype={dtype!r} does not apply to backend '{self.backend}', which runs the exported fp32 graphs "
                "(or INT8 with backend='onnx-int8'). Leave dtype unset.",
                f"dtype={dtype!r} 不适用于后端 '{self.backend}'：它运行导出的 fp32 计算图"
                "（INT8 请用 backend='onnx-int8'）。请不要设置 dtype。",
            )
        onnx_device = None if device is None else str(device)
        choose_providers(onnx_device)  # onnxruntime missing, or a provider it lacks: say so now
        return onnx_device

    def _onnx_graphs(self, onnx_device: str | None) -> Any:
        from lmt.deploy.runtime import backend_quantize, onnx_graphs

        family = self.loaded.family.name if self.loaded.family is not None else None
        if family not in self.onnx_families:
            raise UnsupportedTaskError(
                f"'{self.loaded.name}' (family {family}) has no ONNX back-end for '{self.task}'. Families that have "
                f"one: {', '.join(self.onnx_families)}. Use backend='torch'.",
                f"'{self.loaded.name}'（模型族 {family}）在任务 '{self.task}' 上暂不支持 ONNX 后端。支持的模型族："
                f"{'、'.join(self.onnx_families)}。请使用 backend='torch'。",
            )
        return onnx_graphs(self.loaded, task=self.task, quantize=backend_quantize(self.backend), device=onnx_device)

    def _graph_output(self, graph: str, output: str, **inputs: Any) -> Any:
        """One output of an exported graph as a CPU tensor, so that post-processing is the torch code."""
        import torch

        return torch.from_numpy(self.graphs.run(graph, **inputs)[output])

    def _image_features(self, pixel_values: Any) -> Any:
        """CLIP-style projected image embeddings (not normalised), from either back-end."""
        if self.graphs is not None:
            return self._graph_output("image", "image_embeds", pixel_values=pixel_values)
        return features_of(self.model.get_image_features(pixel_values=pixel_values))

    def _text_features(self, inputs: Any) -> Any:
        """CLIP-style projected text embeddings (not normalised) for tokenizer output, from either back-end."""
        if self.graphs is not None:
            return self._graph_output(
                "text", "text_embeds", input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
        return features_of(self.model.get_text_features(**inputs))

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
        return (
            f"{type(self).__name__}(model={self.loaded.name!r}, weights={self.loaded.weights!r}, device={self.device}, "
            f"backend={self.backend!r})"
        )

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
