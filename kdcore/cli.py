"""The command line. Thin: parses, calls the library, formats results and errors."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from kdcore.errors import KdcoreError, SpecError


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


def format_table(summary: dict) -> str:
    """The baseline / teacher / student table printed at the end of a run."""
    rows = [("", "PSNR dB", "SSIM", "params", "latency ms")]
    base = summary["baseline"]
    rows.append((f"baseline ({base['name']})", _fmt(base["psnr"]), _fmt(base["ssim"], 4), "0", "-"))
    teacher = summary.get("teacher")
    if teacher:
        name = teacher["name"] if isinstance(teacher["name"], str) else "+".join(teacher["name"])
        rows.append((f"teacher ({name})", _fmt(teacher["psnr"]), _fmt(teacher["ssim"], 4),
                     f"{teacher['params']:,}", _fmt(teacher.get("latency_ms"), 1)))
    st = summary["student"]
    rows.append((f"student ({st['name']})", _fmt(st["psnr"]), _fmt(st["ssim"], 4), f"{st['params']:,}",
                 _fmt(st.get("latency_ms"), 1)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    note = ""
    if summary.get("measured_against") == "teacher":
        note = "\n(no ground truth: scores measure agreement with the teacher)"
    size = summary.get("latency_input")
    lat = f"\nlatency: median of 5 runs on one {size[0]}×{size[1]} input, {summary.get('device', 'cpu')}" if size else ""
    return "\n".join(lines) + note + lat


class _Progress:
    """A tqdm progress bar fed by the engine's callback (step, loss terms, it/s, ETA)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, event: str, **data: Any) -> None:
        from tqdm import tqdm

        if event == "start" and self.enabled:
            self.bar = tqdm(total=data["total"], initial=data["step"], desc="train", unit="step",
                            dynamic_ncols=True, file=sys.stderr)
        elif event == "step" and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in data["terms"].items()}, refresh=False)
        elif event == "eval":
            m = data["metrics"]["student"]
            msg = f"step {data['step']}: val PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
            (self.bar.write(msg, file=sys.stderr) if self.bar is not None else print(msg, file=sys.stderr))
        elif event == "message":
            print(data["text"], file=sys.stderr)
        elif event == "end" and self.bar is not None:
            self.bar.close()


def _launch(args) -> int:
    """``kdcore run --nproc N``: the same command under torchrun, N processes on this machine."""
    import os
    import subprocess

    from kdcore import api
    from kdcore.spec import parse_set

    api.validate(args.spec, **parse_set(args.set or []))  # a wrong spec fails here, once, with exit 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "kdcore"] + (["--debug"] if args.debug else []) + ["run", args.spec]
    for item in args.set or []:
        cmd += ["--set", item]
    cmd += [f for f, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--quiet", args.quiet)) if on]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}).returncode


def _cmd_run(args) -> int:
    import os

    from kdcore import api
    from kdcore.spec import parse_set

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    overrides = parse_set(args.set or [])
    rank0 = os.environ.get("RANK", "0") == "0"
    summary = api.run(args.spec, resume=args.resume, overwrite=args.overwrite,
                      callback=_Progress(not args.quiet and rank0), **overrides)
    if not rank0:
        return 0
    print(format_table(summary))
    print(f"run folder: {summary['output']}")
    return 0


def _cmd_validate(args) -> int:
    import torch

    from kdcore import api
    from kdcore.engine.build import build_run
    from kdcore.interfaces import Teacher
    from kdcore.plugins import get_registry
    from kdcore.spec import components_of, parse_set

    spec = api.prepare(args.spec, parse_set(args.set or []))  # as api.validate, keeping the built teachers
    built = build_run(spec, get_registry(), torch.device("cpu"), for_run=False)
    names = ", ".join(f"{w}={c.name}" for w, _, c in components_of(spec))
    print(f"{args.spec}: valid ({names}; {spec.train.steps} steps -> {spec.output})")
    for i, teacher in enumerate(built.teachers):
        text = teacher.describe() if isinstance(teacher, Teacher) else None
        if text:
            print(f"  {spec.teacher_location(i)}: {text}")
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


def _cmd_list(args) -> int:
    from kdcore.plugins import get_registry
    from kdcore.registry import PLURAL

    kinds = [args.kind] if args.kind else list(PLURAL.values())
    registry = get_registry()
    out: dict[str, list[dict]] = {}
    for plural in kinds:
        kind = {v: k for k, v in PLURAL.items()}[plural]
        out[plural] = [
            {"name": r.name, "plugin": r.plugin, "distribution": r.distribution, "version": r.version,
             "aliases": list(r.aliases), "summary": r.summary, "params": r.params_schema().get("properties", {})}
            for r in registry.list(kind, args.pattern)
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

    from kdcore import api
    from kdcore.data import load_pairs
    from kdcore.engine.evaluate import baseline_name, evaluate
    from kdcore.spec import BUILTIN_PREFIX, RunSpec

    run_dir = Path(args.run_dir)
    student = api.load(run_dir)
    raw = json.loads((run_dir / "spec.json").read_text())
    spec = RunSpec.model_validate(raw)
    source: Any = spec.data.val
    if args.data:
        source = args.data if args.data.startswith(BUILTIN_PREFIX) else Path(args.data).resolve()
    elif isinstance(source, str) and not source.startswith(BUILTIN_PREFIX):
        source = Path(source)
    elif not isinstance(source, str):
        source = {"input": Path(source.input), "target": Path(source.target)}
    pairs = load_pairs(source, spec.task, where="--data")
    if any(p.target is None for p in pairs):
        raise SpecError("--data: these images have no targets to measure against; give {input,target} folders")
    result = evaluate(student, pairs, spec.task, torch.device("cpu"))
    out = {"student": result["student"], "baseline": {"name": baseline_name(spec.task), **result["baseline"]},
           "images": len(pairs)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{len(pairs)} images: student PSNR {out['student']['psnr']:.2f} dB SSIM {out['student']['ssim']:.4f}"
              f" | {out['baseline']['name']} PSNR {out['baseline']['psnr']:.2f} dB SSIM {out['baseline']['ssim']:.4f}")
    return 0


def _cmd_enhance(args) -> int:
    import torch

    from kdcore import api
    from kdcore.data import load_image, save_image
    from kdcore.engine.tiling import run_tiled
    from kdcore.interfaces import as_output

    out_dir = Path(args.output)
    images = [Path(p) for p in args.images]
    for p in images:
        if not p.is_file():
            raise SpecError(f"{p}: no such image file")
    student = api.load(args.run_dir)
    scale = student.task.scale
    inputs = [(p, load_image(p)) for p in images]  # every file is checked before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    for p, img in inputs:
        h, w = img.shape[-2:]
        tile = args.tile if args.tile else (0 if h * w <= args.max_pixels else 1024)
        with torch.inference_mode():
            if tile:
                y = run_tiled(student, img.unsqueeze(0), scale, tile=tile, overlap=min(64, tile // 4))[0].clamp(0, 1)
            else:
                y = as_output(student(img.unsqueeze(0))).image[0].clamp(0, 1)
        target = out_dir / f"{p.stem}.png"
        save_image(y, target)
        print(target)
    return 0


def _cmd_inspect(args) -> int:
    from kdcore.inspection import as_rows, format_table, inspect_model, parse_task

    params = None
    if args.params:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise SpecError(f"--params: not valid JSON ({exc.msg} at character {exc.pos}); e.g. '{{\"n_feats\": 32}}'") from None
        if not isinstance(params, dict):
            raise SpecError("--params: give a JSON object, e.g. '{\"n_feats\": 32}'")
    infos = inspect_model(args.kind, args.name, params, parse_task(args.task), tuple(args.size), args.checkpoint)
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
    parser = _Parser(prog="kdcore", description="Knowledge distillation for image super-resolution and enhancement.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="train (distil when a teacher is given), evaluate, write the run folder")
    p.add_argument("spec")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec key, e.g. train.steps=100")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N processes (DistributedDataParallel, launched with torchrun)")
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
    p.add_argument("kind", nargs="?", choices=["teachers", "students", "losses", "adapters"])
    p.add_argument("--pattern", default="*", help="wildcard on names, e.g. '*hdr*'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("eval", help="metrics of a trained student")
    p.add_argument("run_dir")
    p.add_argument("--data", help="builtin:NAME or a folder (default: the run's data.val)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("enhance", help="apply a trained student to image files")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    p.add_argument("--tile", type=int, default=0, metavar="PIXELS",
                   help="process in overlapping tiles of this size (default: only images above --max-pixels)")
    p.add_argument("--max-pixels", type=int, default=16_000_000,
                   help="larger inputs are processed in 1024-pixel tiles to bound memory")
    p.set_defaults(func=_cmd_enhance)

    p = sub.add_parser("inspect", help="every named module path of a student or teacher with its output shape")
    p.add_argument("kind", choices=["student", "teacher", "students", "teachers"])
    p.add_argument("name")
    p.add_argument("--params", metavar="JSON", help="the component's params as a JSON object")
    p.add_argument("--task", default="sr:2", help="sr:2, sr:3, sr:4 or enhance (default sr:2)")
    p.add_argument("--size", nargs=2, type=int, default=[32, 32], metavar=("H", "W"),
                   help="sample input size (default 32 32)")
    p.add_argument("--checkpoint", metavar="PATH", help="weights to load first (a teacher that needs one, e.g. spandrel)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("new-plugin", help="scaffold a plugin package in a new folder NAME/")
    p.add_argument("name")
    p.add_argument("--kind", choices=["loss", "student", "teacher", "adapter"], default="loss")
    p.add_argument("--dest", default=".", help="folder in which NAME/ is created")
    p.set_defaults(func=_cmd_new_plugin)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
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
