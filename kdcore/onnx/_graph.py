"""Writing a student's ONNX graph (no verification): what export, latency and the checks share."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from kdcore.errors import KdcoreError
from kdcore.interfaces import as_output

DEFAULT_OPSET = 17
#: the size traced by the exporter: on purpose none of the verified ones
TRACE_SIZE: tuple[int, int, int] = (1, 48, 40)
INPUT_NAME, OUTPUT_NAME = "input", "output"
EXPORTERS = ("torchscript", "dynamo")


class ExportError(KdcoreError):
    """The student cannot be exported, or the exported model does not compute what it computes."""

    exit_code = 1


def require_onnx() -> None:
    """Raises :class:`ExportError` naming the extra to install when onnx or onnxruntime is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): pip install 'kdcore[export]'"
        ) from None


def short_reason(exc: BaseException) -> str:
    """The first informative line of an exporter's or onnxruntime's error (they print whole graphs)."""
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Torch IR graph", "graph(")):
            return line[:300]
    return text.splitlines()[0][:300]


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Silences file descriptors 1 and 2: the TorchScript exporter always turns its C++ log on
    and prints the whole graph there when it fails; kdcore reports the failure in one line."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


class _ImageOnly(torch.nn.Module):
    """The student with a plain tensor output (``ModelOutput.image``), as the exporter needs."""

    def __init__(self, student: torch.nn.Module):
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_output(self.student(x)).image


def write_graph(student: torch.nn.Module, path: Path, opset: int, exporter: str) -> list[str]:
    """Writes the ONNX graph of ``student`` (dynamic batch, height and width) to ``path``; returns
    the exporter's tracer warnings (``file:line: message``). Exporter errors propagate as they are."""
    wrapper = _ImageOnly(student).eval()
    b, h, w = TRACE_SIZE
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), quiet_output():
        warnings.simplefilter("always")
        if exporter == "dynamo":
            dim = torch.export.Dim.DYNAMIC
            torch.onnx.export(
                wrapper,
                (x,),
                str(path),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: dim, 2: dim, 3: dim}},
                verbose=False,
            )
        else:
            torch.onnx.export(
                wrapper,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
                },
            )
    notes = []
    for item in caught:
        if issubclass(item.category, torch.jit.TracerWarning):
            note = f"{Path(item.filename).name}:{item.lineno}: {str(item.message).split('.')[0]}"
            if note not in notes:
                notes.append(note)
    return notes


def torchscript_max_opset() -> int:
    """The highest opset the TorchScript exporter of this torch writes."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return int(ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except ImportError:  # older torch: the exporter itself says when it cannot
        return 99
