"""Smaller exports of a verified fp32 ONNX file: fp16 weights and compute, or static int8.

Both start from the fp32 file :func:`kdcore.onnx.export_student` wrote and verified; what they
cost in PSNR is measured by :func:`kdcore.onnx.verify.precision_cost`. The graph's input and
output stay float32 (casts inside the graph), so callers feed and read the same arrays.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence

import torch

from kdcore.data import ImagePair
from kdcore.onnx._graph import INPUT_NAME, ExportError, short_reason

DTYPES = ("fp32", "fp16")
QUANTIZE = ("int8",)
#: calibration of int8: at most this many patches of this side (input pixels), seeded
CALIBRATION_PATCHES = 32
CALIBRATION_SIDE = 64


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """onnxruntime's converters give advice through the root logger and warnings; kdcore reports."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Writes ``src`` (fp32 ONNX) as fp16 to ``dst``: weights and computation in fp16, the graph's
    input and output float32 (a cast at each end). Metadata is kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    try:
        with _quiet_logs():
            half = convert_float_to_float16(model, keep_io_types=True)
            # the converter appends the input casts after their users: a valid graph is sorted
            OnnxModel.graph_topological_sort(half.graph, is_deterministic=True)
    except Exception as exc:  # noqa: BLE001 - one line naming the step
        raise ExportError(f"--dtype fp16: the model could not be converted: {short_reason(exc)}") from None
    onnx.save(half, str(dst))


def calibration_patches(
    pairs: Sequence[ImagePair],
    count: int = CALIBRATION_PATCHES,
    side: int = CALIBRATION_SIDE,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Up to ``count`` seeded crops (1×3×side×side, smaller where an image is) of the inputs of
    ``pairs``, spread over the images in turn: what int8 calibration observes."""
    if not pairs:
        return []
    gen = torch.Generator().manual_seed(seed)
    patches = []
    for i in range(count):
        img = pairs[i % len(pairs)].input
        h, w = img.shape[-2:]
        ph, pw = min(side, h), min(side, w)
        top = int(torch.randint(0, h - ph + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - pw + 1, (1,), generator=gen))
        patches.append(img[:, top : top + ph, left : left + pw].unsqueeze(0).float().contiguous())
    return patches


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, patches: Sequence[torch.Tensor]) -> None:
    """onnxruntime static int8 quantisation of ``src`` into ``dst`` (QDQ format; int8 weights per
    output channel, uint8 activations with ranges calibrated (min/max) on ``patches``)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not patches:
        raise ExportError("--quantize int8: no training images to calibrate on")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(patches)

        def get_next(self) -> dict | None:
            x = next(self._items, None)
            return None if x is None else {INPUT_NAME: x.numpy()}

    try:
        with _quiet_logs():
            quantize_static(
                str(src),
                str(dst),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    except Exception as exc:  # noqa: BLE001 - one line naming the step
        raise ExportError(
            f"--quantize int8: onnxruntime could not quantise the model: {short_reason(exc)}"
        ) from None
