"""Eval latency of ``hdrnet`` vs ``deformable-hdrnet`` in both slicing modes (same run, interleaved, CPU).

Run: ``python plugins/deformable-hdrnet/benchmarks/bench_latency.py [--threads 2] [--repeats 5]``
The deformable model's new parts are perturbed away from zero so no shortcut applies.
"""

from __future__ import annotations

import argparse
import statistics
import time

import kdcore
import torch
from kdcore_hdrnet import HDRNet

from kdcore_deformable_hdrnet.model import DeformableHDRNet

SIZES = ((512, 512), (1080, 1920))


def _once(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(x)
    return time.perf_counter() - start


def main() -> None:
    """Prints min/median eval milliseconds per model and size, and ratios to hdrnet."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kind", choices=("enhance", "sr"), default="enhance")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = kdcore.Task(kind=args.kind, scale=1 if args.kind == "enhance" else 2)
    base = HDRNet(task=task).eval()
    models: dict[str, torch.nn.Module] = {"hdrnet": base}
    variants = {
        "deformable-lattice3": {"slice_offset_mode": "lattice", "slice_lattice": 3},
        "deformable-lattice1": {"slice_offset_mode": "lattice", "slice_lattice": 1},
        "deformable-pixel": {"slice_offset_mode": "pixel"},
    }
    for label, overrides in variants.items():
        params = DeformableHDRNet.Params(**overrides)
        deform = DeformableHDRNet(params, task=task).eval()
        deform.load_state_dict(base.state_dict(), strict=False)
        with torch.no_grad():
            for name, p in deform.named_parameters():
                if "offset" in name:
                    p.normal_(std=0.01)
        models[label] = deform
    print(f"{args.kind}, {args.threads} threads, min/median of {args.repeats} (ms)")
    for h, w in SIZES:
        # sr: the output is h×w, so the input is h/2×w/2.
        x = torch.rand(1, 3, h // task.scale, w // task.scale)
        times: dict[str, list[float]] = {name: [] for name in models}
        for model in models.values():
            _once(model, x)  # warm-up
        for _ in range(args.repeats):
            for name, model in models.items():
                times[name].append(_once(model, x))
        print(f"{w}x{h}:")
        base_min, base_med = min(times["hdrnet"]), statistics.median(times["hdrnet"])
        for name, t in times.items():
            print(
                f"  {name:20s} min {min(t) * 1e3:7.1f}  median {statistics.median(t) * 1e3:7.1f}"
                f"  ratio min {min(t) / base_min:.2f}  median {statistics.median(t) / base_med:.2f}"
            )


if __name__ == "__main__":
    main()
