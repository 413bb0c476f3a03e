"""The shipped CRAFT ×4 checkpoint on Set5 / Set14, measured independently of kdcore's data code.

    python benchmarks/craft_teacher_psnr.py [--data DIR] [--sets Set5 Set14] [--threads 2]
                                            [--out benchmarks/results/craft_teacher_psnr.json]

The protocol of the SR papers' tables: HR cropped to a multiple of 4; LR made with a MATLAB-style
bicubic ``imresize`` (cubic kernel a = -0.5, widened by the scale when shrinking, 8-bit LR); the
output rounded to 8 bits; PSNR on the Y channel of ITU-R BT.601 (MATLAB's ``rgb2ycbcr``) with 4
pixels shaved at every border. The network is spandrel's detection of ``weights/craft_x4.pth``,
run on the LR as it is: CRAFT pads its input itself (mirrored, to the next multiple of its
16-pixel window, as the authors' inference script). ``--pad reflect`` first pads the LR to a
multiple of 16 (reflect, bottom and right), as a generic wrapper following spandrel's size
requirements would: CRAFT then adds its own 16 pixels on top and loses 0.03 dB on Set5. Also
prints the bicubic baseline (MATLAB-style ×4 upscaling of the same LR), which should match the
published 28.42 dB (Set5) and 26.00 dB (Set14), and the CPU time per image.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from spandrel import ModelLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SCALE = 4


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel; a = -0.5 is MATLAB's."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1) + (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * (
        (ax > 1) & (ax <= 2)
    )


def _weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``contributions``: per output pixel, the input indices (0-based, mirrored) and weights."""
    width = 4.0
    if scale < 1:  # antialiasing: the kernel is stretched by 1/scale when shrinking
        width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric ("mirror") boundary as MATLAB: index sequence 1..n, n..1
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx - 1, 2 * in_len).astype(np.int64)]
    keep = np.any(w != 0, axis=0)
    return idx[:, keep], w[:, keep]


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of an H×W×C uint8 image; uint8 out.

    Rows first, then columns (MATLAB's order for equal scales), in float64, rounded once at the end.
    """
    h, w = img.shape[:2]
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    x = img.astype(np.float64)
    idx, wt = _weights(h, out_h, scale)
    x = np.einsum("ok,okwc->owc", wt, x[idx])
    idx, wt = _weights(w, out_w, scale)
    x = np.einsum("ok,hokc->hoc", wt, x[:, idx])
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def y_channel(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of a uint8 RGB image, in [16, 235], float64."""
    x = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def psnr_y(a: np.ndarray, b: np.ndarray, shave: int = SCALE) -> float:
    """Y-channel PSNR of two uint8 RGB images, ``shave`` pixels cropped at every border."""
    ya = y_channel(a)[shave:-shave, shave:-shave]
    yb = y_channel(b)[shave:-shave, shave:-shave]
    mse = float(np.mean((ya - yb) ** 2))
    return 10 * math.log10(255.0**2 / mse)


def run_model(model: torch.nn.Module, lr: np.ndarray, multiple: int) -> np.ndarray:
    """The network on an 8-bit LR image (padded to ``multiple`` when above 1, cropped back); 8-bit output."""
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255.0
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    with torch.inference_mode():
        y = model(x)[..., : h * SCALE, : w * SCALE].clamp(0, 1)
    return (y[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=common.ROOT / "weights" / "craft_x4.pth")
    parser.add_argument(
        "--data", type=Path, default=Path("/work/shared/data"), help="folder holding Set5/ and Set14/ (PNG)"
    )
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pad",
        choices=["none", "reflect"],
        default="none",
        help="none: the network's own padding; reflect: first pad to spandrel's multiple_of",
    )
    parser.add_argument("--out", type=Path, default=common.HERE / "results" / "craft_teacher_psnr.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    desc = ModelLoader().load_from_file(args.checkpoint)
    model = desc.model.eval()
    assert desc.scale == SCALE, desc.scale
    multiple = desc.size_requirements.multiple_of if args.pad == "reflect" else 1
    common.log(
        f"{desc.architecture.name} ×{desc.scale}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )

    results: dict = {
        "machine": common.machine_info(args.threads),
        "checkpoint": str(args.checkpoint.name),
        "protocol": "MATLAB-style bicubic LR (a=-0.5, antialiased), 8-bit LR and output, "
        "Y channel (BT.601), 4 px shaved",
        "pad": args.pad,
        "sets": {},
    }
    for name in args.sets:
        rows = []
        for path in sorted((args.data / name).glob("*.png")):
            hr = np.asarray(Image.open(path).convert("RGB"))
            hr = hr[: hr.shape[0] - hr.shape[0] % SCALE, : hr.shape[1] - hr.shape[1] % SCALE]
            lr = imresize(hr, 1 / SCALE)
            bic = imresize(lr, SCALE)
            start = time.process_time(), time.perf_counter()
            sr = run_model(model, lr, multiple)
            cpu, wall = time.process_time() - start[0], time.perf_counter() - start[1]
            row = {
                "image": path.stem,
                "lr": list(lr.shape[:2]),
                "bicubic": psnr_y(bic, hr),
                "teacher": psnr_y(sr, hr),
                "cpu_s": cpu,
                "wall_s": wall,
                "wall_us_per_input_px": 1e6 * wall / (lr.shape[0] * lr.shape[1]),
            }
            common.log(
                f"{name}/{path.stem}: LR {lr.shape[1]}×{lr.shape[0]}, bicubic {row['bicubic']:.2f} dB, "
                f"teacher {row['teacher']:.2f} dB, {wall:.2f} s wall ({cpu:.2f} s CPU)"
            )
            rows.append(row)
        summary = {
            "bicubic": statistics.fmean(r["bicubic"] for r in rows),
            "teacher": statistics.fmean(r["teacher"] for r in rows),
            "wall_s_per_image": statistics.fmean(r["wall_s"] for r in rows),
            "cpu_s_per_image": statistics.fmean(r["cpu_s"] for r in rows),
            "images": rows,
        }
        results["sets"][name] = summary
        common.log(
            f"{name}: bicubic {summary['bicubic']:.2f} dB, teacher {summary['teacher']:.2f} dB, "
            f"{summary['wall_s_per_image']:.2f} s wall / {summary['cpu_s_per_image']:.2f} s CPU per image"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
