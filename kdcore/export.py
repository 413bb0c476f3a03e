"""ONNX export of a trained student, verified in onnxruntime against PyTorch; an onnxruntime backend.

What gets exported is the student alone (never a teacher or an adapter), as a graph with dynamic
batch, height and width: input ``input`` B×3×H×W (float32, RGB in [0, 1]), output ``output``
B×3×(H·scale)×(W·scale). The file's metadata says what it is (task kind, scale, student name and
params, parameter count, kdcore and plugin versions), so it can be used without the run folder.

Exporter: PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``) by default.
The dynamo exporter (``torch.export``) treats every value computed from the weights as
data-dependent, and the bundled students compute sizes from their weights (HDRNet's curve table
spans the range its colour matrix can reach), which ``torch.export`` refuses; tracing runs the
model on real weights, so those values become constants of the graph, which is what they are for a
frozen student. Tracing instead freezes Python-level branches on input sizes, which is why the
export is always verified on sizes other than the traced one (one of them odd and non-square).
``exporter="dynamo"`` is available for students that ``torch.export`` accepts.

Models that take a different path at inference (HDRNet's streamed rows) check
``torch.onnx.is_in_onnx_export()`` and export their plain operator path; the verification compares
the ONNX output with what the PyTorch student computes in ``torch.inference_mode()``, i.e. with
what ``kdcore enhance --backend torch`` writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from kdcore.errors import KdcoreError, SpecError
from kdcore.interfaces import Task, as_output

#: file written next to the run's weights unless ``-o`` says otherwise
DEFAULT_FILE = "model.onnx"
#: the verification report in the run folder
REPORT_FILE = "export.json"
DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
#: input sizes (height, width) and batch sizes the export is verified on: odd and non-square first
VERIFY_SIZES: tuple[tuple[int, int, int], ...] = ((1, 37, 53), (2, 64, 96))
#: the size traced by the exporter: on purpose none of the verified ones
TRACE_SIZE: tuple[int, int, int] = (1, 48, 40)
INPUT_NAME, OUTPUT_NAME = "input", "output"
EXPORTERS = ("torchscript", "dynamo")


class ExportError(KdcoreError):
    """The student cannot be exported, or the exported model does not compute what it computes."""

    exit_code = 1


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): pip install 'kdcore[export]'"
        ) from None


class _ImageOnly(torch.nn.Module):
    """The student with a plain tensor output (``ModelOutput.image``), as the exporter needs."""

    def __init__(self, student: torch.nn.Module):
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_output(self.student(x)).image


# ----------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
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


def _export_graph(student: torch.nn.Module, path: Path, opset: int, exporter: str) -> list[str]:
    """Writes the ONNX graph of ``student`` to ``path``; returns the exporter's tracer warnings."""
    wrapper = _ImageOnly(student).eval()
    b, h, w = TRACE_SIZE
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), _quiet_output():
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


def _module_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """The positional tensor inputs of every submodule's first call during ``model(x)``."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, module in model.named_modules():

        def hook(mod, args, name=name):
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
            with _quiet_output():
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


def _short_reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Torch IR graph", "graph(")):
            return line[:300]
    return text.splitlines()[0][:300]


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


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an ONNX file written by kdcore (``scale``, ``task_kind``, ``student``, …)."""
    _require_onnx()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


# ----------------------------------------------------------------------------- onnxruntime backend


def _session(path: str | os.PathLike, threads: int | None = None):
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
        raise ExportError(f"{path}: onnxruntime cannot load this model: {_short_reason(exc)}") from None


class OnnxStudent(torch.nn.Module):
    """An exported student run by onnxruntime (CPU), usable wherever a student module is.

    ``forward(x)`` takes B×3×H×W float tensors and returns the output tensor; ``task`` comes from
    the file's metadata. It holds no parameters: ``train()``/``eval()`` change nothing.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        _require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise SpecError(f"{self.path}: no such ONNX file (kdcore export RUN_DIR writes one)")
        self.session = _session(self.path, threads)
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
        return torch.from_numpy(y).to(x.device)


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxStudent:
    """An exported student (``kdcore export``'s file) as an onnxruntime-backed module.

    Warns when the file sits in a run folder whose weights are newer (an export of an earlier run).
    """
    path = Path(path)
    weights = path.parent / "model.safetensors"
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
    _require_onnx()
    with contextlib.ExitStack() as stack:
        if isinstance(model, OnnxStudent):
            session = _session(model.path, threads)
        elif isinstance(model, torch.nn.Module):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            try:
                _export_graph(model.eval(), tmp / "m.onnx", DEFAULT_OPSET, "torchscript")
            except Exception as exc:  # noqa: BLE001 - one line; callers may record "no ONNX latency"
                raise ExportError(
                    f"{type(model).__name__}: cannot be exported to ONNX: {_short_reason(exc)}"
                ) from None
            session = _session(tmp / "m.onnx", threads)
        else:
            session = _session(model, threads)
        feed = {session.get_inputs()[0].name: probe.detach().to("cpu", torch.float32).contiguous().numpy()}
        session.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return (
        times[len(times) // 2]
        if len(times) % 2
        else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
    )


# ----------------------------------------------------------------------------- verification


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """PSNR in dB (peak 1) between two outputs; None where they are identical."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return None if mse == 0 else 10 * math.log10(1.0 / mse)


def compare(
    student: torch.nn.Module,
    onnx_model: torch.nn.Module,
    sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Max abs difference and PSNR between the PyTorch student and an ONNX model, per input size.

    The PyTorch side runs in eval mode under ``torch.inference_mode()`` (what ``kdcore enhance``
    runs); inputs are seeded uniform noise in [0, 1], ``sizes`` as (batch, height, width).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    student.eval()
    for b, h, w in sizes:
        x = torch.rand(b, 3, h, w, generator=gen)
        with torch.inference_mode():
            ref = as_output(student(x)).image.float()
        try:
            got = onnx_model(x)
        except Exception as exc:  # noqa: BLE001 - a graph that only runs at the traced size, typically
            rows.append(
                {
                    "batch": b,
                    "size": [h, w],
                    "max_abs_diff": None,
                    "psnr_db": None,
                    "error": _short_reason(exc),
                }
            )
            continue
        if tuple(got.shape) != tuple(ref.shape):
            rows.append(
                {
                    "batch": b,
                    "size": [h, w],
                    "max_abs_diff": None,
                    "psnr_db": None,
                    "shape": list(got.shape),
                    "expected_shape": list(ref.shape),
                }
            )
            continue
        rows.append(
            {
                "batch": b,
                "size": [h, w],
                "max_abs_diff": (got - ref).abs().max().item(),
                "psnr_db": _psnr(got, ref),
            }
        )
    return rows


def _failures(rows: list[dict[str, Any]], tolerance: float) -> list[str]:
    bad = []
    for r in rows:
        where = f"{r['batch']}×3×{r['size'][0]}×{r['size'][1]}"
        if "error" in r:
            bad.append(f"input {where}: onnxruntime fails: {r['error']}")
        elif r["max_abs_diff"] is None:
            bad.append(f"input {where}: output shape {r['shape']}, PyTorch gives {r['expected_shape']}")
        elif not r["max_abs_diff"] <= tolerance:
            bad.append(
                f"input {where}: max abs difference {r['max_abs_diff']:.3g} > tolerance {tolerance:g}"
                + (f" (PSNR {r['psnr_db']:.1f} dB)" if r["psnr_db"] is not None else "")
            )
    return bad


# ----------------------------------------------------------------------------- the export itself


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out: dict[str, str] = {"torch": str(torch.__version__)}
    for dist in ("onnx", "onnxruntime"):
        with contextlib.suppress(Exception):
            out[dist] = version(dist)
    return out


@contextlib.contextmanager
def _temporary_next_to(path: Path) -> Iterator[Path]:
    """A temporary ``PATH.tmp`` that is removed unless the caller renamed it."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _torchscript_max_opset() -> int:
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return int(ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except ImportError:  # older torch: the exporter itself says when it cannot
        return 99


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
    int8: bool = False,
) -> dict[str, Any]:
    """Exports a built student to ``path`` and verifies it; returns the report (export.json's content).

    Raises :class:`ExportError` (nothing is written) when the exporter fails — naming the deepest
    submodule that cannot be exported — or when the ONNX output differs from PyTorch's by more than
    ``tolerance`` at any verified size. ``int8`` also writes ``PATH`` with ``.int8.onnx`` (dynamic
    int8 quantisation by onnxruntime) and reports its PSNR against the float model.
    """
    import kdcore

    _require_onnx()
    if exporter not in EXPORTERS:
        raise SpecError(f"exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    if exporter == "torchscript" and not 9 <= opset <= _torchscript_max_opset():
        raise SpecError(
            f"--opset: {opset} is outside what the TorchScript exporter writes "
            f"(9 to {_torchscript_max_opset()}); grid_sample-based students need at least 16"
        )
    if not len(sizes) >= 1 or any(min(s) < 1 for s in sizes):
        raise SpecError("sizes: give at least one (batch, height, width) with positive entries")
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a folder; give a file name such as {path / DEFAULT_FILE}")
    path.parent.mkdir(parents=True, exist_ok=True)
    student = student.eval()
    label = name or type(student).__name__
    started = time.perf_counter()
    with _temporary_next_to(path) as tmp, _temporary_next_to(path.with_suffix(".int8.onnx")) as tmp8:
        try:
            notes = _export_graph(student, tmp, opset, exporter)
        except Exception as exc:  # noqa: BLE001 - turned into one line naming the module
            where = _failing_module(student, opset)
            at = (
                f"module {where!r} ({type(dict(student.named_modules())[where]).__name__})"
                if where
                else "its forward"
            )
            raise ExportError(
                f"student {label}: cannot be exported to ONNX (opset {opset}): {at}: {_short_reason(exc)}"
            ) from None
        n_params = sum(p.numel() for p in student.parameters())
        metadata = {
            "task_kind": task.kind,
            "scale": str(task.scale),
            "student": label,
            "student_params": json.dumps(params or {}, sort_keys=True),
            "parameters": str(n_params),
            "kdcore_version": kdcore.__version__,
            "plugins": json.dumps(plugins or {}, sort_keys=True),
            "input": f"{INPUT_NAME}: B×3×H×W float32 RGB in [0, 1]",
            "output": f"{OUTPUT_NAME}: B×3×(H·{task.scale})×(W·{task.scale}) float32 RGB in [0, 1]",
        }
        _add_metadata(tmp, metadata)
        rows = compare(student, OnnxStudent(tmp), sizes)
        bad = _failures(rows, tolerance)
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
            "bytes": tmp.stat().st_size,
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
            "metadata": metadata,
            "versions": _versions(),
            "trace_warnings": notes,
        }
        if int8:
            report["int8"] = _quantise(tmp, tmp8, path.with_suffix(".int8.onnx"), sizes)
        report["seconds"] = round(time.perf_counter() - started, 2)
        os.replace(tmp, path)
        if int8:
            os.replace(tmp8, path.with_suffix(".int8.onnx"))
    return report


def _quantise(
    float_file: Path, tmp: Path, final: Path, sizes: Sequence[tuple[int, int, int]]
) -> dict[str, Any]:
    """Dynamic int8 quantisation (weights int8, activations quantised at run time) and its PSNR drop."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice on pre-processing goes to the root logger
    try:
        quantize_dynamic(str(float_file), str(tmp), weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001 - one line
        raise ExportError(f"--int8: onnxruntime could not quantise the model: {_short_reason(exc)}") from None
    finally:
        logging.disable(logging.NOTSET)
    rows = compare(OnnxStudent(float_file), OnnxStudent(tmp), sizes)
    finite = [r["psnr_db"] for r in rows if r["psnr_db"] is not None]
    return {
        "file": str(final),
        "bytes": tmp.stat().st_size,
        "method": "onnxruntime quantize_dynamic, QInt8 weights",
        "verification_vs_float": rows,
        "max_abs_diff": max(r["max_abs_diff"] or 0.0 for r in rows),
        "min_psnr_db_vs_float": min(finite) if finite else None,
    }


def export(
    run_dir: str | os.PathLike, path: str | os.PathLike | None = None, **options: Any
) -> dict[str, Any]:
    """Exports the trained student of a run folder (``kdcore export``); returns export.json's content.

    ``path`` defaults to ``RUN_DIR/model.onnx``. ``options``: ``format`` (``"onnx"``), ``opset``,
    ``tolerance``, ``sizes``, ``exporter``, ``int8``; see :func:`export_student`. Writes
    ``RUN_DIR/export.json`` only when the export is verified.
    """
    from kdcore import api

    fmt = options.pop("format", "onnx")
    if fmt != "onnx":
        raise SpecError(f"--format: {fmt!r} is not supported; the one format is onnx")
    folder = Path(run_dir)
    student = api.load(folder)
    raw = json.loads((folder / "spec.json").read_text())
    target = Path(path) if path is not None else folder / DEFAULT_FILE
    report = export_student(
        student,
        Task.model_validate(raw["task"]),
        target,
        name=raw["student"]["name"],
        params=raw["student"].get("params", {}),
        plugins=raw.get("plugins", {}),
        **options,
    )
    report["run_dir"] = str(folder)
    out = folder / REPORT_FILE
    with _temporary_next_to(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out)
    return report


class _CallableModule(types.ModuleType):
    """Makes ``kdcore.export(run_dir, …)`` call :func:`export`: the package attribute
    ``kdcore.export`` is this module once it is imported, so the module forwards calls."""

    def __call__(
        self, run_dir: str | os.PathLike, path: str | os.PathLike | None = None, **options: Any
    ) -> dict[str, Any]:
        return export(run_dir, path, **options)


sys.modules[__name__].__class__ = _CallableModule
