"""Inference speed of HDRNet's fast path and of the straightforward reference path.

Usage: ``python plugins/hdrnet/benchmarks/speed.py [--threads 2] [--runs 7] [--guide conv] [--no-reference]``.
Prints min and median milliseconds per image (wall time, or CPU time with ``--cpu-time``) (batch 1, float32, eval, ``torch.inference_mode``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import kdcore
import torch

from kdcore_hdrnet import HDRNet
from kdcore_hdrnet.reference import ReferenceHDRNet

SIZES = {"512x512": (512, 512), "1080p": (1080, 1920), "4K": (2160, 3840)}


def timings(model: torch.nn.Module, x: torch.Tensor, runs: int, clock=time.perf_counter) -> tuple[float, float]:
    """(min, median) milliseconds over ``runs`` calls after one warm-up call."""
    model(x)
    seconds = []
    for _ in range(runs):
        start = clock()
        model(x)
        seconds.append(clock() - start)
    return min(seconds) * 1e3, statistics.median(seconds) * 1e3


def main() -> None:
    """Measures every size and prints one line per size and path."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--guide", default="pointwise-curve", choices=["pointwise-curve", "conv"])
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="report process CPU time instead of wall time (steadier on a shared machine; "
        "with N threads it is the sum over the threads)",
    )
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HDRNet(HDRNet.Params(guide=args.guide), kdcore.Task(kind="enhance")).eval()
    reference = ReferenceHDRNet(model)
    with torch.inference_mode():
        for name in args.sizes:
            x = torch.rand(1, 3, *SIZES[name])
            clock = time.process_time if args.cpu_time else time.perf_counter
            fast = timings(model, x, args.runs, clock)
            line = f"{args.guide:16s} {name:8s} fast      min {fast[0]:7.1f} ms  median {fast[1]:7.1f} ms"
            print(line, flush=True)
            if not args.no_reference:
                ref = timings(reference, x, max(3, args.runs // 2), clock)
                print(f"{args.guide:16s} {name:8s} reference min {ref[0]:7.1f} ms  median {ref[1]:7.1f} ms", flush=True)


if __name__ == "__main__":
    main()
