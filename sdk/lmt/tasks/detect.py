"""Open-vocabulary object detection (OWLv2, OWL-ViT): text queries in, boxes out.

transformers' ``zero-shot-object-detection`` pipeline runs the whole model once per query. Here the image tower
runs once per image and the text tower once per query set (cached), and the class head scores every query in
one pass. Each query's boxes and scores are the same as the pipeline's.

``backend="onnx"`` runs the same two steps as exported graphs (``text``: queries -> embeddings; ``detector``:
:func:`class_logits_and_boxes`); the post-processing (thresholds, box scaling, clipping, NMS) is shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from lmt.images import ImageInput, load_images
from lmt.ops import nms
from lmt.results import Detection, Detections
from lmt.tasks.base import Task, features_of, is_batch, unbatch
from lmt.validate import check_labels, check_positive_int, check_probability

MAX_QUERIES = 100


def class_logits_and_boxes(model: Any, pixel_values: Any, query_embeds: Any) -> tuple[Any, Any]:
    """OWL's image tower, class head and box head for one set of query embeddings ``(queries, dim)``.

    Returns logits ``(batch, patches, queries)`` and boxes ``(batch, patches, 4)`` (cx, cy, w, h, relative to the
    padded square). The ONNX back-end's ``detector`` graph is this function, exported.
    """
    import torch

    feature_map = model.image_embedder(pixel_values=pixel_values)[0]
    batch_size, height, width, dim = feature_map.shape
    image_feats = feature_map.reshape(batch_size, height * width, dim)
    batch_queries = query_embeds.unsqueeze(0).expand(batch_size, -1, -1)
    query_mask = torch.ones(batch_queries.shape[:2], dtype=torch.bool, device=batch_queries.device)
    logits = model.class_predictor(image_feats, batch_queries, query_mask)[0]
    return logits, model.box_predictor(image_feats, feature_map)


class ZeroShotObjectDetection(Task):
    """Find objects named by free-text ``queries``.

    ``threshold`` keeps boxes whose score is above it; ``nms_threshold`` (IoU) suppresses overlapping boxes of the
    same label (``None`` keeps them all, as the transformers pipeline does). OWLv2 sees images padded to a square,
    so its raw boxes can reach into the padding; ``clip_boxes`` (default) clips them to the image, as downstream
    code (SAM box prompts, drawing, counting in zones) expects.

    >>> detect = ZeroShotObjectDetection("owlv2-b16", weights="tiny")
    >>> result = detect("examples/images/street.png", queries=["car", "person"], threshold=0.0, top_k=3)
    >>> len(result) <= 3
    True
    """

    task = "zero-shot-object-detection"
    default_model = "owlv2-b16"
    onnx_families = ("owlv2", "owlvit")
    query_cache_size = 64

    def query_embeddings(self, queries: Sequence[str]) -> Any:
        """Text embeddings (len(queries), dim) for the class head, cached per query set."""
        import torch

        cache = self.loaded.cache("query_embeddings", self.query_cache_size)
        key = (tuple(queries), self.backend)  # the loaded model may serve both back-ends
        cached = cache.get(key)
        if cached is not None:
            return cached
        tokenizer = self.processor.tokenizer
        inputs = tokenizer(list(queries), return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.inference_mode():
            if self.graphs is not None:
                embeddings = self._graph_output(
                    "text", "text_embeds", input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                )
            else:
                embeddings = features_of(self.model.base_model.get_text_features(**inputs))
        cache.put(key, embeddings)
        return embeddings

    def _logits_and_boxes(self, pixel_values: Any, query_embeds: Any) -> tuple[Any, Any]:
        import torch

        if self.graphs is not None:
            outputs = self.graphs.run("detector", pixel_values=pixel_values, query_embeds=query_embeds)
            return torch.from_numpy(outputs["logits"]), torch.from_numpy(outputs["pred_boxes"])
        return class_logits_and_boxes(self.model, pixel_values, query_embeds)

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        queries: str | Sequence[str],
        *,
        threshold: float = 0.1,
        nms_threshold: float | None = 0.3,
        top_k: int | None = None,
        clip_boxes: bool = True,
    ) -> Detections | list[Detections]:
        import torch

        queries = check_labels(queries, what="query", max_count=MAX_QUERIES)
        threshold = check_probability(threshold, "threshold")
        if nms_threshold is not None:
            nms_threshold = check_probability(nms_threshold, "nms_threshold")
        top_k = check_positive_int(top_k, "top_k", allow_none=True)
        images = load_images(image)
        query_embeds = self.query_embeddings(queries)
        image_processor = self.processor.image_processor
        results = []
        for batch in self._batches(images):
            with torch.inference_mode():
                logits, boxes = self._logits_and_boxes(self._pixel_values(batch), query_embeds)
            target_sizes = [(img.height, img.width) for img in batch]
            per_query = [
                image_processor.post_process_object_detection(
                    SimpleNamespace(logits=logits[..., q : q + 1].float(), pred_boxes=boxes.float()),
                    threshold=threshold,
                    target_sizes=target_sizes,
                )
                for q in range(len(queries))
            ]
            for index, img in enumerate(batch):
                found = []
                for query, outputs in zip(queries, per_query, strict=True):
                    scores, query_boxes = outputs[index]["scores"], outputs[index]["boxes"]
                    if clip_boxes:
                        limits = torch.tensor([img.width, img.height, img.width, img.height], dtype=query_boxes.dtype)
                        query_boxes = torch.minimum(query_boxes.clamp(min=0), limits)
                    if nms_threshold is not None and len(scores) > 1:
                        keep = nms(query_boxes, scores, nms_threshold)
                        scores, query_boxes = scores[keep], query_boxes[keep]
                    found.extend(
                        Detection(query, float(score), tuple(float(v) for v in box))
                        for score, box in zip(scores.tolist(), query_boxes.tolist(), strict=True)
                    )
                found.sort(key=lambda d: -d.score)
                if top_k is not None:
                    found = found[:top_k]
                results.append(Detections(tuple(found), (img.width, img.height)))
        return unbatch(results, is_batch(image))
