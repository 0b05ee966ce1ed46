"""The SIREN fit's closed form: forward, gradient and Adam step of many INRs at once, without autograd.

The public flat weight layout is :mod:`wsbench.weights`; the drivers that fit whole zoos on the
CPU or a GPU are :mod:`wsbench.inr` (and :mod:`wsbench.inr_cuda`, the fused CUDA kernel).

A SIREN is a short chain of affine maps and sines, so its gradient has a closed form
(:func:`siren_grads`); computing it directly saves autograd's bookkeeping, lets the first
layer use the pixel grid's separable structure (below), and lets the CPU fit walk the batch
in small blocks whose activations stay in cache. Adam runs on one flat ``(B, P)`` buffer
(:func:`adam_step`). The sine/cosine pair of the hidden layer is compiled with
``torch.compile`` when a C++ compiler is available (else eager ops); the output layer works
on ``(channels, pixels)`` arrays. ``tests/test_inr.py`` checks the closed form against
autograd and the whole fit against ``torch.optim.Adam``.

First-layer trick: the coordinates form a grid (:class:`PixelGrid`), so the first
pre-activation is ``u = w0 (y W[0] + x W[1] + b) = A(y) + B(x)`` and
``sin u = sin A cos B + cos A sin B``, ``cos u = cos A cos B - sin A sin B``:
sines of ``H + W`` values per unit instead of ``H * W``.
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wsbench.compiling import compile_fn
from wsbench.errors import WsbenchError
from wsbench.specs import SirenSpec
from wsbench.weights import coordinates, flatten, unflatten

# Recipe defaults; a dataset's ``inr_recipe`` overrides them. w0 and the init
# follow Sitzmann et al. 2020 (SIREN): first layer U(-1/in, 1/in), later layers
# U(-sqrt(6/in)/w0, sqrt(6/in)/w0), biases U(-1/sqrt(in), 1/sqrt(in)).
DEFAULT_RECIPE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "steps": 200,
    "w0": 30.0,
    # Cosine decay of the learning rate to lr * lr_final over the last ``decay_frac`` of the steps
    # (0 keeps it constant). The last steps at a small rate polish the fit by several dB.
    "decay_frac": 0.0,
    "lr_final": 0.1,
    # "independent": every INR starts from its own random draw; "shared": the whole zoo starts from one draw,
    # so two INRs' weights differ only by what fitting their images put there (not by their init).
    "init": "independent",
    "psnr_target": None,  # an INR stops (keeps its weights) once its PSNR reaches this (dB); checked every 25 steps
    "chunk_size": 2048,
}
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
CHECK_EVERY = 25
INITS = ("independent", "shared")
_COMPILE_LOCK = threading.Lock()


def check_recipe(recipe: dict) -> None:
    """A one-line :class:`WsbenchError` when ``recipe`` (defaults filled in) cannot be fitted."""
    if recipe.get("optimizer", "adam") != "adam":
        raise WsbenchError(f"unknown INR optimizer {recipe.get('optimizer')!r}; known optimizers: adam")
    if recipe.get("init", "independent") not in INITS:
        raise WsbenchError(f"unknown INR init {recipe.get('init')!r}; known inits: {', '.join(INITS)}")
    if int(recipe["steps"]) < 1 or float(recipe["lr"]) <= 0:
        raise WsbenchError(f"INR recipe needs steps >= 1 and lr > 0, got steps {recipe['steps']}, lr {recipe['lr']}")


# ----------------------------------------------------------------------------------------------
# Targets and quality
# ----------------------------------------------------------------------------------------------

def targets_from_images(images: np.ndarray) -> torch.Tensor:
    """``(B, C, H, W)`` uint8 -> ``(B, H*W, C)`` float32 in ``[-1, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def targets_cm(images: np.ndarray) -> torch.Tensor:
    """``(B, C, H, W)`` uint8 -> ``(B, C, H*W)`` float32 in ``[-1, 1]`` (channel-major targets)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return x.view(x.shape[0], x.shape[1], -1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-INR PSNR in dB for signals in ``[-1, 1]`` (peak-to-peak 2), ``(B,)``."""
    mse = (pred - target).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(4.0 / mse)


# ----------------------------------------------------------------------------------------------
# The internal flat layout
# ----------------------------------------------------------------------------------------------

def internal_offsets(spec: SirenSpec) -> list[tuple[int, int, int, int]]:
    """Per layer ``(w_start, b_start, in, out)`` in the internal flat layout.

    Internal layout: per layer ``W^T (in, out)`` row-major then ``b (out,)``; the same
    numbers as the public layout with each ``W`` transposed (bmm wants ``(in, out)``).
    """
    out, k = [], 0
    for o, i in spec.layer_shapes:
        out.append((k, k + i * o, i, o))
        k += i * o + o
    return out


def _views(theta: torch.Tensor, spec: SirenSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``theta (B, P)`` -> ``[(W^T (B, in, out), b (B, 1, out)), ...]`` views."""
    b = theta.shape[0]
    return [(theta[:, w:w + i * o].view(b, i, o), theta[:, bs:bs + o].view(b, 1, o))
            for w, bs, i, o in internal_offsets(spec)]


def to_internal(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[W1 (B, in, out), b1 (B, 1, out), ...]`` (as from :func:`init_siren`) -> ``(B, P)``."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in params], dim=1)


def internal_to_public(theta: torch.Tensor, spec: SirenSpec) -> torch.Tensor:
    """Internal ``(B, P)`` -> the public flatten layout ``(B, P)`` (each ``W`` as ``(out, in)``)."""
    return flatten([(w.transpose(1, 2), b.squeeze(1)) for w, b in _views(theta, spec)])


def public_to_internal(weights: torch.Tensor, spec: SirenSpec) -> torch.Tensor:
    """Inverse of :func:`internal_to_public`."""
    return to_internal([t for w, b in unflatten(weights, spec) for t in (w.transpose(1, 2), b.unsqueeze(1))])


# ----------------------------------------------------------------------------------------------
# Closed-form forward and backward on the internal flat layout
# ----------------------------------------------------------------------------------------------

@dataclass
class PixelGrid:
    """The pixel grid of an ``H x W`` image, prepared for the closed form.

    ``ys (H,)``, ``xs (W,)`` coordinates; ``basis (3, H*W)`` rows ``y, x, 1`` per pixel.
    """

    height: int
    width: int
    ys: torch.Tensor
    xs: torch.Tensor
    basis: torch.Tensor

    @staticmethod
    def make(height: int, width: int, device=None, dtype=torch.float32) -> PixelGrid:
        c = coordinates(height, width).to(device=device, dtype=dtype)
        basis = torch.cat([c, torch.ones(len(c), 1, device=device, dtype=dtype)], 1).t().contiguous()
        return PixelGrid(height, width, c[::width, 0].contiguous(), c[:width, 1].contiguous(), basis)


_COMPILED: dict = {}


def _sincos_eager(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sin(z), torch.cos(z)


def _first_layer_eager(w: torch.Tensor, b: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, w0: float):
    n, _, o = w.shape
    a = torch.addcmul(b, ys.view(1, -1, 1), w[:, 0:1, :]).mul_(w0)  # (B, H, out)
    bx = torch.mul(xs.view(1, -1, 1), w[:, 1:2, :]).mul_(w0)  # (B, W, out)
    sa, ca = torch.sin(a).unsqueeze(2), torch.cos(a).unsqueeze(2)
    sb, cb = torch.sin(bx).unsqueeze(1), torch.cos(bx).unsqueeze(1)
    s = torch.mul(sa, cb).addcmul_(ca, sb)
    c = torch.mul(ca, cb).addcmul_(sa, sb, value=-1.0)
    m = ys.shape[0] * xs.shape[0]
    return s.view(n, m, o), c.view(n, m, o)


def _compiled(name: str, eager, *example):
    """``eager`` compiled by ``torch.compile`` (once, thread-safe), or ``eager`` itself when that fails."""
    fn = _COMPILED.get(name)
    if fn is None:
        with _COMPILE_LOCK:
            fn = _COMPILED.get(name)
            if fn is None:
                try:
                    fn = compile_fn(eager, dynamic=True, fullgraph=True)
                    fn(*example)  # compile now, under the lock
                except Exception:
                    fn = eager
                _COMPILED[name] = fn
    return fn


def _use_compiled(t: torch.Tensor) -> bool:
    # CPU only: on CUDA the fused Triton kernel does this work.
    return t.device.type == "cpu" and t.dtype == torch.float32 and os.environ.get("WSBENCH_INR_COMPILE", "1") != "0"


def sincos(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin z, cos z)``. On the CPU, compiled by ``torch.compile`` when a C++ compiler is at hand:
    one vectorised pass gives both (about 2.5x faster than ``torch.sin`` then ``torch.cos``, same
    accuracy within 1e-7); without a compiler, or with ``WSBENCH_INR_COMPILE=0``, the eager ops.
    """
    if not _use_compiled(z):
        return _sincos_eager(z)
    fn = _compiled("sincos", _sincos_eager, torch.linspace(-10, 10, 4096))
    # Flat, so one compiled kernel serves every shape (no size-1 specialisation).
    s, c = fn(z.reshape(-1))
    return s.view(z.shape), c.view(z.shape)


def _first_layer(w: torch.Tensor, b: torch.Tensor, grid: PixelGrid, w0: float):
    """First layer via the separable identity: ``(sin u, cos u)``, each ``(B, H*W, out)``.

    (Left to eager ops: compiled, its broadcasts ran slower.)
    """
    return _first_layer_eager(w, b, grid.ys, grid.xs, w0)


def siren_grads(theta: torch.Tensor, target: torch.Tensor, spec: SirenSpec, grid: PixelGrid,
                grad: torch.Tensor | None = None, need_mse: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Closed-form gradient of ``sum_i mean((f_i(coords) - target_i)^2)``.

    ``theta (B, P)`` internal layout, ``target (B, C, H*W)`` channel-major (:func:`targets_cm`).
    Returns ``(grad (B, P), mse (B,))``, the MSE being that of ``theta`` itself (None unless
    ``need_mse``). Written into ``grad`` when given. The output layer works on ``(C, pixels)`` arrays: its matmuls have
    only ``C`` rows, far faster that way round than with ``C`` columns.
    """
    if spec.in_dim != 2:
        raise WsbenchError(f"the fitter needs 2-D coordinates (in_dim 2), got in_dim {spec.in_dim}")
    w0 = float(spec.w0)
    n, c, m = target.shape
    params = _views(theta, spec)
    grad = torch.empty_like(theta) if grad is None else grad
    glayers = _views(grad, spec)
    # Forward, keeping each layer's sine and cosine (activations (B, pixels, units)).
    s, co = _first_layer(params[0][0], params[0][1], grid, w0)
    acts, coss = [s], [co]
    for w, b in params[1:-1]:
        a, co = sincos(torch.baddbmm(b, acts[-1], w, beta=w0, alpha=w0))
        acts.append(a)
        coss.append(co)
    w_last, b_last = params[-1]
    w_t = w_last.transpose(1, 2).contiguous()  # (B, C, units)
    scale = 2.0 / (m * c)
    # dy = scale * (W^T a^T + b - t), (B, C, pixels): dL/dy of the summed per-INR MSE.
    dy = torch.baddbmm(torch.sub(b_last.transpose(1, 2), target), w_t, acts[-1].transpose(1, 2),
                       beta=scale, alpha=scale)
    mse = dy.pow(2).sum((1, 2)).div_(scale * scale * m * c) if need_mse else None
    # Backward. ``g`` is ``dL/da`` (then ``dL/du``, u the pre-sine argument) divided by ``f``:
    # the w0 of each layer crossed is folded into ``f`` instead of a pass over a big tensor.
    glayers[-1][0].copy_(torch.bmm(dy, acts[-1]).transpose(1, 2))
    glayers[-1][1].copy_(dy.sum(2).unsqueeze(1))
    g = torch.mul(dy.transpose(1, 2), w_t) if c == 1 else torch.bmm(dy.transpose(1, 2), w_t)
    f = 1.0
    for k in range(len(params) - 2, 0, -1):
        g.mul_(coss[k])
        w, _ = params[k]
        gw, gb = glayers[k]
        gw.copy_(torch.bmm(acts[k - 1].transpose(1, 2), g)).mul_(f * w0)
        gb.copy_(g.sum(1, keepdim=True)).mul_(f * w0)
        g = torch.bmm(g, w.transpose(1, 2))
        f *= w0
    g.mul_(coss[0])
    g0 = torch.bmm(grid.basis.expand(n, -1, -1), g).mul_(f * w0)  # (B, 3, out): rows dW[y], dW[x], db
    glayers[0][0].copy_(g0[:, :2])
    glayers[0][1].copy_(g0[:, 2:])
    return grad, mse


def siren_eval(theta: torch.Tensor, spec: SirenSpec, grid: PixelGrid) -> torch.Tensor:
    """Closed-form forward: internal ``theta (B, P)`` -> ``(B, C, H*W)`` (channel-major, like :func:`targets_cm`)."""
    params = _views(theta, spec)
    h, _ = _first_layer(params[0][0], params[0][1], grid, float(spec.w0))
    for w, b in params[1:-1]:
        h = torch.baddbmm(b, h, w, beta=spec.w0, alpha=spec.w0).sin_()
    w_last, b_last = params[-1]
    return torch.baddbmm(b_last.transpose(1, 2), w_last.transpose(1, 2).contiguous(), h.transpose(1, 2))


# ----------------------------------------------------------------------------------------------
# Adam and the learning-rate schedule
# ----------------------------------------------------------------------------------------------

def lr_at(step: int, recipe: dict) -> float:
    """Learning rate of 0-based ``step``: constant, then cosine decay over the last ``decay_frac``."""
    lr, steps = float(recipe["lr"]), int(recipe["steps"])
    frac = float(recipe.get("decay_frac") or 0.0)
    start = steps - round(frac * steps)
    if frac <= 0 or step < start:
        return lr
    t = (step - start + 1) / max(1, steps - start)
    final = lr * float(recipe.get("lr_final", 0.1))
    return final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def adam_step(theta, grad, m, v, step: int, lr: float) -> None:
    """One Adam update (PyTorch's formula, no weight decay) on flat buffers, in place; ``step`` 1-based."""
    b1, b2 = ADAM_BETAS
    m.lerp_(grad, 1.0 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
    denom = v.sqrt().div_(math.sqrt(1.0 - b2 ** step)).add_(ADAM_EPS)
    theta.addcdiv_(m, denom, value=-lr / (1.0 - b1 ** step))


def fit_internal(theta: torch.Tensor, target: torch.Tensor, spec: SirenSpec, recipe: dict, grid: PixelGrid,
                 on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run the recipe's Adam steps on ``theta (B, P)`` (internal layout) in place; returns it.

    ``target (B, C, H*W)`` channel-major (:func:`targets_cm`).

    With ``psnr_target``, every ``CHECK_EVERY`` steps the INRs at or above it are frozen
    (they keep their weights and drop out of the batch), so an INR's result never
    depends on which others share its batch. ``on_step(k)`` after each step.
    """
    steps = int(recipe["steps"])
    target_db = recipe.get("psnr_target")
    active = torch.arange(theta.shape[0], device=theta.device)
    th, t = theta, target
    m, v = torch.zeros_like(th), torch.zeros_like(th)
    grad = torch.empty_like(th)
    for step in range(1, steps + 1):
        check = target_db is not None and (step - 1) % CHECK_EVERY == 0 and step > 1
        grad, mse = siren_grads(th, t, spec, grid, grad, need_mse=check)
        if check:
            done = 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12)) >= float(target_db)
            if bool(done.any()):
                theta[active[done]] = th[done]
                keep = ~done
                if not bool(keep.any()):
                    active = active[keep]
                    break
                active, th, t, m, v, grad = active[keep], th[keep], t[keep], m[keep], v[keep], grad[keep]
        adam_step(th, grad, m, v, step, lr_at(step - 1, recipe))
        if on_step is not None:
            on_step(step)
    if len(active) and th is not theta:
        theta[active] = th
    return theta
