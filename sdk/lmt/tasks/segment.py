"""Promptable segmentation with SAM: points, boxes, or automatic mask generation over a point grid.

The image embedding (SAM's expensive vision encoder) is cached per image, so re-prompting the same image runs
only the prompt encoder and the mask decoder.

``backend="onnx"`` runs the two steps as exported graphs, ``image_encoder`` and ``prompt_decoder`` (see
:mod:`lmt.deploy.export` for the decoder's prompt layout); upscaling, thresholds and NMS are shared code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmt.errors import InvalidInputError
from lmt.images import ImageInput, image_fingerprint, load_images
from lmt.ops import batched_nms
from lmt.results import Mask, Segmentation
from lmt.tasks.base import Task, is_batch, unbatch
from lmt.validate import check_boxes, check_float_range, check_points, check_positive_int, check_probability


@dataclass(frozen=True)
class _ImageEmbedding:
    embeddings: Any  # (1, C, h, w)
    original_size: tuple[int, int]  # (height, width)
    reshaped_size: tuple[int, int]  # (height, width) after the longest-edge resize


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight (x0, y0, x1, y1) box of a binary mask, x1/y1 exclusive; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


class MaskGeneration(Task):
    """Segment with SAM.

    - ``points=[(x, y, 1), (x, y, 0)]``: one object from include (1) / exclude (0) clicks, optionally with one box;
    - ``boxes=[(x0, y0, x1, y1), ...]``: one object per box;
    - neither: automatic mask generation over a ``points_per_side``² grid, filtered and de-duplicated with NMS.

    ``threshold`` is the mask logit threshold. ``multimask`` returns SAM's three candidate masks for one ambiguous
    prompt (default: only for a single point).

    >>> segment = MaskGeneration("sam-vit-base", weights="tiny")
    >>> result = segment("examples/images/cat.png", points=[(20, 20, 1)])
    >>> result.masks[0].mask.shape == (result.image_size[1], result.image_size[0])
    True
    """

    task = "mask-generation"
    default_model = "sam-vit-base"
    onnx_families = ("sam",)
    embedding_cache_size = 8

    # ---- the cached image embedding ---------------------------------------------------------------------------
    def image_embedding(self, image: Any) -> _ImageEmbedding:
        """SAM's image embedding of a (validated) PIL image, computed once per distinct image."""
        import torch

        cache = self.loaded.cache("image_embeddings", self.embedding_cache_size)
        key = (image_fingerprint(image), self.backend)  # the loaded model may serve both back-ends
        cached = cache.get(key)
        if cached is not None:
            return cached
        inputs = self.processor.image_processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.loaded.dtype)
        with torch.inference_mode():
            if self.graphs is not None:
                embeddings = self._graph_output("image_encoder", "image_embeddings", pixel_values=pixel_values)
            else:
                from lmt.models.sam_fast import encode_images

                # lmt's fast image encoder where it applies (CPU, same weights, same embedding), else transformers'
                embeddings = encode_images(self.model, pixel_values)
        embedding = _ImageEmbedding(
            embeddings,
            tuple(int(v) for v in inputs["original_sizes"][0]),
            tuple(int(v) for v in inputs["reshaped_input_sizes"][0]),
        )
        cache.put(key, embedding)
        return embedding

    def _scale(self, coords: np.ndarray, embedding: _ImageEmbedding) -> np.ndarray:
        """Pixel coordinates of the original image -> the model's resized frame (as SamProcessor does)."""
        (height, width), (new_height, new_width) = embedding.original_size, embedding.reshaped_size
        scaled = np.array(coords, dtype=np.float64).reshape(-1, 2)
        scaled[:, 0] *= new_width / width
        scaled[:, 1] *= new_height / height
        return scaled.reshape(np.shape(coords))

    def _decode(self, embedding: _ImageEmbedding, multimask: bool, **prompts: Any) -> tuple[Any, Any]:
        """Run prompt encoder + mask decoder; returns low-res mask logits and IoU scores."""
        import torch

        if self.graphs is not None:
            return self._decode_onnx(embedding, multimask, **prompts)

        # Coordinates stay float64, as SamProcessor returns them: the prompt encoder normalises them in that
        # precision and casts to the model's dtype itself.
        tensors = {
            name: torch.as_tensor(value, dtype=torch.long if name == "input_labels" else torch.float64).to(self.device)
            for name, value in prompts.items()
            if value is not None
        }
        with torch.inference_mode():
            outputs = self.model(
                image_embeddings=embedding.embeddings, multimask_output=multimask, **tensors
            )
        return outputs.pred_masks, outputs.iou_scores

    def _decode_onnx(self, embedding: _ImageEmbedding, multimask: bool, **prompts: Any) -> tuple[Any, Any]:
        """The same prompts through the ``prompt_decoder`` graph, which returns all four masks per object."""
        import torch

        from lmt.deploy.export import sam_decoder_prompts, sam_mask_candidates

        points, labels = sam_decoder_prompts(**prompts)
        outputs = self.graphs.run(
            "prompt_decoder", image_embeddings=embedding.embeddings, input_points=points, input_labels=labels
        )
        masks, scores = torch.from_numpy(outputs["pred_masks"]), torch.from_numpy(outputs["iou_scores"])
        return sam_mask_candidates(masks, scores, multimask)

    def _upscale(self, low_res_masks: Any, embedding: _ImageEmbedding, threshold: float, binarize: bool) -> Any:
        return self.processor.image_processor.post_process_masks(
            low_res_masks.float().cpu(),
            [list(embedding.original_size)],
            [list(embedding.reshaped_size)],
            mask_threshold=threshold,
            binarize=binarize,
        )[0]

    # ---- prompted segmentation ----------------------------------------------------------------------------------
    def _segment_prompted(
        self, image: Any, points: Any, boxes: Any, threshold: float, multimask: bool | None
    ) -> Segmentation:
        size = (image.width, image.height)
        checked_points = check_points(points, size) if points is not None else None
        checked_boxes = check_boxes(boxes, size) if boxes is not None else None
        if checked_points and checked_boxes and len(checked_boxes) > 1:
            raise InvalidInputError(
                "Points describe one object, so they combine with at most one box. Segment several boxes in a call "
                "without points, or one box with its points.",
                "点提示描述的是同一个物体，只能与最多一个框同时使用。多个框请不带点单独调用。",
            )
        embedding = self.image_embedding(image)
        if multimask is None:
            multimask = checked_boxes is None and checked_points is not None and len(checked_points) == 1
        prompts: dict[str, Any] = {}
        if checked_points:
            coords = self._scale([[x, y] for x, y, _ in checked_points], embedding)
            prompts["input_points"] = coords[None, None]  # (image, object, point, 2)
            prompts["input_labels"] = np.array([[[label for _, _, label in checked_points]]])
        if checked_boxes:
            scaled = self._scale(np.array(checked_boxes).reshape(-1, 2, 2), embedding).reshape(-1, 4)
            prompts["input_boxes"] = scaled[None]  # (image, box, 4)
        low_res, iou_scores = self._decode(embedding, multimask, **prompts)
        masks = self._upscale(low_res, embedding, threshold, binarize=True).numpy()  # (objects, candidates, H, W)
        scores = iou_scores[0].float().cpu().numpy()
        results = []
        for object_masks, object_scores in zip(masks, scores, strict=True):
            order = np.argsort(-object_scores, kind="stable") if multimask else range(len(object_scores))
            for candidate in order:
                mask = object_masks[candidate]
                results.append(Mask(mask, float(object_scores[candidate]), mask_box(mask)))
        return Segmentation(tuple(results), size)

    # ---- automatic mask generation ------------------------------------------------------------------------------
    def _segment_everything(
        self,
        image: Any,
        threshold: float,
        points_per_side: int,
        points_per_batch: int,
        pred_iou_threshold: float,
        stability_threshold: float,
        nms_threshold: float,
        crops_n_layers: int,
    ) -> Segmentation:
        import torch

        from lmt.results import rle_to_mask

        image_processor = self.processor.image_processor
        target_size = image_processor.size.get("longest_edge", image_processor.size.get("height"))
        crop_boxes, grid_points, cropped_images, input_labels = image_processor.generate_crop_boxes(
            image, target_size, crops_n_layers, 512 / 1500, points_per_side, 1
        )
        from tqdm.auto import tqdm

        all_rles, all_scores, all_boxes = [], [], []
        n_points = grid_points.shape[1]
        starts = range(0, n_points, points_per_batch)
        progress = tqdm(total=len(cropped_images) * len(starts), desc="segment everything", unit="batch",
                        disable=len(cropped_images) * len(starts) <= 2, leave=False)
        for crop_index, crop in enumerate(cropped_images):
            crop_image = crop if crops_n_layers == 0 else _to_pil(crop)
            embedding = self.image_embedding(image if crops_n_layers == 0 else crop_image)
            for start in starts:
                progress.update()
                points = grid_points[:, start : start + points_per_batch, crop_index : crop_index + 1, :]
                labels = input_labels[:, start : start + points_per_batch, crop_index : crop_index + 1]
                low_res, iou_scores = self._decode(
                    embedding, True, input_points=np.asarray(points), input_labels=np.asarray(labels)
                )
                masks = self._upscale(low_res, embedding, threshold, binarize=False)
                rles, scores, boxes = image_processor.filter_masks(
                    masks,
                    iou_scores[0].float().cpu(),
                    [image.height, image.width],
                    torch.as_tensor(crop_boxes[crop_index]),
                    pred_iou_threshold,
                    stability_threshold,
                    threshold,
                    1,
                )
                all_rles.extend(rles)
                all_scores.append(scores)
                all_boxes.append(boxes)
        progress.close()
        if not all_rles:
            return Segmentation((), (image.width, image.height))
        scores = torch.cat(all_scores)
        boxes = torch.cat(all_boxes).float()
        keep = batched_nms(boxes, scores, torch.zeros(len(scores)), nms_threshold)
        masks = tuple(
            Mask(rle_to_mask(all_rles[i]), float(scores[i]), tuple(float(v) for v in boxes[i].tolist()))
            for i in keep.tolist()
        )
        return Segmentation(masks, (image.width, image.height))

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        *,
        points: Sequence[Sequence[float]] | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        threshold: float = 0.0,
        multimask: bool | None = None,
        top_k: int | None = None,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_threshold: float = 0.88,
        stability_threshold: float = 0.95,
        nms_threshold: float = 0.7,
        crops_n_layers: int = 0,
    ) -> Segmentation | list[Segmentation]:
        threshold = check_float_range(threshold, "threshold", -20.0, 20.0)
        top_k = check_positive_int(top_k, "top_k", allow_none=True)
        automatic = points is None and boxes is None
        if automatic:
            points_per_side = check_positive_int(points_per_side, "points_per_side", maximum=64)
            points_per_batch = check_positive_int(points_per_batch, "points_per_batch", maximum=1024)
            pred_iou_threshold = check_probability(pred_iou_threshold, "pred_iou_threshold")
            stability_threshold = check_probability(stability_threshold, "stability_threshold")
            nms_threshold = check_probability(nms_threshold, "nms_threshold")
            crops_n_layers = check_positive_int(crops_n_layers + 1, "crops_n_layers + 1", maximum=3) - 1
        results = []
        for img in load_images(image):
            if automatic:
                result = self._segment_everything(
                    img, threshold, points_per_side, points_per_batch, pred_iou_threshold, stability_threshold,
                    nms_threshold, crops_n_layers,
                )
            else:
                result = self._segment_prompted(img, points, boxes, threshold, multimask)
            if top_k is not None:
                result = Segmentation(result.masks[:top_k], result.image_size)
            results.append(result)
        return unbatch(results, is_batch(image))


def _to_pil(array: Any) -> Any:
    from PIL import Image

    return Image.fromarray(np.asarray(array).astype(np.uint8))
