"""Deployment: ONNX export with parity checks and quantisation (``lmt.deploy.export``)."""

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
]
