"""Small tensor operations in plain torch (torchvision does not work beside our torch build)."""

from __future__ import annotations

from typing import Any


def box_iou(boxes_a: Any, boxes_b: Any) -> Any:
    """Pairwise IoU of (N, 4) and (M, 4) boxes in (x0, y0, x1, y1) -> (N, M)."""
    import torch

    area_a = (boxes_a[:, 2] - boxes_a[:, 0]).clamp(min=0) * (boxes_a[:, 3] - boxes_a[:, 1]).clamp(min=0)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]).clamp(min=0) * (boxes_b[:, 3] - boxes_b[:, 1]).clamp(min=0)
    top_left = torch.max(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.min(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return torch.where(union > 0, intersection / union, torch.zeros_like(union))


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first (as torchvision.ops.nms)."""
    import torch

    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order].float(), boxes[order].float())
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: Any, scores: Any, groups: Any, iou_threshold: float) -> Any:
    """NMS within each group (as torchvision.ops.batched_nms): boxes of different groups never suppress each other."""
    if boxes.numel() == 0:
        return nms(boxes, scores, iou_threshold)
    offsets = groups.to(boxes.dtype) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
