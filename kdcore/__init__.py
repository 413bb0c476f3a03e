"""kdcore: knowledge distillation for image super-resolution and enhancement.

The public surface is the names in ``__all__`` and these documented submodules:
``kdcore.interfaces`` (base classes), ``kdcore.errors``, ``kdcore.data`` (image I/O, SR
resampling, data sources), ``kdcore.metrics`` (PSNR/SSIM with the SR conventions),
``kdcore.plan`` (RunPlan), ``kdcore.engine.events`` (what training callbacks receive),
``kdcore.engine.evaluate`` (whole-image evaluation), ``kdcore.onnx`` (ONNX export of a built
student, fp16/int8, the onnxruntime backend) and ``kdcore.testing`` (pytest helpers for plugin
authors). Every other module, and every name with a leading underscore, is internal.
"""

from __future__ import annotations

from kdcore._version import __version__
from kdcore.errors import KdcoreError, SpecError
from kdcore.hookspecs import hookimpl
from kdcore.interfaces import (
    KIND_TABLE,
    Adapter,
    AdapterFactory,
    Loss,
    ModelOutput,
    Params,
    Student,
    Task,
    Teacher,
    as_output,
)

__all__ = [
    "KIND_TABLE",
    "Adapter",
    "AdapterFactory",
    "KdcoreError",
    "Loss",
    "ModelOutput",
    "Params",
    "RunPlan",
    "SpecError",
    "Student",
    "Task",
    "Teacher",
    "__version__",
    "as_output",
    "create",
    "export",
    "hookimpl",
    "list_components",
    "load",
    "report",
    "run",
    "validate",
]

_API = {"run", "validate", "create", "load", "list_components", "export"}


def __getattr__(name: str):
    # The API pulls in the engine (torch, timm, ...); import it on first use only.
    if name in _API:
        from kdcore import api

        return getattr(api, name)
    if name == "RunPlan":
        from kdcore.plan import RunPlan

        return RunPlan
    if name == "report":
        # the package kdcore.report, callable as kdcore.report(run_dirs, path=None) -> Path
        import importlib

        return importlib.import_module("kdcore.report")
    raise AttributeError(f"module 'kdcore' has no attribute {name!r}")
