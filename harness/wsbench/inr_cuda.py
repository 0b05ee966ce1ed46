"""The SIREN fit on CUDA: one Triton kernel per Adam step for every INR of the batch.

A step of one INR is a chain of small matmuls and sines over its pixels; done
op by op, every intermediate ``(pixels, 32)`` array goes through GPU memory
several times and the fit is memory-bound. Here one program fits one INR: it
walks its image one row of pixels at a time, keeps the activations in registers,
accumulates the closed-form gradient (the same as :func:`wsbench.siren.siren_grads`)
and applies Adam to its own parameters, so a step reads and writes little more
than the parameters and Adam's moments. The first layer uses the grid's
separable form (sines of ``H + W`` values per unit, see :mod:`wsbench.siren`).

Supported: 2-D grid coordinates, two hidden layers of a power-of-two width >= 16,
any small number of output channels. For anything else, or without Triton, :func:`fit`
returns None and the driver (:mod:`wsbench.inr`) runs the same closed form in PyTorch
ops on the GPU. Deterministic: no atomics, fixed order.
``tests/test_inr.py`` runs the kernel in Triton's CPU interpreter against the CPU fit;
``benchmarks/inr_fit.py`` compares it with the CPU fit on the GPU (about 2e-6 after 5 steps).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import numpy as np
import torch

from wsbench.siren import ADAM_BETAS, ADAM_EPS, CHECK_EVERY, PixelGrid, internal_to_public, lr_at
from wsbench.specs import SirenSpec

try:  # Triton ships with CUDA builds of torch; CPU-only installs never reach this module's kernel.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

# Kernel settings: warps per program, matmul precision ("ieee" exact fp32, "tf32x3" near-fp32 on tensor
# cores, "tf32"), hardware sine. Overridable through the environment for benchmarking.
# Defaults from benchmarks/inr_fit.py --sweep on an H100: 2 warps, 3xTF32 matmuls (fp32-level accuracy on
# tensor cores) and range-reduced hardware sines gave the best speed at the exact variant's PSNR.
WARPS = int(os.environ.get("WSBENCH_INR_WARPS", "2"))
PRECISION = os.environ.get("WSBENCH_INR_PRECISION", "tf32x3")
FAST_SIN = os.environ.get("WSBENCH_INR_FAST_SIN", "1") == "1"


def supported(spec: SirenSpec) -> bool:
    d1 = spec.hidden[0] if spec.hidden else 0
    return (triton is not None and spec.in_dim == 2 and len(spec.hidden) == 2 and spec.hidden[0] == spec.hidden[1]
            and d1 >= 16 and d1 & (d1 - 1) == 0 and 1 <= spec.out_dim <= 16)


if triton is not None:

    @triton.jit
    def _sin(x, FAST: tl.constexpr):
        if FAST:
            # Reduce to [-pi, pi] then the hardware approximation (abs. error ~1e-6 there).
            r = x - 6.283185307179586 * tl.floor(x * 0.15915494309189535 + 0.5)
            return tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=f,f", [r], dtype=tl.float32,
                                             is_pure=True, pack=1)
        return tl.sin(x)

    @triton.jit
    def _cos(x, FAST: tl.constexpr):
        if FAST:
            r = x - 6.283185307179586 * tl.floor(x * 0.15915494309189535 + 0.5)
            return tl.inline_asm_elementwise("cos.approx.f32 $0, $1;", "=f,f", [r], dtype=tl.float32,
                                             is_pure=True, pack=1)
        return tl.cos(x)

    @triton.jit
    def _adam(theta_row, m_row, v_row, offs, grad, mask, lr_t, bc2_sqrt, B1: tl.constexpr, B2: tl.constexpr,
              EPS: tl.constexpr):
        p = tl.load(theta_row + offs, mask=mask, other=0.0)
        m = tl.load(m_row + offs, mask=mask, other=0.0)
        v = tl.load(v_row + offs, mask=mask, other=0.0)
        m = m + (grad - m) * (1.0 - B1)
        v = v * B2 + grad * grad * (1.0 - B2)
        p = p - lr_t * m / (tl.sqrt(v) / bc2_sqrt + EPS)
        tl.store(theta_row + offs, p, mask=mask)
        tl.store(m_row + offs, m, mask=mask)
        tl.store(v_row + offs, v, mask=mask)

    @triton.jit
    def _siren_step(theta_ptr, m_ptr, v_ptr, img_ptr, ys_ptr, xs_ptr, mse_ptr, active_ptr,
                    P, w0, scale, lr_t, bc2_sqrt,
                    H: tl.constexpr, W: tl.constexpr, WP: tl.constexpr,
                    D: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, UPDATE: tl.constexpr,
                    PREC: tl.constexpr, FAST: tl.constexpr,
                    B1: tl.constexpr, B2: tl.constexpr, EPS: tl.constexpr):
        """One Adam step (or, with UPDATE False, only the MSE) of INR ``program_id(0)``.

        A tile is one image row (``WP`` >= ``W`` columns, the extra ones masked), so the
        separable first layer is a broadcast of the row's factors against the column factors.
        """
        pid = tl.program_id(0)
        if tl.load(active_ptr + pid) == 0:
            return
        row = theta_ptr + pid.to(tl.int64) * P
        jd = tl.arange(0, D)
        jc = tl.arange(0, CP)
        # Internal layout: W1^T (2, D) rows y, x; b1 (D); W2^T (D, D); b2 (D); W3^T (D, C); b3 (C).
        o_b1 = 2 * D
        o_w2 = 3 * D
        o_b2 = o_w2 + D * D
        o_w3 = o_b2 + D
        o_b3 = o_w3 + D * C
        w1y = tl.load(row + jd)
        w1x = tl.load(row + D + jd)
        b1 = tl.load(row + o_b1 + jd)
        w2 = tl.load(row + o_w2 + jd[:, None] * D + jd[None, :])  # (D_in, D_out)
        b2 = tl.load(row + o_b2 + jd)
        cmask = jc < C
        w3 = tl.load(row + o_w3 + jd[:, None] * C + jc[None, :], mask=cmask[None, :], other=0.0)  # (D, CP)
        b3 = tl.load(row + o_b3 + jc, mask=cmask, other=0.0)

        # Column factors of the separable first layer, shared by every row.
        px = tl.arange(0, WP)
        colok = px < W
        xs = tl.load(xs_ptr + px, mask=colok, other=0.0)
        bx = w0 * (xs[:, None] * w1x[None, :])  # (WP, D)
        sb = _sin(bx, FAST)
        cb = _cos(bx, FAST)

        # Accumulators, reduced over pixels once at the end: g1 summed over rows (S), the same
        # weighted by the row's y (T), g2 summed over rows (S2); dL/dW2 through the matmul.
        acc_s = tl.zeros([WP, D], dtype=tl.float32)
        acc_t = tl.zeros([WP, D], dtype=tl.float32)
        acc_s2 = tl.zeros([WP, D], dtype=tl.float32)
        g_w2 = tl.zeros([D, D], dtype=tl.float32)
        g_w3 = tl.zeros([D, CP], dtype=tl.float32)
        g_b3 = tl.zeros([CP], dtype=tl.float32)
        sse = tl.zeros([WP], dtype=tl.float32)
        img = img_ptr + pid.to(tl.int64) * (C * H * W)
        for r in range(0, H):
            y0 = tl.load(ys_ptr + r)
            a = w0 * (y0 * w1y + b1)  # (D,)
            sa = _sin(a, FAST)
            ca = _cos(a, FAST)
            a1 = sa[None, :] * cb + ca[None, :] * sb  # (WP, D)
            u2 = w0 * (tl.dot(a1, w2, input_precision=PREC) + b2[None, :])
            a2 = _sin(u2, FAST)
            da2 = tl.zeros([WP, D], dtype=tl.float32)
            for c in tl.static_range(C):
                onehot = (jc == c).to(tl.float32)
                w3c = tl.sum(w3 * onehot[None, :], axis=1)  # (D,)
                b3c = tl.sum(b3 * onehot, axis=0)
                y = tl.sum(a2 * w3c[None, :], axis=1) + b3c  # (WP,)
                t = tl.load(img + c * H * W + r * W + px, mask=colok, other=0).to(tl.float32) / 127.5 - 1.0
                res = tl.where(colok, y - t, 0.0)
                sse += res * res
                if UPDATE:
                    dy = scale * res
                    g_w3 += tl.sum(a2 * dy[:, None], axis=0)[:, None] * onehot[None, :]
                    g_b3 += tl.sum(dy, axis=0) * onehot
                    da2 += dy[:, None] * w3c[None, :]
            if UPDATE:
                g2 = da2 * _cos(u2, FAST)  # dL/du2
                g_w2 = tl.dot(tl.trans(a1), g2, acc=g_w2, input_precision=PREC)
                acc_s2 += g2
                c1 = ca[None, :] * cb - sa[None, :] * sb
                g1 = tl.dot(g2, tl.trans(w2), input_precision=PREC) * c1  # dL/du1 / w0
                acc_s += g1
                acc_t += y0 * g1
        tl.store(mse_ptr + pid, tl.sum(sse, axis=0) / (H * W * C))
        if UPDATE:
            mrow = m_ptr + pid.to(tl.int64) * P
            vrow = v_ptr + pid.to(tl.int64) * P
            ones = jd < D
            w0sq = w0 * w0
            g_w1y = tl.sum(acc_t, axis=0)
            g_w1x = tl.sum(acc_s * xs[:, None], axis=0)
            g_b1 = tl.sum(acc_s, axis=0)
            g_b2 = tl.sum(acc_s2, axis=0)
            _adam(row, mrow, vrow, jd, g_w1y * w0sq, ones, lr_t, bc2_sqrt, B1, B2, EPS)
            _adam(row, mrow, vrow, D + jd, g_w1x * w0sq, ones, lr_t, bc2_sqrt, B1, B2, EPS)
            _adam(row, mrow, vrow, o_b1 + jd, g_b1 * w0sq, ones, lr_t, bc2_sqrt, B1, B2, EPS)
            _adam(row, mrow, vrow, o_w2 + jd[:, None] * D + jd[None, :], g_w2 * w0, ones[:, None] & ones[None, :],
                  lr_t, bc2_sqrt, B1, B2, EPS)
            _adam(row, mrow, vrow, o_b2 + jd, g_b2 * w0, ones, lr_t, bc2_sqrt, B1, B2, EPS)
            _adam(row, mrow, vrow, o_w3 + jd[:, None] * C + jc[None, :], g_w3, ones[:, None] & cmask[None, :],
                  lr_t, bc2_sqrt, B1, B2, EPS)
            _adam(row, mrow, vrow, o_b3 + jc, g_b3, cmask, lr_t, bc2_sqrt, B1, B2, EPS)


def _launch(theta, m, v, images, grid: PixelGrid, mse, active, spec: SirenSpec, step: int, lr: float, update: bool,
            warps: int, precision: str, fast: bool) -> None:
    n, c, h, w = images.shape
    b1, b2 = ADAM_BETAS
    _siren_step[(n,)](
        theta, m, v, images, grid.ys, grid.xs, mse, active,
        theta.shape[1], float(spec.w0), 2.0 / (h * w * c),
        lr / (1.0 - b1 ** max(step, 1)), math.sqrt(1.0 - b2 ** max(step, 1)),
        H=h, W=w, WP=max(16, triton.next_power_of_2(w)), D=spec.hidden[0], C=c,
        CP=max(2, triton.next_power_of_2(c)), UPDATE=update, PREC=precision, FAST=fast,
        B1=b1, B2=b2, EPS=ADAM_EPS, num_warps=warps)


def fit_triton(images: torch.Tensor, theta: torch.Tensor, spec: SirenSpec, recipe: dict,
               on_step: Callable[[int], None] | None = None, warps: int | None = None,
               precision: str | None = None, fast: bool | None = None) -> torch.Tensor:
    """Fit in place on the GPU. ``images (B, C, H, W)`` uint8, ``theta (B, P)`` float32, both on one device.

    Returns the per-INR MSE of the final weights ``(B,)``. ``psnr_target`` freezes an INR
    at the same checkpoints as the CPU fit.
    """
    warps = warps or WARPS
    precision = precision or PRECISION
    fast = FAST_SIN if fast is None else fast
    n = theta.shape[0]
    grid = PixelGrid.make(images.shape[2], images.shape[3], theta.device)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    mse = torch.empty(n, device=theta.device)
    active = torch.ones(n, dtype=torch.int8, device=theta.device)
    target_db = recipe.get("psnr_target")
    args = {"warps": warps, "precision": precision, "fast": fast}
    for step in range(1, int(recipe["steps"]) + 1):
        if target_db is not None and step > 1 and (step - 1) % CHECK_EVERY == 0:
            _launch(theta, m, v, images, grid, mse, active, spec, step, 0.0, False, **args)
            done = 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12)) >= float(target_db)
            active &= (~done).to(torch.int8)
            if not bool(active.any()):
                break
        _launch(theta, m, v, images, grid, mse, active, spec, step, lr_at(step - 1, recipe), True, **args)
        if on_step is not None:
            on_step(step)
    active.fill_(1)
    _launch(theta, m, v, images, grid, mse, active, spec, 0, 0.0, False, **args)
    return mse


def fit(images: np.ndarray, theta: torch.Tensor, spec: SirenSpec, recipe: dict, device: torch.device,
        on_step: Callable[[float], None] | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """GPU fit of ``theta (B, P)`` (internal layout, CPU; left unchanged) to ``images`` with the fused kernel.

    Returns CPU ``(weights (B, P) in the public layout, psnr (B,))``, or None when the kernel
    cannot run: no Triton, a spec it does not support, or a Triton/driver combination that
    cannot build it (with a warning). The caller then runs the closed form in PyTorch ops.
    """
    if not supported(spec):
        return None
    steps = int(recipe["steps"])
    cb = None if on_step is None else (lambda k: on_step(k / steps))
    theta = theta.to(device, copy=True)
    imgs = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    try:
        mse = fit_triton(imgs, theta, spec, recipe, cb)
    except Exception as exc:
        warnings.warn(f"fused INR kernel unavailable ({type(exc).__name__}: {str(exc)[:200]}); "
                      "fitting with PyTorch ops instead", stacklevel=2)
        return None
    quality = 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))
    return internal_to_public(theta, spec).cpu(), quality.float().cpu()
