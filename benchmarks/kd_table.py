"""The KD table: does distillation pay? One strong SR teacher, three small students, several seeds.

    python benchmarks/kd_table.py [--smoke] [--out DIR] [--markdown FILE] [--render] [--latency]
                                  [--students NAME…] [--teacher-run DIR]

sr ×2 on ``builtin:photos`` / ``builtin:photos-val``. The teacher is the quickstart's EDSR
(``examples/quickstart-teacher.json``: trained here alone, or reused with ``--teacher-run
runs/quickstart-teacher``). ``deformable-hdrnet`` (the real-time HDRNet student) and a small
``compact`` conv student are trained per seed as:

- *alone*: L1 to the ground truth, no teacher (what ``train.baseline: "alone"`` trains);
- *distilled, output losses*: L1 to the ground truth + 0.5 · L1 to the teacher's image + 0.5 ·
  relative difference to the teacher's image;
- *+ feature matching*: the same + 0.1 · normalised feature matching of one student map with the
  teacher's body block ``body.7`` (resized by area pooling where the sizes differ);
- *+ unlabelled zoom-in*: the output losses, with half of each batch drawn from the training
  photos used as low-resolution inputs (``data.unlabeled``), which only the teacher can label.

Neither shares a tensor with EDSR, so teacher initialisation and forward adaptation do not apply
to them. The third student, ``edsr`` with 2 instead of 8 blocks, does share them: its rows are
*alone*, *teacher init only* (``student.init: "teacher"``, with ``student.init_rename`` taking the
teacher's last body conv; L1 to the target), the output losses on that initialisation, and those
+ ``forward-adaptation``.

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
OUTPUT_ROWS = ("alone", "distilled", "feature-matching", "unlabeled")
#: rows of a student that shares tensors with the teacher (student.init / forward adaptation apply)
INIT_ROWS = ("alone", "init-only", "init-distilled", "init-forward-adaptation")
STUDENTS: dict[str, dict[str, Any]] = {
    "deformable-hdrnet": {"spec": {"name": "deformable-hdrnet", "params": {"net_input_size": 128, "spatial_bins": 8}},
                          "feature": "lowres.fusion", "rows": OUTPUT_ROWS},
    "compact": {"spec": {"name": "compact", "params": {"num_feat": 32, "num_conv": 8}}, "feature": "body.9",
                "rows": OUTPUT_ROWS},
    # the teacher's own architecture, shallower: head, tail and the first blocks have the teacher's names and
    # shapes; the teacher's last body conv (body.8) goes into the student's (body.2) through student.init_rename
    "edsr": {"spec": {"name": "edsr", "params": {"n_resblocks": 2, "n_feats": 32}}, "feature": "body.1",
             "rows": INIT_ROWS, "init_rename": {"body\\.2\\.(.*)": "body.8.\\1"}},
}
OUTPUT_LOSSES = [{"name": "l1"}, {"name": "l1", "weight": 0.5, "params": {"against": "teacher"}},
                 {"name": "relative-difference", "weight": 0.5}]
ROW_LABELS = {"alone": "alone", "distilled": "distilled (output losses)",
              "feature-matching": "distilled + feature matching", "unlabeled": "distilled + unlabelled zoom-in",
              "init-only": "teacher init only (no teacher losses)",
              "init-distilled": "distilled (output losses) + teacher init",
              "init-forward-adaptation": "distilled (output losses) + teacher init + forward adaptation"}
#: rows trained by one ``kdcore.run`` with ``train.baseline: ["alone", "init-only"]`` (also its summary keys)
BASELINE_ROWS = ("alone", "init-only")
#: the teacher's learning rate (``--teacher-run`` checks a reused run against it)
TEACHER_LR = 1e-3


CONFIGS: dict[str, dict[str, Any]] = {
    "full": {"teacher": TEACHER, "teacher_steps": 2000,
             "student_steps": {"deformable-hdrnet": 400, "compact": 800, "edsr": 800},
             "lr": {"deformable-hdrnet": 5e-4, "compact": 1e-3, "edsr": 1e-3}, "seeds": [0, 1, 2],
             "data": {"train": "builtin:photos", "val": "builtin:photos-val", "patch_size": 96, "batch_size": 8},
             "teacher_patch": 64, "latency_input": (540, 960), "latency_repeats": 3},
    "smoke": {"teacher": TEACHER, "teacher_steps": 2, "student_steps": {"deformable-hdrnet": 2, "compact": 2, "edsr": 2},
              "lr": {"deformable-hdrnet": 5e-4, "compact": 1e-3, "edsr": 1e-3}, "seeds": [0, 1], "data": None,
              "teacher_patch": 16, "latency_input": (32, 48), "latency_repeats": 2},
}


_log = common.log


def losses_for(row: str, feature: str) -> list[dict]:
    """The loss list of one row of the table."""
    if row in ("alone", "init-only"):
        return [{"name": "l1"}]
    losses = [dict(loss) for loss in OUTPUT_LOSSES]
    if row == "feature-matching":
        losses.append({"name": "feature-matching", "weight": 0.1,
                       "params": {"normalize": True, "pairs": [{"student": feature, "teacher": "body.7"}]}})
    if row == "init-forward-adaptation":
        losses.append({"name": "forward-adaptation", "weight": 1.0})
    return losses


def spec_for(teacher: dict, data: dict, student: dict, row: str, feature: str, steps: int, lr: float, seed: int,
             teacher_dir: Path, out: Path, init_rename: dict | None = None) -> dict:
    """The spec of one (student, row, seed) run.

    *init-distilled* also trains the *alone* and *init-only* rows, as its ``train.baseline``.
    """
    spec: dict[str, Any] = {
        "task": {"kind": "sr", "scale": 2}, "data": dict(data), "student": dict(student),
        "losses": losses_for(row, feature),
        "train": {"steps": steps, "lr": lr, "warmup_steps": max(1, steps // 20), "seed": seed,
                  "log_every": max(1, steps // 4)},
        "output": str(out)}
    if row != "alone":
        spec["teacher"] = {**teacher, "checkpoint": str(teacher_dir)}
    if row.startswith("init-"):
        spec["student"]["init"] = "teacher"
        if init_rename:
            spec["student"]["init_rename"] = dict(init_rename)
    if row == "init-distilled":
        spec["train"]["baseline"] = ["alone", "init-only"]
    if row == "unlabeled":
        spec["data"].update({"unlabeled": [data["train"]], "unlabeled_ratio": 0.5})
    return spec


def _row_result(summary: dict, block: dict, seed: int, run: str) -> dict:
    return {"seed": seed, "run": run, "psnr": block["psnr"], "ssim": block["ssim"],
            "seconds": summary["seconds"], "params": block["params"]}


def train_teacher(cfg: dict, runs: Path, data: dict, log=_log) -> tuple[Path, dict]:
    """Trains the table's teacher alone; returns its run folder and summary."""
    spec = cfg["teacher"]
    teacher_dir = runs / "kd-teacher"
    log(f"  KD table: teacher {spec['name']} {spec['params']}, {cfg['teacher_steps']} steps")
    summary = kdcore.run({
        "task": {"kind": "sr", "scale": 2}, "data": {**data, "patch_size": cfg["teacher_patch"]}, "student": spec,
        "losses": [{"name": "l1"}],
        "train": {"steps": cfg["teacher_steps"], "lr": TEACHER_LR, "warmup_steps": 20, "seed": 0,
                  "log_every": max(1, cfg["teacher_steps"] // 4)},
        "output": str(teacher_dir)}, overwrite=True)
    return teacher_dir, summary


def measure_student(cfg: dict, name: str, runs: Path, data: dict, teacher_dir: Path, log=_log) -> dict:
    """Every row and seed of one student."""
    entry = STUDENTS[name]
    rows: dict[str, list[dict]] = {row: [] for row in entry["rows"]}
    for seed in cfg["seeds"]:
        for row in entry["rows"]:
            if row in BASELINE_ROWS and "init-distilled" in entry["rows"]:
                continue  # trained as a baseline of init-distilled
            log(f"  KD table: {name} {row}, seed {seed}, {cfg['student_steps'][name]} steps")
            folder = runs / f"kd-{name}-{row}-seed{seed}"
            s = kdcore.run(spec_for(cfg["teacher"], data, entry["spec"], row, entry["feature"],
                                    cfg["student_steps"][name], cfg["lr"][name], seed, teacher_dir, folder,
                                    entry.get("init_rename")),
                           overwrite=True)
            rows[row].append(_row_result(s, s["student"], seed, str(folder)))
            if row == "init-distilled":
                for baseline in BASELINE_ROWS:
                    rows[baseline].append(_row_result(s, s[baseline], seed, s[baseline]["output"]))
    return {"spec": entry["spec"], "feature": entry["feature"], "rows": rows,
            "measured": time.strftime("%Y-%m-%d")}


def measure(cfg: dict, runs: Path, data: dict | None = None, log=_log, students: list[str] | None = None,
            teacher_run: Path | None = None, previous: dict | None = None) -> dict[str, Any]:
    """Trains the teacher (or reuses ``teacher_run``) and every (student, row, seed); returns the table's numbers.

    With ``students``, only those are trained; the others are kept from ``previous`` (an earlier result
    with the same teacher spec), each with the date it was measured.
    """
    data = data or cfg["data"]
    t0 = time.perf_counter()
    spec = cfg["teacher"]
    if teacher_run is None:
        teacher_dir, teacher = train_teacher(cfg, runs, data, log)
    else:
        teacher_dir, teacher = teacher_run, json.loads((teacher_run / "summary.json").read_text())
        log(f"  KD table: teacher reused from {teacher_dir} ({teacher['student']['psnr']:.3f} dB)")
    result: dict[str, Any] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, "data": data,
        "teacher": {"spec": spec, "run": str(teacher_dir), "psnr": teacher["student"]["psnr"],
                    "ssim": teacher["student"]["ssim"], "params": teacher["student"]["params"]},
        "bicubic": {"psnr": teacher["baseline"]["psnr"], "ssim": teacher["baseline"]["ssim"]},
        "output_losses": OUTPUT_LOSSES, "students": {}}
    for name in STUDENTS:
        if students is None or name in students:
            result["students"][name] = measure_student(cfg, name, runs, data, teacher_dir, log)
        elif previous and name in previous.get("students", {}):
            result["students"][name] = previous["students"][name]
            result.setdefault("kept_from_previous", {})[name] = {"teacher_psnr": previous["teacher"]["psnr"]}
    result["latency"] = latency(cfg, result, log)
    result["seconds"] = time.perf_counter() - t0
    result["loadavg_end"] = common.loadavg()
    return result


def _timed_model(spec: dict, run: Path) -> torch.nn.Module:
    """The trained model of ``run``; where that folder is gone, the same architecture built from ``spec``
    (latency depends on the architecture and the input size, not on the weights' values)."""
    if (run / "model.safetensors").exists():
        return kdcore.load(run).eval()
    return kdcore.create("student", spec["name"], spec.get("params"), kdcore.Task(kind="sr", scale=2)).eval()


def latency(cfg: dict, result: dict, log=_log) -> dict[str, dict[str, float]]:
    """The teacher and each student (seed 0, distilled), interleaved on one input in one process, 2 threads.

    Every model is timed here, students kept from an earlier result included, so the shares of the
    teacher's time compare like with like.
    """
    h, w = cfg["latency_input"]
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    models = {"teacher": _timed_model(result["teacher"]["spec"], Path(result["teacher"]["run"]))}
    for name, entry in result["students"].items():
        rows = entry["rows"]
        models[name] = _timed_model(entry["spec"], Path((rows.get("distilled") or rows.get("init-distilled"))[0]["run"]))
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
    kept = result.get("kept_from_previous", {})
    lines = [START, "## KD table: does distillation pay? (sr ×2, `builtin:photos-val`)", "",
             f"Teacher: `edsr` {result['teacher']['spec']['params']} ({result['teacher']['params']:,} parameters), trained alone for "
             f"{cfg['teacher_steps']} steps (patch {cfg['teacher_patch']}). Students per seed {cfg['seeds']}: "
             + ", ".join(f"`{n}` {e['spec']['params']} ({cfg['student_steps'][n]} steps, lr {cfg['lr'][n]})"
                         for n, e in result["students"].items())
             + f"; patch {result['data'].get('patch_size')}, batch {result['data'].get('batch_size')}, cosine schedule. "
             "Output losses: L1 to the target + 0.5 · L1 to the teacher + 0.5 · relative difference to the teacher; "
             "feature matching: + 0.1 · normalised l2 between the named student map (1×1 adapter) and the "
             "teacher's `body.7`, area-pooled to a common size; unlabelled zoom-in: half of each batch from the "
             "training photos used as low-resolution inputs, labelled by the teacher. The `edsr` student is the "
             "teacher's own architecture with fewer blocks, so its head, tail and first blocks have the teacher's "
             "names and shapes: *teacher init* is `student.init: \"teacher\"` (those tensors copied before "
             "training; `student.init_rename` `{\"body\\\\.2\\\\.(.*)\": \"body.8.\\\\1\"}` also takes the teacher's last "
             "body conv into the student's), *teacher init only* trains that initialised student with L1 to the target alone "
             "(`train.baseline: [\"alone\", \"init-only\"]` of the *teacher init* run), and *forward adaptation* "
             "adds `forward-adaptation` (weight 1) to the output losses. PSNR / SSIM on the Y "
             "channel (2-pixel border cropped). KD gain = the row's PSNR − *alone*'s, paired by seed. "
             f"Latency: {w}×{h} input ({2 * w}×{2 * h} output), 2 threads, min / median of {cfg['latency_repeats']} "
             "interleaved runs in one process after training.", ""]
    for name, info in kept.items():
        lines.append(f"The `{name}` rows are kept from an earlier run of this benchmark "
                     f"({result['students'][name].get('measured', 'an earlier session')}, same teacher spec; that "
                     f"teacher scored {info['teacher_psnr']:.3f} dB); their latency is timed again with the others.")
    if kept:
        lines.append("")
    lines += ["| student | row | PSNR dB mean ± std (min–max) | SSIM | KD gain dB | keeps of teacher's gain | "
              "ranges apart from alone |",
              "|---|---|---|---|---|---|---|",
              f"| bicubic | — | {result['bicubic']['psnr']:.2f} | {result['bicubic']['ssim']:.4f} | — | 0% | — |",
              f"| teacher `edsr` | — | {result['teacher']['psnr']:.2f} | {result['teacher']['ssim']:.4f} | — | 100% | — |"]
    for name, entry in result["students"].items():
        for row in entry["rows"]:
            r = s[name][row]
            gain = "—" if row == "alone" else f"{r['gain']['mean']:+.3f} ± {r['gain']['std']:.3f}"
            kept_share = "—" if r["kept"] is None else f"{100 * r['kept']['mean']:.0f}%"
            apart = ("—" if row == "alone" else "no (within noise)" if not r["apart"]
                     else "yes: a gain" if r["gain"]["mean"] > 0 else "yes: a loss")
            lines.append(f"| `{name}` | {ROW_LABELS[row]} | {_fmt(r['psnr'])} | {r['ssim']['mean']:.4f} | {gain} | "
                         f"{kept_share} | {apart} |")
        if "init-only" not in entry["rows"]:
            lines.append(f"| `{name}` | distilled + forward adaptation / teacher init | n/a: no `{name}` tensor has "
                         "an `edsr` tensor's name and shape | | | | |")
    lines += ["", "| model | parameters | latency ms (min / median) | share of the teacher's |", "|---|---|---|---|",
              f"| teacher `edsr` | {result['teacher']['params']:,} | {lat['teacher']['min_ms']:.1f} / "
              f"{lat['teacher']['median_ms']:.1f} | 1 |"]
    for name, entry in result["students"].items():
        lines.append(f"| `{name}` | {entry['rows']['alone'][0]['params']:,} | {lat[name]['min_ms']:.1f} / "
                     f"{lat[name]['median_ms']:.1f} | {lat[name]['median_ms'] / lat['teacher']['median_ms']:.3f} |")
    best = {n: max((row for row in e["rows"] if row not in ("alone", "init-only")),
                   key=lambda row, n=n: s[n][row]["gain"]["mean"])
            for n, e in result["students"].items()}
    worst_std = max(s[n][row]["psnr"]["std"] for n, e in result["students"].items() for row in e["rows"])
    dh = "deformable-hdrnet"
    lines += ["", "Targets:", "",
              f"- Teacher ≥ bicubic + {TEACHER_OVER_BICUBIC_DB} dB: {s['teacher_gain_db']:+.2f} dB, "
              f"{_verdict(s['teacher_gain_db'] >= TEACHER_OVER_BICUBIC_DB)}."]
    for n, row in best.items():
        r = s[n][row]
        lines.append(f"- `{n}` distilled ≥ alone + {KD_GAIN_DB} dB with the seed ranges apart: best row "
                     f"*{ROW_LABELS[row]}*, {r['gain']['mean']:+.3f} dB, ranges apart: {'yes' if r['apart'] else 'no'}; "
                     f"{_verdict(r['gain']['mean'] >= KD_GAIN_DB and r['apart'])}.")
        if "init-only" in s[n]:
            init_gain = s[n]["init-only"]["gain"]["mean"]
            lines.append(f"  Of that, the teacher initialisation alone gives {init_gain:+.3f} dB (*teacher init only*); "
                         f"the teacher's losses add {r['gain']['mean'] - init_gain:+.3f} dB on top of it.")
        if s[n]["alone"]["kept"] and s[n]["alone"]["kept"]["mean"] >= 0.9:
            lines.append(f"  Trained alone, `{n}` already reaches {100 * s[n]['alone']['kept']['mean']:.0f}% of the "
                         "teacher's gain over bicubic: this teacher has little left to teach it.")
    if dh in lat:
        share = lat[dh]["median_ms"] / lat["teacher"]["median_ms"]
        lines.append(f"- `{dh}` at ≤ {LATENCY_SHARE:g} of the teacher's 1080p-output latency: {share:.3f}, "
                     f"{_verdict(share <= LATENCY_SHARE)}.")
    lines.append(f"- Seed spread (std over seeds) ≤ {SEED_STD_DB} dB on every row: largest {worst_std:.3f} dB, "
                 f"{_verdict(worst_std <= SEED_STD_DB)}.")
    lines += ["", f"Measured in {result['seconds'] / 60:.0f} minutes by `python benchmarks/kd_table.py`"
              + (f" (`--students {' '.join(n for n in result['students'] if n not in kept)}`)" if kept else "")
              + f"; load average at the end {result.get('loadavg_end')}."
              + (f" Latency timed again with `--latency` on {result['latency_measured']}."
                 if result.get("latency_measured") else ""), END, ""]
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
    parser.add_argument("--latency", action="store_true",
                        help="time every model of OUT/kd_table.json again (in one process), then rewrite the section")
    parser.add_argument("--teacher", type=int, nargs=3, metavar=("BLOCKS", "FEATS", "STEPS"),
                        help="the edsr teacher's n_resblocks, n_feats and training steps (default 8 32 2000)")
    parser.add_argument("--students", nargs="+", choices=sorted(STUDENTS), default=None,
                        help="train only these students; the others are kept from OUT/kd_table.json")
    parser.add_argument("--teacher-run", type=Path, default=None,
                        help="reuse this finished run of the teacher's spec (e.g. runs/quickstart-teacher) "
                             "instead of training it")
    args = parser.parse_args(argv)
    md = args.markdown or (args.out / "BENCHMARKS.md" if args.smoke else common.ROOT / "BENCHMARKS.md")
    if args.render or args.latency:
        result = json.loads((args.out / "kd_table.json").read_text())
        if args.latency:
            torch.set_num_threads(args.threads)
            result["latency"] = latency(result["config"], result)
            result["latency_measured"] = time.strftime("%Y-%m-%d %H:%M")
            common.write_json(args.out / "kd_table.json", result)
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
        previous_file = args.out / "kd_table.json"
        previous = json.loads(previous_file.read_text()) if args.students and previous_file.exists() else None
        if previous and previous["teacher"]["spec"] != cfg["teacher"]:
            parser.error(f"--students: {previous_file} was measured with another teacher; run every student")
        if args.teacher_run is not None:
            used = json.loads((args.teacher_run / "spec.json").read_text())
            if used["student"]["name"] != cfg["teacher"]["name"] or any(
                    used["student"]["params"].get(k) != v for k, v in cfg["teacher"]["params"].items()) or \
                    used["train"]["steps"] != cfg["teacher_steps"] or used["train"]["lr"] != TEACHER_LR:
                parser.error(f"--teacher-run: {args.teacher_run} is not a run of the teacher {cfg['teacher']} "
                             f"for {cfg['teacher_steps']} steps at lr {TEACHER_LR}")
        result = measure(cfg, args.out / "runs", data, students=args.students, teacher_run=args.teacher_run,
                         previous=previous)
        common.write_json(args.out / "kd_table.json", result)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(replace_section(md.read_text() if md.exists() else "", markdown(result)))
    _log(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
