"""Image classification: zero-shot with CLIP-style models, and with a trained head (ViT, ResNet, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmt.images import ImageInput, load_images
from lmt.results import Classification, LabelScore
from lmt.tasks.base import Task, is_batch, unbatch
from lmt.validate import check_labels, check_positive_int, check_template

#: transformers' zero-shot pipeline default, kept so that results match it.
DEFAULT_TEMPLATE = "This is a photo of {}."


def _ranked(labels: Sequence[str], scores: Sequence[float], top_k: int | None) -> Classification:
    order = sorted(range(len(labels)), key=lambda i: -scores[i])
    if top_k is not None:
        order = order[:top_k]
    return Classification(tuple(LabelScore(labels[i], float(scores[i])) for i in order))


class ZeroShotImageClassification(Task):
    """Score an image against free-text labels with a CLIP-style model.

    Label text embeddings are cached per (model, labels, template): a repeated label set skips the text tower.

    >>> classify = ZeroShotImageClassification("clip-vit-b32", weights="tiny")
    >>> classify("examples/images/cat.png", labels=["cat", "dog"]).label in {"cat", "dog"}
    True
    """

    task = "zero-shot-image-classification"
    default_model = "clip-vit-b32"
    onnx_families = ("clip",)
    label_cache_size = 64

    def label_embeddings(self, labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> Any:
        """Normalised text embeddings (len(labels), dim) for ``template.format(label)``, cached."""
        import torch

        cache = self.loaded.cache("label_embeddings", self.label_cache_size)
        key = (tuple(labels), template, self.backend)  # the loaded model may serve both back-ends
        cached = cache.get(key)
        if cached is not None:
            return cached
        tokenizer = self.processor.tokenizer
        texts = [template.format(label) for label in labels]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.inference_mode():
            embeddings = self._text_features(inputs)
            embeddings = embeddings / embeddings.norm(p=2, dim=-1, keepdim=True)
        cache.put(key, embeddings)
        return embeddings

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        labels: str | Sequence[str],
        *,
        template: str = DEFAULT_TEMPLATE,
        top_k: int | None = None,
    ) -> Classification | list[Classification]:
        import torch

        labels = check_labels(labels)
        template = check_template(template)
        top_k = check_positive_int(top_k, "top_k", allow_none=True)
        images = load_images(image)
        text_embeddings = self.label_embeddings(labels, template)
        logit_scale = self.model.logit_scale.exp()
        results = []
        for batch in self._batches(images):
            with torch.inference_mode():
                image_embeddings = self._image_features(self._pixel_values(batch))
                image_embeddings = image_embeddings / image_embeddings.norm(p=2, dim=-1, keepdim=True)
                # the same product, in the same order, as CLIPModel.forward
                logits = (torch.matmul(text_embeddings, image_embeddings.t()) * logit_scale).t()
                probabilities = logits.float().softmax(dim=-1).cpu().numpy()
            results.extend(_ranked(labels, row.tolist(), top_k) for row in probabilities)
        return unbatch(results, is_batch(image))


class ImageClassification(Task):
    """Top-k classes from a model with a classification head (ViT, ResNet, DINOv2 + head, any
    ``AutoModelForImageClassification``).

    >>> classify = ImageClassification("vit-b16", weights="tiny")
    >>> len(classify("examples/images/cat.png", top_k=3).predictions)
    3
    """

    task = "image-classification"
    default_model = "vit-b16"
    onnx_families = ("vit", "resnet", "dinov2")

    def _logits(self, pixel_values: Any) -> Any:
        if self.graphs is not None:
            return self._graph_output("model", "logits", pixel_values=pixel_values)
        return self.model(pixel_values=pixel_values).logits

    def __call__(
        self, image: ImageInput | Sequence[ImageInput], *, top_k: int = 5
    ) -> Classification | list[Classification]:
        import torch

        top_k = check_positive_int(top_k, "top_k")
        config = self.model.config
        id2label = config.id2label
        labels = [id2label[i] for i in range(len(id2label))]
        multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1
        images = load_images(image)
        results = []
        for batch in self._batches(images):
            with torch.inference_mode():
                logits = self._logits(self._pixel_values(batch)).float()
                scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
            results.extend(_ranked(labels, row.tolist(), min(top_k, len(labels))) for row in scores.cpu().numpy())
        return unbatch(results, is_batch(image))

    def explain(self, image: ImageInput, *, method: str = "gradcam", target: str | int | None = None) -> Any:
        """A heat map of where the model looks for ``target`` (default: its top class); see
        :func:`lmt.advanced.explain.explain`."""
        from lmt.advanced.explain import explain

        return explain(self, image, method=method, target=target)
