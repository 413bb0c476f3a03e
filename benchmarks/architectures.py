"""The SR architectures of kdcore-spandrel next to hdrnet and deformable-hdrnet (sr ×2, default params).

    python benchmarks/architectures.py [--smoke] [--steps N] [--out DIR] [--markdown FILE]

Per model: parameters; CPU latency (2 threads, min / median) on a 256×256 input and on a 960×540
input (a 1920×1080 output); and PSNR / SSIM on Set5 and Set14 ×2 (MATLAB-style bicubic inputs, the
papers' convention; the bicubic row beside the published one) after the same short training (L1 on
``builtin:photos``, no teacher). Run alone, it replaces its section of
BENCHMARKS.md (between the ``architectures`` markers); ``run_all.py`` calls it as one section.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import kdcore

MODELS = ["hdrnet", "deformable-hdrnet", "edsr", "rcan", "swinir", "esrgan", "span", "compact", "safmn", "omnisr"]
#: the hdrnet models at the sizing the quality benchmarks use
PARAMS: dict[str, dict] = {"hdrnet": {"net_input_size": 128, "spatial_bins": 8},
                           "deformable-hdrnet": {"net_input_size": 128, "spatial_bins": 8}}

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {"models": MODELS, "sizes": {"256x256": (256, 256), "960x540": (540, 960)},
             "repeats": {"256x256": 2, "960x540": 1}, "warmup": {"256x256": 0, "960x540": 0},
             "steps": 20, "data": {"train": "builtin:photos",
                                    "val": {"Set5": "builtin:set5", "Set14": "builtin:set14"},
                                    "patch_size": 32, "batch_size": 4}},
    "smoke": {"models": ["hdrnet", "compact"], "sizes": {"32x32": (32, 32)},
              "repeats": {"32x32": 2}, "warmup": {"32x32": 1}, "steps": 2, "data": None},
}

START, END = "<!-- architectures:start -->", "<!-- architectures:end -->"

#: the published bicubic ×2 rows (PSNR dB on Y, MATLAB imresize), beside kdcore's
PUBLISHED_BICUBIC_X2 = {"Set5": 33.66, "Set14": 30.24}


_log = common.log


def latency(models: list[str], sizes: dict[str, tuple[int, int]], repeats: dict[str, int],
            warmup: dict[str, int], result: dict[str, Any], save=lambda: None, log=_log) -> None:
    """Fills ``result["params"]`` and ``result["latency"][size][model]`` (wall-clock min / median ms
    of one forward pass), calling ``save`` after each model so a long run keeps what it measured."""
    task = kdcore.Task(kind="sr", scale=2)
    built = {n: kdcore.create("student", n, PARAMS.get(n), task).eval() for n in models}
    result["params"] = {n: sum(p.numel() for p in m.parameters()) for n, m in built.items()}
    for label, (h, w) in sizes.items():
        log(f"  latency {label} input ({len(models)} models, {repeats[label]} runs each)")
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        table = result["latency"].setdefault(label, {})
        for name, model in built.items():
            if name in table:  # kept from an earlier, interrupted run (--resume)
                continue

            def fn(model=model, x=x):
                with torch.inference_mode():
                    model(x)

            table[name] = common.time_interleaved({name: fn}, repeats[label], warmup=warmup[label])[name]
            log(f"    {name}: {table[name]['min_ms']:.0f} ms")
            save()


def quality(models: list[str], data: dict, steps: int, runs: Path, out: dict[str, Any], save=lambda: None,
            log=_log) -> None:
    """Fills ``out[model]``: PSNR / SSIM on the validation data after ``steps`` of L1 training (seed 0)."""
    for name in models:
        if name in out:  # kept from an earlier, interrupted run (--resume)
            continue
        log(f"  training {name}, {steps} steps")
        spec = {"task": {"kind": "sr", "scale": 2}, "data": data,
                "student": {"name": name, "params": PARAMS.get(name, {})}, "losses": [{"name": "l1"}],
                "train": {"steps": steps, "lr": 5e-4, "seed": 0, "warmup_steps": max(1, steps // 20),
                          "log_every": max(1, steps // 4)},
                "output": str(runs / f"arch-{name}")}
        s = kdcore.run(spec, overwrite=True)
        out[name] = {"psnr": s["student"]["psnr"], "ssim": s["student"]["ssim"], "seconds": s["seconds"],
                     "baseline_psnr": s["baseline"]["psnr"],
                     "sets": {k: {"psnr": v["student"]["psnr"], "ssim": v["student"]["ssim"],
                                  "baseline_psnr": v["baseline"]["psnr"], "baseline_ssim": v["baseline"]["ssim"]}
                              for k, v in s.get("val_sets", {}).items()}}
        save()


def measure(cfg: dict[str, Any], runs: Path, data: dict | None = None, log=_log,
            save=lambda result: None, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole section's numbers: parameters, latency (smallest size first), then short-training
    quality; ``save(result)`` is called with the partial result as it grows. ``previous`` (an
    interrupted run's result with the same settings) keeps what it had measured."""
    t0 = time.perf_counter()
    r: dict[str, Any] = {"models": cfg["models"], "sizes": {k: list(v) for k, v in cfg["sizes"].items()},
                         "repeats": cfg["repeats"], "warmup": cfg["warmup"], "steps": cfg["steps"],
                         "data": data or cfg["data"], "params": {}, "latency": {}, "quality": {},
                         "threads": torch.get_num_threads()}
    spent = 0.0
    if previous is not None:
        r["latency"], r["quality"] = previous.get("latency", {}), previous.get("quality", {})
        spent = previous.get("seconds", 0.0)

    def snapshot() -> None:
        r["seconds"] = spent + time.perf_counter() - t0
        r["loadavg"] = common.loadavg()
        save(r)

    r["params"] = {n: sum(p.numel() for p in kdcore.create("student", n, PARAMS.get(n)).parameters())
                   for n in cfg["models"]}
    latency(cfg["models"], cfg["sizes"], cfg["repeats"], cfg["warmup"], r, snapshot, log=log)
    # cheapest first (by the first latency column), so that a run cut short has the most rows
    first = r["latency"].get(next(iter(cfg["sizes"])), {})
    order = sorted(cfg["models"], key=lambda n: first.get(n, {}).get("min_ms", float("inf")))
    quality(order, r["data"], cfg["steps"], runs, r["quality"], snapshot, log=log)
    snapshot()
    return r


def markdown(r: dict[str, Any]) -> str:
    """The BENCHMARKS.md section, between markers so that a later run can replace it."""
    labels = list(r["sizes"])
    first = next(iter(r["quality"].values()), {})
    sets = list(first.get("sets") or {}) or ["val"]
    head = "| model | params | " + " | ".join(
        f"{label} input, ms" + (" (1080p out)" if label == "960x540" else "") for label in labels
    ) + " | " + " | ".join(f"{n} PSNR dB | {n} SSIM" for n in sets) + " |"
    rows = [head, "|" + "---|" * (2 + len(labels) + 2 * len(sets))]
    base = first.get("baseline_psnr")
    if first.get("sets"):
        cells = ["bicubic (published)", "0"] + ["-"] * len(labels)
        for n in sets:
            v = first["sets"][n]
            published = PUBLISHED_BICUBIC_X2.get(n)
            cells += [f"{v['baseline_psnr']:.2f}" + (f" ({published:.2f})" if published else ""),
                      f"{v['baseline_ssim']:.4f}"]
        rows.append("| " + " | ".join(cells) + " |")
    for name in r["models"]:
        cells = [f"`{name}`", f"{r['params'][name]:,}"]
        for label in labels:
            t = r["latency"].get(label, {}).get(name)
            if t is None:
                cells.append("not measured")
            elif t["runs"] == 1:
                cells.append(f"{t['min_ms']:,.0f} (1 run)")
            else:
                cells.append(f"{t['min_ms']:,.0f} / {t['median_ms']:,.0f}")
        q = r["quality"].get(name)
        for n in sets:
            v = (q.get("sets") or {}).get(n, q) if q else None
            cells += [f"{v['psnr']:.2f}", f"{v['ssim']:.4f}"] if v else ["-", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    d = r["data"]
    runs = ", ".join(f"{label}: {r['repeats'][label]} run{'s' if r['repeats'][label] > 1 else ''}"
                     + (f" after {r['warmup'][label]} warm-up" if r['warmup'][label] else "") for label in labels)
    note = (
        f"sr ×2, every model at its default params (hdrnet and deformable-hdrnet at the quality benchmarks' "
        f"grid: {PARAMS['hdrnet']}). Latency: one forward pass on the CPU, {r['threads']} threads, "
        f"wall-clock **min / median** ({runs}), models one after the other in one process; load average "
        f"{r['loadavg']} at the end"
        + (" (the machine was shared, so medians are noisy; compare ratios within a column). "
           if r["loadavg"] and r["loadavg"][0] > r["threads"] + 0.5 else
           " (this benchmark's own 2 threads; without a warm-up run the first call of a model, which includes "
           "one-time set-up such as hdrnet's kernel compilation, shows in the median). ")
        + f"PSNR / SSIM (Y channel, the SR convention, MATLAB-style bicubic inputs) on "
        f"{', '.join(f'`{v}`' for v in (d['val'].values() if isinstance(d['val'], dict) else [d['val']]))} "
        f"after **only {r['steps']} steps** of L1 "
        f"training on `{d['train']}` (patch {d['patch_size']}, batch {d['batch_size']}, lr 5e-4, seed 0, no "
        "teacher): a short, equal budget that shows how fast each starts to learn, not what it reaches"
        + (f"; bicubic gives {base:.2f} dB (first row: kdcore's bicubic, the published value in brackets)."
           if base is not None else ".")
    )
    missing = [f"{label} latency of {', '.join(n for n in r['models'] if n not in r['latency'].get(label, {}))}"
               for label in labels if any(n not in r["latency"].get(label, {}) for n in r["models"])]
    if any(n not in r["quality"] for n in r["models"]):
        missing.append(f"the training of {', '.join(n for n in r['models'] if n not in r['quality'])}")
    if missing:
        note += (f"\n\n**Incomplete:** {'; '.join(missing)} did not run in the time this measurement had "
                 "(`python benchmarks/architectures.py --resume` continues it).")
    return (f"{START}\n## SR architectures (kdcore-spandrel)\n\n{note}\n\n" + "\n".join(rows)
            + f"\n\nMeasured in {r['seconds'] / 60:.0f} minutes by `python benchmarks/architectures.py`.\n{END}\n")


def replace_section(text: str, section: str) -> str:
    """``text`` with its architectures section replaced by ``section`` (appended when absent)."""
    return common.replace_marked(text, section, START, END)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--out", type=Path, default=common.HERE / "results")
    parser.add_argument("--markdown", type=Path, default=None, help="default: BENCHMARKS.md (OUT/ with --smoke)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="keep what OUT/architectures.json already holds")
    parser.add_argument("--render", action="store_true", help="only rewrite the section from OUT/architectures.json")
    args = parser.parse_args(argv)
    cfg = dict(CONFIGS["smoke" if args.smoke else "full"])
    if args.steps:
        cfg["steps"] = args.steps
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    data = None
    if cfg["data"] is None:
        from run_all import _smoke_data

        data = _smoke_data(args.out / "smoke-data")
    md = args.markdown or (args.out / "BENCHMARKS.md" if args.smoke else common.ROOT / "BENCHMARKS.md")

    def save(result: dict[str, Any]) -> None:
        common.write_json(args.out / "architectures.json", result)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(replace_section(md.read_text() if md.exists() else "", markdown(result)))

    if args.render:
        import json

        save_md = json.loads((args.out / "architectures.json").read_text())
        md.write_text(replace_section(md.read_text() if md.exists() else "", markdown(save_md)))
        return 0
    previous = None
    if args.resume and (args.out / "architectures.json").exists():
        import json

        previous = json.loads((args.out / "architectures.json").read_text())
        if previous.get("steps") != cfg["steps"] or previous.get("sizes") != {k: list(v) for k, v in cfg["sizes"].items()}:
            previous = None  # other settings: nothing to keep
    measure(cfg, args.out / "runs", data, save=save, previous=previous)
    _log(f"wrote {md} and {args.out / 'architectures.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
