"""BENCHMARKS.md and the PNG plots from the results dictionary of ``run_all.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import distill_cost
import quality
import speed


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _mm(t: dict) -> str:
    """'min / median' ms."""
    return f"{_ms(t['min_ms'])} / {_ms(t['median_ms'])}"


def _mb(b: float | None) -> str:
    return "—" if b is None else f"{b / 2**20:.0f} MiB"


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _spread(s: dict, unit: str = "", digits: int = 2) -> str:
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}{unit} (1 seed)"
    return (f"{s['mean']:.{digits}f}{unit} ± {s['std']:.{digits}f} "
            f"(min–max {s['min']:.{digits}f} – {s['max']:.{digits}f})")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- plots ------------------------------------------------------------------------------------------


def plots(results: dict, out: Path) -> dict[str, Path]:
    """Writes the PNG plots that the results allow; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, Path] = {}
    if "latency" in results:
        rows = results["latency"]
        names = ["hdrnet", "deformable-hdrnet", "reference"]
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.27
        for i, name in enumerate(names):
            med = [r["times"][name]["median_ms"] for r in rows]
            mins = [r["times"][name]["min_ms"] for r in rows]
            xs = [j + (i - 1) * width for j in range(len(rows))]
            ax.bar(xs, med, width, label=f"{name} (median)")
            ax.scatter(xs, mins, color="black", s=10, zorder=3, label="min" if i == 0 else None)
        targets = speed.HDRNET_TARGETS_MS
        for j, r in enumerate(rows):
            if r["size"] in targets:
                ax.hlines(targets[r["size"]], j - 0.45, j + 0.45, colors="red", linestyles="dashed",
                          label="hdrnet target" if j == 0 else None)
        ax.set_xticks(range(len(rows)), [r["size"] for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("ms per image (batch 1)")
        ax.set_title(f"CPU latency, {results['machine']['threads']} threads, enhance")
        ax.legend(fontsize=8)
        fig.tight_layout()
        made["latency"] = out / "latency.png"
        fig.savefig(made["latency"], dpi=110)
        plt.close(fig)
    sr = results.get("quality_sr")
    if sr:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, label in enumerate(("distilled", "alone")):
            ps = [r["psnr"] for r in sr[label]]
            ax.scatter([i] * len(ps), ps, s=30, label=f"student {label} (per seed)")
            ax.hlines(sum(ps) / len(ps), i - 0.2, i + 0.2, colors="black")
        ax.axhline(sr["teacher"]["psnr"], color="green", linestyle="--", label="teacher")
        ax.axhline(sr["baseline"]["psnr"], color="gray", linestyle=":", label="bicubic")
        ax.set_xticks([0, 1], ["distilled", "alone"])
        ax.set_xlim(-0.7, 1.7)
        ax.set_ylabel("PSNR (dB, Y channel)")
        ax.set_title("sr ×2 on builtin:photos-val")
        ax.legend(fontsize=8)
        fig.tight_layout()
        made["quality_sr"] = out / "quality_sr.png"
        fig.savefig(made["quality_sr"], dpi=110)
        plt.close(fig)
    cost = results.get("distill_cost")
    if cost:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(cost["variants"])
        med = [cost["variants"][n]["step_median_ms"] for n in names]
        wait = [(cost["variants"][n]["data_wait_fraction"] or 0) * m for n, m in zip(names, med)]
        ax.bar(names, [m - w for m, w in zip(med, wait)], label="compute")
        ax.bar(names, wait, bottom=[m - w for m, w in zip(med, wait)], label="waiting for data")
        ax.set_ylabel("median ms per step")
        ax.set_title("training step in the engine")
        ax.legend(fontsize=8)
        fig.tight_layout()
        made["distill_cost"] = out / "distill_cost.png"
        fig.savefig(made["distill_cost"], dpi=110)
        plt.close(fig)
    return made


# --- markdown ---------------------------------------------------------------------------------------


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def markdown(results: dict, plot_files: dict[str, Path], md_dir: Path, out: Path) -> str:
    """The whole BENCHMARKS.md text."""
    m = results["machine"]
    parts: list[str] = []
    add = parts.append
    smoke = results["mode"] == "smoke"
    add("# Benchmarks\n\n")
    add(f"Generated by `make bench` (`python benchmarks/run_all.py{' --smoke' if smoke else ''}`) on "
        f"{results['finished']}, in {results['total_s'] / 60:.1f} minutes. Raw numbers: "
        f"[`{_link(out / 'results.json', md_dir)}`]({_link(out / 'results.json', md_dir)}). "
        "Every timing is wall-clock time, given as **min / median** of the stated number of runs "
        "after one warm-up run; models compared in one table were timed interleaved in one process "
        "(a, b, c, a, b, c, …), so ratios taken from one row are side by side.\n\n")
    if smoke:
        add("**Smoke mode: tiny sizes and a few steps; these numbers mean nothing.**\n\n")
    add("## Machine\n\n")
    load0, load1 = results.get("loadavg_start"), results.get("loadavg_end")
    add(_table(["", ""], [
        ["CPU", m["cpu"]], ["cores (os.cpu_count)", m["cores"]], ["torch threads", m["threads"]],
        ["torch", m["torch"]], ["kdcore", m["kdcore"]], ["Python", m["python"]], ["platform", m["platform"]],
        ["GPU", m["gpu"] or "none"],
        ["load average (1/5/15 min) at start", load0], ["load average at end", load1],
    ]))
    loaded = any(v is not None and v[0] > 0.5 * (m["cores"] or 1) for v in (load0, load1))
    if loaded:
        add(f"\n**The machine was loaded** (load average above half the {m['cores']} cores at the start or "
            "the end): other processes shared the cores, which inflates every absolute timing here, "
            "by a varying amount from row to row. The ratios are taken side by side in one run and "
            "are the more reliable numbers; the minimum is the better estimate of the unloaded time. "
            "The latency tables also record process CPU time in `results.json`.\n")
    add("\n")
    add(_summary(results))
    add(_speed(results, plot_files, md_dir))
    add(_cost(results, plot_files, md_dir))
    add(_quality(results, plot_files, md_dir))
    add(_gpu(results))
    if results.get("onnx_latency"):
        from onnx_latency import markdown as onnx_markdown

        add(onnx_markdown(results["onnx_latency"]) + "\n")
    add(_method(results))
    return "".join(parts)


def _summary(results: dict) -> str:
    rows = []
    for r in results.get("latency", []):
        target = speed.HDRNET_TARGETS_MS.get(r["size"])
        if target is not None:
            t = r["times"]["hdrnet"]
            rows.append([f"hdrnet latency at {r['size']} ≤ {target:g} ms", f"{_mm(t)} ms",
                         _yes(t["median_ms"] <= target) + (" (by the min only)" if t["min_ms"] <= target < t["median_ms"] else "")])
        ratio = r["deformable_ratio"]["median_ms"]
        rows.append([f"deformable-hdrnet / hdrnet at {r['size']} ≤ {speed.DEFORMABLE_RATIO_TARGET}×",
                     f"{ratio:.2f}× (median), {r['deformable_ratio']['min_ms']:.2f}× (min)",
                     _yes(ratio <= speed.DEFORMABLE_RATIO_TARGET)])
    mem = results.get("memory")
    if mem:
        for r in mem["rows"]:
            if "peak_bytes" in r and r["model"] != "reference":
                rows.append([f"{r['model']} peak memory at {mem['hw'][1]}×{mem['hw'][0]} < 1.5 GB",
                             f"{r['peak_bytes'] / 1e9:.2f} GB", _yes(r["under_limit"])])
    cost = results.get("distill_cost")
    if cost:
        for name, target in cost["targets"].items():
            ratio = cost["ratios"][name]["median"]
            rows.append([f"{name} step / plain step ≤ {target}×", f"{ratio:.2f}×", _yes(ratio <= target)])
    sr = results.get("quality_sr")
    if sr:
        g = sr["kd_gain_db"]
        rows.append([f"sr ×2: distilled beats alone by ≥ {quality.KD_GAIN_GOAL_DB} dB",
                     f"{g['mean']:+.2f} dB (min–max {g['min']:+.2f} – {g['max']:+.2f})", _yes(sr["goal_kd_gain_met"])])
        k = sr["kept_teacher_gain"]
        rows.append([f"sr ×2: student keeps ≥ {quality.KEEP_TEACHER_GAIN_GOAL:.0%} of the teacher's gain over bicubic",
                     f"{k['mean']:.0%} (min–max {k['min']:.0%} – {k['max']:.0%})" if k else "teacher has no gain",
                     _yes(sr["goal_kept_met"])])
    if not rows:
        return ""
    return "## Targets at a glance\n\n" + _table(["target", "measured", "verdict"], rows) + "\n"


def _img(plot_files: dict, name: str, md_dir: Path, alt: str) -> str:
    return f"![{alt}]({_link(plot_files[name], md_dir)})\n\n" if name in plot_files else ""


def _speed(results: dict, plot_files: dict, md_dir: Path) -> str:
    if "latency" not in results:
        return ""
    s = ["## 1. Speed\n\n",
         "`hdrnet` and `deformable-hdrnet` at their default params (`enhance`), float32, batch 1, eval mode, "
         "`torch.inference_mode()`, "
         f"`torch.set_num_threads({results['machine']['threads']})`. The deformable model carries the "
         "hdrnet's weights and its offset predictors are perturbed away from zero (std 0.01), so the "
         "deformable paths really run. *reference* is `kdcore_hdrnet.reference.ReferenceHDRNet`: the "
         "straightforward full-resolution path (1×1 `conv2d` guide, one 5-D `grid_sample` slice, `einsum` "
         "apply) with the **same weights** as the `hdrnet` column.\n\n"]
    rows = []
    for r in results["latency"]:
        t = r["times"]
        target = speed.HDRNET_TARGETS_MS.get(r["size"])
        rows.append([r["size"], t["hdrnet"]["runs"], _mm(t["hdrnet"]), _mm(t["deformable-hdrnet"]), _mm(t["reference"]),
                     f"{r['speedup_vs_reference']['median_ms']:.1f}× ({r['speedup_vs_reference']['min_ms']:.1f}×)",
                     f"{r['deformable_ratio']['median_ms']:.2f}× ({r['deformable_ratio']['min_ms']:.2f}×)",
                     f"≤ {target:g} ms: {_yes(t['hdrnet']['median_ms'] <= target)}" if target else "—"])
    s.append("### Latency, ms (min / median)\n\n")
    s.append(_table(["size (H×W out)", "runs", "hdrnet", "deformable-hdrnet", "reference", "speed-up of hdrnet over reference, median (min)",
                     "deformable / hdrnet, median (min)", "hdrnet target (by median)"], rows))
    cpu_rows = [[r["size"]] + [f"{r['times'][n]['cpu_min_ms']:.0f} / {r['times'][n]['cpu_median_ms']:.0f}"
                               for n in ("hdrnet", "deformable-hdrnet", "reference")] for r in results["latency"]]
    s.append("\nProcess CPU time of the same calls (summed over threads; less sensitive to other processes "
             "than wall time), ms min / median:\n\n")
    s.append(_table(["size", "hdrnet", "deformable-hdrnet", "reference"], cpu_rows))
    s.append("\n" + _img(plot_files, "latency", md_dir, "latency per size"))
    if results.get("latency_sr2"):
        s.append("### sr ×2 (output size; input is half of it per side), ms (min / median)\n\n")
        rows = [[r["size"], f"{r['input_hw'][1]}×{r['input_hw'][0]}", r["times"]["hdrnet"]["runs"], _mm(r["times"]["hdrnet"]),
                 _mm(r["times"]["deformable-hdrnet"]), _mm(r["times"]["reference"]),
                 f"{r['speedup_vs_reference']['median_ms']:.1f}×", f"{r['deformable_ratio']['median_ms']:.2f}×"]
                for r in results["latency_sr2"]]
        s.append(_table(["output", "input W×H", "runs", "hdrnet", "deformable-hdrnet", "reference", "speed-up (median)",
                         "deformable / hdrnet (median)"], rows) + "\n")
    mem = results.get("memory")
    if mem:
        h, w = mem["hw"]
        s.append(f"### Peak memory at {w}×{h} (enhance, one forward pass)\n\n")
        rows = []
        for r in mem["rows"]:
            if "error" in r:
                rows.append([r["model"], "—", "—", r["error"], "—"])
                continue
            rows.append([r["model"], _mb(r["rss_before_kb"] * 1024), _mb(r["forward_bytes"]),
                         f"{_mb(r['peak_bytes'])} ({r['peak_bytes'] / 1e9:.2f} GB)",
                         "yes" if r["under_limit"] else "**no**"])
        s.append(_table(["model", "RSS before the call", "added by the forward pass", "peak RSS of the process",
                         "under 1.5 GB"], rows))
        s.append("\nMethod: each model runs in a **fresh Python process** (`benchmarks/speed.py --worker memory`), "
                 "which builds the model and the input, resets the kernel's peak-RSS mark (`echo 5 > "
                 "/proc/self/clear_refs`, so model building does not count), reads `VmRSS`, runs one forward "
                 "pass under `torch.inference_mode()` and reads the peak (`VmHWM`; `resource.getrusage(...)"
                 ".ru_maxrss` where the reset is unavailable). *Peak RSS of the process* includes the "
                 "interpreter, torch's libraries, the weights and the input image; *added by the forward "
                 "pass* is that peak minus the RSS just before the call. tracemalloc cannot see torch's "
                 "allocations, hence RSS. The 1.5 GB limit is checked against the whole process peak.\n\n")
    ts = results.get("train_step")
    if ts:
        s.append(f"### Training step (batch {ts['batch']}, {ts['crop']}×{ts['crop']} crops, forward + backward + AdamW)\n\n")
        rows = [[n, t["runs"], _mm(t), f"{ts['batch'] * 1000 / t['median_ms']:.1f}"] for n, t in ts["times"].items()]
        s.append(_table(["model", "runs", "ms (min / median)", "images / s (median)"], rows))
        s.append(f"\ndeformable / hdrnet: {ts['deformable_ratio_median']:.2f}× (median). Enhance task, L1 against a "
                 "random target, `torch.optim.AdamW`, train mode, both models timed interleaved.\n\n")
    cl = results.get("channels_last")
    if cl:
        s.append("### channels_last (hdrnet, model and input converted)\n\n")
        rows = [[r["size"], _mm(r["times"]["contiguous"]), _mm(r["times"]["channels_last"]), f"{r['ratio_median']:.2f}×",
                 f"{r['max_abs_diff']:.1e}"] for r in cl]
        s.append(_table(["size", "contiguous ms", "channels_last ms", "channels_last / contiguous (median)",
                         "max abs. difference"], rows))
        helps = all(r["ratio_median"] < 0.95 for r in cl)
        hurts = any(r["ratio_median"] > 1.05 for r in cl)
        s.append("\nVerdict: " + ("channels_last helps at every size measured." if helps else
                                  "channels_last does not help here (" + ("slower at some size" if hurts else "within ±5 %") + ").")
                 + " The full-resolution path works on flattened pixels, not on convolutions, so the memory "
                 "format matters only for the small low-resolution stream.\n\n")
    comp = results.get("compile")
    if comp:
        s.append("### torch.compile (hdrnet, default inductor backend, fresh process)\n\n")
        if comp["rows"]:
            rows = [[f"{r['hw'][1]}×{r['hw'][0]}", f"{r['first_call_s']:.0f} s", _mm(r["times"]["eager"]),
                     _mm(r["times"]["compiled"]), f"{r['times']['compiled']['median_ms'] / r['times']['eager']['median_ms']:.2f}×",
                     f"{r['max_abs_diff']:.1e}"] for r in comp["rows"]]
            s.append(_table(["size", "first call (compile)", "eager ms", "compiled ms", "compiled / eager (median)",
                             "max abs. difference"], rows))
        s.append(f"\nThe attempt was capped at {comp['timeout_s']:.0f} s and took {comp['seconds']:.0f} s. ")
        if comp.get("error"):
            s.append(f"Result: `{comp['error']}`. ")
        if comp["rows"]:
            faster = all(r["times"]["compiled"]["median_ms"] < 0.95 * r["times"]["eager"]["median_ms"] for r in comp["rows"])
            s.append("Verdict: " + ("torch.compile makes inference faster at the sizes measured, at the price of the "
                                    "compile time above (paid again for every new input size)." if faster else
                                    "torch.compile does not make inference faster here; eager is the default.")
                     )
        else:
            s.append("Verdict: no compiled timing could be taken within the cap on this machine.")
        s.append("\n\n")
    return "".join(s)


def _cost(results: dict, plot_files: dict, md_dir: Path) -> str:
    cost = results.get("distill_cost")
    if not cost:
        return ""
    s = ["## 2. Distillation step cost in the training engine\n\n",
         f"Real `kdcore.run` runs, one after another in one process, {cost['rounds']} round(s) of "
         f"plain → cache memory → cache off: student `{cost['student']['name']}` {cost['student']['params']}, "
         f"task sr ×{cost['task'].get('scale', 1)}, batch {cost['data']['batch_size']}, patch {cost['data']['patch_size']}, "
         f"{cost['steps']} steps each. Teacher: `{cost['teacher']['name']}` {cost['teacher']['params']} (the sr teacher "
         "of section 3). Plain: L1 to the target. Distillation: L1 to the target + 0.5 · L1 to the teacher + "
         "0.5 · relative difference to the teacher (image losses only, so the cache can replace the live teacher). "
         "Step time = interval between the engine's `step` callbacks; the median leaves out the first "
         f"{cost['skipped_steps']} steps (warm-up; the memory cache fills lazily, one teacher pass per training "
         "image, during those steps — their times are in `results.json` as `first_steps_s`). *Waiting for data* is "
         "the time spent in the data loader's `next()` (the engine's loader, wrapped; `data.workers` 0, so "
         "loading runs in the training process).\n\n"]
    rows = []
    for name, v in cost["variants"].items():
        ratio = cost["ratios"].get(name)
        target = cost["targets"].get(name)
        rows.append([name, f"{_ms(v['step_min_ms'])} / {_ms(v['step_median_ms'])}",
                     f"{ratio['median']:.2f}× (rounds: {', '.join(f'{x:.2f}' for x in ratio['rounds'])})" if ratio else "1.00×",
                     f"≤ {target}×: {_yes(ratio['median'] <= target)}" if ratio else "—",
                     f"{v['data_wait_fraction']:.1%}" if v["data_wait_fraction"] is not None else "—"])
    s.append(_table(["run", "step ms (min / median)", "ratio to plain (median)", "target", "waiting for data"], rows))
    s.append("\n" + _img(plot_files, "distill_cost", md_dir, "step time"))
    return "".join(s)


def _quality(results: dict, plot_files: dict, md_dir: Path) -> str:
    sr, en = results.get("quality_sr"), results.get("quality_enhance")
    if not sr and not en:
        return ""
    s = ["## 3. Quality\n\n"]
    if sr:
        t = sr["teacher"]
        s.append(f"### sr ×2 on `{sr['data']['val']}`\n\n")
        s.append(f"Teacher: `hdrnet` {t['params_spec']}, trained alone for **{sr['teacher_steps']} steps**. Student: "
                 f"`deformable-hdrnet` {sr['student_spec']['params']}, **{sr['student_steps']} steps** per run, seeds "
                 f"{sr['seeds']}; *distilled* uses L1 to the target + 0.5 · relative difference to the teacher + 0.1 · "
                 "feature matching of `lowres.fusion` (1×1 conv adapter); *alone* uses L1 only, same steps, seeds and "
                 f"data (patch {sr['data']['patch_size']}, batch {sr['data']['batch_size']}, lr {quality.LR}, cosine schedule). "
                 "PSNR / SSIM on the Y channel, 8-bit output, 2-pixel border cropped. Latency: the engine's "
                 "`summary.json` (median of 5 on the first validation image, taken right after training).\n\n")
        rows = [["bicubic", f"{sr['baseline']['psnr']:.2f}", f"{sr['baseline']['ssim']:.4f}", "0", "—"],
                [f"teacher hdrnet ×{t['params_spec']['channel_multiplier']}", f"{t['psnr']:.2f}", f"{t['ssim']:.4f}",
                 f"{t['params']:,}", _ms(t["latency_ms"])]]
        for label in ("distilled", "alone"):
            rs = sr[label]
            lat = sorted(r["latency_ms"] for r in rs)[len(rs) // 2]
            rows.append([f"student {label}", _spread(sr[f"{label}_psnr"]), _spread(sr[f"{label}_ssim"], digits=4),
                         f"{rs[0]['params']:,}", _ms(lat)])
        s.append(_table(["model", "PSNR dB (mean ± std, min–max)", "SSIM", "parameters", "latency ms"], rows))
        g = sr["kd_gain_db"]
        k = sr["kept_teacher_gain"]
        s.append(f"\n- KD gain (distilled − alone, paired by seed): **{g['mean']:+.3f} dB** ± {g['std']:.3f} "
                 f"(min–max {g['min']:+.3f} – {g['max']:+.3f}). Goal ≥ {quality.KD_GAIN_GOAL_DB} dB: "
                 f"{_yes(sr['goal_kd_gain_met'])}.\n")
        s.append(f"- Teacher's gain over bicubic: {sr['teacher_gain_db']:+.3f} dB. ")
        if k:
            s.append(f"The distilled student keeps **{k['mean']:.0%}** of it (min–max {k['min']:.0%} – {k['max']:.0%}). "
                     f"Goal ≥ {quality.KEEP_TEACHER_GAIN_GOAL:.0%}: {_yes(sr['goal_kept_met'])}.\n")
        else:
            s.append("The teacher does not beat bicubic, so the share of its gain is undefined: goal **not met**.\n")
        s.append("- Per seed (PSNR dB): " + "; ".join(
            f"seed {d['seed']}: distilled {d['psnr']:.3f}, alone {a['psnr']:.3f}" for d, a in zip(sr["distilled"], sr["alone"]))
                 + ".\n")
        s.append(f"- These are short runs ({sr['teacher_steps']} teacher steps, {sr['student_steps']} student steps), sized so "
                 "that `make bench` fits in 30 minutes on two cores; the examples in `examples/` train for thousands of "
                 "steps, and longer training changes these numbers (the gaps between teacher, student and bicubic "
                 "usually widen). Two validation images make every mean noisy.\n\n")
        s.append(_img(plot_files, "quality_sr", md_dir, "sr x2 PSNR per seed"))
    if en:
        s.append(f"### enhance: `{en['teacher']['name']}` operator distilled into the students, on `{en['data']['val']}`\n\n")
        s.append(f"The teacher is an image operator without weights; there is no ground truth, so **PSNR / SSIM (RGB) are "
                 "measured against the teacher's output** and the baseline is the unchanged input (identity). "
                 f"Recipe {en.get('recipe', {})}, {en['steps']} steps per run, seeds {en['seeds']}, `teacher_cache: memory` "
                 f"(patch {en['data']['patch_size']}, batch {en['data']['batch_size']}).\n\n")
        rows = [["identity", f"{en['baseline']['psnr']:.2f}", f"{en['baseline']['ssim']:.4f}", "0", "—"]]
        for label, e in en["students"].items():
            rs = e["runs"]
            lat = sorted(r["latency_ms"] for r in rs)[len(rs) // 2]
            rows.append([label, _spread(e["psnr"]), _spread(e["ssim"], digits=4), f"{rs[0]['params']:,}", _ms(lat)])
        tl = [r["teacher_latency_ms"] for e in en["students"].values() for r in e["runs"] if r.get("teacher_latency_ms")]
        rows.append([f"teacher {en['teacher']['name']}", "(reference)", "(reference)", "0",
                     _ms(sorted(tl)[len(tl) // 2]) if tl else "—"])
        s.append(_table(["model", "PSNR dB vs teacher", "SSIM vs teacher", "parameters", "latency ms"], rows))
        s.append(f"\nThese runs are short ({en['steps']} steps); longer training brings the students closer to the operator.\n\n")
    for f in results.get("quality_folders", []):
        s.append(f"### Extra folder `{f['folder']}`\n\n")
        if "sr" in f:
            r = f["sr"]
            rows = [["bicubic", f"{r['bicubic']['psnr']:.2f}", f"{r['bicubic']['ssim']:.4f}"],
                    ["teacher", f"{r['teacher']['psnr']:.2f}", f"{r['teacher']['ssim']:.4f}"],
                    ["student distilled", _spread(r["distilled"]["psnr"]), _spread(r["distilled"]["ssim"], digits=4)],
                    ["student alone", _spread(r["alone"]["psnr"]), _spread(r["alone"]["ssim"], digits=4)]]
            s.append("sr ×2 (the folder's images are the high-resolution targets):\n\n" + _table(["model", "PSNR dB", "SSIM"], rows) + "\n")
        if "enhance" in f:
            r = f["enhance"]
            rows = [["identity", f"{r['identity']['psnr']:.2f}", f"{r['identity']['ssim']:.4f}"]]
            rows += [[k, _spread(v["psnr"]), _spread(v["ssim"], digits=4)] for k, v in r.items() if k != "identity"]
            s.append("enhance (against the operator's output):\n\n" + _table(["model", "PSNR dB", "SSIM"], rows) + "\n")
    return "".join(s)


def _gpu(results: dict) -> str:
    g = results.get("gpu")
    if g is None:
        return ""
    s = ["## 4. GPU\n\n"]
    if not g["available"]:
        s.append("No GPU was available for this run (`torch.cuda.is_available()` is false), so this section has no "
                 "numbers. On a machine with CUDA, `make bench` times the same latency table on the GPU in float32 "
                 "and with bf16 autocast (synchronising before and after every call).\n\n")
        return "".join(s)
    s.append(f"GPU: **{g['name']}**. Same models and sizes as the CPU table, `torch.cuda.synchronize()` around every call.\n\n")
    for label in ("float32", "bf16"):
        rows = g.get(label)
        s.append(f"### {label}\n\n")
        if isinstance(rows, dict):
            s.append(f"Failed: `{rows['error']}`\n\n")
            continue
        s.append(_table(["size", "runs", "hdrnet", "deformable-hdrnet", "reference", "speed-up (median)", "deformable / hdrnet"],
                        [[r["size"], r["times"]["hdrnet"]["runs"], _mm(r["times"]["hdrnet"]), _mm(r["times"]["deformable-hdrnet"]),
                          _mm(r["times"]["reference"]), f"{r['speedup_vs_reference']['median_ms']:.1f}×",
                          f"{r['deformable_ratio']['median_ms']:.2f}×"] for r in rows]) + "\n")
    return "".join(s)


def _method(results: dict) -> str:
    t = results["timings_s"]
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.items())
    return ("## How to reproduce\n\n"
            "```bash\nmake bench                                   # = .venv/bin/python benchmarks/run_all.py\n"
            ".venv/bin/python benchmarks/run_all.py --data path/to/images   # also evaluate on a folder\n"
            ".venv/bin/python benchmarks/run_all.py --smoke --out /tmp/b     # tiny sizes, under a minute\n```\n\n"
            f"Time per section in this run: {parts}. The scripts: `benchmarks/speed.py` (latency, memory, "
            "training step, channels_last, torch.compile), `benchmarks/distill_cost.py` (engine step cost), "
            "`benchmarks/quality.py` (quality runs), `benchmarks/report.py` (this file and the plots). "
            "Run folders of the quality runs: `benchmarks/results/runs/` (not kept in git).\n")
