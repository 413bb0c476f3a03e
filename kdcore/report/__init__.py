"""The run report: one self-contained HTML page per run (or several runs side by side).

``kdcore.report(run_dirs, path=None)`` writes it; ``kdcore report RUN_DIR… [-o FILE]`` is the
command. The page embeds everything (images as data URIs, inline styles, script and SVG plots)
and opens from disk with no network.

This package is also the function ``kdcore.report``: calling the module calls :func:`report`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from kdcore.report.data import RunData, curves, headline_rows, load_run
from kdcore.report.page import REPORT_FILE, render, report, report_after_run
from kdcore.report.panels import strip_layout, write_strip_index

__all__ = [
    "REPORT_FILE",
    "RunData",
    "curves",
    "headline_rows",
    "load_run",
    "render",
    "report",
    "report_after_run",
    "strip_layout",
    "write_strip_index",
]


class _CallableModule(types.ModuleType):
    # ``kdcore.report`` names both this package and the API function: importing the package makes
    # it the attribute of ``kdcore``, so the package itself must be callable as the function.
    def __call__(self, *args: Any, **kwargs: Any):
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
