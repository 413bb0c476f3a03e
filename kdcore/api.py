"""The Python API (what notebooks and scripts use; the command line is built on it)."""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from kdcore.engine.events import Callback, Message
from kdcore.engine.output import finished_run
from kdcore.errors import SPELLING, DataError, KdcoreError, SpecError, python_spelling
from kdcore.interfaces import Task
from kdcore.plan import RunPlan, SpecLike, create_component
from kdcore.plugins import get_plugins, get_registry
from kdcore.registry import PLURAL, SINGULAR
from kdcore.spec import RunSpec

if TYPE_CHECKING:
    from kdcore.engine.build import BuiltRun

F = TypeVar("F", bound=Callable[..., Any])


def _python_messages(func: F) -> F:
    """Errors raised from Python name keywords (``overwrite=True``), not command-line flags."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KdcoreError as exc:
            if SPELLING.get() != "python":
                raise
            text = python_spelling(str(exc))
            if text == str(exc):
                raise
            raise type(exc)(text) from None

    return wrapper  # type: ignore[return-value]


@_python_messages
def plan(spec: SpecLike, **overrides: Any) -> RunPlan:
    """The spec resolved once into a :class:`kdcore.plan.RunPlan` (no model is built).

    ``overrides`` use the ``--set`` spelling with ``__`` for dots: ``train__steps=10``.
    """
    return RunPlan.from_spec(spec, overrides)


@_python_messages
def check(spec: SpecLike, **overrides: Any) -> tuple[RunPlan, BuiltRun]:
    """Everything ``validate`` checks; returns the plan and its modules, built on the CPU."""
    from kdcore.engine.build import build_run
    from kdcore.engine.trainer import pick_device, preflight
    from kdcore.experiments import check_baselines

    run_plan = RunPlan.from_spec(spec, overrides)
    check_baselines(run_plan)
    pick_device(run_plan.train.device)
    built = build_run(run_plan, torch.device("cpu"), for_run=False)
    try:  # what run refuses before training, in the order run checks it
        preflight(run_plan)
    except DataError as exc:  # validate raises SpecError; the message is the one run gives
        raise SpecError(str(exc)) from None
    return run_plan, built


@_python_messages
def validate(spec: SpecLike, **overrides: Any) -> RunSpec:
    """Everything that can be checked without training, including a tiny forward pass that checks
    feature-layer paths and builds the adapters. Raises :class:`kdcore.SpecError`."""
    return check(spec, **overrides)[0].spec


@_python_messages
def run(
    spec: SpecLike | RunPlan,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callback | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    seeds: list[int] | tuple[int, ...] | None = None,
    reuse: bool = False,
    **overrides: Any,
) -> dict:
    """Trains as the spec says (``kdcore run``) and returns the content of summary.json.

    ``overrides`` use the ``--set`` spelling with ``__`` for dots: ``train__steps=10``.
    ``callback`` / ``callbacks`` receive the typed events of :mod:`kdcore.engine.events`.
    With ``seeds``, one complete run per seed in ``OUTPUT/seed-N/`` and the aggregate summary.
    With ``reuse``, a finished run of the same spec in the output folder is not trained again: its
    summary is returned.
    """
    from kdcore.experiments import run_seeds, run_with_baselines

    every = [*([callback] if callback is not None else []), *callbacks]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if seeds is not None:
            summary = run_seeds(
                spec, list(seeds), callbacks=every, resume=resume, overwrite=overwrite, **overrides
            )
        else:
            if isinstance(spec, RunPlan):
                run_plan = spec.with_overrides(**overrides) if overrides else spec
            else:
                run_plan = RunPlan.from_spec(spec, overrides)
            finished = finished_run(run_plan) if reuse and not resume else None
            if finished is not None:
                for fn in every:
                    fn(
                        Message(
                            f"{run_plan.output} holds a finished run of this spec: reused, not trained again"
                        )
                    )
                return finished
            summary = run_with_baselines(run_plan, callbacks=every, resume=resume, overwrite=overwrite)
    import kdcore.report

    for folder in summary.get("runs", [summary["output"]]):
        kdcore.report.report_after_run(folder)  # RUN/report.html; a failure only warns
    return summary


def create(kind: str, name: str, params: dict | None = None, task: Task | None = None, **kwargs: Any):
    """Builds a registered component by name: ``kind`` is student, teacher, loss or adapter.

    Adapters also need ``in_channels`` and ``out_channels``.
    """
    return create_component(kind, name, params, task, **kwargs)


def load(run_dir: str | os.PathLike) -> torch.nn.Module:
    """The trained student of a run folder, in eval mode, with its weights loaded."""
    return _trained_student(RunPlan.from_run(run_dir), run_dir)


def _trained_student(run_plan: RunPlan, run_dir: str | os.PathLike) -> torch.nn.Module:
    from kdcore.engine.checkpoints import WEIGHTS, load_weights

    model = run_plan.student.build(run_plan.task)
    load_weights(model, os.path.join(run_dir, WEIGHTS), where=str(run_dir))
    return model.eval()


@_python_messages
def export(
    run_dir: str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    format: str = "onnx",
    dtype: str = "fp32",
    quantize: str | None = None,
    max_drop: float | None = None,
    opset: int | None = None,
    tolerance: float | None = None,
    sizes: Sequence[tuple[int, int, int]] | None = None,
    exporter: str = "torchscript",
    int8: bool = False,
) -> dict[str, Any]:
    """Exports the trained student of a run folder (``kdcore export``); returns export.json's content.

    ``path`` defaults to ``RUN_DIR/model.onnx`` (``model.fp16.onnx``, ``model.int8.onnx`` for
    lower precision). The fp32 graph is verified against PyTorch on two input sizes (``tolerance``,
    default 1e-4, at each of ``sizes``). ``dtype="fp16"`` writes it in fp16; ``quantize="int8"``
    quantises it (onnxruntime static int8, calibrated on patches of the run's training images);
    either is measured on the run's validation images and refused when its PSNR drops by more
    than ``max_drop`` dB (default 0.1) against the fp32 PyTorch student. ``int8=True`` is the
    deprecated spelling of ``quantize="int8"``. Writes ``RUN_DIR/export.json`` (the report, with
    the file's size, its onnxruntime latency on the first validation image and, for fp16 and
    int8, ``psnr_drop_db``) only when the export is verified; otherwise nothing is written.
    """
    from kdcore import onnx
    from kdcore.files import atomic_write
    from kdcore.onnx.export import check_options

    if format != "onnx":
        raise SpecError(f"--format: {format!r} is not supported; the one format is onnx")
    if int8:
        warnings.warn(
            "int8=True is deprecated: it means quantize='int8' (static int8, verified by its PSNR drop)",
            DeprecationWarning,
            stacklevel=3,
        )
        if quantize not in (None, "int8"):
            raise SpecError(f"--int8 and --quantize {quantize}: give one of them")
        quantize = "int8"
    options: dict[str, Any] = {
        "opset": onnx.DEFAULT_OPSET if opset is None else opset,
        "tolerance": onnx.DEFAULT_TOLERANCE if tolerance is None else tolerance,
        "sizes": onnx.VERIFY_SIZES if sizes is None else sizes,
        "exporter": exporter,
        "dtype": dtype,
        "quantize": quantize,
        "max_drop": onnx.DEFAULT_MAX_DROP if max_drop is None else max_drop,
    }
    check_options(**options)  # before anything is loaded
    folder = Path(run_dir)
    run_plan = RunPlan.from_run(folder)
    student = _trained_student(run_plan, folder)
    task = run_plan.task
    val = run_plan.val_data.load(task)
    lower = dtype != "fp32" or quantize is not None
    reference = None
    if lower and any(p.target is None for p in val):
        if not run_plan.teachers:
            raise SpecError(
                f"{folder}: the validation images have no targets and the run has no teacher: "
                "the PSNR drop of a lower-precision export cannot be measured"
            )
        from kdcore.engine.build import build_run

        teacher_forward = build_run(run_plan, torch.device("cpu"), for_run=True).teacher_forward

        def reference(x: torch.Tensor) -> torch.Tensor:
            return teacher_forward(x).image

    calibration = onnx.calibration_patches(run_plan.train_data.load(task)) if quantize else []
    target = Path(path) if path is not None else folder / onnx.default_file(dtype, quantize)
    report = onnx.export_student(
        student,
        task,
        target,
        name=run_plan.student.name,
        params=run_plan.student.params.model_dump(mode="json"),
        plugins=run_plan.resolved()["plugins"],
        images=val,
        calibration=calibration,
        reference=reference,
        latency_input=val[0].input.unsqueeze(0) if val else None,
        **options,
    )
    report["run_dir"] = str(folder)
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(folder / onnx.REPORT_FILE, lambda tmp: Path(tmp).write_text(text))
    return report


def list_components(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of one kind (students, teachers, losses, adapters), with timm-style wildcards."""
    kind = SINGULAR.get(kind, kind)
    if kind not in PLURAL:
        raise SpecError(f"kind must be one of {', '.join(PLURAL)}, not {kind!r}")
    return sorted({r.name for r in get_registry().list(kind, pattern)})


def plugins_report() -> list[dict]:
    return [r.as_dict() for r in get_plugins().records]
