"""PyTorch eager vs onnxruntime (CPU) latency of exported students, and which architectures export.

    python benchmarks/onnx_latency.py [--smoke] [--threads 2] [--out DIR]

Models: ``hdrnet`` and ``deformable-hdrnet`` (default params, random weights: latency does not
depend on the values) and two spandrel architectures built directly from ``spandrel.architectures``
at small configs (SPAN with 16 feature channels, SRVGGNetCompact with 16 features and 4 convs).
Each model is exported with ``kdcore.onnx.export_student`` (so every timed ONNX model has
passed the verification), then PyTorch (``torch.inference_mode()``) and onnxruntime are timed
interleaved in one process at 512×512 and 1080p (enhance, ×1) and ×2 to 1080p (960×540 input).
PyTorch runs HDRNet's fused CPU kernel (numba); the exported HDRNet graph is its tiled export
path (``kdcore_hdrnet.tiled``: guide, slice and apply as matrix products in a loop over row
blocks). ``--models hdrnet deformable-hdrnet`` times only those.

``probe_architectures()`` tries the export of every spandrel architecture the kdcore-spandrel
plugin wraps (tiny configs) and records which fail and why.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Both runtimes wait passively between parallel regions (onnxruntime: no spinning, see kdcore.onnx.runtime):
# on a shared machine PyTorch's spinning OpenMP threads cost it several times its compute time.
# Set only when this script starts the process (run_all imports torch before; importers keep their env).
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import kdcore
from kdcore.onnx import ExportError, export_student, load_onnx

#: (label, input (height, width), scale)
CASES: list[tuple[str, tuple[int, int], int]] = [
    ("512x512 enhance", (512, 512), 1),
    ("1080p enhance", (1080, 1920), 1),
    ("x2 to 1080p", (540, 960), 2),
]
SMOKE_CASES: list[tuple[str, tuple[int, int], int]] = [("x2 to 64x96", (32, 48), 2)]
REPEATS = {"512x512 enhance": 5, "1080p enhance": 5, "x2 to 1080p": 5}


def _spandrel(name: str, scale: int) -> torch.nn.Module:
    """A small spandrel architecture (random weights) for ``scale``."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.SPAN import SPAN

    if name == "span":
        return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=scale)
    if name == "compact":
        return Compact(num_feat=16, num_conv=4, upscale=scale)
    raise ValueError(name)


def build(name: str, scale: int) -> torch.nn.Module:
    """One benchmarked model for a task of ``scale`` (1 = enhance)."""
    if name in ("hdrnet", "deformable-hdrnet"):
        task = kdcore.Task(kind="enhance" if scale == 1 else "sr", scale=scale)
        return kdcore.create("student", name, None, task).eval()
    return _spandrel(name, scale).eval()


MODELS = ["hdrnet", "deformable-hdrnet", "span", "compact"]
SMOKE_MODELS = ["hdrnet", "compact"]


def _torch_call(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def fn():
        with torch.inference_mode():
            return model(x)
    return fn


def latency_table(cases: list[tuple[str, tuple[int, int], int]], repeats: dict[str, int] | int, threads: int,
                  folder: Path, log: Callable[[str], None] = print,
                  models: list[str] = MODELS) -> list[dict[str, Any]]:
    """Rows of {case, model, torch, onnxruntime, ratio} with min/median ms, timed side by side."""
    rows = []
    for label, (h, w), scale in cases:
        task = kdcore.Task(kind="enhance" if scale == 1 else "sr", scale=scale)
        n = repeats if isinstance(repeats, int) else repeats[label]
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        for name in models:
            model = build(name, scale)
            path = folder / f"{name}-x{scale}.onnx"
            export_student(model, task, path, name=name)  # every run: a file left by older code would mislead
            onnx_model = load_onnx(path, threads)
            times = common.time_interleaved({"torch": _torch_call(model, x), "onnxruntime": _torch_call(onnx_model, x)}, n)
            row = {"case": label, "input": [h, w], "scale": scale, "model": name,
                   "params": sum(p.numel() for p in model.parameters()), **times,
                   "ratio_median": times["onnxruntime"]["median_ms"] / times["torch"]["median_ms"]}
            log(f"{label:>16} {name:>18}: torch {times['torch']['median_ms']:8.1f} ms, "
                f"onnxruntime {times['onnxruntime']['median_ms']:8.1f} ms (median of {n})")
            rows.append(row)
    return rows


def probe_architectures() -> list[dict[str, Any]]:
    """Export and verification of each spandrel architecture kdcore-spandrel wraps (tiny, ×2)."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.RCAN import RCAN
    from spandrel.architectures.SAFMN import SAFMN
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "rcan": lambda: RCAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4, rgb_range=1),
        "swinir": lambda: SwinIR(upscale=2, img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                                 upsampler="pixelshuffledirect", drop_path_rate=0.0),
        "esrgan": lambda: ESRGAN(num_filters=8, num_blocks=1, scale=2),
        "span": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
        "compact": lambda: Compact(num_feat=8, num_conv=2, upscale=2),
        "safmn": lambda: SAFMN(dim=8, n_blocks=1, upscaling_factor=2),
        "omnisr": lambda: OmniSR(num_feat=16, window_size=4, up_scale=2),
    }
    task = kdcore.Task(kind="sr", scale=2)
    rows = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, make in builders.items():
            model = make().eval()
            t0 = time.perf_counter()
            try:
                rep = export_student(model, task, Path(tmp) / f"{name}.onnx", name=name, sizes=((1, 37, 53), (2, 32, 48)))
                rows.append({"architecture": name, "exports": True, "max_abs_diff": rep["max_abs_diff"],
                             "seconds": round(time.perf_counter() - t0, 2)})
            except ExportError as exc:
                row = {"architecture": name, "exports": False, "reason": str(exc),
                       "seconds": round(time.perf_counter() - t0, 2)}
                try:  # does torch.export (the dynamo exporter) do better?
                    rep = export_student(model, task, Path(tmp) / f"{name}-dynamo.onnx", name=name,
                                         sizes=((1, 37, 53), (2, 32, 48)), exporter="dynamo")
                    row["dynamo"] = f"exports with --exporter dynamo (max abs diff {rep['max_abs_diff']:.1e})"
                except Exception as exc2:  # noqa: BLE001 - recorded
                    row["dynamo"] = f"--exporter dynamo fails too: {str(exc2).splitlines()[0][:200]}"
                rows.append(row)
    rows.append({"architecture": "edsr", "exports": None,
                 "reason": "not in spandrel 0.4.2's architectures (kdcore-spandrel implements it itself)"})
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: latency table and the architecture export probe."""
    m = result["machine"]
    lines = [
        "## ONNX export: PyTorch eager vs onnxruntime (CPU)",
        "",
        (f"`benchmarks/onnx_latency.py`: {m['cpu']}, {m['threads']} threads (torch and onnxruntime), torch "
         f"{m['torch']}, onnxruntime {result['onnxruntime']}; load average {result['loadavg_start']} at the start, "
         f"{result['loadavg_end']} at the end. One 1×3×H×W input; PyTorch in `torch.inference_mode()`, onnxruntime "
         f"(no thread spinning; OMP_WAIT_POLICY={result.get('omp_wait_policy')} for PyTorch) on the file "
         "`kdcore export` writes, each model verified first; calls interleaved in one process, ms (min / median)."),
        "",
        "| case | model | params | PyTorch min | PyTorch median | onnxruntime min | onnxruntime median | ort / torch (median) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["latency"]:
        t, o = r["torch"], r["onnxruntime"]
        lines.append(f"| {r['case']} | {r['model']} | {r['params']:,} | {t['min_ms']:.1f} | {t['median_ms']:.1f} | "
                     f"{o['min_ms']:.1f} | {o['median_ms']:.1f} | {r['ratio_median']:.2f} |")
    if result.get("probe"):
        lines += ["", ("Which spandrel architectures export (tiny configs, ×2, verified at 1×37×53 and 2×32×48, "
                       "tolerance 1e-4):"), "", "| architecture | exports | max abs diff / reason |", "|---|---|---|"]
        for r in result["probe"]:
            verdict = {True: "yes", False: "no", None: "-"}[r["exports"]]
            detail = f"{r['max_abs_diff']:.1e}" if r["exports"] else r["reason"].replace("|", "/")[:200]
            if r.get("dynamo"):
                detail += f"; {r['dynamo']}".replace("|", "/")
            lines.append(f"| {r['architecture']} | {verdict} | {detail} |")
    return "\n".join(lines) + "\n"


def run(smoke: bool, threads: int, out: Path, log: Callable[[str], None] = print,
        probe: bool = True, models: list[str] | None = None) -> dict[str, Any]:
    """The whole benchmark; results also go to ``OUT/onnx_latency.json``."""
    import onnxruntime

    torch.set_num_threads(threads)
    folder = out / "onnx-models"
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": common.machine_info(threads), "onnxruntime": onnxruntime.__version__,
                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                              "loadavg_start": common.loadavg()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["latency"] = latency_table(SMOKE_CASES if smoke else CASES, 1 if smoke else REPEATS, threads, folder, log,
                                          models or (SMOKE_MODELS if smoke else MODELS))
        if probe:
            result["probe"] = probe_architectures()
    result["loadavg_end"] = common.loadavg()
    common.write_json(out / "onnx_latency.json", result)
    (out / "onnx_latency.md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=common.HERE / "results")
    parser.add_argument("--no-probe", action="store_true", help="skip the spandrel export probe")
    parser.add_argument("--models", nargs="+", choices=MODELS, help="time only these models")
    args = parser.parse_args(argv)
    result = run(args.smoke, args.threads, args.out, probe=not args.no_probe, models=args.models)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
