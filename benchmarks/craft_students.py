"""×4 student candidates for the CRAFT teacher: latency at 1080p output and what the teacher can initialise.

    python benchmarks/craft_students.py [--smoke] [--repeats 3] [--threads 2]
                                        [--out benchmarks/results/craft_students.json]

One process times the shipped CRAFT ×4 teacher (``weights/craft_x4.pth`` through kdcore's
``spandrel`` teacher) and each candidate student on a 480×270 input (a 1920×1080 output),
interleaved (teacher, a, b, …, teacher, a, b, …) after one warm-up call each, so that the
ratios hold when the machine's load drifts; min and median wall-clock of ``--repeats`` runs.
The target of issue 24 is a student at ≤ 1/20 of the teacher's latency.

Per candidate it also counts the teacher's tensors it could start from (``student.init:
"teacher"``): those with the same name and shape, and, where a ``student.init_rename`` map is
given below, those the map sends to a teacher tensor of the same shape.

The smaller CRAFTs are spandrel's CRAFT class with fewer residual groups or features (not a
kdcore student yet): they share the teacher's tensor names, so they measure what a CRAFT student
would cost.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import kdcore
from kdcore_spandrel.teacher import SpandrelTeacher

CHECKPOINT = common.ROOT / "weights" / "craft_x4.pth"
TASK = kdcore.Task(kind="sr", scale=4)
HDRNET = {"net_input_size": 128, "spatial_bins": 8}

#: name -> (kind, component name or CRAFT kwargs, params, student.init_rename map)
CANDIDATES: dict[str, tuple[str, Any, dict, dict[str, str]]] = {
    "compact-16x4": ("student", "compact", {"num_feat": 16, "num_conv": 4}, {}),
    "compact-32x8": ("student", "compact", {"num_feat": 32, "num_conv": 8}, {}),
    "compact-48x4": (
        "student",
        "compact",
        {"num_feat": 48, "num_conv": 4},
        {r"body\.0\.(.*)": r"conv_first.\1", r"body\.10\.(.*)": r"upsample.0.\1"},
    ),
    "compact-48x8": (
        "student",
        "compact",
        {"num_feat": 48, "num_conv": 8},
        {r"body\.0\.(.*)": r"conv_first.\1", r"body\.18\.(.*)": r"upsample.0.\1"},
    ),
    "span-16": ("student", "span", {"feature_channels": 16}, {}),
    "span-28": ("student", "span", {"feature_channels": 28}, {}),
    "deformable-hdrnet": ("student", "deformable-hdrnet", dict(HDRNET), {}),
    "deformable-hdrnet-sr16": ("student", "deformable-hdrnet", {**HDRNET, "sr_residual_channels": 16}, {}),
    "deformable-hdrnet-sr48": (
        "student",
        "deformable-hdrnet",
        {**HDRNET, "sr_residual_channels": 48},
        {r"sr_residual\.0\.(.*)": r"conv_first.\1", r"sr_residual\.4\.(.*)": r"upsample.0.\1"},
    ),
    "edsr-4x32": ("student", "edsr", {"n_resblocks": 4, "n_feats": 32}, {}),
    "edsr-8x32": ("student", "edsr", {"n_resblocks": 8, "n_feats": 32}, {}),
    "craft-1x2-48": ("craft", {"embed_dim": 48, "depths": [2], "num_heads": [6]}, {}, {}),
    "craft-1x1-48": ("craft", {"embed_dim": 48, "depths": [1], "num_heads": [6]}, {}, {}),
    "craft-1x1-24": ("craft", {"embed_dim": 24, "depths": [1], "num_heads": [6]}, {}, {}),
}
SMOKE = ["compact-16x4", "craft-1x1-24"]


def build(kind: str, what: Any, params: dict) -> torch.nn.Module:
    """A candidate in eval mode: a kdcore student, or spandrel's CRAFT with the given settings."""
    if kind == "craft":
        from spandrel.architectures.CRAFT import CRAFT

        return CRAFT(upscale=TASK.scale, **what).eval()
    return kdcore.create("student", what, params, TASK).eval()


def shared_with_teacher(
    student: torch.nn.Module, teacher: dict[str, torch.Tensor], rename: dict[str, str]
) -> dict[str, Any]:
    """Teacher tensors the student can take: by name and shape, then through ``rename``
    (``student.init_rename``'s rule: first key matching the whole student name wins).
    ``parameters_covered`` counts the trainable values so initialised (buffers left out)."""
    params = dict(student.named_parameters())
    state = student.state_dict()
    by_name = [k for k, v in state.items() if k in teacher and teacher[k].shape == v.shape]
    renamed = []
    for k, v in state.items():
        for pattern, target in rename.items():
            m = re.fullmatch(pattern, k)
            if m:
                source = m.expand(target)
                if source in teacher and teacher[source].shape == v.shape:
                    renamed.append(f"{k} <- {source}")
                break
    covered = set(by_name) | {r.split(" <- ")[0] for r in renamed}
    n_params = sum(params[k].numel() for k in covered if k in params)
    return {
        "same_name_and_shape": len(by_name),
        "through_rename": renamed,
        "tensors": len(state),
        "parameters_covered": n_params,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="two candidates on a 64×48 input, 2 runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=common.HERE / "results" / "craft_students.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="torch.meshgrid")
    torch.set_num_threads(args.threads)
    h, w = (48, 64) if args.smoke else (270, 480)
    repeats = 2 if args.smoke else args.repeats
    names = SMOKE if args.smoke else list(CANDIDATES)

    teacher = SpandrelTeacher(task=TASK)
    teacher.load_checkpoint(CHECKPOINT, where="teacher.checkpoint")
    teacher.eval()
    teacher_state = teacher.state_dict()
    models: dict[str, torch.nn.Module] = {"teacher": teacher}
    result: dict[str, Any] = {
        "machine": common.machine_info(args.threads),
        "loadavg_start": common.loadavg(),
        "input": [h, w],
        "output": [h * TASK.scale, w * TASK.scale],
        "repeats": repeats,
        "teacher": {"describe": teacher.describe(), "params": sum(p.numel() for p in teacher.parameters())},
        "candidates": {},
    }
    for name in names:
        kind, what, params, rename = CANDIDATES[name]
        model = build(kind, what, params)
        models[name] = model
        result["candidates"][name] = {
            "kind": kind,
            "name": "craft (spandrel)" if kind == "craft" else what,
            "params": params if kind != "craft" else what,
            "n_params": sum(p.numel() for p in model.parameters()),
            "teacher_init": shared_with_teacher(model, teacher_state, rename),
        }
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))

    def call(model: torch.nn.Module):
        def fn() -> None:
            with torch.inference_mode():
                model(x)

        return fn

    common.log(f"timing {len(models)} models on a {w}×{h} input, {repeats} interleaved runs each")
    times = common.time_interleaved({n: call(m) for n, m in models.items()}, repeats, warmup=1)
    result["loadavg_end"] = common.loadavg()
    result["teacher"]["latency"] = times["teacher"]
    t_min, t_med = times["teacher"]["min_ms"], times["teacher"]["median_ms"]
    common.log(f"teacher {result['teacher']['describe']}: min {t_min:.0f} ms, median {t_med:.0f} ms")
    for name, row in result["candidates"].items():
        row["latency"] = times[name]
        row["fraction_of_teacher_min"] = times[name]["min_ms"] / t_min
        row["fraction_of_teacher_median"] = times[name]["median_ms"] / t_med
        row["meets_1_20"] = row["fraction_of_teacher_median"] <= 1 / 20
        init = row["teacher_init"]
        common.log(
            f"{name:24s} {row['n_params']:>9,} params  min {times[name]['min_ms']:7.0f} ms  "
            f"median {times[name]['median_ms']:7.0f} ms  1/{1 / row['fraction_of_teacher_median']:.0f} "
            f"of the teacher  init: {init['same_name_and_shape']} by name, "
            f"{len(init['through_rename'])} renamed"
        )
    common.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
