"""The onnxruntime backend: an exported student as a module, and its latency.

``kdcore enhance --backend onnxruntime``, ``kdcore eval --backend onnxruntime`` and the
``train.onnx_latency`` summary figure run exported students through this module.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from kdcore.errors import SpecError
from kdcore.interfaces import Task
from kdcore.onnx._graph import DEFAULT_OPSET, ExportError, require_onnx, short_reason, write_graph

#: the weights file of a run folder (an ONNX file older than it is from an earlier run)
_RUN_WEIGHTS = "model.safetensors"


def session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on ``path`` (``threads`` intra-op threads; no busy-waiting)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures are reported by kdcore, in one line
    # no busy-waiting threads between calls: they would take the cores from whatever runs next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - a broken or foreign file: one line naming it
        raise ExportError(f"{path}: onnxruntime cannot load this model: {short_reason(exc)}") from None


class OnnxStudent(torch.nn.Module):
    """An exported student run by onnxruntime (CPU), usable wherever a student module is.

    ``forward(x)`` takes B×3×H×W float tensors and returns the output tensor; ``task`` comes from
    the file's metadata. It holds no parameters: ``train()``/``eval()`` change nothing.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise SpecError(f"{self.path}: no such ONNX file (kdcore export RUN_DIR writes one)")
        self.session = session(self.path, threads)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "scale" not in self.metadata or "task_kind" not in self.metadata:
            raise SpecError(
                f"{self.path}: no kdcore metadata (task_kind, scale); export it with kdcore export"
            )
        self.task = Task(kind=self.metadata["task_kind"], scale=int(self.metadata["scale"]))
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        y = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(y).to(x.device, torch.float32)


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxStudent:
    """An exported student (``kdcore export``'s file) as an onnxruntime-backed module.

    Warns when the file sits in a run folder whose weights are newer (an export of an earlier run).
    """
    path = Path(path)
    weights = path.parent / _RUN_WEIGHTS
    if path.is_file() and weights.is_file() and weights.stat().st_mtime > path.stat().st_mtime:
        warnings.warn(
            f"{path} is older than {weights}: it may hold an earlier run's student; "
            f"run `kdcore export {path.parent}` again",
            stacklevel=2,
        )
    return OnnxStudent(path, threads)


def onnx_latency_ms(
    model: str | os.PathLike | torch.nn.Module, probe: torch.Tensor, threads: int = 2, runs: int = 5
) -> float:
    """Median wall time, in milliseconds, of onnxruntime (CPU, ``threads`` threads) on ``probe``.

    ``model``: an ONNX file, an :class:`OnnxStudent`, or a PyTorch student (exported to a
    temporary file first, without verification; :class:`ExportError` if it cannot be). One warm-up
    run; the median of ``runs``.
    """
    require_onnx()
    with contextlib.ExitStack() as stack:
        if isinstance(model, OnnxStudent):
            sess = session(model.path, threads)
        elif isinstance(model, torch.nn.Module):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            try:
                write_graph(model.eval(), tmp / "m.onnx", DEFAULT_OPSET, "torchscript")
            except Exception as exc:  # noqa: BLE001 - one line; callers may record "no ONNX latency"
                raise ExportError(
                    f"{type(model).__name__}: cannot be exported to ONNX: {short_reason(exc)}"
                ) from None
            sess = session(tmp / "m.onnx", threads)
        else:
            sess = session(model, threads)
        feed = {sess.get_inputs()[0].name: probe.detach().to("cpu", torch.float32).contiguous().numpy()}
        sess.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
