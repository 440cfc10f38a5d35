"""Deployment: ONNX export with parity checks and quantisation (``lmt.deploy.export``); compression
(``lmt.deploy.compress``: static INT8, torch dynamic INT8, pruning, distillation); benchmarks of back-ends
(``lmt.deploy.bench``, ``lmt bench``) and the INT8 recipes they use (``lmt.deploy.optimize``)."""

from lmt.deploy.bench import BenchResult, bench
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
    run_onnx_outputs,
    sam_decoder_prompts,
    sam_mask_candidates,
    sample_pixel_values,
)
from lmt.deploy.optimize import int8_recipe, quantize_int8

__all__ = [
    "EXPORTABLE_FAMILIES", "QUANTIZE_CHOICES", "ExportResult", "ExportedGraph", "TensorSpec", "export_onnx",
    "run_onnx", "sample_pixel_values", "run_onnx_outputs", "sam_decoder_prompts", "sam_mask_candidates",
    "DistillResult", "LayerSparsity", "SparsityReport", "distill", "kd_loss", "prune_magnitude", "prune_structured",
    "quantize_onnx_static", "quantize_torch_dynamic", "sparsity_report",
    "BenchResult", "bench", "int8_recipe", "quantize_int8",
]
