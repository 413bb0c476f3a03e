"""Forward+backward time of the two deformable convolution paths (CPU, 2 threads by default).

Run: ``python plugins/deformable-hdrnet/benchmarks/bench_deform_conv.py [--size 128] [--threads 2]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdcore_deformable_hdrnet.deform_conv import deform_conv2d


def time_impl(impl: str, size: int, channels: int, repeats: int) -> list[float]:
    """Seconds per forward+backward pass of one 3×3 modulated deformable conv, ``repeats`` times."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, size, size, generator=gen).requires_grad_()
    offset = torch.randn(1, 18, size, size, generator=gen).requires_grad_()
    mask = torch.rand(1, 9, size, size, generator=gen).requires_grad_()
    weight = torch.randn(channels, channels, 3, 3, generator=gen).requires_grad_()
    bias = torch.randn(channels, generator=gen).requires_grad_()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, impl=impl)  # type: ignore[arg-type]
        out.sum().backward()
        if i:  # the first pass warms up
            times.append(time.perf_counter() - start)
        for t in (x, offset, mask, weight, bias):
            t.grad = None
    return times


def main() -> None:
    """Prints min/median forward+backward seconds of both implementations."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"1x{args.channels}x{args.size}x{args.size}, 3x3, {args.threads} threads, fwd+bwd")
    for impl in ("grid_sample", "torchvision"):
        t = time_impl(impl, args.size, args.channels, args.repeats)
        print(f"{impl:12s} min {min(t) * 1e3:8.1f} ms  median {statistics.median(t) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
