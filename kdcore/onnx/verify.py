"""Does the exported model compute what the PyTorch student computes?

Two checks: :func:`compare` (max abs difference per input size, seeded noise; the fp32 export
must stay within a tolerance) and :func:`precision_cost` (fp16 and int8 files: the PSNR they lose
on real images, by the same convention as ``kdcore eval``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from kdcore.data import ImagePair
from kdcore.interfaces import Task, as_output
from kdcore.metrics import image_psnr
from kdcore.onnx._graph import short_reason

#: input sizes (batch, height, width) the export is verified on: odd and non-square first
VERIFY_SIZES: tuple[tuple[int, int, int], ...] = ((1, 37, 53), (2, 64, 96))


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """PSNR in dB (peak 1, float, no rounding) between two outputs; None where they are identical."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return None if mse == 0 else 10 * math.log10(1.0 / mse)


def compare(
    student: torch.nn.Module,
    onnx_model: torch.nn.Module,
    sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Max abs difference and PSNR between the PyTorch student and an ONNX model, per input size.

    The PyTorch side runs in eval mode under ``torch.inference_mode()`` (what ``kdcore enhance``
    runs); inputs are seeded uniform noise in [0, 1], ``sizes`` as (batch, height, width).
    """
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    student.eval()
    for b, h, w in sizes:
        x = torch.rand(b, 3, h, w, generator=gen)
        with torch.inference_mode():
            ref = as_output(student(x)).image.float()
        row: dict[str, Any] = {"batch": b, "size": [h, w], "max_abs_diff": None, "psnr_db": None}
        try:
            got = onnx_model(x)
        except Exception as exc:  # noqa: BLE001 - a graph that only runs at the traced size, typically
            rows.append({**row, "error": short_reason(exc)})
            continue
        if tuple(got.shape) != tuple(ref.shape):
            rows.append({**row, "shape": list(got.shape), "expected_shape": list(ref.shape)})
            continue
        rows.append({**row, "max_abs_diff": (got - ref).abs().max().item(), "psnr_db": psnr_db(got, ref)})
    return rows


def failures(rows: list[dict[str, Any]], tolerance: float) -> list[str]:
    """One line per :func:`compare` row that fails (an error, a wrong shape, beyond ``tolerance``)."""
    bad = []
    for r in rows:
        where = f"{r['batch']}×3×{r['size'][0]}×{r['size'][1]}"
        if "error" in r:
            bad.append(f"input {where}: onnxruntime fails: {r['error']}")
        elif r["max_abs_diff"] is None:
            bad.append(f"input {where}: output shape {r['shape']}, PyTorch gives {r['expected_shape']}")
        elif not r["max_abs_diff"] <= tolerance:
            bad.append(
                f"input {where}: max abs difference {r['max_abs_diff']:.3g} > tolerance {tolerance:g}"
                + (f" (PSNR {r['psnr_db']:.1f} dB)" if r["psnr_db"] is not None else "")
            )
    return bad


@torch.inference_mode()
def precision_cost(
    student: torch.nn.Module,
    model: torch.nn.Module,
    pairs: Sequence[ImagePair],
    task: Task,
    *,
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """What a lower-precision model loses against the fp32 PyTorch ``student`` on whole images.

    For each pair: the PSNR of both against the pair's target (or, without one, against
    ``reference(input)``, e.g. the run's teacher), by the convention of :mod:`kdcore.metrics`
    (what ``kdcore eval`` reports), and the plain PSNR of ``model``'s output against the
    student's. ``psnr_drop_db`` is the mean PSNR of the student minus that of ``model``.
    """
    student.eval()
    rows: list[dict[str, Any]] = []
    against = "target"
    for pair in pairs:
        x = pair.input.unsqueeze(0).float()
        fp32 = as_output(student(x)).image.clamp(0, 1)[0].float()
        low = model(x).clamp(0, 1)[0].float()
        target = pair.target
        if target is None:
            if reference is None:
                raise ValueError(f"{pair.name}: no target and no reference to measure against")
            target, against = reference(x).clamp(0, 1)[0].float(), "teacher"
        rows.append(
            {
                "name": pair.name,
                "psnr_fp32_db": image_psnr(fp32, target, task, name=pair.name),
                "psnr_db": image_psnr(low, target, task, name=pair.name),
                "psnr_vs_fp32_db": psnr_db(low, fp32),
            }
        )
    if not rows:
        raise ValueError("precision_cost needs at least one image")
    fp32_mean = sum(r["psnr_fp32_db"] for r in rows) / len(rows)
    low_mean = sum(r["psnr_db"] for r in rows) / len(rows)
    fidelity = [r["psnr_vs_fp32_db"] for r in rows if r["psnr_vs_fp32_db"] is not None]
    return {
        "images": len(rows),
        "measured_against": against,
        "psnr_fp32_db": fp32_mean,
        "psnr_db": low_mean,
        "psnr_drop_db": fp32_mean - low_mean,
        "min_psnr_vs_fp32_db": min(fidelity) if fidelity else None,
        "per_image": rows,
    }
