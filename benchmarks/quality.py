"""Quality: distillation vs training alone (sr ×2) and operator distillation (enhance), several seeds.

Everything goes through ``kdcore.run`` with specs built here; run folders land under
``benchmarks/results/runs/`` (git-ignored). Extra image folders (``--data``) are evaluated with
the trained models afterwards.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

import kdcore
from kdcore.data import load_pairs
from kdcore.engine.evaluate import evaluate
from kdcore.interfaces import as_output

#: goals the sr comparison is reported against
KD_GAIN_GOAL_DB = 0.3
KEEP_TEACHER_GAIN_GOAL = 0.90

#: grid sizing of the quality runs (the quickstart's): a 128² low-resolution copy, 8×8 cells
SMALL_GRID = {"net_input_size": 128, "spatial_bins": 8}


def spread(values: list[float]) -> dict[str, float]:
    """mean, sample std (0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


LR = 0.0005  # above about 2e-3 HDRNet's fusion ReLUs die (plugins/hdrnet/README.md, "Training notes")


def _spec(task, data, student, out, steps, seed, losses, teacher=None, lr=LR, cache="off") -> dict:
    spec = {"task": task, "data": data, "student": student, "losses": losses,
            "train": {"steps": steps, "lr": lr, "seed": seed, "warmup_steps": max(1, steps // 20),
                      "log_every": max(1, steps // 4), "teacher_cache": cache},
            "output": str(out)}
    if teacher is not None:
        spec["teacher"] = teacher
    return spec


def _row(summary: dict, which: str = "student") -> dict[str, Any]:
    s = summary[which]
    return {"psnr": s["psnr"], "ssim": s["ssim"], "params": s.get("params"), "latency_ms": s.get("latency_ms")}


def sr_quality(data: dict, out: Path, teacher_steps: int, student_steps: int, seeds: list[int],
               teacher_multiplier: int = 2, log=print) -> dict[str, Any]:
    """Trains an hdrnet teacher (×2), then the deformable-hdrnet student distilled and alone per seed."""
    task = {"kind": "sr", "scale": 2}
    teacher_params = {"channel_multiplier": teacher_multiplier, **SMALL_GRID}
    teacher_dir = out / "sr2-teacher"
    log(f"  sr×2 teacher: hdrnet {teacher_params}, {teacher_steps} steps")
    t_sum = kdcore.run(_spec(task, data, {"name": "hdrnet", "params": teacher_params}, teacher_dir,
                             teacher_steps, 0, [{"name": "l1"}]), overwrite=True)
    teacher = {"name": "hdrnet", "params": teacher_params, "checkpoint": str(teacher_dir)}
    student = {"name": "deformable-hdrnet", "params": dict(SMALL_GRID)}
    kd_losses = [{"name": "l1"}, {"name": "relative-difference", "weight": 0.5},
                 {"name": "feature-matching", "weight": 0.1,
                  "params": {"pairs": [{"student": "lowres.fusion", "teacher": "lowres.fusion"}]}}]
    runs: dict[str, list[dict]] = {"distilled": [], "alone": []}
    for seed in seeds:
        for label, losses, t in (("distilled", kd_losses, teacher), ("alone", [{"name": "l1"}], None)):
            log(f"  sr×2 student {label}, seed {seed}, {student_steps} steps")
            folder = out / f"sr2-student-{label}-seed{seed}"
            s = kdcore.run(_spec(task, data, student, folder, student_steps, seed, losses, t), overwrite=True)
            runs[label].append({"seed": seed, "run": str(folder), "seconds": s["seconds"], **_row(s)})
    teacher_row = {"run": str(teacher_dir), "seconds": t_sum["seconds"], **_row(t_sum)}
    baseline = t_sum["baseline"]
    gains = [d["psnr"] - a["psnr"] for d, a in zip(runs["distilled"], runs["alone"])]
    teacher_gain = teacher_row["psnr"] - baseline["psnr"]
    kept = [(d["psnr"] - baseline["psnr"]) / teacher_gain for d in runs["distilled"]] if teacher_gain > 0 else []
    result = {
        "task": task, "data": data, "teacher_steps": teacher_steps, "student_steps": student_steps, "seeds": seeds,
        "teacher": {"name": "hdrnet", "params_spec": teacher_params, **teacher_row},
        "student_spec": student, "kd_losses": kd_losses,
        "baseline": {"name": "bicubic", "psnr": baseline["psnr"], "ssim": baseline["ssim"]},
        "distilled": runs["distilled"], "alone": runs["alone"],
        "distilled_psnr": spread([r["psnr"] for r in runs["distilled"]]),
        "alone_psnr": spread([r["psnr"] for r in runs["alone"]]),
        "distilled_ssim": spread([r["ssim"] for r in runs["distilled"]]),
        "alone_ssim": spread([r["ssim"] for r in runs["alone"]]),
        "kd_gain_db": spread(gains),
        "teacher_gain_db": teacher_gain,
        "kept_teacher_gain": spread(kept) if kept else None,
    }
    result["goal_kd_gain_met"] = result["kd_gain_db"]["mean"] >= KD_GAIN_GOAL_DB
    result["goal_kept_met"] = bool(kept) and result["kept_teacher_gain"]["mean"] >= KEEP_TEACHER_GAIN_GOAL
    return result


#: the operator-distillation recipe (plugins/hdrnet/README.md, "Learning operators"): patches as wide
#: as the grid's input, the default 256-pixel grid input, lr 1e-3, mse on cached targets
ENHANCE_RECIPE = {
    "data": {"patch_size": 256, "batch_size": 4},
    "student_params": {},
    "lr": 1e-3,
    "losses": [{"name": "mse"}],
}
#: student params added per operator: sharpening needs the detail gains (an affine colour
#: transform from a smooth grid cannot add detail); for local-contrast they measured 0.3 dB lower
OPERATOR_PARAMS = {"unsharp-mask": {"enhance_detail_levels": 2}}


def enhance_quality(data: dict, out: Path, steps: int, seeds: list[int], operator: str = "local-contrast",
                    log=print, students: tuple[str, ...] = ("hdrnet", "deformable-hdrnet"),
                    recipe: dict | None = None) -> dict[str, Any]:
    """An image operator distilled into hdrnet (and deformable-hdrnet), metrics against the operator.

    ``recipe`` (default :data:`ENHANCE_RECIPE`) overrides the data's patch and batch size, the
    students' params, the learning rate and the losses.
    """
    if recipe is None:
        recipe = {**ENHANCE_RECIPE, "student_params": {**ENHANCE_RECIPE["student_params"],
                                                       **OPERATOR_PARAMS.get(operator, {})}}
    task = {"kind": "enhance"}
    teacher = {"name": operator}
    data = {**data, **recipe.get("data", {})}
    params = dict(recipe.get("student_params", {}))
    specs = {name: {"name": name, "params": dict(params)} for name in students}
    runs: dict[str, list[dict]] = {k: [] for k in specs}
    baseline = None
    for seed in seeds:
        for label, student in specs.items():
            log(f"  enhance {operator} → {label}, seed {seed}, {steps} steps")
            folder = out / f"enhance-{operator}-{label}-seed{seed}"
            s = kdcore.run(_spec(task, data, student, folder, steps, seed, recipe.get("losses", [{"name": "l1"}]),
                                 teacher, lr=recipe.get("lr", LR), cache="memory"), overwrite=True)
            baseline = s["baseline"]
            runs[label].append({"seed": seed, "run": str(folder), "seconds": s["seconds"],
                                "measured_against": s["measured_against"],
                                "teacher_latency_ms": (s.get("teacher") or {}).get("latency_ms"), **_row(s)})
    return {
        "task": task, "data": data, "teacher": teacher, "steps": steps, "seeds": seeds, "recipe": recipe,
        "baseline": {"name": "identity", "psnr": baseline["psnr"], "ssim": baseline["ssim"]},
        "students": {k: {"spec": specs[k], "runs": v, "psnr": spread([r["psnr"] for r in v]),
                         "ssim": spread([r["ssim"] for r in v])} for k, v in runs.items()},
    }


def retouch(image: torch.Tensor, operator: torch.nn.Module) -> torch.Tensor:
    """The paired-retouch target: an S-shaped tone curve, then the ``local-contrast`` operator."""
    curved = image + 0.6 * image * (1 - image) * (image - 0.5) * 2  # smooth S curve, fixed ends
    with torch.inference_mode():
        return as_output(operator(curved.clamp(0, 1))).image.clamp(0, 1)


def paired_retouch_quality(steps: int, patch: int = 256, batch: int = 4, seed: int = 0, lr: float = 1e-3,
                           student_params: dict | None = None, log=print) -> dict[str, Any]:
    """hdrnet trained directly (a plain PyTorch loop, not ``kdcore run``) on pairs (photo, retouched
    photo) of ``builtin:photos``, PSNR against the retouched ``builtin:photos-val``.

    Paired-folder training through ``kdcore run`` is being reworked in the engine, so this measures
    the model and recipe on the same pairs without it; the operator-teacher route of
    :func:`enhance_quality` measures the rest.
    """
    import time as _time

    from kdcore.data.builtin import builtin_names, load_photo
    from kdcore.metrics import image_metrics

    torch.manual_seed(seed)
    task = kdcore.Task(kind="enhance")
    op = kdcore.create("teacher", "local-contrast", {}, task).eval()
    names = builtin_names()
    train = [(img, retouch(img[None], op)[0]) for img in (load_photo(n) for n in names["photos"])]
    val = [(img, retouch(img[None], op)[0]) for img in (load_photo(n) for n in names["photos-val"])]
    params = {} if student_params is None else student_params
    model = kdcore.create("student", "hdrnet", params, task).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    t0 = _time.perf_counter()
    for step in range(steps):
        xs, ys = [], []
        for _ in range(batch):
            x, y = train[int(torch.randint(len(train), (1,), generator=gen))]
            h, w = x.shape[-2:]
            i = int(torch.randint(h - patch + 1, (1,), generator=gen))
            j = int(torch.randint(w - patch + 1, (1,), generator=gen))
            xs.append(x[:, i:i + patch, j:j + patch])
            ys.append(y[:, i:i + patch, j:j + patch])
        loss = torch.nn.functional.mse_loss(model(torch.stack(xs)), torch.stack(ys))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % max(1, steps // 4) == 0:
            log(f"  paired retouch: step {step + 1}/{steps}, loss {float(loss):.2e}")
    model.eval()
    with torch.inference_mode():
        student = [image_metrics(model(x[None]).clamp(0, 1), y[None], task)["psnr"] for x, y in val]
        identity = [image_metrics(x[None], y[None], task)["psnr"] for x, y in val]
    return {"route": "direct training loop (paired photos; not kdcore run)", "steps": steps, "patch": patch,
            "batch": batch, "lr": lr, "params": params, "seconds": _time.perf_counter() - t0,
            "psnr": statistics.fmean(student), "identity_psnr": statistics.fmean(identity),
            "per_image": dict(zip(names["photos-val"], student, strict=True))}


@torch.inference_mode()
def evaluate_folder(folder: str, sr: dict | None, enhance: dict | None) -> dict[str, Any]:
    """The trained models of :func:`sr_quality` / :func:`enhance_quality` on another image folder."""
    device = torch.device("cpu")
    result: dict[str, Any] = {"folder": folder}
    if sr is not None:
        task = kdcore.Task(**sr["task"])
        pairs = load_pairs(folder, task, where="--data")
        t = evaluate(kdcore.load(sr["teacher"]["run"]), pairs, task, device)
        rows = {"bicubic": t["baseline"], "teacher": t["student"]}
        for label in ("distilled", "alone"):
            vals = [evaluate(kdcore.load(r["run"]), pairs, task, device)["student"] for r in sr[label]]
            rows[label] = {"psnr": spread([v["psnr"] for v in vals]), "ssim": spread([v["ssim"] for v in vals])}
        result["sr"] = rows
    if enhance is not None:
        task = kdcore.Task(**enhance["task"])
        pairs = load_pairs(folder, task, where="--data")
        op = kdcore.create("teacher", enhance["teacher"]["name"], {}, task).eval()

        def teacher_forward(x):
            return as_output(op(x))

        rows = {}
        for label, entry in enhance["students"].items():
            vals = [evaluate(kdcore.load(r["run"]), pairs, task, device, teacher_forward=teacher_forward)
                    for r in entry["runs"]]
            rows["identity"] = vals[0]["baseline"]
            rows[label] = {"psnr": spread([v["student"]["psnr"] for v in vals]),
                           "ssim": spread([v["student"]["ssim"] for v in vals]),
                           "against": vals[0]["against"]}
        result["enhance"] = rows
    return result
