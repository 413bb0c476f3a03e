"""The KD table: does distillation pay? One strong SR teacher, two small students, several seeds.

    python benchmarks/kd_table.py [--smoke] [--out DIR] [--markdown FILE] [--render]

sr ×2 on ``builtin:photos`` / ``builtin:photos-val``. The teacher is the quickstart's EDSR
(``examples/quickstart-teacher.json``, trained here alone). Each student — ``deformable-hdrnet``
(the real-time HDRNet student) and a small ``compact`` conv student — is trained per seed as:

- *alone*: L1 to the ground truth, no teacher (what ``train.baseline: "alone"`` trains);
- *distilled, output losses*: L1 to the ground truth + 0.5 · L1 to the teacher's image + 0.5 ·
  relative difference to the teacher's image;
- *+ feature matching*: the same + 0.1 · normalised feature matching of one student map with the
  teacher's body block ``body.7`` (resized by area pooling where the sizes differ);
- *+ unlabelled zoom-in*: the output losses, with half of each batch drawn from the training
  photos used as low-resolution inputs (``data.unlabeled``), which only the teacher can label.

Forward adaptation and teacher initialisation need student tensors with the teacher's names and
shapes; neither student shares any with EDSR, so those rows are reported as not applicable (they
apply to an hdrnet teacher and a deformable-hdrnet student: ``examples/distill-forward-adaptation.json``).

Latency: every model once more after training, 2 threads, on a 960×540 input (a 1920×1080
output), interleaved in one process (min / median). Run alone, this replaces its section of
BENCHMARKS.md (between the ``kd-table`` markers); ``run_all.py`` calls it as one section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from quality import spread

import kdcore

START, END = "<!-- kd-table:start -->", "<!-- kd-table:end -->"

#: targets of the KD table
TEACHER_OVER_BICUBIC_DB = 1.0
KD_GAIN_DB = 0.2
LATENCY_SHARE = 0.1
SEED_STD_DB = 0.1

TEACHER = {"name": "edsr", "params": {"n_resblocks": 8, "n_feats": 32}}
STUDENTS: dict[str, dict[str, Any]] = {
    "deformable-hdrnet": {"spec": {"name": "deformable-hdrnet", "params": {"net_input_size": 128, "spatial_bins": 8}},
                          "feature": "lowres.fusion"},
    "compact": {"spec": {"name": "compact", "params": {"num_feat": 32, "num_conv": 8}}, "feature": "body.9"},
}
OUTPUT_LOSSES = [{"name": "l1"}, {"name": "l1", "weight": 0.5, "params": {"against": "teacher"}},
                 {"name": "relative-difference", "weight": 0.5}]
ROWS = ("alone", "distilled", "feature-matching", "unlabeled")
ROW_LABELS = {"alone": "alone", "distilled": "distilled (output losses)",
              "feature-matching": "distilled + feature matching", "unlabeled": "distilled + unlabelled zoom-in"}

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {"teacher": TEACHER, "teacher_steps": 3000, "student_steps": {"deformable-hdrnet": 400, "compact": 800},
             "lr": {"deformable-hdrnet": 5e-4, "compact": 1e-3}, "seeds": [0, 1, 2],
             "data": {"train": "builtin:photos", "val": "builtin:photos-val", "patch_size": 96, "batch_size": 8},
             "teacher_patch": 64, "latency_input": (540, 960), "latency_repeats": 3},
    "smoke": {"teacher": TEACHER, "teacher_steps": 2, "student_steps": {"deformable-hdrnet": 2, "compact": 2},
              "lr": {"deformable-hdrnet": 5e-4, "compact": 1e-3}, "seeds": [0, 1], "data": None,
              "teacher_patch": 16, "latency_input": (32, 48), "latency_repeats": 2},
}


_log = common.log


def losses_for(row: str, feature: str) -> list[dict]:
    """The loss list of one row of the table."""
    if row == "alone":
        return [{"name": "l1"}]
    losses = [dict(loss) for loss in OUTPUT_LOSSES]
    if row == "feature-matching":
        losses.append({"name": "feature-matching", "weight": 0.1,
                       "params": {"normalize": True, "pairs": [{"student": feature, "teacher": "body.7"}]}})
    return losses


def spec_for(teacher: dict, data: dict, student: dict, row: str, feature: str, steps: int, lr: float, seed: int,
             teacher_dir: Path, out: Path) -> dict:
    """The spec of one (student, row, seed) run."""
    spec: dict[str, Any] = {
        "task": {"kind": "sr", "scale": 2}, "data": dict(data), "student": student,
        "losses": losses_for(row, feature),
        "train": {"steps": steps, "lr": lr, "warmup_steps": max(1, steps // 20), "seed": seed,
                  "log_every": max(1, steps // 4)},
        "output": str(out)}
    if row != "alone":
        spec["teacher"] = {**teacher, "checkpoint": str(teacher_dir)}
    if row == "unlabeled":
        spec["data"].update({"unlabeled": [data["train"]], "unlabeled_ratio": 0.5})
    return spec


def measure(cfg: dict, runs: Path, data: dict | None = None, log=_log) -> dict[str, Any]:
    """Trains the teacher and every (student, row, seed); returns the table's numbers."""
    data = data or cfg["data"]
    t0 = time.perf_counter()
    spec = cfg["teacher"]
    teacher_dir = runs / "kd-teacher"
    log(f"  KD table: teacher {spec['name']} {spec['params']}, {cfg['teacher_steps']} steps")
    teacher = kdcore.run({
        "task": {"kind": "sr", "scale": 2}, "data": {**data, "patch_size": cfg["teacher_patch"]}, "student": spec,
        "losses": [{"name": "l1"}],
        "train": {"steps": cfg["teacher_steps"], "lr": 5e-4, "warmup_steps": 20, "seed": 0,
                  "log_every": max(1, cfg["teacher_steps"] // 4)},
        "output": str(teacher_dir)}, overwrite=True)
    result: dict[str, Any] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, "data": data,
        "teacher": {"spec": spec, "run": str(teacher_dir), "psnr": teacher["student"]["psnr"],
                    "ssim": teacher["student"]["ssim"], "params": teacher["student"]["params"]},
        "bicubic": {"psnr": teacher["baseline"]["psnr"], "ssim": teacher["baseline"]["ssim"]},
        "output_losses": OUTPUT_LOSSES, "students": {}}
    for name, entry in STUDENTS.items():
        rows: dict[str, list[dict]] = {row: [] for row in ROWS}
        for seed in cfg["seeds"]:
            for row in ROWS:
                log(f"  KD table: {name} {row}, seed {seed}, {cfg['student_steps'][name]} steps")
                folder = runs / f"kd-{name}-{row}-seed{seed}"
                s = kdcore.run(spec_for(spec, data, entry["spec"], row, entry["feature"], cfg["student_steps"][name],
                                        cfg["lr"][name], seed, teacher_dir, folder), overwrite=True)
                rows[row].append({"seed": seed, "run": str(folder), "psnr": s["student"]["psnr"],
                                  "ssim": s["student"]["ssim"], "seconds": s["seconds"],
                                  "params": s["student"]["params"]})
        result["students"][name] = {"spec": entry["spec"], "feature": entry["feature"], "rows": rows}
    result["latency"] = latency(cfg, result, log)
    result["seconds"] = time.perf_counter() - t0
    result["loadavg_end"] = common.loadavg()
    return result


def latency(cfg: dict, result: dict, log=_log) -> dict[str, dict[str, float]]:
    """The teacher and each student (seed 0, distilled), interleaved on one input, 2 threads."""
    h, w = cfg["latency_input"]
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    models = {"teacher": kdcore.load(result["teacher"]["run"]).eval()}
    for name, entry in result["students"].items():
        models[name] = kdcore.load(entry["rows"]["distilled"][0]["run"]).eval()
    log(f"  KD table: latency on {w}×{h} inputs, {cfg['latency_repeats']} runs each")

    def call(model):
        def fn():
            with torch.inference_mode():
                model(x)
        return fn

    return common.time_interleaved({k: call(m) for k, m in models.items()}, cfg["latency_repeats"], warmup=1)


def summarise(result: dict) -> dict[str, Any]:
    """Per student and row: PSNR / SSIM spread, KD gain paired by seed, kept share of the teacher's gain."""
    bicubic, teacher = result["bicubic"]["psnr"], result["teacher"]["psnr"]
    out: dict[str, Any] = {"teacher_gain_db": teacher - bicubic}
    for name, entry in result["students"].items():
        alone = {r["seed"]: r["psnr"] for r in entry["rows"]["alone"]}
        rows = {}
        for row, runs in entry["rows"].items():
            psnr = [r["psnr"] for r in runs]
            gains = [r["psnr"] - alone[r["seed"]] for r in runs]
            rows[row] = {"psnr": spread(psnr), "ssim": spread([r["ssim"] for r in runs]), "gain": spread(gains),
                         "kept": spread([(p - bicubic) / (teacher - bicubic) for p in psnr]) if teacher > bicubic else None,
                         "apart": row != "alone" and (min(psnr) > max(alone.values())
                                                      or max(psnr) < min(alone.values()))}
        out[name] = rows
    return out


def _fmt(s: dict, digits: int = 2) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def markdown(result: dict) -> str:
    """The BENCHMARKS.md section of a :func:`measure` result."""
    cfg, s = result["config"], summarise(result)
    lat = result["latency"]
    h, w = cfg["latency_input"]
    lines = [START, "## KD table: does distillation pay? (sr ×2, `builtin:photos-val`)", "",
             f"Teacher: `edsr` {result['teacher']['spec']['params']} ({result['teacher']['params']:,} parameters), trained alone for "
             f"{cfg['teacher_steps']} steps (patch {cfg['teacher_patch']}). Students per seed {cfg['seeds']}: "
             + ", ".join(f"`{n}` {e['spec']['params']} ({cfg['student_steps'][n]} steps, lr {cfg['lr'][n]})"
                         for n, e in result["students"].items())
             + f"; patch {result['data'].get('patch_size')}, batch {result['data'].get('batch_size')}, cosine schedule. "
             "Output losses: L1 to the target + 0.5 · L1 to the teacher + 0.5 · relative difference to the teacher; "
             "feature matching: + 0.1 · normalised l2 between the named student map (1×1 adapter) and the "
             "teacher's `body.7`, area-pooled to a common size; unlabelled zoom-in: half of each batch from the "
             "training photos used as low-resolution inputs, labelled by the teacher. PSNR / SSIM on the Y "
             "channel (2-pixel border cropped). KD gain = the row's PSNR − *alone*'s, paired by seed. "
             f"Latency: {w}×{h} input ({2 * w}×{2 * h} output), 2 threads, min / median of {cfg['latency_repeats']} "
             "interleaved runs in one process after training.", "",
             "| student | row | PSNR dB mean ± std (min–max) | SSIM | KD gain dB | keeps of teacher's gain | "
             "ranges apart from alone |",
             "|---|---|---|---|---|---|---|",
             f"| bicubic | — | {result['bicubic']['psnr']:.2f} | {result['bicubic']['ssim']:.4f} | — | 0% | — |",
             f"| teacher `edsr` | — | {result['teacher']['psnr']:.2f} | {result['teacher']['ssim']:.4f} | — | 100% | — |"]
    for name in result["students"]:
        for row in ROWS:
            r = s[name][row]
            gain = "—" if row == "alone" else f"{r['gain']['mean']:+.3f} ± {r['gain']['std']:.3f}"
            kept = "—" if r["kept"] is None else f"{100 * r['kept']['mean']:.0f}%"
            apart = ("—" if row == "alone" else "no (within noise)" if not r["apart"]
                     else "yes: a gain" if r["gain"]["mean"] > 0 else "yes: a loss")
            lines.append(f"| `{name}` | {ROW_LABELS[row]} | {_fmt(r['psnr'])} | {r['ssim']['mean']:.4f} | {gain} | "
                         f"{kept} | {apart} |")
        lines.append(f"| `{name}` | distilled + forward adaptation / teacher init | n/a: no `{name}` tensor has an "
                     "`edsr` tensor's name and shape | | | | |")
    lines += ["", "| model | parameters | latency ms (min / median) | share of the teacher's |", "|---|---|---|---|",
              f"| teacher `edsr` | {result['teacher']['params']:,} | {lat['teacher']['min_ms']:.1f} / "
              f"{lat['teacher']['median_ms']:.1f} | 1 |"]
    for name, entry in result["students"].items():
        lines.append(f"| `{name}` | {entry['rows']['alone'][0]['params']:,} | {lat[name]['min_ms']:.1f} / "
                     f"{lat[name]['median_ms']:.1f} | {lat[name]['median_ms'] / lat['teacher']['median_ms']:.3f} |")
    best = {n: max((row for row in ROWS if row != "alone"), key=lambda row: s[n][row]["gain"]["mean"])
            for n in result["students"]}
    worst_std = max(s[n][row]["psnr"]["std"] for n in result["students"] for row in ROWS)
    dh = "deformable-hdrnet"
    lines += ["", "Targets:", "",
              f"- Teacher ≥ bicubic + {TEACHER_OVER_BICUBIC_DB} dB: {s['teacher_gain_db']:+.2f} dB, "
              f"{_verdict(s['teacher_gain_db'] >= TEACHER_OVER_BICUBIC_DB)}."]
    for n, row in best.items():
        r = s[n][row]
        lines.append(f"- `{n}` distilled ≥ alone + {KD_GAIN_DB} dB with the seed ranges apart: best row "
                     f"*{ROW_LABELS[row]}*, {r['gain']['mean']:+.3f} dB, ranges apart: {'yes' if r['apart'] else 'no'}; "
                     f"{_verdict(r['gain']['mean'] >= KD_GAIN_DB and r['apart'])}.")
        if s[n]["alone"]["kept"] and s[n]["alone"]["kept"]["mean"] >= 0.9:
            lines.append(f"  Trained alone, `{n}` already reaches {100 * s[n]['alone']['kept']['mean']:.0f}% of the "
                         "teacher's gain over bicubic: this teacher has little left to teach it.")
    if dh in lat:
        share = lat[dh]["median_ms"] / lat["teacher"]["median_ms"]
        lines.append(f"- `{dh}` at ≤ {LATENCY_SHARE:g} of the teacher's 1080p-output latency: {share:.3f}, "
                     f"{_verdict(share <= LATENCY_SHARE)}.")
    lines.append(f"- Seed spread (std over seeds) ≤ {SEED_STD_DB} dB on every row: largest {worst_std:.3f} dB, "
                 f"{_verdict(worst_std <= SEED_STD_DB)}.")
    lines += ["", f"Measured in {result['seconds'] / 60:.0f} minutes by `python benchmarks/kd_table.py`; "
              f"load average at the end {result.get('loadavg_end')}.", END, ""]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """``text`` with its KD-table section replaced by ``section`` (appended when absent)."""
    return common.replace_marked(text, section, START, END)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny images and a few steps (checks the wiring)")
    parser.add_argument("--out", type=Path, default=common.HERE / "results")
    parser.add_argument("--markdown", type=Path, default=None, help="default: BENCHMARKS.md (OUT/ with --smoke)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render", action="store_true", help="only rewrite the section from OUT/kd_table.json")
    parser.add_argument("--teacher", type=int, nargs=3, metavar=("BLOCKS", "FEATS", "STEPS"),
                        help="the edsr teacher's n_resblocks, n_feats and training steps (default 8 32 3000)")
    args = parser.parse_args(argv)
    md = args.markdown or (args.out / "BENCHMARKS.md" if args.smoke else common.ROOT / "BENCHMARKS.md")
    if args.render:
        result = json.loads((args.out / "kd_table.json").read_text())
    else:
        warnings.simplefilter("ignore")
        torch.set_num_threads(args.threads)
        cfg = dict(CONFIGS["smoke" if args.smoke else "full"])
        if args.teacher:
            blocks, feats, steps = args.teacher
            cfg["teacher"] = {"name": "edsr", "params": {"n_resblocks": blocks, "n_feats": feats}}
            cfg["teacher_steps"] = steps
        data = None
        if cfg["data"] is None:
            from run_all import _smoke_data

            data = _smoke_data(args.out / "smoke-data")
        result = measure(cfg, args.out / "runs", data)
        common.write_json(args.out / "kd_table.json", result)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(replace_section(md.read_text() if md.exists() else "", markdown(result)))
    _log(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
