"""Errors a user can cause. Each carries the exit status the command line uses."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar

#: how messages spell options: "python" (``overwrite=True``) or "cli" (``--overwrite``); the
#: command line sets "cli"
SPELLING: ContextVar[str] = ContextVar("kdcore_spelling", default="python")

#: after an option: ": " or " " before its value (a number, a quoted or a known value), dropped
_VALUE = r"(?::? (?=[\d'\"-]|fp|int|torch|dynamo|onnx)|:)?"

_CLI_TO_PYTHON: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"`?kdcore run SPEC --resume`?"), "kdcore.run(spec, resume=True)"),
    (re.compile(r"--overwrite\b"), "overwrite=True"),
    (re.compile(r"--resume\b"), "resume=True"),
    (re.compile(r"--seeds\b"), "seeds="),
    (re.compile(r"--set ([\w.]+)"), lambda m: m.group(1).replace(".", "__") + "="),
    # kdcore export's options (kdcore.export keywords)
    (re.compile(rf"--(dtype|quantize|opset|tolerance|exporter|format)\b{_VALUE}"), r"\1="),
    (re.compile(rf"--max-drop\b{_VALUE}"), "max_drop="),
    (re.compile(r"--int8\b"), "int8=True"),
]


def python_spelling(message: str) -> str:
    """A message written for the command line, with the Python API's keywords instead of flags."""
    for pattern, repl in _CLI_TO_PYTHON:
        message = pattern.sub(repl, message)
    return message


class KdcoreError(Exception):
    """Base of every error a user can cause (bad spec, bad file, broken plugin, ...)."""

    exit_code: int = 1


class SpecError(KdcoreError):
    """The spec or the command line is wrong. Nothing has been written."""

    exit_code = 2


class ComponentError(SpecError):
    """A component name is unknown or ambiguous, or its params are rejected."""


class DataError(KdcoreError):
    """An image or image folder cannot be used (names the file)."""

    exit_code = 2


class PluginError(KdcoreError):
    """A plugin failed to load or registered something invalid."""

    exit_code = 1


class CheckpointError(KdcoreError):
    """A checkpoint is missing, truncated or does not fit the architecture."""

    exit_code = 2


class TrainingError(KdcoreError):
    """Training cannot go on (e.g. a loss became NaN)."""

    exit_code = 1


class Interrupted(KdcoreError):
    """SIGINT or SIGTERM stopped a run after writing a checkpoint; ``--resume`` continues it."""

    exit_code = 130
