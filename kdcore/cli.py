"""The command line. Thin: parses, calls the library, formats results and errors."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from kdcore.errors import SPELLING, KdcoreError, SpecError
from kdcore.interfaces import KIND_TABLE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # exit status 2 with a short message, as for a bad spec
        self.print_usage(sys.stderr)
        raise SystemExit(_fail(f"{self.prog}: {message}", 2))


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rows_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def _label(key: str, block: dict) -> str:
    name = block["name"] if isinstance(block.get("name"), str) else "+".join(block.get("name") or [])
    return {
        "baseline": f"baseline ({name})",
        "teacher": f"teacher ({name})",
        "student": f"student ({name})",
        "alone": f"student alone ({name})",
        "init-only": f"student init-only ({name})",
    }[key]


def _set_blocks(summary: dict) -> dict[str, dict]:
    """The validation sets of a summary (one, named after data.val, for summaries before 1.2)."""
    sets = summary.get("val_sets")
    if sets:
        return sets
    return {
        "val": {key: summary.get(key) for key in ("baseline", "teacher", "student", "alone", "init-only")}
    }


def _gain_line(label: str, key: str, summary: dict, sets: dict[str, dict]) -> str | None:
    if key not in summary:
        return None
    if len(sets) == 1:
        return f"{label}: {summary[key]:+.2f} dB"
    per_set = ", ".join(f"{name} {block[key]:+.2f}" for name, block in sets.items() if key in block)
    return f"{label} (dB): {per_set}"


def format_table(summary: dict) -> str:
    """The baseline / teacher / student (/ alone) table printed at the end of a run: PSNR and SSIM
    per validation set (a column group each), parameters and latency."""
    sets = _set_blocks(summary)
    header: list[str] = [""]
    for name in sets:
        header += [f"{name} PSNR dB" if len(sets) > 1 else "PSNR dB", "SSIM"]
    rows: list[tuple[str, ...]] = [(*header, "params", "latency ms")]
    keys = ["baseline"] + [k for k in ("teacher", "student", "alone", "init-only") if summary.get(k)]
    for key in keys:
        block = summary[key]
        cells = [_label(key, block)]
        for one in sets.values():
            scores = one.get(key) or {}
            cells += [_fmt(scores.get("psnr")), _fmt(scores.get("ssim"), 4)]
        params = "0" if key == "baseline" else f"{block['params']:,}"
        latency = "-" if key == "baseline" else _fmt(block.get("latency_ms"), 1)
        rows.append((*cells, params, latency))
    blocks = [summary[k] for k in keys[1:]]
    if any("onnx_latency_ms" in block for block in blocks):
        # onnxruntime latency of the exported model (kdcore.onnx.onnx_latency_ms), next to PyTorch's
        extra = ["onnxruntime ms", "-"] + [_fmt(block.get("onnx_latency_ms"), 1) for block in blocks]
        rows = [(*r, e) for r, e in zip(rows, extra, strict=True)]
    lines = _rows_table(rows)
    for label, key in (
        ("KD gain (student distilled − alone)", "kd_gain_db"),
        ("gain over the teacher-initialised student alone", "kd_gain_over_init_only_db"),
    ):
        line = _gain_line(label, key, summary, sets)
        if line:
            lines.append(line)
    note = ""
    if summary.get("measured_against") == "teacher":
        note = "\n(no ground truth: scores measure agreement with the teacher)"
    if summary.get("degradation") and summary.get("task", {}).get("kind") == "sr":
        names = ", ".join(sets)
        note += f"\nvalidation: {names}; inputs and baseline by {summary['degradation']}"
    size = summary.get("latency_input")
    lat = (
        f"\nlatency: median of {_latency_runs(summary)} runs on one {size[0]}×{size[1]} input, "
        f"{summary.get('device', 'cpu')}"
        if size
        else ""
    )
    return "\n".join(lines) + note + lat


def _latency_runs(summary: dict) -> str:
    """'5', or '3–5' where the models were timed a different number of times (slow ones fewer)."""
    counts = {
        block["latency_runs"]
        for key in ("student", "teacher", "alone", "init-only")
        if isinstance(block := summary.get(key), dict) and "latency_runs" in block
    }
    if not counts:
        return "5"  # summaries written before latency_runs was recorded
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}–{high}"


def format_seeds_table(result: dict) -> str:
    """The aggregate over seeds: mean ± std and min–max of every model's PSNR (per validation set),
    and the KD gain."""
    named: dict = result.get("val_sets") or {}
    sets = named if len(named) > 1 else {"": result}
    lines = [f"{len(result['seeds'])} seeds: {', '.join(map(str, result['seeds']))}"]
    for name, one in sets.items():
        rows: list[tuple[str, ...]] = [(name, "PSNR dB mean ± std", "min – max", "SSIM mean", "params")]
        for key in ("baseline", "teacher", "student", "alone", "init-only"):
            block = one.get(key)
            if block:
                p = block["psnr"]
                top = result.get(key) or block
                rows.append(
                    (
                        _label(key, top),
                        f"{p['mean']:.2f} ± {p['std']:.2f}",
                        f"{p['min']:.2f} – {p['max']:.2f}",
                        f"{block['ssim']['mean']:.4f}",
                        f"{top['params']:,}" if top.get("params") else "0",
                    )
                )
        lines += _rows_table(rows)
        if "kd_gain_db" in one:
            g = one["kd_gain_db"]
            lines.append(
                f"KD gain{' on ' + name if name else ''}: {g['mean']:+.2f} ± {g['std']:.2f} dB "
                f"(min {g['min']:+.2f}, max {g['max']:+.2f}): {one['kd_gain_verdict']}"
            )
    return "\n".join(lines)


class _Progress:
    """A tqdm progress bar fed by the engine's typed events (step, loss terms, it/s, ETA)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None  # the tqdm bar while a run is shown

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from kdcore.engine import events

        if isinstance(event, events.RunStarted) and self.enabled:
            self.bar = tqdm(
                total=event.total,
                initial=event.step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        elif isinstance(event, events.StepEnded) and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in event.terms.items()}, refresh=False)
        elif isinstance(event, events.Evaluated):
            m = event.metrics["student"]
            self._print(f"step {event.step}: val PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}")
        elif isinstance(event, events.Message):
            self._print(event.text if event.level == "info" else f"warning: {event.text}")
        elif isinstance(event, events.RunEnded) and self.bar is not None:
            self.bar.close()

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)


def _launch(args) -> int:
    """``kdcore run --nproc N``: the same command under torchrun, N processes on this machine."""
    import os
    import subprocess

    from kdcore import api
    from kdcore.engine.feed import batch_split
    from kdcore.spec import parse_set

    plan, _ = api.check(args.spec, **parse_set(args.set or []))  # a wrong spec fails here, once, with exit 2
    batch_split(plan, args.nproc)  # and so does a batch that does not divide among the processes
    cmd = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.nproc}",
            "-m",
            "kdcore",
        ]
        + (["--debug"] if args.debug else [])
        + ["run", args.spec]
    )
    for item in args.set or []:
        cmd += ["--set", item]
    cmd += [
        f
        for f, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--quiet", args.quiet))
        if on
    ]
    cmd += ["--seeds", args.seeds] if args.seeds is not None else []
    cmd += ["--reuse"] if args.reuse else []
    cmd += ["--baseline", args.baseline] if args.baseline else []
    return subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    ).returncode


def _cmd_run(args) -> int:
    import os

    from kdcore import api
    from kdcore.spec import parse_set

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    overrides = parse_set(args.set or [])
    if args.baseline:
        overrides["train.baseline"] = args.baseline
    seeds = _parse_seeds(args.seeds) if args.seeds is not None else None
    rank0 = os.environ.get("RANK", "0") == "0"
    summary = api.run(
        args.spec,
        resume=args.resume,
        overwrite=args.overwrite,
        reuse=args.reuse,
        callback=_Progress(not args.quiet and rank0),
        seeds=seeds,
        **overrides,
    )
    if not rank0:
        return 0
    print(format_seeds_table(summary) if seeds is not None else format_table(summary))
    print(f"run folder: {summary['output']}")
    return 0


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SpecError(
            f"--seeds {text!r}: give comma-separated non-negative integers, e.g. --seeds 0,1,2"
        ) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {text!r}: give distinct non-negative integers, e.g. --seeds 0,1,2")
    return seeds


def _cmd_validate(args) -> int:
    from kdcore import api
    from kdcore.interfaces import Teacher
    from kdcore.spec import parse_set

    plan, built = api.check(args.spec, **parse_set(args.set or []))
    names = ", ".join(f"{c.where}={c.name}" for c in plan.components())
    print(f"{args.spec}: valid ({names}; {plan.train.steps} steps -> {plan.output})")
    for note in built.notes:
        print(f"  {note}")
    for teacher, comp in zip(built.teachers, plan.teachers, strict=True):
        text = teacher.describe() if isinstance(teacher, Teacher) else None
        if text:
            print(f"  {comp.where}: {text}")
    return 0


def _cmd_schema(args) -> int:
    from kdcore.plugins import get_registry
    from kdcore.spec import json_schema

    print(json.dumps(json_schema(get_registry()), indent=2))
    return 0


def _cmd_plugins(args) -> int:
    from kdcore.api import plugins_report

    report = plugins_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for p in report:
        comps = ", ".join(f"{c['kind']} {c['name']}" for c in p["components"]) or "-"
        line = f"{p['name']:<20} {p['distribution']} {p['version']:<8} {p['status']:<8} {comps}"
        if p["reason"]:
            line += f"\n{'':<20} reason: {p['reason']}"
        print(line)
    return 0


def _wildcard(pattern: str) -> str:
    """A bare word (no ``*``, ``?`` or ``[``) matches names that contain it: ``hdr`` -> ``*hdr*``."""
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def _cmd_list(args) -> int:
    from kdcore.plugins import get_registry
    from kdcore.registry import PLURAL

    kinds = [args.kind] if args.kind else list(PLURAL.values())
    registry = get_registry()
    out: dict[str, list[dict]] = {}
    for plural in kinds:
        kind = {v: k for k, v in PLURAL.items()}[plural]
        out[plural] = [
            {
                "name": r.name,
                "plugin": r.plugin,
                "distribution": r.distribution,
                "version": r.version,
                "aliases": list(r.aliases),
                "summary": r.summary,
                "params": r.params_schema().get("properties", {}),
            }
            for r in registry.list(kind, _wildcard(args.pattern))
        ]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for plural, regs in out.items():
        print(f"{plural}:")
        for r in regs:
            alias = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
            print(f"  {r['name']:<22} [{r['plugin']}] {r['summary']}{alias}")
            for pname, pschema in r["params"].items():
                default = json.dumps(pschema.get("default")) if "default" in pschema else "required"
                desc = pschema.get("description", "")
                print(f"      {pname} = {default}" + (f"  {desc}" if desc else ""))
    return 0


def _cmd_eval(args) -> int:
    import torch

    from kdcore.data import source_from_spec
    from kdcore.engine.evaluate import baseline_name, evaluate
    from kdcore.plan import RunPlan, set_name

    run_dir = Path(args.run_dir)
    plan = RunPlan.from_run(run_dir)
    student = _eval_model(args, run_dir)
    sources = plan.val_sets
    if args.data:
        value: Any = args.data
        if args.data.lstrip().startswith("{"):
            try:
                value = json.loads(args.data)
            except json.JSONDecodeError as exc:
                raise SpecError(
                    f"--data: not valid JSON ({exc.msg}); give builtin:NAME, a folder, "
                    'or \'{"input": FOLDER, "target": FOLDER}\''
                ) from None
        source = source_from_spec(value, where="--data", degradation=plan.degradation)
        sources = {set_name(source): source}
    sets = {name: source.load(plan.task) for name, source in sources.items()}
    teacher = None
    if any(p.target is None for pairs in sets.values() for p in pairs):
        if not plan.teachers:
            raise SpecError(
                "--data: these images have no targets to measure against and the run has no teacher; "
                'give \'{"input": FOLDER, "target": FOLDER}\''
            )
        from kdcore.engine.build import build_run

        teacher = build_run(plan, torch.device("cpu"), for_run=True).teacher_forward
    backend = "onnxruntime" if args.onnx or args.backend == "onnxruntime" else "torch"
    results = {
        name: evaluate(
            student,
            pairs,
            plan.task,
            torch.device("cpu"),
            teacher_forward=teacher,
            degradation=plan.degradation,
        )
        for name, pairs in sets.items()
    }
    blocks = {
        name: {
            "student": result["student"],
            "baseline": {"name": baseline_name(plan.task), **result["baseline"]},
            "images": len(result["images"]),
            "measured_against": result["against"],
        }
        for name, result in results.items()
    }
    out = {
        **next(iter(blocks.values())),
        "backend": backend,
        "degradation": plan.degradation,
        "val_sets": blocks,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, one in blocks.items():
            print(
                f"{name}: {one['images']} images ({backend}): student PSNR {one['student']['psnr']:.2f} dB "
                f"SSIM {one['student']['ssim']:.4f} | {one['baseline']['name']} PSNR "
                f"{one['baseline']['psnr']:.2f} dB SSIM {one['baseline']['ssim']:.4f}"
            )
        if any(one["measured_against"] == "teacher" for one in blocks.values()):
            print("(no ground truth: scores measure agreement with the teacher's output)")
    return 0


def _cmd_enhance(args) -> int:
    import torch

    from kdcore.data import load_image, save_image
    from kdcore.engine.tiling import run_tiled
    from kdcore.interfaces import as_output

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"-o {out_dir}: exists and is not a folder; give a folder for the results")
    if args.tile < 0:
        raise SpecError(
            f"--tile {args.tile}: give a positive tile size in pixels, or 0 (tiles only above --max-pixels)"
        )
    images = [Path(p) for p in args.images]
    for p in images:
        if p.is_dir():
            raise SpecError(f"{p}: is a folder, not an image file; give image files (e.g. {p}/*.png)")
        if not p.is_file():
            raise SpecError(f"{p}: no such image file")
    student = _enhance_model(args)
    scale = student.task.scale
    inputs = [(p, load_image(p)) for p in images]  # every file is checked before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    for (_p, img), name in zip(inputs, output_names(images), strict=True):
        h, w = img.shape[-2:]
        tile = args.tile if args.tile else (0 if h * w <= args.max_pixels else 1024)
        with torch.inference_mode():
            if tile:
                y = run_tiled(student, img.unsqueeze(0), scale, tile=tile, overlap=min(64, tile // 4))[
                    0
                ].clamp(0, 1)
            else:
                y = as_output(student(img.unsqueeze(0))).image[0].clamp(0, 1)
        target = out_dir / name
        save_image(y, target)
        print(target)
    return 0


def _cmd_report(args) -> int:
    from kdcore.report import report

    path = report(args.run_dirs, args.output, max_images=args.max_images, max_side=args.max_side)
    print(path)
    return 0


def _eval_model(args, run_dir: Path):
    """The model ``kdcore eval`` measures: the PyTorch student, or its ONNX export in onnxruntime."""
    from kdcore import api

    if args.onnx or args.backend == "onnxruntime":
        from kdcore.onnx import DEFAULT_FILE, load_onnx

        if not (run_dir / "spec.json").is_file():
            raise SpecError(f"{run_dir}: not a kdcore run folder (no spec.json)")
        path = Path(args.onnx) if args.onnx else run_dir / DEFAULT_FILE
        if not path.is_file():
            raise SpecError(
                f"{path}: no such ONNX file; run `kdcore export {run_dir}` first or give --onnx FILE"
            )
        return load_onnx(path, args.threads)
    return api.load(run_dir)


def _enhance_model(args):
    """The model ``kdcore enhance`` applies: a run folder's student (torch or onnxruntime) or an ONNX file."""
    from kdcore import api

    source = Path(args.run_dir)
    is_onnx_file = source.suffix.lower() == ".onnx"
    if is_onnx_file or args.backend == "onnxruntime":
        from kdcore.onnx import DEFAULT_FILE, load_onnx

        path = source if is_onnx_file else source / DEFAULT_FILE
        if not is_onnx_file and not path.is_file():
            if not (source / "spec.json").is_file():
                raise SpecError(f"{source}: neither a kdcore run folder nor an .onnx file")
            raise SpecError(f"{path}: no such ONNX file; run `kdcore export {source}` first")
        if args.backend == "torch":
            raise SpecError(f"{source}: an ONNX file runs with --backend onnxruntime, not torch")
        return load_onnx(path, args.threads)
    return api.load(source)


def _cmd_export(args) -> int:
    from kdcore import api

    if args.int8:
        print("warning: --int8 is deprecated; it means --quantize int8", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # said above, in the CLI's words
        report = api.export(
            args.run_dir,
            args.output,
            format=args.format,
            opset=args.opset,
            tolerance=args.tolerance,
            exporter=args.exporter,
            dtype=args.dtype,
            quantize=args.quantize,
            max_drop=args.max_drop,
            int8=args.int8,
        )
    for row in report["verification"]:
        psnr = "identical" if row["psnr_db"] is None else f"PSNR {row['psnr_db']:.1f} dB"
        print(
            f"verified fp32 {row['batch']}×3×{row['size'][0]}×{row['size'][1]}: "
            f"max abs difference {row['max_abs_diff']:.2e}, {psnr} (tolerance {report['tolerance']:g})"
        )
    if "psnr_drop_db" in report:
        print(
            f"{report['precision']}: PSNR {report['psnr_db']:.2f} dB against {report['psnr_fp32_db']:.2f} dB "
            f"in fp32 on {len(report['precision_verification'])} validation images: "
            f"drop {report['psnr_drop_db']:.3f} dB (--max-drop {report['max_drop_db']:g})"
        )
    latency = f", {report['latency_ms']:.1f} ms in onnxruntime" if "latency_ms" in report else ""
    print(
        f"wrote {report['file']} ({report['precision']}, {report['bytes'] / 1e6:.2f} MB, opset {report['opset']}"
        f"{latency}) and {Path(report['run_dir']) / 'export.json'}"
    )
    return 0


def output_names(images: list[Path]) -> list[str]:
    """The result file of each input: ``STEM.png``, or ``NAME.png`` (``x.jpg.png``) when two inputs share a stem."""
    stems = [p.stem for p in images]
    names = [f"{p.stem}.png" if stems.count(p.stem) == 1 else f"{p.name}.png" for p in images]
    return [n if names.count(n) == 1 else f"{i}-{n}" for i, n in enumerate(names)]


def _cmd_inspect(args) -> int:
    from kdcore.inspection import as_rows, format_table, inspect_model, parse_task

    params = None
    if args.params:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"--params: not valid JSON ({exc.msg} at character {exc.pos}); e.g. '{{\"n_feats\": 32}}'"
            ) from None
        if not isinstance(params, dict):
            raise SpecError("--params: give a JSON object, e.g. '{\"n_feats\": 32}'")
    infos = inspect_model(
        args.kind, args.name, params, parse_task(args.task), tuple(args.size), args.checkpoint
    )
    if args.json:
        print(json.dumps(as_rows(infos), indent=2))
    else:
        print(format_table(infos))
    return 0


def _cmd_new_plugin(args) -> int:
    from kdcore.scaffold import next_steps, scaffold_plugin

    print(next_steps(scaffold_plugin(args.name, args.kind, args.dest), args.kind))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kdcore", description="Knowledge distillation for image super-resolution and enhancement."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="train (distil when a teacher is given), evaluate, write the run folder")
    p.add_argument("spec")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a spec key, e.g. train.steps=100"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a different run in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="a finished run of the same spec in the output folder is reused, not trained again",
    )
    p.add_argument(
        "--seeds", metavar="0,1,2", help="one complete run per seed in OUTPUT/seed-N/, and their aggregate"
    )
    p.add_argument(
        "--baseline", choices=["none", "alone"], help="same as train.baseline: also train the student alone"
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with N processes (DistributedDataParallel, launched with torchrun)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("validate", help="check a spec without training")
    p.add_argument("spec")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("schema", help="the JSON Schema of the spec, with every installed component's params")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("plugins", help="installed plugins and their status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("list", help="registered components with summaries and params")
    p.add_argument(
        "kind",
        nargs="?",
        choices=[k.plural for k in KIND_TABLE.values()],
        help="students, teachers, losses or adapters (default: all kinds)",
    )
    p.add_argument(
        "--pattern",
        default="*",
        help="wildcard on names, e.g. '*hdr*'; a bare word such as 'hdr' "
        "matches names containing it (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("eval", help="metrics of a trained student")
    p.add_argument("run_dir")
    p.add_argument(
        "--data",
        help='builtin:NAME, a folder, or \'{"input": DIR, "target": DIR}\' (default: the run\'s data.val)',
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="onnxruntime: measure the exported RUN_DIR/model.onnx (kdcore export) instead",
    )
    p.add_argument(
        "--onnx", metavar="FILE", help="measure this exported ONNX file (implies --backend onnxruntime)"
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: its own choice)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("enhance", help="apply a trained student (run folder or .onnx file) to image files")
    p.add_argument("run_dir", metavar="RUN_DIR|MODEL.onnx")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    p.add_argument(
        "--tile",
        type=int,
        default=0,
        metavar="PIXELS",
        help="process in overlapping tiles of this size (default: %(default)s, tiles only for images "
        "above --max-pixels)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=16_000_000,
        help="larger inputs are processed in 1024-pixel tiles to bound memory (default: %(default)s)",
    )
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default=None,
        help="torch (default for a run folder) or onnxruntime (RUN_DIR/model.onnx, or the .onnx file given)",
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: its own choice)")
    p.set_defaults(func=_cmd_enhance)

    p = sub.add_parser("report", help="the self-contained HTML report of one run, or several side by side")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="the HTML file (default RUN_DIR/report.html; required for several runs)",
    )
    p.add_argument(
        "--max-images",
        type=int,
        default=10,
        metavar="N",
        help="validation images shown as before/after views (all get a PSNR row)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=960,
        metavar="PIXELS",
        help="larger images are shown downscaled, with full-resolution crops",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="the student alone as ONNX, verified in onnxruntime against PyTorch")
    p.add_argument("run_dir")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="the ONNX file (default: RUN_DIR/model.onnx; model.fp16.onnx, model.int8.onnx)",
    )
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest max abs difference to PyTorch accepted at every verified size (default 1e-4)",
    )
    p.add_argument(
        "--exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="torch.onnx exporter (default torchscript: see the README's Export section)",
    )
    p.add_argument(
        "--dtype",
        choices=["fp32", "fp16"],
        default="fp32",
        help="fp16: weights and computation in fp16 (RUN_DIR/model.fp16.onnx), verified by its PSNR drop",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8: onnxruntime static quantisation calibrated on the run's training images "
        "(RUN_DIR/model.int8.onnx), verified by its PSNR drop",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.1,
        metavar="DB",
        help="largest PSNR drop (dB) of --dtype fp16 / --quantize int8 on the validation images "
        "against the fp32 student (default 0.1); beyond it nothing is written (exit 1)",
    )
    p.add_argument("--int8", action="store_true", help="deprecated: the same as --quantize int8")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "inspect", help="every named module path of a student or teacher with its output shape"
    )
    p.add_argument("kind", choices=["student", "teacher", "students", "teachers"])
    p.add_argument("name")
    p.add_argument("--params", metavar="JSON", help="the component's params as a JSON object")
    p.add_argument("--task", default="sr:2", help="sr:2, sr:3, sr:4 or enhance (default sr:2)")
    p.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=[32, 32],
        metavar=("H", "W"),
        help="sample input size (default 32 32)",
    )
    p.add_argument(
        "--checkpoint", metavar="PATH", help="weights to load first (a teacher that needs one, e.g. spandrel)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("new-plugin", help="scaffold a plugin package in a new folder NAME/")
    p.add_argument("name")
    p.add_argument(
        "--kind", choices=list(KIND_TABLE), default="loss", help="kind of component (default: %(default)s)"
    )
    p.add_argument("--dest", default=".", help="folder in which NAME/ is created")
    p.set_defaults(func=_cmd_new_plugin)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    spelling = SPELLING.set("cli")  # messages name flags; reset afterwards for callers in the same process
    try:
        return _dispatch(args)
    finally:
        SPELLING.reset(spelling)


def _dispatch(args) -> int:
    try:
        return args.func(args)
    except KdcoreError as exc:
        if args.debug:
            traceback.print_exc()
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if args.debug:
            traceback.print_exc()
            return 1
        return _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
