"""The student as an ONNX file: export and verification, fp16 and int8, the onnxruntime backend.

- :mod:`kdcore.onnx.export`: :func:`export_student` (a built student to a verified file);
- :mod:`kdcore.onnx.verify`: :func:`compare` (PyTorch against onnxruntime), :func:`precision_cost`;
- :mod:`kdcore.onnx.precision`: fp16 conversion and static int8 quantisation;
- :mod:`kdcore.onnx.runtime`: :class:`OnnxStudent`, :func:`load_onnx`, :func:`onnx_latency_ms`.

A run folder's export (``kdcore export``) is :func:`kdcore.export`. Needs ``kdcore[export]``
(onnx, onnxruntime) to run; importing this package does not.
"""

from __future__ import annotations

from kdcore.onnx._graph import DEFAULT_OPSET, ExportError
from kdcore.onnx.export import (
    DEFAULT_FILE,
    DEFAULT_MAX_DROP,
    DEFAULT_TOLERANCE,
    REPORT_FILE,
    default_file,
    export_student,
)
from kdcore.onnx.precision import calibration_patches
from kdcore.onnx.runtime import OnnxStudent, load_onnx, onnx_latency_ms
from kdcore.onnx.verify import VERIFY_SIZES, compare, precision_cost

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_MAX_DROP",
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "REPORT_FILE",
    "VERIFY_SIZES",
    "ExportError",
    "OnnxStudent",
    "calibration_patches",
    "compare",
    "default_file",
    "export_student",
    "load_onnx",
    "onnx_latency_ms",
    "precision_cost",
]
