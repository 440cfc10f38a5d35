"""Deployment: ONNX export with parity checks and quantisation (``lmt.deploy.export``); compression
(``lmt.deploy.compress``: static INT8, torch dynamic INT8, pruning, distillation)."""

from lmt.deploy.compress import (
    DistillResult,
    LayerSparsity,
    SparsityReport,
    distill,
    kd_loss,
    prune_magnitude,
    prune_structured,
    quantize_onnx_static,
    quantize_torch_dynamic,
    sparsity_report,
)
from lmt.deploy.export import (
    EXPORTABLE_FAMILIES,
    QUANTIZE_CHOICES,
    ExportedGraph,
    ExportResult,
    TensorSpec,
    export_onnx,
    run_onnx,
    sample_pixel_values,
)

__all__ = [
    "EXPORTABLE_FAMILIES", "QUANTIZE_CHOICES", "ExportResult", "ExportedGraph", "TensorSpec", "export_onnx",
    "run_onnx", "sample_pixel_values",
    "DistillResult", "LayerSparsity", "SparsityReport", "distill", "kd_loss", "prune_magnitude", "prune_structured",
    "quantize_onnx_static", "quantize_torch_dynamic", "sparsity_report",
]
