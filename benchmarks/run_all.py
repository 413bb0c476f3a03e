"""Runs every benchmark and writes BENCHMARKS.md, raw JSON and plots (``make bench``).

    python benchmarks/run_all.py [--data FOLDER]... [--smoke] [--out DIR] [--markdown FILE]

Sections: speed (latency, baseline, memory, sr, training step, channels_last, torch.compile),
PyTorch eager vs onnxruntime latency of exported students (and which architectures export),
distillation step cost in the training engine, quality (sr ×2 distillation vs alone; enhance with
an operator teacher), the KD table (an EDSR teacher, two students, every distillation recipe against
the student alone, several seeds), and GPU latency when CUDA is available. Sized to finish in under 30 minutes
on two CPU cores; ``--smoke`` runs the same code on tiny sizes in well under a minute.
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

import kdcore  # noqa: E402

import common  # noqa: E402
import architectures  # noqa: E402
import distill_cost  # noqa: E402
import kd_table  # noqa: E402
import onnx_latency  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402
import speed  # noqa: E402

#: the full configuration (``make bench``) and the ``--smoke`` one
CONFIGS: dict[str, dict[str, Any]] = {
    "full": {
        "sizes": common.SIZES,
        "repeats": {"512x512": 9, "1080p": 7, "4K": 5},
        "sr_size": {"1080p": (1080, 1920)},
        "sr_repeats": 7,
        "channels_last_sizes": {"512x512": (512, 512), "1080p": (1080, 1920)},
        "channels_last_repeats": 5,
        "train_step": {"batch": 8, "crop": 256, "repeats": 5},
        "memory_hw": (2160, 3840),
        "memory_models": ["hdrnet", "deformable-hdrnet", "reference"],
        "compile_sizes": {"512x512": (512, 512)},
        "compile_repeats": 5,
        "compile_timeout_s": 120,
        "data": {"train": "builtin:photos", "val": "builtin:photos-val", "patch_size": 96, "batch_size": 8},
        "teacher_steps": 1500,
        "student_steps": 600,
        "enhance_steps": 1500,
        "enhance_seeds": [0],
        "retouch_steps": 1500,
        "fused_repeats": 5,
        "seeds": [0, 1, 2],
        "cost_steps": 24,
        "cost_skip": 6,
        "cost_rounds": 1,
        "gpu_repeats": 20,
    },
    "smoke": {
        "sizes": common.SMOKE_SIZES,
        "repeats": {k: 2 for k in common.SMOKE_SIZES},
        "sr_size": {"96x128": (96, 128)},
        "sr_repeats": 1,
        "channels_last_sizes": {"64x64": (64, 64)},
        "channels_last_repeats": 1,
        "train_step": {"batch": 2, "crop": 64, "repeats": 1},
        "memory_hw": (128, 128),
        "memory_models": ["hdrnet"],
        "compile_sizes": {"64x64": (64, 64)},
        "compile_repeats": 1,
        "compile_timeout_s": 2,
        "data": None,  # a tiny folder made on the fly
        "teacher_steps": 2,
        "student_steps": 2,
        "enhance_steps": 2,
        "enhance_seeds": [0],
        "retouch_steps": 2,
        "fused_repeats": 1,
        "seeds": [0],
        "cost_steps": 2,
        "cost_skip": 0,
        "cost_rounds": 1,
        "gpu_repeats": 2,
    },
}


_log = common.log


def _smoke_data(folder: Path) -> dict:
    """Three small crops of built-in photos, as training and validation data for ``--smoke``."""
    from kdcore.data import save_image
    from kdcore.data.builtin import load_photo

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "rocket"):
        save_image(load_photo(name)[:, 40:104, 60:140], folder / f"{name}.png")
    return {"train": str(folder), "val": str(folder), "patch_size": 32, "batch_size": 2}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmarks; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[], metavar="FOLDER",
                        help="also evaluate the quality runs' models on this image folder (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1-2 repeats, few steps")
    parser.add_argument("--out", type=Path, default=common.HERE / "results", help="results folder")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="the report (default: BENCHMARKS.md at the repository root; OUT/BENCHMARKS.md with --smoke)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "compile", "memory", "quality", "cost", "gpu", "onnx", "kd", "architectures"],
                        help="sections to leave out")
    args = parser.parse_args(argv)
    for folder in args.data:
        if not Path(folder).is_dir():
            print(f"--data: {folder} is not a folder", file=sys.stderr)
            return 2
    cfg = CONFIGS["smoke" if args.smoke else "full"]
    markdown = args.markdown or (args.out / "BENCHMARKS.md" if args.smoke else common.ROOT / "BENCHMARKS.md")
    out = args.out
    runs_dir = out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass

    t_start = time.perf_counter()
    results: dict[str, Any] = {"mode": "smoke" if args.smoke else "full", "machine": common.machine_info(args.threads),
                               "loadavg_start": common.loadavg(), "config": {k: v for k, v in cfg.items()},
                               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "timings_s": {}}
    _log(f"{results['machine']['cpu']}, {results['machine']['cores']} cores, {args.threads} threads, "
         f"torch {torch.__version__}, load {results['loadavg_start']}")

    def section(name: str):
        results["timings_s"][name] = time.perf_counter()

    def done(name: str):
        results["timings_s"][name] = time.perf_counter() - results["timings_s"][name]
        _log(f"{name}: {results['timings_s'][name]:.0f} s")
        common.write_json(out / "results.json", results)

    if "speed" not in args.skip:
        section("speed")
        _log("latency (enhance)")
        rows = []
        for name, hw in cfg["sizes"].items():
            rows += speed.latency_table({name: hw}, cfg["repeats"][name])
        results["latency"] = rows
        _log("latency (sr ×2)")
        results["latency_sr2"] = speed.latency_table(cfg["sr_size"], cfg["sr_repeats"],
                                                     task=kdcore.Task(kind="sr", scale=2))
        _log("channels_last")
        results["channels_last"] = speed.channels_last_table(cfg["channels_last_sizes"], cfg["channels_last_repeats"])
        _log("training step")
        ts = cfg["train_step"]
        results["train_step"] = speed.train_step_table(ts["batch"], ts["crop"], ts["repeats"])
        _log("fused CPU inference targets (one process)")
        results["fused_targets"] = speed.fused_targets(cfg["fused_repeats"], smoke=args.smoke)
        done("speed")
    if "memory" not in args.skip:
        section("memory")
        _log("peak memory (fresh process per model)")
        results["memory"] = {"hw": list(cfg["memory_hw"]),
                             "rows": speed.peak_memory(cfg["memory_models"], cfg["memory_hw"], args.threads)}
        done("memory")
    if "compile" not in args.skip:
        section("compile")
        _log(f"torch.compile (fresh process, at most {cfg['compile_timeout_s']} s)")
        results["compile"] = speed.compile_attempt(cfg["compile_sizes"], cfg["compile_repeats"], args.threads,
                                                   cfg["compile_timeout_s"])
        done("compile")
    if "onnx" not in args.skip:
        section("onnx")
        _log("ONNX export: PyTorch eager vs onnxruntime")
        results["onnx_latency"] = onnx_latency.run(args.smoke, args.threads, out, log=_log, probe=not args.smoke)
        done("onnx")
    if "gpu" not in args.skip:
        section("gpu")
        results["gpu"] = gpu_section(cfg)
        done("gpu")

    data = cfg["data"] or _smoke_data(out / "smoke-data")
    sr = enhance = None
    if "quality" not in args.skip:
        section("quality_sr")
        _log("quality: sr ×2")
        sr = quality.sr_quality(data, runs_dir, cfg["teacher_steps"], cfg["student_steps"], cfg["seeds"], log=_log)
        results["quality_sr"] = sr
        done("quality_sr")
    if "cost" not in args.skip:
        section("cost")
        _log("distillation step cost")
        if sr is not None:
            teacher = {"name": "hdrnet", "params": sr["teacher"]["params_spec"], "checkpoint": sr["teacher"]["run"]}
        else:  # no trained teacher: a short one, only for timing
            teacher_dir = runs_dir / "cost-teacher"
            params = {"channel_multiplier": 2, **quality.SMALL_GRID}
            kdcore.run({"task": {"kind": "sr", "scale": 2}, "data": data,
                        "student": {"name": "hdrnet", "params": params}, "losses": [{"name": "l1"}],
                        "train": {"steps": 2}, "output": str(teacher_dir)}, overwrite=True)
            teacher = {"name": "hdrnet", "params": params, "checkpoint": str(teacher_dir)}
        results["distill_cost"] = distill_cost.step_cost(
            teacher, {"name": "deformable-hdrnet", "params": dict(quality.SMALL_GRID)}, {"kind": "sr", "scale": 2},
            data, cfg["cost_steps"], runs_dir / "cost", cfg["cost_skip"], cfg["cost_rounds"])
        done("cost")
    if "quality" not in args.skip:
        section("quality_enhance")
        _log("quality: enhance (local-contrast teacher)")
        # --smoke: the tiny crops keep their own patch size
        recipe = {**quality.ENHANCE_RECIPE, "data": {}} if args.smoke else None
        unsharp_recipe = ({**recipe, "student_params": quality.OPERATOR_PARAMS["unsharp-mask"]}
                          if recipe is not None else None)
        enhance = quality.enhance_quality(data, runs_dir, cfg["enhance_steps"], cfg["enhance_seeds"], log=_log,
                                          recipe=recipe)
        results["quality_enhance"] = enhance
        _log("quality: enhance (unsharp-mask teacher, hdrnet)")
        results["quality_enhance_unsharp"] = quality.enhance_quality(
            data, runs_dir, cfg["enhance_steps"], cfg["enhance_seeds"], operator="unsharp-mask", log=_log,
            students=("hdrnet",), recipe=unsharp_recipe)
        if not args.smoke:  # the built-in photos are needed for the pairs
            _log("quality: paired retouch (tone curve + local-contrast), direct training loop")
            results["quality_retouch"] = quality.paired_retouch_quality(cfg["retouch_steps"], log=_log)
        done("quality_enhance")
        if args.data:
            section("quality_folders")
            results["quality_folders"] = [quality.evaluate_folder(f, sr, enhance) for f in args.data]
            done("quality_folders")

    if "kd" not in args.skip:
        section("kd_table")
        _log("KD table: an edsr teacher, two students, distilled vs alone per seed")
        results["kd_table"] = kd_table.measure(kd_table.CONFIGS["smoke" if args.smoke else "full"], runs_dir,
                                               None if cfg["data"] else data, log=_log)
        done("kd_table")

    if "architectures" not in args.skip:
        section("architectures")
        _log("SR architectures (kdcore-spandrel): parameters, latency, short-training PSNR")
        results["architectures"] = architectures.measure(architectures.CONFIGS["smoke" if args.smoke else "full"],
                                                         runs_dir, None if cfg["data"] else data, log=_log)
        done("architectures")

    results["loadavg_end"] = common.loadavg()
    results["total_s"] = time.perf_counter() - t_start
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    common.write_json(out / "results.json", results)
    plots = report.plots(results, out)
    text = report.markdown(results, plots, markdown.parent, out)
    if "fused_targets" in results:
        text += "\n" + speed.fused_targets_markdown(results["fused_targets"], _operator_psnr(results))
    if "kd_table" in results:
        text = kd_table.replace_section(text, kd_table.markdown(results["kd_table"]))
    if "architectures" in results:
        text = architectures.replace_section(text, architectures.markdown(results["architectures"]))
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text)
    _log(f"wrote {markdown} and {out / 'results.json'} in {results['total_s']:.0f} s")
    return 0


def _operator_psnr(results: dict[str, Any]) -> dict[str, float]:
    """hdrnet's PSNR against each operator / retouch, for the fused-targets table."""
    out = {}
    for key, label in (("quality_enhance", "hdrnet vs `local-contrast`"),
                       ("quality_enhance_unsharp", "hdrnet vs `unsharp-mask`")):
        if key in results:
            out[label + " on photos-val"] = results[key]["students"]["hdrnet"]["psnr"]["mean"]
    if "quality_retouch" in results:
        out["hdrnet on the paired retouch (direct training loop)"] = results["quality_retouch"]["psnr"]
    return out


def gpu_section(cfg: dict) -> dict[str, Any]:
    """The latency table on CUDA in float32 and with bf16 autocast, when a GPU is present."""
    if not torch.cuda.is_available():
        return {"available": False}
    device = torch.device("cuda")
    sizes = common.SIZES if cfg is CONFIGS["full"] else cfg["sizes"]
    result: dict[str, Any] = {"available": True, "name": torch.cuda.get_device_name(0)}
    for label, dtype in (("float32", None), ("bf16", torch.bfloat16)):
        try:
            result[label] = speed.latency_table(sizes, cfg["gpu_repeats"], device=device, autocast=dtype)
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            result[label] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
    torch.cuda.empty_cache()
    return result


if __name__ == "__main__":
    sys.exit(main())
