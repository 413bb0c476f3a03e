"""Training data at DIV2K scale: peak memory and data wait against the number of large images.

    python benchmarks/data_scale.py [--images 30 120] [--size 1356 2040] [--steps 40] [--smoke]

Makes folders of N photographs of 2040×1356 (SunHays80 photos resized up to DIV2K's size, PNG),
then trains a ``compact`` ×4 student on each with ``data.cache`` left at "auto" (so on disk
beyond 256 MiB of pixels) and the default ``data.workers``, in a fresh process per run, and
records the process's peak RSS, the time the steps waited for data, and the one-off time to decode
and degrade the images into the disk cache (a first run, then a second, warm one). Writes
``results/data_scale.json``; BENCHMARKS.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SUNHAYS = common.HERE / "data" / "SunHays80"

#: the issue's targets
TARGET_RSS_GB = 2.5
TARGET_MB_PER_IMAGE = 2.0
TARGET_WAIT = 0.05


def make_images(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """``count`` PNGs of ``size`` (height, width), each a SunHays80 photo resized (cycled)."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(SUNHAYS.glob("*.jpg"))
    height, width = size
    for i in range(count):
        path = folder / f"{i + 1:04d}.png"
        if path.exists():
            continue
        with Image.open(photos[i % len(photos)]) as photo:
            photo.convert("RGB").resize((width, height), Image.BICUBIC).save(path, compress_level=1)
    return folder


def train_once(folder: Path, cache: Path, out: Path, steps: int, batch: int, mode: str = "auto") -> dict:
    """One training run in a fresh process; its summary plus the process's peak RSS."""
    spec = {
        "task": {"kind": "sr", "scale": 4},
        "data": {"train": str(folder), "val": "builtin:set5", "patch_size": 128, "batch_size": batch,
                 "cache": mode},
        "student": {"name": "compact", "params": {"num_feat": 32, "num_conv": 8}},
        "losses": [{"name": "l1"}],
        "train": {"steps": steps, "lr": 0.0005, "checkpoint_every": 0, "log_every": 5},
        "output": str(out),
    }
    spec_file = out.parent / f"{out.name}.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    code = (
        "import json, resource, sys, time, kdcore\n"
        "t = time.perf_counter()\n"
        "s = kdcore.run(sys.argv[1], overwrite=True)\n"
        "s['wall_s'] = time.perf_counter() - t\n"
        "s['peak_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "s['workers_peak_rss_bytes'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print('@@' + json.dumps(s))\n"
    )
    env = {**os.environ, "KDCORE_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(spec_file)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    line = next(x for x in done.stdout.splitlines() if x.startswith("@@"))
    return json.loads(line[2:])


def row(summary: dict, images: int) -> dict:
    data = summary["data"]
    return {
        "images": images,
        "cache": data["cache"],
        "workers": data["workers"],
        "peak_rss_gb": summary["peak_rss_bytes"] / 1e9,
        "workers_peak_rss_gb": summary["workers_peak_rss_bytes"] / 1e9,
        "data_wait_share": data["data_seconds"] / max(data["step_seconds"], 1e-9),
        "step_ms": 1000 * data["step_seconds"] / summary["steps"],
        "wall_s": summary["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[30, 120])
    parser.add_argument("--size", type=int, nargs=2, default=[1356, 2040], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--cache", choices=["auto", "memory", "disk"], default="auto", help="data.cache of every run")
    parser.add_argument("--work", type=Path, default=None, help="folder for the images (kept; default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=common.HERE / "results" / "data_scale.json")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.size, args.steps, args.batch = [2, 4], [256, 384], 2, 4
    work = args.work or Path(tempfile.mkdtemp(prefix="kdcore-data-scale-"))
    results: dict = {"machine": common.machine_info(2), "size": args.size, "steps": args.steps,
                     "batch": args.batch, "cache": args.cache, "runs": []}
    for count in args.images:
        common.log(f"{count} images of {args.size[1]}×{args.size[0]}")
        t0 = time.perf_counter()
        folder = make_images(work / f"images-{count}", count, tuple(args.size))
        made = time.perf_counter() - t0
        cache = work / f"cache-{count}"
        cold = train_once(folder, cache, work / "runs" / f"cold-{count}", args.steps, args.batch, args.cache)
        warm = train_once(folder, cache, work / "runs" / f"warm-{count}", args.steps, args.batch, args.cache)
        entry = {"cold": row(cold, count), "warm": row(warm, count), "png_write_s": made,
                 "prepare_s": cold["wall_s"] - warm["wall_s"]}
        results["runs"].append(entry)
        common.log(json.dumps(entry))
    small, large = results["runs"][0]["warm"], results["runs"][-1]["warm"]
    extra = large["images"] - small["images"]
    per_image_mb = (large["peak_rss_gb"] - small["peak_rss_gb"]) * 1e3 / max(extra, 1)
    results["per_extra_image_mb"] = per_image_mb
    results["targets"] = {
        "peak_rss_gb": {"target": TARGET_RSS_GB, "measured": large["peak_rss_gb"],
                        "met": large["peak_rss_gb"] <= TARGET_RSS_GB},
        "mb_per_extra_image": {"target": TARGET_MB_PER_IMAGE, "measured": per_image_mb,
                               "met": per_image_mb <= TARGET_MB_PER_IMAGE},
        "data_wait_share": {"target": TARGET_WAIT, "measured": large["data_wait_share"],
                            "met": large["data_wait_share"] <= TARGET_WAIT},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results["loadavg_end"] = common.loadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    common.log(f"wrote {args.out}: {json.dumps(results['targets'])}")


if __name__ == "__main__":
    main()
