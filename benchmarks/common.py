"""Shared helpers of the benchmarks: machine description, timing, JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: image sizes of the latency table, (height, width)
SIZES: dict[str, tuple[int, int]] = {"512x512": (512, 512), "1080p": (1080, 1920), "4K": (2160, 3840)}
#: tiny sizes used by ``--smoke``
SMOKE_SIZES: dict[str, tuple[int, int]] = {"64x64": (64, 64)}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import kdcore

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "kdcore": kdcore.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def log(text: str) -> None:
    """A progress line with the time of day, flushed at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def stats_ms(seconds: list[float]) -> dict[str, float]:
    """min / median / runs of a list of durations in seconds, as milliseconds."""
    return {
        "min_ms": min(seconds) * 1e3,
        "median_ms": statistics.median(seconds) * 1e3,
        "runs": len(seconds),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    calls: dict[str, Callable[[], object]],
    repeats: int,
    *,
    device: torch.device = torch.device("cpu"),
    warmup: int = 1,
) -> dict[str, dict[str, float]]:
    """Times every call ``repeats`` times, interleaved (a, b, c, a, b, c, …) after ``warmup`` calls each.

    Interleaving keeps ratios between the calls meaningful when the machine's load drifts.
    Returns per name: wall-clock min/median ms and the process CPU time (all threads) min/median ms.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
            _sync(device)
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            _sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            _sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out = {}
    for name in calls:
        s = stats_ms(wall[name])
        c = stats_ms(cpu[name])
        out[name] = {**s, "cpu_min_ms": c["min_ms"], "cpu_median_ms": c["median_ms"]}
    return out


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` as indented JSON (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def replace_marked(text: str, section: str, start: str, end: str) -> str:
    """``text`` with the part between the markers ``start`` and ``end`` replaced by ``section``.

    ``section`` carries the markers itself; it is appended when ``text`` has none.
    """
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + section.rstrip("\n") + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + section
