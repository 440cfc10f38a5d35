"""Image (and, for CLIP-style models, text) embeddings, and top-k search over a gallery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmt.errors import UnsupportedTaskError
from lmt.images import ImageInput, load_images
from lmt.results import Embedding, SearchHit
from lmt.retrieval import EmbeddingIndex
from lmt.tasks.base import Task, is_batch, unbatch
from lmt.validate import check_labels


class ImageFeatureExtraction(Task):
    """L2-normalised embeddings: CLIP's projected image/text features, or the CLS token of DINOv2/ViT.

    >>> embed = ImageFeatureExtraction("dinov2-small", weights="tiny")
    >>> round(float((embed("examples/images/cat.png").vector ** 2).sum()), 4)
    1.0
    """

    task = "image-feature-extraction"
    default_model = "dinov2-small"
    onnx_families = ("vit", "dinov2", "clip")

    @property
    def supports_text(self) -> bool:
        return hasattr(self.model, "get_text_features")

    def _image_vectors(self, pixel_values: Any) -> Any:
        if hasattr(self.model, "get_image_features"):
            return self._image_features(pixel_values)
        if self.graphs is not None:  # the graph returns the same CLS token or pooled map as below
            return self._graph_output("model", "features", pixel_values=pixel_values)
        outputs = self.model(pixel_values=pixel_values)
        if outputs.last_hidden_state.ndim == 3:  # transformer: the CLS token, after the final layer norm
            return outputs.last_hidden_state[:, 0]
        return outputs.pooler_output.flatten(1)  # CNN: the pooled feature map

    def __call__(self, image: ImageInput | Sequence[ImageInput]) -> Embedding | list[Embedding]:
        import torch

        images = load_images(image)
        results = []
        for batch in self._batches(images):
            with torch.inference_mode():
                vectors = self._image_vectors(self._pixel_values(batch)).float()
                vectors = vectors / vectors.norm(p=2, dim=-1, keepdim=True)
            results.extend(Embedding(v) for v in vectors.cpu().numpy())
        return unbatch(results, is_batch(image))

    def embed_text(self, text: str | Sequence[str]) -> Embedding | list[Embedding]:
        """Text embeddings in the same space as the images (CLIP-style models only)."""
        import torch

        if not self.supports_text:
            raise UnsupportedTaskError(
                f"'{self.loaded.name}' embeds images only. Use a CLIP model (e.g. clip-vit-b32) to search with text.",
                f"'{self.loaded.name}' 只能嵌入图像。用文本检索请使用 CLIP 模型（如 clip-vit-b32）。",
            )
        texts = check_labels([text] if isinstance(text, str) else list(text), what="text")
        inputs = self.processor.tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.inference_mode():
            vectors = self._text_features(inputs).float()
            vectors = vectors / vectors.norm(p=2, dim=-1, keepdim=True)
        embeddings = [Embedding(v) for v in vectors.cpu().numpy()]
        return embeddings[0] if isinstance(text, str) else embeddings

    def build_index(self, images: Sequence[ImageInput], ids: Sequence[str] | None = None) -> EmbeddingIndex:
        """Embed a gallery of images into a searchable index."""
        index = EmbeddingIndex()
        index.add(self(list(images)), ids=ids)
        return index

    def search(
        self, query: ImageInput | str, gallery: EmbeddingIndex | Sequence[ImageInput], *, top_k: int = 5
    ) -> list[SearchHit]:
        """The ``top_k`` gallery items most similar to ``query``: an image, or text for CLIP-style models.

        A string that names no existing file is treated as text.
        """
        from pathlib import Path

        index = gallery if isinstance(gallery, EmbeddingIndex) else self.build_index(gallery)
        is_text = isinstance(query, str) and not Path(query).exists() and not query.startswith(("http://", "https://"))
        vector = self.embed_text(query) if is_text else self(query)
        return index.search(vector, top_k=top_k)
