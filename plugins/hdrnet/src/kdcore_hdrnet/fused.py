"""Fused CPU inference of HDRNet's full-resolution part: guide → slice → apply (+ sr detail gains).

One parallel pass over blocks of image rows (numba, ``prange``): for every row the grid is first
interpolated along y into a small ``Gw×D×C`` table that stays in cache, then every pixel of the
row computes its guide, samples that table trilinearly at (x, guide), applies the affine
transform and (sr, or enhance with detail levels) adds its gains times the band-pass detail,
whose coarser pyramid levels are upsampled bilinearly on the fly. Each full-resolution pixel is
read once and written once; nothing of full size but the output is allocated.

The kernel computes what :meth:`kdcore_hdrnet.HDRNet.forward` computes with PyTorch ops, with the
same coordinate conventions (``grid_sample`` with ``align_corners=False`` and border padding for
the slice, ``align_corners=True`` for the curve table, ``F.interpolate`` bilinear for the detail
levels); the tests compare the two to 1e-5.

It is used only in eval mode without autograd, on CPU float32 tensors, outside ONNX export,
tracing and ``torch.compile``. Where numba cannot be imported, or ``KDCORE_HDRNET_FUSED=0`` is
set, :func:`available` is false and the model keeps its PyTorch path (one warning says so).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

#: Environment variable that turns the fused path off ("0", "false", "off", "no").
ENV_VAR = "KDCORE_HDRNET_FUSED"

GUIDE_CURVE = 0
GUIDE_CONV = 1

_warned = False
_import_error: str | None = None

try:  # numba is a dependency of the plugin; a broken or missing install falls back, never fails
    import numba
    from numba import njit, prange
except Exception as exc:  # noqa: BLE001 - any import failure means "no fast path"
    numba = None  # type: ignore[assignment]
    _import_error = f"{type(exc).__name__}: {exc}"


def disabled_by_env() -> bool:
    """Whether ``KDCORE_HDRNET_FUSED`` turns the fused path off."""
    return os.environ.get(ENV_VAR, "1").strip().lower() in {"0", "false", "off", "no"}


def available() -> bool:
    """Whether the fused kernel can run here (numba importable and not disabled by the env var)."""
    return numba is not None and not disabled_by_env()


def warn_unavailable_once() -> None:
    """One warning per process that HDRNet inference runs the (slower) PyTorch path."""
    global _warned
    if _warned:
        return
    _warned = True
    if disabled_by_env():
        why = f"{ENV_VAR}={os.environ.get(ENV_VAR)} is set"
    else:
        why = f"numba could not be imported ({_import_error}); install it with `pip install numba`"
    warnings.warn(
        f"kdcore-hdrnet: fused CPU inference is off ({why}); using the PyTorch path (same results, slower)",
        RuntimeWarning,
        stacklevel=3,
    )


def exporting() -> bool:
    """Whether the model is being exported, traced or compiled (the fused path must not run then)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    onnx = getattr(torch, "onnx", None)
    if onnx is not None and getattr(onnx, "is_in_onnx_export", lambda: False)():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        for name in ("is_compiling", "is_exporting", "is_dynamo_compiling"):
            check = getattr(compiler, name, None)
            if check is not None and check():
                return True
    return False


# --------------------------------------------------------------------------------------- kernel

if numba is not None:

    @njit(cache=True, fastmath=False, inline="always")
    def _guide(r, g, b, kind, gw, gb, tables, scal):  # pragma: no cover - compiled
        """Guide value of one pixel. curve: gw = 3×3 matrix, gb = 3 bias, tables = 3×M, scal[0] = mix
        bias; conv: gw = K×3, gb = K, tables[0] = second layer K, scal[0] = its bias."""
        if kind == GUIDE_CURVE:
            m = tables.shape[1]
            acc = scal[0]
            for c in range(3):
                pos = gb[c] + gw[c, 0] * r + gw[c, 1] * g + gw[c, 2] * b
                ix = (pos + np.float32(1.0)) * np.float32(0.5) * np.float32(m - 1)
                if ix < 0:
                    ix = np.float32(0.0)
                elif ix > m - 1:
                    ix = np.float32(m - 1)
                i0 = int(ix)
                i1 = min(i0 + 1, m - 1)
                w = ix - i0
                acc += tables[c, i0] * (np.float32(1.0) - w) + tables[c, i1] * w
            if acc < 0:
                return np.float32(0.0)
            if acc > 1:
                return np.float32(1.0)
            return acc
        acc = scal[0]
        for k in range(gw.shape[0]):
            h = gb[k] + gw[k, 0] * r + gw[k, 1] * g + gw[k, 2] * b
            if h > 0:
                acc += tables[0, k] * h
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-acc))

    @njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
    def _fused(
        full,
        grid,
        ry0,
        ry1,
        rwy,
        cx0,
        cx1,
        cwx,
        kind,
        gw,
        gb,
        tables,
        scal,
        pyr,
        lv_off,
        lv_h,
        lv_w,
        lv_cx0,
        lv_cx1,
        lv_cwx,
        out,
        chunks,
    ):  # pragma: no cover - compiled
        """out[b, :, y, x] for every pixel; rows are split into ``chunks`` contiguous blocks."""
        nb, _, height, width = full.shape
        nc, nd, gwid = grid.shape[1], grid.shape[2], grid.shape[4]
        levels = lv_h.shape[0]
        max_lw = 1
        for lv in range(levels):
            max_lw = max(max_lw, lv_w[lv])
        total = nb * height
        per = (total + chunks - 1) // chunks
        for chunk in prange(chunks):
            row_grid = np.empty((gwid, nd, nc), dtype=np.float32)
            coeff = np.empty(nc, dtype=np.float32)
            uprow = np.empty((levels, 3, width), dtype=np.float32)
            vblend = np.empty(max_lw, dtype=np.float32)
            start = chunk * per
            stop = min(total, start + per)
            for flat in range(start, stop):
                bi = flat // height
                y = flat - bi * height
                y0 = ry0[y]
                y1 = ry1[y]
                wy = rwy[y]
                for gx in range(gwid):
                    for d in range(nd):
                        for c in range(nc):
                            a = grid[bi, c, d, y0, gx]
                            row_grid[gx, d, c] = a + wy * (grid[bi, c, d, y1, gx] - a)
                for lv in range(levels):
                    # this row of U_lv: the level's two source rows blended, then its columns
                    lh = lv_h[lv]
                    lwid = lv_w[lv]
                    scale = np.float32(lh) / np.float32(height)
                    src = scale * (np.float32(y) + np.float32(0.5)) - np.float32(0.5)
                    if src < 0:
                        src = np.float32(0.0)
                    i0 = int(src)
                    i1 = i0 + 1 if i0 < lh - 1 else i0
                    wyl = src - i0
                    if wyl > 1:
                        wyl = np.float32(1.0)
                    plane = lh * lwid
                    for o in range(3):
                        q0 = lv_off[lv] + (bi * 3 + o) * plane + i0 * lwid
                        q1 = lv_off[lv] + (bi * 3 + o) * plane + i1 * lwid
                        for k in range(lwid):
                            t0 = pyr[q0 + k]
                            vblend[k] = t0 + wyl * (pyr[q1 + k] - t0)
                        for x in range(width):
                            k0 = lv_cx0[lv, x]
                            t0 = vblend[k0]
                            uprow[lv, o, x] = t0 + lv_cwx[lv, x] * (vblend[lv_cx1[lv, x]] - t0)
                for x in range(width):
                    r = full[bi, 0, y, x]
                    g = full[bi, 1, y, x]
                    b = full[bi, 2, y, x]
                    gv = _guide(r, g, b, kind, gw, gb, tables, scal)
                    iz = gv * np.float32(nd) - np.float32(0.5)
                    if iz < 0:
                        iz = np.float32(0.0)
                    elif iz > nd - 1:
                        iz = np.float32(nd - 1)
                    z0 = int(iz)
                    z1 = min(z0 + 1, nd - 1)
                    wz = iz - z0
                    x0 = cx0[x]
                    x1 = cx1[x]
                    wx = cwx[x]
                    w00 = (np.float32(1.0) - wx) * (np.float32(1.0) - wz)
                    w10 = wx * (np.float32(1.0) - wz)
                    w01 = (np.float32(1.0) - wx) * wz
                    w11 = wx * wz
                    p00 = row_grid[x0, z0]
                    p10 = row_grid[x1, z0]
                    p01 = row_grid[x0, z1]
                    p11 = row_grid[x1, z1]
                    for c in range(nc):
                        coeff[c] = p00[c] * w00 + p10[c] * w10 + p01[c] * w01 + p11[c] * w11
                    o0 = coeff[3] + coeff[0] * r + coeff[1] * g + coeff[2] * b
                    o1 = coeff[7] + coeff[4] * r + coeff[5] * g + coeff[6] * b
                    o2 = coeff[11] + coeff[8] * r + coeff[9] * g + coeff[10] * b
                    if levels > 0:
                        u0 = r
                        u1 = g
                        u2 = b
                        for lv in range(levels):
                            v0 = uprow[lv, 0, x]
                            v1 = uprow[lv, 1, x]
                            v2 = uprow[lv, 2, x]
                            o0 += coeff[12 + 3 * lv] * (u0 - v0)
                            o1 += coeff[13 + 3 * lv] * (u1 - v1)
                            o2 += coeff[14 + 3 * lv] * (u2 - v2)
                            u0 = v0
                            u1 = v1
                            u2 = v2
                    out[bi, 0, y, x] = min(max(o0, np.float32(0.0)), np.float32(1.0))
                    out[bi, 1, y, x] = min(max(o1, np.float32(0.0)), np.float32(1.0))
                    out[bi, 2, y, x] = min(max(o2, np.float32(0.0)), np.float32(1.0))

    @njit(cache=True, inline="always")
    def _cubic_weights(t):  # pragma: no cover - compiled
        """PyTorch's bicubic convolution weights (A = -0.75) for fractional position ``t``."""
        a = np.float32(-0.75)
        x1 = t + np.float32(1.0)
        w0 = ((a * x1 - np.float32(5.0) * a) * x1 + np.float32(8.0) * a) * x1 - np.float32(4.0) * a
        w1 = ((a + np.float32(2.0)) * t - (a + np.float32(3.0))) * t * t + np.float32(1.0)
        x2 = np.float32(1.0) - t
        w2 = ((a + np.float32(2.0)) * x2 - (a + np.float32(3.0))) * x2 * x2 + np.float32(1.0)
        x3 = np.float32(2.0) - t
        w3 = ((a * x3 - np.float32(5.0) * a) * x3 + np.float32(8.0) * a) * x3 - np.float32(4.0) * a
        return w0, w1, w2, w3

    @njit(parallel=True, cache=True)
    def _bicubic_clamped(src, out, inv_scale, chunks):  # pragma: no cover - compiled
        """``out`` = bicubic upscale of ``src`` (``F.interpolate(mode="bicubic",
        align_corners=False)``, edge-clamped taps), clamped to [0, 1]. Separable: the four source
        rows are blended first (at source resolution), then the four columns."""
        nb, nch, h, w = src.shape
        height, width = out.shape[2], out.shape[3]
        # column taps and weights, shared by every row
        cidx = np.empty((width, 4), dtype=np.int64)
        cwt = np.empty((width, 4), dtype=np.float32)
        for x in range(width):
            real = inv_scale * (np.float32(x) + np.float32(0.5)) - np.float32(0.5)
            fl = np.floor(real)
            t = real - fl
            i = int(fl)
            w0, w1, w2, w3 = _cubic_weights(t)
            cwt[x, 0] = w0
            cwt[x, 1] = w1
            cwt[x, 2] = w2
            cwt[x, 3] = w3
            for k in range(4):
                cidx[x, k] = min(max(i - 1 + k, 0), w - 1)
        total = nb * height
        per = (total + chunks - 1) // chunks
        for chunk in prange(chunks):
            blend = np.empty(w, dtype=np.float32)
            start = chunk * per
            stop = min(total, start + per)
            for flat in range(start, stop):
                bi = flat // height
                y = flat - bi * height
                real = inv_scale * (np.float32(y) + np.float32(0.5)) - np.float32(0.5)
                fl = np.floor(real)
                t = real - fl
                i = int(fl)
                v0, v1, v2, v3 = _cubic_weights(t)
                r0 = min(max(i - 1, 0), h - 1)
                r1 = min(max(i, 0), h - 1)
                r2 = min(max(i + 1, 0), h - 1)
                r3 = min(max(i + 2, 0), h - 1)
                for c in range(nch):
                    for xs in range(w):
                        blend[xs] = (
                            v0 * src[bi, c, r0, xs]
                            + v1 * src[bi, c, r1, xs]
                            + v2 * src[bi, c, r2, xs]
                            + v3 * src[bi, c, r3, xs]
                        )
                    for x in range(width):
                        v = (
                            cwt[x, 0] * blend[cidx[x, 0]]
                            + cwt[x, 1] * blend[cidx[x, 1]]
                            + cwt[x, 2] * blend[cidx[x, 2]]
                            + cwt[x, 3] * blend[cidx[x, 3]]
                        )
                        if v < 0:
                            v = np.float32(0.0)
                        elif v > 1:
                            v = np.float32(1.0)
                        out[bi, c, y, x] = v

    @njit(parallel=True, cache=True)
    def _blur_subsample(src, out, chunks):  # pragma: no cover - compiled
        """``kdcore_hdrnet.detail._blur_subsample``: binomial (1, 3, 3, 1)/8 blur, edge-replicated,
        every second pixel (output pixel i reads input pixels 2i − 1 … 2i + 2, clamped)."""
        nb, nch, h, w = src.shape
        oh, ow = out.shape[2], out.shape[3]
        k0 = np.float32(0.125)
        k1 = np.float32(0.375)
        total = nb * oh
        per = (total + chunks - 1) // chunks
        for chunk in prange(chunks):
            blend = np.empty(w, dtype=np.float32)
            start = chunk * per
            stop = min(total, start + per)
            for flat in range(start, stop):
                bi = flat // oh
                i = flat - bi * oh
                r0 = min(max(2 * i - 1, 0), h - 1)
                r1 = min(2 * i, h - 1)
                r2 = min(2 * i + 1, h - 1)
                r3 = min(2 * i + 2, h - 1)
                for c in range(nch):
                    for x in range(w):
                        blend[x] = (
                            k0 * src[bi, c, r0, x]
                            + k1 * src[bi, c, r1, x]
                            + k1 * src[bi, c, r2, x]
                            + k0 * src[bi, c, r3, x]
                        )
                    for j in range(ow):
                        q0 = min(max(2 * j - 1, 0), w - 1)
                        q1 = min(2 * j, w - 1)
                        q2 = min(2 * j + 1, w - 1)
                        q3 = min(2 * j + 2, w - 1)
                        out[bi, c, i, j] = k0 * blend[q0] + k1 * blend[q1] + k1 * blend[q2] + k0 * blend[q3]


# ------------------------------------------------------------------------------------ host side


def _slice_columns(width: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x indices and weights of the slice, computed as ``grid_sample`` does (float32)."""
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    ix = (((xs + 1) * cells - 1) / 2).clamp(0, cells - 1)
    x0 = ix.floor()
    w = ix - x0
    x0 = x0.long()
    x1 = (x0 + 1).clamp(max=cells - 1)
    return x0.numpy(), x1.numpy(), w.numpy()


def _slice_rows(height: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y indices and weights, as :func:`kdcore_hdrnet.slicing.interpolate_rows` computes them."""
    rows = torch.arange(height, dtype=torch.float32)
    gy = ((rows + 0.5) * (cells / height) - 0.5).clamp(0, cells - 1)
    y0 = gy.floor()
    w = gy - y0
    y0 = y0.long()
    y1 = (y0 + 1).clamp(max=cells - 1)
    return y0.numpy(), y1.numpy(), w.numpy()


def _bilinear_columns(width: int, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column indices and weights of ``F.interpolate(mode="bilinear", align_corners=False)``."""
    scale = np.float32(src) / np.float32(width)
    real = scale * (np.arange(width, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    real = np.maximum(real, np.float32(0.0))
    i0 = real.astype(np.int64)
    i1 = np.where(i0 < src - 1, i0 + 1, i0)
    w = np.minimum(real - i0.astype(np.float32), np.float32(1.0)).astype(np.float32)
    return i0, i1, w


def guide_arrays(guide: torch.nn.Module) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The guide's weights in the kernel's layout, or None for a guide the kernel does not know."""
    from kdcore_hdrnet.guide import ConvGuide, CurveGuide

    if type(guide) is CurveGuide:
        tables, matrix, bias = guide.prepare()
        scal = guide.mix_bias.detach().reshape(1)
        return (GUIDE_CURVE, _np(matrix), _np(bias), _np(tables), _np(scal))
    if type(guide) is ConvGuide and not guide.training:
        folded = guide.prepare()
        if folded is None:
            return None
        weight, bias = folded
        return (
            GUIDE_CONV,
            _np(weight),
            _np(bias),
            _np(guide.conv2.weight.reshape(1, -1)),
            _np(guide.conv2.bias.reshape(1)),
        )
    return None


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def run(
    full: torch.Tensor,
    grid: torch.Tensor,
    guide: tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    pyramid: list[torch.Tensor],
) -> torch.Tensor:
    """The clamped output ``B×3×H×W`` of the fused kernel.

    ``full``: B×3×H×W image the grid is applied to; ``grid``: B×C×D×Gh×Gw; ``guide``: from
    :func:`guide_arrays`; ``pyramid``: the coarser Gaussian levels ``G_1 … G_L`` (B×3×h×w each)
    whose bilinear upsamples ``U_l`` give the details ``U_l − U_{l+1}`` (``U_0`` = ``full``).
    """
    assert numba is not None
    full = full.detach().to(torch.float32).contiguous()
    grid = grid.detach().to(torch.float32).contiguous()
    b, _, height, width = full.shape
    gh, gwid = grid.shape[3], grid.shape[4]
    ry0, ry1, rwy = _slice_rows(height, gh)
    cx0, cx1, cwx = _slice_columns(width, gwid)
    levels = len(pyramid)
    offs, hs, ws = np.zeros(levels, np.int64), np.zeros(levels, np.int64), np.zeros(levels, np.int64)
    lcx0 = np.zeros((levels, width), np.int64)
    lcx1 = np.zeros((levels, width), np.int64)
    lcwx = np.zeros((levels, width), np.float32)
    parts = []
    pos = 0
    for lv, level in enumerate(pyramid):
        level = level.detach().to(torch.float32).contiguous()
        offs[lv], hs[lv], ws[lv] = pos, level.shape[-2], level.shape[-1]
        lcx0[lv], lcx1[lv], lcwx[lv] = _bilinear_columns(width, level.shape[-1])
        parts.append(level.reshape(-1))
        pos += level.numel()
    pyr = torch.cat(parts).numpy() if parts else np.zeros(1, np.float32)
    out = torch.empty_like(full)
    threads = _threads()
    chunks = max(1, min(b * height, threads * 8))
    kind, gw, gb, tables, scal = guide
    _fused(
        full.numpy(),
        grid.numpy(),
        ry0,
        ry1,
        rwy,
        cx0,
        cx1,
        cwx,
        kind,
        gw,
        gb,
        tables,
        scal,
        pyr,
        offs,
        hs,
        ws,
        lcx0,
        lcx1,
        lcwx,
        out.numpy(),
        chunks,
    )
    return out


def _threads() -> int:
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    numba.set_num_threads(threads)
    return threads


def bicubic_clamped(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="bicubic").clamp(0, 1)`` for CPU float32."""
    x = x.detach().to(torch.float32).contiguous()
    b, c, h, w = x.shape
    out = torch.empty(b, c, h * scale, w * scale, dtype=torch.float32)
    _bicubic_clamped(
        x.numpy(), out.numpy(), np.float32(1.0 / scale), max(1, min(b * h * scale, _threads() * 8))
    )
    return out


def gaussian_levels(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """:func:`kdcore_hdrnet.detail.gaussian_levels` for CPU float32."""
    out = []
    current = image.detach().to(torch.float32).contiguous()
    for _ in range(levels):
        b, c, h, w = current.shape
        nxt = torch.empty(b, c, (h + 1) // 2, (w + 1) // 2, dtype=torch.float32)
        _blur_subsample(current.numpy(), nxt.numpy(), max(1, min(b * nxt.shape[2], _threads() * 8)))
        out.append(nxt)
        current = nxt
    return out


def describe() -> dict[str, Any]:
    """Which inference path runs here and why (for benchmarks and bug reports)."""
    return {
        "fused_available": available(),
        "numba": None if numba is None else numba.__version__,
        "disabled_by_env": disabled_by_env(),
        "import_error": _import_error,
        "threading_layer": _threading_layer(),
    }


def _threading_layer() -> str | None:
    if numba is None:
        return None
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return None
