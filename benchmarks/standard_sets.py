"""The bicubic rows of the standard test sets, kdcore's against the published ones.

    python benchmarks/standard_sets.py [--out DIR] [--markdown FILE]

For Set5, Set14 (built in) and BSD68 (``benchmarks/data/BSD68``) at ×2, ×3 and ×4: PSNR / SSIM of
bicubic upscaling, with inputs and upscaling made by each ``data.degradation`` ("matlab-bicubic",
the default, and "torch-bicubic", kdcore 1.1's), scored by kdcore's SR convention (Y channel,
``scale`` pixels cropped, 8-bit output). Writes ``results/standard_sets.json`` and replaces its
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from kdcore.data import load_pairs, quantize, upscale_bicubic  # noqa: E402
from kdcore.interfaces import Task  # noqa: E402
from kdcore.metrics import image_metrics, mean_metrics  # noqa: E402

SETS = {"Set5": "builtin:set5", "Set14": "builtin:set14", "BSD68": str(common.HERE / "data" / "BSD68")}
#: published bicubic PSNR / SSIM (Y channel, MATLAB imresize), as SR papers print them
PUBLISHED = {
    "Set5": {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)},
    "Set14": {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)},
    "BSD68": {},
}
START, END = "<!-- standard-sets:start -->", "<!-- standard-sets:end -->"


def measure() -> dict:
    out: dict = {}
    for name, source in SETS.items():
        for scale in (2, 3, 4):
            task = Task(kind="sr", scale=scale)
            for degradation in ("matlab-bicubic", "torch-bicubic"):
                pairs = load_pairs(source, task, where=name, degradation=degradation)
                rows = [
                    image_metrics(quantize(upscale_bicubic(p.input, scale, degradation)), p.target, task)
                    for p in pairs
                ]
                out.setdefault(name, {}).setdefault(str(scale), {})[degradation] = {
                    **mean_metrics(rows),
                    "images": len(pairs),
                }
            common.log(f"{name} ×{scale}: {out[name][str(scale)]}")
    return out


def markdown(result: dict) -> str:
    lines = [
        START,
        "## Standard test sets: the bicubic row beside the published one",
        "",
        "Bicubic upscaling scored by kdcore's SR convention (Y channel, `scale` pixels cropped at every "
        "border, 8-bit output), PSNR dB / SSIM, with inputs and upscaling made by `data.degradation`. "
        "`matlab-bicubic` (the default since 1.2) reproduces the rows SR papers print; `torch-bicubic` "
        "(1.1's) does not. Set14 copies differ slightly between sources (target ±0.15 dB). Measured by "
        "`python benchmarks/standard_sets.py`.",
        "",
        "| set | scale | published | matlab-bicubic | torch-bicubic | within target |",
        "|---|---|---|---|---|---|",
    ]
    for name, scales in result.items():
        for scale, row in scales.items():
            published = PUBLISHED[name].get(int(scale))
            m, t = row["matlab-bicubic"], row["torch-bicubic"]
            if published:
                tol = 0.03 if name == "Set5" else 0.15
                ok = abs(m["psnr"] - published[0]) <= tol and (name != "Set5" or abs(m["ssim"] - published[1]) <= 0.002)
                verdict = f"**{'met' if ok else 'not met'}** (±{tol} dB)"
                pub = f"{published[0]:.2f} / {published[1]:.4f}"
            else:
                verdict, pub = "-", "-"
            lines.append(
                f"| {name} ({m['images']}) | ×{scale} | {pub} | {m['psnr']:.2f} / {m['ssim']:.4f} | "
                f"{t['psnr']:.2f} / {t['ssim']:.4f} | {verdict} |"
            )
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=common.HERE / "results")
    parser.add_argument("--markdown", type=Path, default=common.ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    result = measure()
    common.write_json(args.out / "standard_sets.json", result)
    md = args.markdown
    md.write_text(common.replace_marked(md.read_text() if md.exists() else "", markdown(result), START, END))
    common.log(f"wrote {md} and {args.out / 'standard_sets.json'}")


if __name__ == "__main__":
    main()
