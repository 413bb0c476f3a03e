"""The report's plots as inline SVG (matplotlib, text kept as text, no external references)."""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt

Series = list[tuple[int, float]]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
_STYLES = ("-", "--", ":", "-.")


def _svg(fig, salt: str) -> str:
    """The figure as an ``<svg>`` element: no XML prolog, DOCTYPE or metadata (their URLs would
    be the only links in the page); ``salt`` keeps element ids distinct between plots."""
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    return text.strip()


def line_plot(
    series: dict[str, Series],
    *,
    title: str,
    ylabel: str,
    salt: str,
    log: bool = False,
    references: dict[str, float] | None = None,
) -> str:
    """Lines of ``label -> [(step, value)]`` against the step, as inline SVG.

    ``references`` are horizontal lines (e.g. the baseline's and teacher's PSNR). Labels that
    share the part after " · " share a colour, runs are told apart by line style.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    terms = sorted(
        {label.split(" · ")[0] for label in series},
        key=list(dict.fromkeys(label.split(" · ")[0] for label in series)).index,
    )
    runs = list(dict.fromkeys(label.split(" · ")[1] if " · " in label else "" for label in series))
    for label, points in series.items():
        if not points:
            continue
        term, _, run = label.partition(" · ")
        steps, values = zip(*points, strict=True)
        colour = _COLOURS[terms.index(term) % len(_COLOURS)]
        style = _STYLES[runs.index(run) % len(_STYLES)]
        marker = "o" if len(points) < 30 else None
        ax.plot(steps, values, style, color=colour, marker=marker, markersize=3, linewidth=1.4, label=label)
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(
            value, color="#777777", linestyle=_STYLES[(i + 1) % len(_STYLES)], linewidth=1, label=label
        )
    if log and all(v > 0 for points in series.values() for _, v in points):
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _svg(fig, salt)
