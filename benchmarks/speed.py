"""Speed: inference latency, the straightforward baseline, peak memory, a training step, compile/channels_last.

Every latency is batch 1, float32 (bf16 autocast as an extra GPU row), eval mode, under
``torch.inference_mode``; models compared in one table are timed interleaved in one process, so
their ratios stay meaningful on a loaded machine.

Run on its own: ``python benchmarks/speed.py`` (prints JSON). The memory and compile measurements run
this file again in a fresh process (``--worker memory|compile``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import kdcore
from kdcore_hdrnet import HDRNet, fused
from kdcore_hdrnet.reference import ReferenceHDRNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, time_interleaved  # noqa: E402

#: hdrnet latency targets at defaults, enhance, CPU with 2 threads (milliseconds)
HDRNET_TARGETS_MS = {"512x512": 8.0, "1080p": 30.0, "4K": 120.0}
#: deformable-hdrnet / hdrnet latency ratio target
DEFORMABLE_RATIO_TARGET = 1.3
#: peak memory limit at 4K (bytes)
MEMORY_LIMIT_BYTES = 1.5e9


def build_models(task: kdcore.Task, device: torch.device = torch.device("cpu")) -> dict[str, torch.nn.Module]:
    """``hdrnet`` and ``deformable-hdrnet`` at their defaults, sharing weights, plus the reference path.

    The deformable model loads the hdrnet's weights and its new (zero-initialised) offset parts
    are perturbed, so it computes real deformable offsets rather than a zero shortcut.
    """
    torch.manual_seed(0)
    hdrnet = kdcore.create("student", "hdrnet", {}, task).eval()
    deformable = kdcore.create("student", "deformable-hdrnet", {}, task).eval()
    deformable.load_state_dict(hdrnet.state_dict(), strict=False)
    with torch.no_grad():
        for name, p in deformable.named_parameters():
            if "offset" in name:
                p.normal_(std=0.01)
    models = {"hdrnet": hdrnet, "deformable-hdrnet": deformable, "reference": ReferenceHDRNet(hdrnet)}
    return {k: m.to(device) for k, m in models.items()}


def _call(model: torch.nn.Module, x: torch.Tensor, autocast: torch.dtype | None):
    def fn():
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=autocast or torch.float32,
                                                    enabled=autocast is not None):
            return model(x)

    return fn


def latency_table(
    sizes: dict[str, tuple[int, int]],
    repeats: int,
    *,
    task: kdcore.Task | None = None,
    device: torch.device = torch.device("cpu"),
    autocast: torch.dtype | None = None,
    reference: bool = True,
) -> list[dict[str, Any]]:
    """One row per size: min/median ms of hdrnet, deformable-hdrnet and the reference, and their ratios.

    ``sizes`` are output sizes; for sr the input is the output divided by the scale.
    """
    task = task or kdcore.Task(kind="enhance")
    models = build_models(task, device)
    if not reference:
        models.pop("reference")
    rows = []
    for name, (h, w) in sizes.items():
        x = torch.rand(1, 3, h // task.scale, w // task.scale, generator=torch.Generator().manual_seed(0)).to(device)
        calls = {label: _call(m, x, autocast) for label, m in models.items()}
        times = time_interleaved(calls, repeats, device=device)
        row: dict[str, Any] = {"size": name, "output_hw": [h, w], "input_hw": list(x.shape[-2:]), "times": times}
        base = times["hdrnet"]
        row["deformable_ratio"] = {k: times["deformable-hdrnet"][k] / base[k] for k in ("min_ms", "median_ms")}
        if "reference" in times:
            row["speedup_vs_reference"] = {k: times["reference"][k] / base[k] for k in ("min_ms", "median_ms")}
        rows.append(row)
        del x
    return rows


def channels_last_table(sizes: dict[str, tuple[int, int]], repeats: int) -> list[dict[str, Any]]:
    """hdrnet (enhance) in the default contiguous layout vs channels_last (model and input), interleaved."""
    task = kdcore.Task(kind="enhance")
    torch.manual_seed(0)
    plain = kdcore.create("student", "hdrnet", {}, task).eval()
    cl = kdcore.create("student", "hdrnet", {}, task).eval()
    cl.load_state_dict(plain.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    rows = []
    for name, (h, w) in sizes.items():
        x = torch.rand(1, 3, h, w)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        times = time_interleaved({"contiguous": _call(plain, x, None), "channels_last": _call(cl, x_cl, None)}, repeats)
        with torch.inference_mode():
            diff = float((plain(x) - cl(x_cl)).abs().max())
        rows.append({"size": name, "times": times, "max_abs_diff": diff,
                     "ratio_median": times["channels_last"]["median_ms"] / times["contiguous"]["median_ms"]})
    return rows


def train_step_table(batch: int, crop: int, repeats: int) -> dict[str, Any]:
    """Forward + backward + AdamW step of both models (enhance, l1 against a random target), interleaved."""
    task = kdcore.Task(kind="enhance")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, crop, crop, generator=gen)
    target = torch.rand(batch, 3, crop, crop, generator=gen)
    models = build_models(task)
    models.pop("reference")
    calls = {}
    for name, model in models.items():
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.l1_loss(model(x), target)
            loss.backward()
            opt.step()

        calls[name] = step
    times = time_interleaved(calls, repeats)
    return {"batch": batch, "crop": crop, "times": times,
            "deformable_ratio_median": times["deformable-hdrnet"]["median_ms"] / times["hdrnet"]["median_ms"]}


# --- issue 14 targets: fused CPU path, sr at the cost of enhancement, training step ---------------

#: targets of the fused-path table (ms, ratios)
FUSED_TARGETS = {"enhance_1080p_ms": 20.0, "enhance_4k_ms": 80.0, "vs_reference": 25.0,
                 "sr2_over_enhance": 1.5, "deformable_ratio": 1.3, "train_step_ms": 100.0}


def _pytorch_path(fn):
    """``fn`` run with the fused kernel switched off (``KDCORE_HDRNET_FUSED=0``): today's PyTorch path."""
    def call():
        old = os.environ.get(fused.ENV_VAR)
        os.environ[fused.ENV_VAR] = "0"
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[fused.ENV_VAR]
            else:
                os.environ[fused.ENV_VAR] = old
    return call


def fused_targets(repeats: int = 5, *, smoke: bool = False) -> dict[str, Any]:
    """Every measurement of the fused-path targets, timed interleaved in this one process.

    1080p and 4K enhance (fused, the PyTorch path, the reference), sr ×2 to 1080p (fused and
    PyTorch path), deformable-hdrnet at 1080p with its offsets active, each batch 1, eval,
    ``torch.inference_mode``. Records which path ran (:func:`kdcore_hdrnet.fused.describe`).
    """
    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)  # the fallback's one-line notice
    enh = build_models(kdcore.Task(kind="enhance"))
    sr = build_models(kdcore.Task(kind="sr", scale=2))
    sizes = {"1080p": (1080, 1920), "4K": (2160, 3840)} if not smoke else {"1080p": (72, 128), "4K": (144, 256)}
    gen = torch.Generator().manual_seed(0)
    x1080 = torch.rand(1, 3, *sizes["1080p"], generator=gen)
    x4k = torch.rand(1, 3, *sizes["4K"], generator=gen)
    xsr = torch.rand(1, 3, sizes["1080p"][0] // 2, sizes["1080p"][1] // 2, generator=gen)
    calls = {
        "enhance 1080p fused": _call(enh["hdrnet"], x1080, None),
        "enhance 1080p pytorch": _pytorch_path(_call(enh["hdrnet"], x1080, None)),
        "enhance 1080p reference": _call(enh["reference"], x1080, None),
        "enhance 4K fused": _call(enh["hdrnet"], x4k, None),
        "enhance 4K pytorch": _pytorch_path(_call(enh["hdrnet"], x4k, None)),
        "sr2 to 1080p fused": _call(sr["hdrnet"], xsr, None),
        "sr2 to 1080p pytorch": _pytorch_path(_call(sr["hdrnet"], xsr, None)),
        "deformable 1080p fused": _call(enh["deformable-hdrnet"], x1080, None),
        "deformable 1080p pytorch": _pytorch_path(_call(enh["deformable-hdrnet"], x1080, None)),
    }
    with torch.inference_mode():
        diffs = {
            "enhance 1080p": float((enh["hdrnet"](x1080) - _pytorch_path(lambda: enh["hdrnet"](x1080))()).abs().max()),
            "sr2 to 1080p": float((sr["hdrnet"](xsr) - _pytorch_path(lambda: sr["hdrnet"](xsr))()).abs().max()),
            "deformable 1080p": float((enh["deformable-hdrnet"](x1080)
                                       - _pytorch_path(lambda: enh["deformable-hdrnet"](x1080))()).abs().max()),
        }
    load_before = os.getloadavg()
    times = time_interleaved(calls, repeats)
    step = train_step_table(8, 256, repeats) if not smoke else train_step_table(2, 64, 1)
    t = {k: v for k, v in times.items()}

    def ratio(a: str, b: str) -> dict[str, float]:
        return {k: t[a][k] / t[b][k] for k in ("min_ms", "median_ms", "cpu_min_ms", "cpu_median_ms")}

    return {
        "path": fused.describe(), "threads": torch.get_num_threads(), "repeats": repeats,
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
        "times": t, "max_abs_diff_fused_vs_pytorch": diffs, "train_step": step,
        "ratios": {
            "reference_over_fused_1080p": ratio("enhance 1080p reference", "enhance 1080p fused"),
            "pytorch_over_fused_1080p": ratio("enhance 1080p pytorch", "enhance 1080p fused"),
            "pytorch_over_fused_4k": ratio("enhance 4K pytorch", "enhance 4K fused"),
            "sr2_over_enhance_fused": ratio("sr2 to 1080p fused", "enhance 1080p fused"),
            "sr2_over_enhance_pytorch": ratio("sr2 to 1080p pytorch", "enhance 1080p pytorch"),
            "deformable_over_hdrnet_fused": ratio("deformable 1080p fused", "enhance 1080p fused"),
            "deformable_over_hdrnet_pytorch": ratio("deformable 1080p pytorch", "enhance 1080p pytorch"),
        },
        "targets": FUSED_TARGETS,
    }


def fused_targets_markdown(r: dict[str, Any], quality: dict[str, Any] | None = None) -> str:
    """The "Fused CPU inference (issue 14)" section of BENCHMARKS.md from :func:`fused_targets`."""
    t, q, tg = r["times"], r["ratios"], r["targets"]
    path = r["path"]

    def mm(name: str) -> str:
        return f"{t[name]['min_ms']:.1f} / {t[name]['median_ms']:.1f}"

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    ref = q["reference_over_fused_1080p"]
    sr = q["sr2_over_enhance_fused"]
    de = q["deformable_over_hdrnet_fused"]
    step = r["train_step"]["times"]["hdrnet"]
    rows = [
        ("hdrnet enhance 1080p", mm("enhance 1080p fused") + " ms", f"≤ {tg['enhance_1080p_ms']:.0f} ms",
         verdict(t["enhance 1080p fused"]["median_ms"] <= tg["enhance_1080p_ms"])),
        ("… against the straightforward port (reference), same run", f"{ref['median_ms']:.0f}× (median), {ref['min_ms']:.0f}× (min)",
         f"≥ {tg['vs_reference']:.0f}×", verdict(ref["median_ms"] >= tg["vs_reference"])),
        ("hdrnet enhance 4K", mm("enhance 4K fused") + " ms", f"≤ {tg['enhance_4k_ms']:.0f} ms",
         verdict(t["enhance 4K fused"]["median_ms"] <= tg["enhance_4k_ms"])),
        ("hdrnet sr ×2 to 1080p / enhance 1080p", (f"{sr['median_ms']:.2f}× (median), {sr['min_ms']:.2f}× (min); "
                                                   f"sr {mm('sr2 to 1080p fused')} ms"), f"≤ {tg['sr2_over_enhance']}×", verdict(sr["median_ms"] <= tg["sr2_over_enhance"])),
        ("deformable-hdrnet / hdrnet at 1080p, offsets active", f"{de['median_ms']:.2f}× (median), {de['min_ms']:.2f}× (min)",
         f"≤ {tg['deformable_ratio']}×", verdict(de["median_ms"] <= tg["deformable_ratio"])),
        (f"hdrnet training step, batch {r['train_step']['batch']}, {r['train_step']['crop']}²",
         f"{step['min_ms']:.0f} / {step['median_ms']:.0f} ms", f"≤ {tg['train_step_ms']:.0f} ms median",
         verdict(step["median_ms"] <= tg["train_step_ms"])),
    ]
    for label, value in (quality or {}).items():
        rows.append((label, f"{value:.2f} dB", "≥ 32 dB", verdict(value >= 32.0)))
    intro = (f"`python benchmarks/speed.py --fused-targets --repeats {r['repeats']}`: every timing below was taken "
           f"interleaved in **one process** (min / median of {r['repeats']} runs after a warm-up, wall clock, "
           f"{r['threads']} threads, batch 1, float32, eval, `torch.inference_mode`). Path that ran: "
           f"**{'fused numba kernel' if path['fused_available'] else 'PyTorch (fused kernel unavailable)'}** "
           f"(numba {path['numba']}, threading layer {path['threading_layer']}); *pytorch* rows are the same models "
           f"with `KDCORE_HDRNET_FUSED=0`, today's path. Load average before / after: "
           f"{', '.join(f'{v:.1f}' for v in r['loadavg_before'])} / {', '.join(f'{v:.1f}' for v in r['loadavg_after'])} "
           + ("on 2 cores, so absolute times are inflated several-fold and the ratios are the numbers to read.\n\n"
              if max(r["loadavg_before"][0], r["loadavg_after"][0]) > 2.5 else "on 2 cores (a quiet machine).\n\n"))
    out = ["## Fused CPU inference (issue 14)\n\n", intro,
           "| measure | measured | target | verdict |\n|---|---|---|---|\n"]
    out += [f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in rows]
    out.append("\nAll timings, ms (min / median; process CPU time in the JSON):\n\n| call | wall |\n|---|---|\n")
    out += [f"| {name} | {mm(name)} |\n" for name in t]
    out.append("\nRatios in the same run (median; min): " + "; ".join(
        f"{k} {v['median_ms']:.2f}× ({v['min_ms']:.2f}×)" for k, v in q.items()) + ".\n\n")
    out.append("Max |fused − PyTorch path| on these inputs: " + ", ".join(
        f"{k} {v:.1e}" for k, v in r["max_abs_diff_fused_vs_pytorch"].items()) + ".\n")
    return "".join(out)


# --- fresh-process measurements -------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory_worker(model_name: str, h: int, w: int, threads: int) -> dict[str, Any]:
    """In a fresh process: RSS before the forward pass and its peak during one forward pass."""
    torch.set_num_threads(threads)
    task = kdcore.Task(kind="enhance")
    model = build_models(task)[model_name]
    x = torch.rand(1, 3, h, w)
    import gc

    gc.collect()
    reset = False
    try:  # reset the peak-RSS mark (VmHWM) to the current RSS: Linux >= 4.0
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    rss_before = _status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_before = _status_kb("VmHWM")
    with torch.inference_mode():
        out = model(x)
    del out
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_after = _status_kb("VmHWM")
    return {"model": model_name, "hw": [h, w], "peak_reset": reset, "rss_before_kb": rss_before,
            "maxrss_before_kb": maxrss_before, "maxrss_after_kb": maxrss_after,
            "hwm_before_kb": hwm_before, "hwm_after_kb": hwm_after}


def peak_memory(models: list[str], hw: tuple[int, int], threads: int, timeout: float = 300) -> list[dict[str, Any]]:
    """Peak resident memory of one forward pass, each model in its own fresh process.

    ``peak_bytes``: the process's peak RSS during the forward pass (interpreter, torch, weights and
    the input included); ``forward_bytes``: that peak minus the RSS just before the call.
    """
    rows = []
    for name in models:
        cmd = [sys.executable, __file__, "--worker", "memory", "--model", name,
               "--hw", str(hw[0]), str(hw[1]), "--threads", str(threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            rows.append({"model": name, "error": f"did not finish within {timeout:.0f} s"})
            continue
        if proc.returncode != 0:
            rows.append({"model": name, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        peak_kb = r["hwm_after_kb"] if r["peak_reset"] and r["hwm_after_kb"] else r["maxrss_after_kb"]
        r["peak_bytes"] = peak_kb * 1024
        r["forward_bytes"] = (peak_kb - r["rss_before_kb"]) * 1024 if r["rss_before_kb"] else None
        r["under_limit"] = r["peak_bytes"] < MEMORY_LIMIT_BYTES
        rows.append(r)
    return rows


def _compile_worker(sizes: list[tuple[int, int]], repeats: int, threads: int) -> dict[str, Any]:
    """In a fresh process: torch.compile(hdrnet) — compile time and latency next to eager."""
    torch.set_num_threads(threads)
    task = kdcore.Task(kind="enhance")
    torch.manual_seed(0)
    model = kdcore.create("student", "hdrnet", {}, task).eval()
    compiled = torch.compile(model)
    rows = []
    for h, w in sizes:
        x = torch.rand(1, 3, h, w)
        t0 = time.perf_counter()
        with torch.inference_mode():
            got = compiled(x)
            want = model(x)
        first = time.perf_counter() - t0
        times = time_interleaved({"eager": _call(model, x, None), "compiled": _call(compiled, x, None)}, repeats)
        rows.append({"hw": [h, w], "first_call_s": first, "max_abs_diff": float((got - want).abs().max()),
                     "times": times})
        print(json.dumps({"partial": rows}), flush=True)
    return {"rows": rows}


def compile_attempt(sizes: dict[str, tuple[int, int]], repeats: int, threads: int, timeout: float) -> dict[str, Any]:
    """Runs :func:`_compile_worker` in a fresh process, killed after ``timeout`` seconds."""
    cmd = [sys.executable, __file__, "--worker", "compile", "--threads", str(threads), "--repeats", str(repeats)]
    for h, w in sizes.values():
        cmd += ["--hw", str(h), str(w)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, rc, timed_out = proc.stdout, proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc, timed_out = None, True
    elapsed = time.perf_counter() - t0
    lines = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
    rows = lines[-1].get("rows", lines[-1].get("partial", [])) if lines else []
    result: dict[str, Any] = {"seconds": elapsed, "timeout_s": timeout, "timed_out": timed_out, "rows": rows,
                              "names": list(sizes)[: len(rows)]}
    if timed_out:
        result["error"] = f"did not finish within {timeout:.0f} s ({len(rows)} of {len(sizes)} sizes done)"
    elif rc != 0:
        tail = [l for l in stderr.strip().splitlines() if l.strip()]
        result["error"] = tail[-1][:400] if tail else f"exit status {rc}"
    return result


def main() -> None:
    """Workers for the fresh-process measurements, or the CPU latency table as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=["memory", "compile"])
    parser.add_argument("--model", default="hdrnet")
    parser.add_argument("--hw", type=int, nargs=2, action="append")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fused-targets", action="store_true",
                        help="only the fused-path target measurements (issue 14), as JSON")
    parser.add_argument("--smoke", action="store_true", help="with --fused-targets: tiny sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker == "memory":
        h, w = (args.hw or [[2160, 3840]])[0]
        print(json.dumps(_memory_worker(args.model, h, w, args.threads)))
    elif args.fused_targets:
        print(json.dumps(fused_targets(args.repeats, smoke=args.smoke), indent=2))
    elif args.worker == "compile":
        print(json.dumps(_compile_worker([tuple(s) for s in (args.hw or [[512, 512]])], args.repeats, args.threads)))
    else:
        print(json.dumps(latency_table(SIZES, args.repeats), indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
