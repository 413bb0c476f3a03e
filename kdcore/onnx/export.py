"""ONNX export of a built student, verified in onnxruntime against PyTorch; fp16 and int8 files.

What gets exported is the student alone (never a teacher or an adapter), as a graph with dynamic
batch, height and width: input ``input`` B×3×H×W (float32, RGB in [0, 1]), output ``output``
B×3×(H·scale)×(W·scale). The file's metadata says what it is (task kind, scale, student name and
params, parameter count, precision, kdcore and plugin versions), so it can be used without the
run folder.

Exporter: PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``) by default.
The dynamo exporter (``torch.export``) treats every value computed from the weights as
data-dependent, and the bundled students compute sizes from their weights (HDRNet's curve table
spans the range its colour matrix can reach), which ``torch.export`` refuses; tracing runs the
model on real weights, so those values become constants of the graph, which is what they are for a
frozen student. Tracing instead freezes Python-level branches on input sizes, which is why the
export is always verified on sizes other than the traced one (one of them odd and non-square),
and why students whose forward decides on sizes in Python (padding to a window, say) check
``torch.jit.is_tracing()`` and write that decision as graph operations. ``exporter="dynamo"`` is
available for students that ``torch.export`` accepts.

Models that take a different path at inference (HDRNet's streamed rows) check
``torch.onnx.is_in_onnx_export()`` and export a graph of their own (HDRNet: the tiled slice of
``kdcore_hdrnet.tiled``, a loop over row blocks); the verification compares
the ONNX output with what the PyTorch student computes in ``torch.inference_mode()``, i.e. with
what ``kdcore enhance --backend torch`` writes.

Lower precision (``dtype="fp16"``, ``quantize="int8"``): the fp32 graph is written and verified
first, then converted; the converted file is measured on real images (its PSNR drop against the
fp32 PyTorch student) and refused beyond ``max_drop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from kdcore._version import __version__
from kdcore.data import ImagePair
from kdcore.errors import SpecError
from kdcore.files import atomic_write
from kdcore.interfaces import Task, plain_export_graph
from kdcore.onnx import precision
from kdcore.onnx._graph import (
    DEFAULT_OPSET,
    EXPORTERS,
    INPUT_NAME,
    OUTPUT_NAME,
    TRACE_SIZE,
    ExportError,
    quiet_output,
    require_onnx,
    short_reason,
    torchscript_max_opset,
    write_graph,
)
from kdcore.onnx.runtime import OnnxStudent, onnx_latency_ms
from kdcore.onnx.verify import VERIFY_SIZES, compare, failures, precision_cost

#: file written next to the run's weights unless ``-o`` says otherwise (fp32)
DEFAULT_FILE = "model.onnx"
#: the verification report in the run folder
REPORT_FILE = "export.json"
DEFAULT_TOLERANCE = 1e-4
#: largest PSNR drop (dB) of an fp16 or int8 file accepted by default
DEFAULT_MAX_DROP = 0.1


def default_file(dtype: str = "fp32", quantize: str | None = None) -> str:
    """``model.onnx``, ``model.fp16.onnx`` or ``model.int8.onnx``: lower-precision files never
    replace the fp32 one that ``--backend onnxruntime`` runs."""
    if quantize is not None:
        return f"model.{quantize}.onnx"
    return DEFAULT_FILE if dtype == "fp32" else f"model.{dtype}.onnx"


def check_options(
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES,
    tolerance: float = DEFAULT_TOLERANCE,
    dtype: str = "fp32",
    quantize: str | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
) -> None:
    """Raises :class:`kdcore.SpecError` (exit 2) for an export option out of range."""
    if exporter not in EXPORTERS:
        raise SpecError(f"--exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    if exporter == "torchscript" and not 9 <= opset <= torchscript_max_opset():
        raise SpecError(
            f"--opset: {opset} is outside what the TorchScript exporter writes "
            f"(9 to {torchscript_max_opset()}); grid_sample-based students need at least 16"
        )
    if not len(sizes) >= 1 or any(min(s) < 1 for s in sizes):
        raise SpecError("sizes: give at least one (batch, height, width) with positive entries")
    if not tolerance >= 0:
        raise SpecError(f"--tolerance: {tolerance} must be at least 0")
    if dtype not in precision.DTYPES:
        raise SpecError(f"--dtype: {dtype!r} is not one of {', '.join(precision.DTYPES)}")
    if quantize is not None and quantize not in precision.QUANTIZE:
        raise SpecError(f"--quantize: {quantize!r} is not one of {', '.join(precision.QUANTIZE)}")
    if quantize is not None and dtype != "fp32":
        raise SpecError(f"--quantize {quantize} and --dtype {dtype}: give one of them")
    if not max_drop >= 0:
        raise SpecError(f"--max-drop: {max_drop} dB must be at least 0")


# ----------------------------------------------------------------------------- narrowing a failure


def _module_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """The positional tensor inputs of every submodule's first call during ``model(x)``."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, module in model.named_modules():

        def hook(mod: torch.nn.Module, args: tuple, name: str = name) -> None:
            if name not in seen and args and all(isinstance(a, torch.Tensor) for a in args):
                seen[name] = tuple(a.detach().clone() for a in args)

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _exports(module: torch.nn.Module, args: tuple, opset: int) -> bool:
    """Whether ``module`` alone, called with ``args``, goes through the exporter."""
    module = module.eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            out = module(*args)
        except Exception:  # noqa: BLE001 - it fails eagerly on these inputs: no verdict on export
            return True
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        if not all(isinstance(o, torch.Tensor) for o in outputs):
            return True  # not a plain tensor module: the exporter cannot judge it alone
        try:
            # sizes stay dynamic, as in the whole export (a size-dependent op fails here too)
            names = [f"in{i}" for i in range(len(args))]
            axes = {
                n: [d for d in range(a.ndim) if d != 1 or a.ndim < 4]
                for n, a in zip(names, args, strict=True)
            }
            with quiet_output():
                torch.onnx.export(
                    module,
                    args,
                    os.path.join(tmp, "m.onnx"),
                    dynamo=False,
                    opset_version=opset,
                    input_names=names,
                    dynamic_axes=axes,
                )
        except Exception:  # noqa: BLE001 - any failure means: not exportable
            return False
    return True


def _failing_module(student: torch.nn.Module, opset: int) -> str | None:
    """The deepest submodule (``named_modules`` path) that fails to export on its own, if any."""
    b, h, w = TRACE_SIZE
    try:
        inputs = _module_inputs(student, torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0)))
    except Exception:  # noqa: BLE001 - the model does not even run: nothing to narrow down
        return None
    modules = dict(student.named_modules())
    current, found = "", None
    for _ in range(32):  # depth bound
        children = [f"{current}.{n}" if current else n for n, _ in modules[current].named_children()]
        bad = next((c for c in children if c in inputs and not _exports(modules[c], inputs[c], opset)), None)
        if bad is None:
            break
        current = found = bad
    return found


# ----------------------------------------------------------------------------- the file


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = "kdcore student: input B×3×H×W RGB in [0, 1], output B×3×(H·scale)×(W·scale)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _versions() -> dict[str, str]:
    out: dict[str, str] = {"torch": str(torch.__version__)}
    for dist in ("onnx", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _precision_label(dtype: str, quantize: str | None) -> str:
    return quantize or dtype


def export_student(
    student: torch.nn.Module,
    task: Task,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    params: dict | None = None,
    plugins: dict[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES,
    exporter: str = "torchscript",
    dtype: str = "fp32",
    quantize: str | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    images: Sequence[ImagePair] = (),
    calibration: Sequence[torch.Tensor] = (),
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
    latency_input: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Exports a built student to ``path`` and verifies it; returns the report (export.json's content).

    The fp32 graph must match PyTorch within ``tolerance`` (max abs difference) at every size of
    ``sizes``. With ``dtype="fp16"`` or ``quantize="int8"`` the verified graph is converted
    (int8: static quantisation calibrated on ``calibration``, 1×3×h×w tensors) and the file
    written is the converted one, measured on ``images`` (whole validation images; their targets,
    or ``reference(input)`` where they have none): the report's ``psnr_drop_db`` is the mean
    PSNR of the fp32 PyTorch student minus that of the file, refused beyond ``max_drop`` dB.
    ``latency_input``: also time the written file in onnxruntime on it.

    Raises :class:`ExportError` (nothing is written) when the exporter fails — naming the deepest
    submodule that cannot be exported — when the ONNX output differs from PyTorch's beyond the
    tolerance, or when the PSNR drop is beyond ``max_drop``; :class:`kdcore.SpecError` for
    options out of range.
    """
    require_onnx()
    check_options(
        opset=opset,
        exporter=exporter,
        sizes=sizes,
        tolerance=tolerance,
        dtype=dtype,
        quantize=quantize,
        max_drop=max_drop,
    )
    label_precision = _precision_label(dtype, quantize)
    lower = label_precision != "fp32"
    if lower and not images:
        raise SpecError(
            f"{label_precision}: give images= (validation pairs) to measure the PSNR drop against fp32"
        )
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a folder; give a file name such as {path / DEFAULT_FILE}")
    student = student.eval()
    label = name or type(student).__name__
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdcore-export-") as work:
        fp32 = Path(work) / "fp32.onnx"
        try:
            token = plain_export_graph.set(bool(lower))
            try:
                notes = write_graph(student, fp32, opset, exporter)
            finally:
                plain_export_graph.reset(token)
        except Exception as exc:  # noqa: BLE001 - turned into one line naming the module
            where = _failing_module(student, opset)
            at = (
                f"module {where!r} ({type(dict(student.named_modules())[where]).__name__})"
                if where
                else "its forward"
            )
            raise ExportError(
                f"student {label}: cannot be exported to ONNX (opset {opset}): {at}: {short_reason(exc)}"
            ) from None
        n_params = sum(p.numel() for p in student.parameters())
        metadata = {
            "task_kind": task.kind,
            "scale": str(task.scale),
            "student": label,
            "student_params": json.dumps(params or {}, sort_keys=True),
            "parameters": str(n_params),
            "precision": "fp32",
            "kdcore_version": __version__,
            "plugins": json.dumps(plugins or {}, sort_keys=True),
            "input": f"{INPUT_NAME}: B×3×H×W float32 RGB in [0, 1]",
            "output": f"{OUTPUT_NAME}: B×3×(H·{task.scale})×(W·{task.scale}) float32 RGB in [0, 1]",
        }
        _add_metadata(fp32, metadata)
        rows = compare(student, OnnxStudent(fp32), sizes)
        bad = failures(rows, tolerance)
        if bad:
            raise ExportError(
                f"student {label}: the ONNX model does not compute what PyTorch computes: "
                + "; ".join(bad)
                + " (nothing written)"
            )
        finite = [r["psnr_db"] for r in rows if r["psnr_db"] is not None]
        report: dict[str, Any] = {
            "format": "onnx",
            "file": str(path),
            "precision": label_precision,
            "bytes": fp32.stat().st_size,
            "opset": opset,
            "exporter": exporter,
            "task": {"kind": task.kind, "scale": task.scale},
            "student": {"name": label, "params": params or {}, "parameters": n_params},
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, "height", "width"]},
            "output": {
                "name": OUTPUT_NAME,
                "shape": ["batch", 3, f"height*{task.scale}", f"width*{task.scale}"],
            },
            "tolerance": tolerance,
            "passed": True,
            "max_abs_diff": max(r["max_abs_diff"] for r in rows),
            "min_psnr_db": min(finite) if finite else None,
            "verification": rows,
        }
        final = fp32
        if lower:
            final = Path(work) / f"{label_precision}.onnx"
            if quantize == "int8":
                precision.quantize_int8(fp32, final, calibration)
                report["calibration"] = {
                    "patches": len(calibration),
                    "method": "minmax, QDQ, per-channel weights",
                }
            else:
                precision.to_fp16(fp32, final)
            metadata["precision"] = label_precision
            _add_metadata(final, metadata)
            cost = precision_cost(student, OnnxStudent(final), images, task, reference=reference)
            drop = cost["psnr_drop_db"]
            if not drop <= max_drop:
                raise ExportError(
                    f"student {label}: the {label_precision} model loses {drop:.3f} dB PSNR "
                    f"({cost['psnr_fp32_db']:.2f} -> {cost['psnr_db']:.2f} dB on {cost['images']} "
                    f"validation images), more than --max-drop {max_drop:g} dB (nothing written); "
                    "keep fp32, or accept the drop with a larger --max-drop"
                )
            report.update(
                {
                    "bytes_fp32": report["bytes"],
                    "bytes": final.stat().st_size,
                    "psnr_drop_db": drop,
                    "max_drop_db": max_drop,
                    "psnr_fp32_db": cost["psnr_fp32_db"],
                    "psnr_db": cost["psnr_db"],
                    "min_psnr_vs_fp32_db": cost["min_psnr_vs_fp32_db"],
                    "measured_against": cost["measured_against"],
                    "precision_verification": cost["per_image"],
                }
            )
        if latency_input is not None:
            threads = torch.get_num_threads()
            report["latency_ms"] = onnx_latency_ms(final, latency_input, threads=threads, runs=3)
            report["latency_input"] = list(latency_input.shape)
            report["latency_threads"] = threads
        report["metadata"] = metadata
        report["versions"] = _versions()
        report["trace_warnings"] = notes
        report["seconds"] = round(time.perf_counter() - started, 2)
        atomic_write(path, lambda tmp: shutil.copyfile(final, tmp))
    return report
