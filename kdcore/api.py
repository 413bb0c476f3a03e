"""The Python API (what notebooks and scripts use; the command line is built on it)."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from kdcore.engine.events import Callback, Message
from kdcore.engine.output import finished_run
from kdcore.errors import SPELLING, DataError, KdcoreError, SpecError, python_spelling
from kdcore.interfaces import Task
from kdcore.plan import RunPlan, SpecLike, build_component
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
    kind = SINGULAR.get(kind, kind)
    if kind not in PLURAL:
        raise SpecError(f"kind must be one of {', '.join(PLURAL)}, not {kind!r}")
    if kind == "adapter" and not {"in_channels", "out_channels"} <= kwargs.keys():
        raise SpecError("create('adapter', ...) needs in_channels= and out_channels=")
    reg = get_registry().lookup(kind, name)
    task = task if task is not None else Task(kind="sr", scale=2)
    return build_component(reg, params, task, **kwargs)


def load(run_dir: str | os.PathLike) -> torch.nn.Module:
    """The trained student of a run folder, in eval mode, with its weights loaded."""
    from kdcore.engine.checkpoints import WEIGHTS, load_weights

    run_plan = RunPlan.from_run(run_dir)
    model = run_plan.student.build(run_plan.task)
    load_weights(model, os.path.join(run_dir, WEIGHTS), where=str(run_dir))
    return model.eval()


def list_components(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of one kind (students, teachers, losses, adapters), with timm-style wildcards."""
    kind = SINGULAR.get(kind, kind)
    if kind not in PLURAL:
        raise SpecError(f"kind must be one of {', '.join(PLURAL)}, not {kind!r}")
    return sorted({r.name for r in get_registry().list(kind, pattern)})


def plugins_report() -> list[dict]:
    return [r.as_dict() for r in get_plugins().records]
