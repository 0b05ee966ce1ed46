"""SIREN INR zoos: one SIREN per image, all fitted together as stacked tensors.

The public flat weight layout is :mod:`wsbench.weights`; this module is the fitter.

The fit does not use autograd. A SIREN is a short chain of affine maps and sines,
so its gradient has a closed form (:func:`siren_grads`); computing it directly
saves autograd's bookkeeping, lets the first layer use the pixel grid's
separable structure (below), and lets the CPU fit walk the batch in small blocks
whose activations stay in cache, one block per thread. Adam runs on one flat
``(B, P)`` buffer. The sine/cosine pair of the hidden layer is compiled with
``torch.compile`` when a C++ compiler is available (else eager ops); the output
layer works on ``(channels, pixels)`` arrays. ``tests/test_inr.py`` checks the
closed form against autograd and the whole fit against ``torch.optim.Adam``.

First-layer trick: the coordinates form a grid, so the first pre-activation is
``u = w0 (y W[0] + x W[1] + b) = A(y) + B(x)`` and
``sin u = sin A cos B + cos A sin B``, ``cos u = cos A cos B - sin A sin B``:
sines of ``H + W`` values per unit instead of ``H * W``.

On CUDA, :mod:`wsbench.inr_cuda` (Triton, when installed) runs a whole step of many
INRs in one kernel; it falls back to the same closed form as the CPU.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.process
import math
import multiprocessing
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

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
# INRs per block on the CPU (None: about 12,544 pixels' worth, half that with colour): small enough for a
# block's activations to stay in L2/L3, large enough to amortise the per-op overhead (tuned on 2 Zen 4 cores).
CPU_BLOCK = None
CPU_BLOCK_PIXELS = 12544
# Fits of at least this many image-steps use worker processes on the CPU (a pool takes seconds to start).
CPU_PROCESS_MIN = 100_000
_COMPILE_LOCK = threading.Lock()


def targets_from_images(images: np.ndarray) -> torch.Tensor:
    """``(B, C, H, W)`` uint8 -> ``(B, H*W, C)`` float32 in ``[-1, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def init_siren(batch: int, spec: SirenSpec, generator: torch.Generator) -> list[torch.Tensor]:
    """Stacked SIREN parameters, ``[W1 (B, in, out), b1 (B, 1, out), ...]`` (W transposed for bmm)."""
    params = []
    for k, (o, i) in enumerate(spec.layer_shapes):
        bound = 1.0 / i if k == 0 else math.sqrt(6.0 / i) / spec.w0
        w = (torch.rand(batch, i, o, generator=generator) * 2 - 1) * bound
        b = (torch.rand(batch, 1, o, generator=generator) * 2 - 1) / math.sqrt(i)
        params += [w, b]
    return params


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-INR PSNR in dB for signals in ``[-1, 1]`` (peak-to-peak 2), ``(B,)``."""
    mse = (pred - target).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(4.0 / mse)


# ----------------------------------------------------------------------------------------------
# Closed-form forward and backward on the internal flat layout
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


@dataclass
class Grid:
    """The pixel grid of an ``H x W`` image, prepared for the closed form.

    ``ys (H,)``, ``xs (W,)`` coordinates; ``basis (3, H*W)`` rows ``y, x, 1`` per pixel.
    """

    height: int
    width: int
    ys: torch.Tensor
    xs: torch.Tensor
    basis: torch.Tensor

    @staticmethod
    def make(height: int, width: int, device=None, dtype=torch.float32) -> "Grid":
        c = coordinates(height, width).to(device=device, dtype=dtype)
        basis = torch.cat([c, torch.ones(len(c), 1, device=device, dtype=dtype)], 1).t().contiguous()
        return Grid(height, width, c[::width, 0].contiguous(), c[:width, 1].contiguous(), basis)


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
                except Exception:  # no C++ compiler or an unsupported platform: the eager ops
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


def _first_layer(w: torch.Tensor, b: torch.Tensor, grid: Grid, w0: float):
    """First layer via the separable identity: ``(sin u, cos u)``, each ``(B, H*W, out)``.

    (Left to eager ops: compiled, its broadcasts ran slower.)
    """
    return _first_layer_eager(w, b, grid.ys, grid.xs, w0)


def targets_cm(images: np.ndarray) -> torch.Tensor:
    """``(B, C, H, W)`` uint8 -> ``(B, C, H*W)`` float32 in ``[-1, 1]`` (channel-major targets)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return x.view(x.shape[0], x.shape[1], -1)


def siren_grads(theta: torch.Tensor, target: torch.Tensor, spec: SirenSpec, grid: Grid,
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
    layers = _views(theta, spec)
    grad = torch.empty_like(theta) if grad is None else grad
    glayers = _views(grad, spec)
    # Forward, keeping each layer's sine and cosine (activations (B, pixels, units)).
    s, co = _first_layer(layers[0][0], layers[0][1], grid, w0)
    acts, coss = [s], [co]
    for w, b in layers[1:-1]:
        a, co = sincos(torch.baddbmm(b, acts[-1], w, beta=w0, alpha=w0))
        acts.append(a)
        coss.append(co)
    w_last, b_last = layers[-1]
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
    for k in range(len(layers) - 2, 0, -1):
        g.mul_(coss[k])
        w, _ = layers[k]
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


def siren_eval(theta: torch.Tensor, spec: SirenSpec, grid: Grid) -> torch.Tensor:
    """Closed-form forward: internal ``theta (B, P)`` -> ``(B, C, H*W)`` (channel-major, like :func:`targets_cm`)."""
    layers = _views(theta, spec)
    h, _ = _first_layer(layers[0][0], layers[0][1], grid, float(spec.w0))
    for w, b in layers[1:-1]:
        h = torch.baddbmm(b, h, w, beta=spec.w0, alpha=spec.w0).sin_()
    w_last, b_last = layers[-1]
    return torch.baddbmm(b_last.transpose(1, 2), w_last.transpose(1, 2).contiguous(), h.transpose(1, 2))


def lr_at(step: int, recipe: dict) -> float:
    """Learning rate of 0-based ``step``: constant, then cosine decay over the last ``decay_frac``."""
    lr, steps = float(recipe["lr"]), int(recipe["steps"])
    frac = float(recipe.get("decay_frac") or 0.0)
    start = steps - int(round(frac * steps))
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


INITS = ("independent", "shared")


def check_recipe(recipe: dict) -> None:
    if recipe.get("optimizer", "adam") != "adam":
        raise WsbenchError(f"unknown INR optimizer {recipe.get('optimizer')!r}; known optimizers: adam")
    if recipe.get("init", "independent") not in INITS:
        raise WsbenchError(f"unknown INR init {recipe.get('init')!r}; known inits: {', '.join(INITS)}")
    if int(recipe["steps"]) < 1 or float(recipe["lr"]) <= 0:
        raise WsbenchError(f"INR recipe needs steps >= 1 and lr > 0, got steps {recipe['steps']}, lr {recipe['lr']}")


def fit_internal(theta: torch.Tensor, target: torch.Tensor, spec: SirenSpec, recipe: dict, grid: Grid,
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


def fit_batch(images: np.ndarray, spec: SirenSpec, recipe: dict, generator: torch.Generator,
              device: torch.device, on_step: Callable[[float], None] | None = None):
    """Fit one SIREN per image, all at once. Returns ``(weights (B, P) float32, psnr (B,))``.

    The loss is the sum over INRs of each INR's mean squared error, so each INR's
    gradient, and with Adam its whole trajectory, is independent of the others.
    The init is drawn from ``generator`` (:func:`init_siren`). ``on_step(fraction)``
    reports the fraction of the work done, in ``[0, 1]``.
    """
    theta = to_internal(init_siren(images.shape[0], spec, generator))
    return fit_from(images, theta, spec, recipe, device, on_step)


def fit_from(images: np.ndarray, theta: torch.Tensor, spec: SirenSpec, recipe: dict, device: torch.device,
             on_step: Callable[[float], None] | None = None):
    """:func:`fit_batch` from given initial weights ``theta (B, P)`` (internal layout, CPU)."""
    recipe = {**DEFAULT_RECIPE, **recipe}
    check_recipe(recipe)
    device = torch.device(device)
    b, c, h, w = images.shape
    if theta.shape != (b, spec.num_params):
        raise WsbenchError(f"initial weights have shape {tuple(theta.shape)}, expected {(b, spec.num_params)}")
    if c != spec.out_dim:
        raise WsbenchError(f"images have {c} channels but the SIREN outputs {spec.out_dim}; fix the spec's out_dim")
    if device.type == "cuda":
        from wsbench import inr_cuda
        weights, quality = inr_cuda.fit(images, theta, spec, recipe, device, on_step)
        return weights.numpy(), quality.numpy()
    return _fit_cpu(images, theta, spec, recipe, on_step)


def _fit_blocks(images: np.ndarray, theta: torch.Tensor, spec: SirenSpec, recipe: dict, block: int,
                report: Callable[[int], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``theta`` (internal layout) in blocks of ``block`` INRs, one after another, single-threaded.

    ``report(n)`` after every step of a block of ``n`` INRs. Returns ``(theta, psnr)``.
    """
    b, _, h, w = images.shape
    grid = Grid.make(h, w)
    out = theta.clone()
    quality = torch.empty(b)
    with torch.no_grad():
        for lo in range(0, b, block):
            hi = min(b, lo + block)
            part = out[lo:hi].clone()
            target = targets_cm(images[lo:hi])
            fit_internal(part, target, spec, recipe, grid, None if report is None else (lambda k, n=hi - lo: report(n)))
            quality[lo:hi] = psnr(siren_eval(part, spec, grid), target)
            out[lo:hi] = part
    return out, quality


# A pool of worker processes for large CPU fits, started once and reused (a zoo build makes many calls).
_POOL: dict = {}
_WORKER: dict = {}


def _worker_init(counter) -> None:
    torch.set_num_threads(1)
    _WORKER["counter"] = counter


def _worker_fit(images, theta, spec, recipe, block):
    counter = _WORKER["counter"]

    def report(n: int) -> None:
        with counter.get_lock():
            counter.value += n
    return _fit_blocks(images, theta, spec, recipe, block, report)


def process_pool_workers() -> int | None:
    """Workers of the pool of INR-fitting processes, or None while no pool runs."""
    return _POOL.get("workers")


def _process_pool(workers: int):
    if _POOL.get("workers") != workers:
        if _POOL.get("pool") is not None:
            _POOL["pool"].shutdown(cancel_futures=True)
        ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
        counter = ctx.Value("q", 0)
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                                      initargs=(counter,))
        if not _POOL:
            atexit.register(lambda: _POOL.get("pool") and _POOL["pool"].shutdown(cancel_futures=True))
        _POOL.update(pool=pool, workers=workers, counter=counter)
    return _POOL["pool"], _POOL["counter"]


def _fit_cpu(images: np.ndarray, theta: torch.Tensor, spec: SirenSpec, recipe: dict,
             on_step: Callable[[float], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """CPU fit in blocks of INRs (``CPU_BLOCK``) spread over ``torch.get_num_threads()`` workers.

    Every block runs single-threaded torch ops: intra-op threads would synchronise at each of
    the many small ops, and stall whenever the machine is shared. A large fit (at least
    ``CPU_PROCESS_MIN`` image-steps) runs its blocks in a pool of processes, a smaller one in
    threads (Python threads contend for the GIL between ops). Blocks never interact, so the
    result does not depend on the number or kind of workers.
    """
    b, c, h, w = images.shape
    block = CPU_BLOCK or max(2, CPU_BLOCK_PIXELS // (h * w * (1 if c == 1 else 2)))
    steps = int(recipe["steps"])
    workers = max(1, min(torch.get_num_threads(), -(-b // block)))
    # Contiguous parts of whole blocks, one per worker.
    per = -(-(-(-b // block)) // workers) * block
    parts = [(lo, min(b, lo + per)) for lo in range(0, b, per)]
    if workers > 1 and b * steps >= CPU_PROCESS_MIN and os.environ.get("WSBENCH_INR_PROCESSES", "1") != "0":
        try:
            return _fit_processes(images, theta, spec, recipe, block, parts, on_step)
        except (OSError, concurrent.futures.process.BrokenProcessPool) as exc:  # no processes here: threads
            _POOL.clear()
            warnings.warn(f"INR fit falls back to threads ({type(exc).__name__}: {exc})")
    lock = threading.Lock()
    done = [0]

    def report(n: int) -> None:
        with lock:
            done[0] += n
            frac = done[0] / (b * steps)
        on_step(frac)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rep = None if on_step is None else report
        if len(parts) == 1:
            results = [_fit_blocks(images, theta, spec, recipe, block, rep)]
        else:
            with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
                futures = [pool.submit(_fit_blocks, images[lo:hi], theta[lo:hi], spec, recipe, block, rep)
                           for lo, hi in parts]
                results = [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)
    out = torch.cat([r[0] for r in results])
    return internal_to_public(out, spec).numpy(), torch.cat([r[1] for r in results]).numpy()


def _fit_processes(images, theta, spec, recipe, block, parts, on_step):
    pool, counter = _process_pool(len(parts))
    with counter.get_lock():
        counter.value = 0
    total = images.shape[0] * int(recipe["steps"])
    futures = [pool.submit(_worker_fit, np.ascontiguousarray(images[lo:hi]), theta[lo:hi].clone(), spec, recipe,
                           block) for lo, hi in parts]
    pending = set(futures)
    while pending:
        _, pending = concurrent.futures.wait(pending, timeout=0.25)
        if on_step is not None:
            on_step(min(1.0, counter.value / total))
    results = [f.result() for f in futures]
    out = torch.cat([r[0] for r in results])
    return internal_to_public(out, spec).numpy(), torch.cat([r[1] for r in results]).numpy()
