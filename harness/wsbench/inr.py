"""Fitting SIREN INR zoos: one SIREN per image, all fitted together as stacked tensors.

The public flat weight layout is :mod:`wsbench.weights`; the closed-form math (forward,
gradient, Adam, the pixel grid) is :mod:`wsbench.siren`. This module drives it:
:func:`init_siren` draws the initial weights, :func:`fit_batch` / :func:`fit_from` fit a batch.

On the CPU the batch is walked in small blocks of INRs whose activations stay in cache, one
block per thread, or per worker process for large fits. On CUDA, :mod:`wsbench.inr_cuda`
(Triton, when installed) runs a whole step of many INRs in one kernel; where it cannot, the
same closed form runs in PyTorch ops on the GPU.
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
from collections.abc import Callable

import numpy as np
import torch

from wsbench.errors import WsbenchError
from wsbench.siren import (
    DEFAULT_RECIPE,
    PixelGrid,
    check_recipe,
    fit_internal,
    internal_to_public,
    psnr,
    siren_eval,
    targets_cm,
    to_internal,
)
from wsbench.specs import SirenSpec

# INRs per block on the CPU (None: about 12,544 pixels' worth, half that with colour): small enough for a
# block's activations to stay in L2/L3, large enough to amortise the per-op overhead (tuned on 2 Zen 4 cores).
CPU_BLOCK = None
CPU_BLOCK_PIXELS = 12544
# Fits of at least this many image-steps use worker processes on the CPU (a pool takes seconds to start).
CPU_PROCESS_MIN = 100_000


def init_siren(batch: int, spec: SirenSpec, generator: torch.Generator) -> list[torch.Tensor]:
    """Stacked SIREN parameters, ``[W1 (B, in, out), b1 (B, 1, out), ...]`` (W transposed for bmm)."""
    params = []
    for k, (o, i) in enumerate(spec.layer_shapes):
        bound = 1.0 / i if k == 0 else math.sqrt(6.0 / i) / spec.w0
        w = (torch.rand(batch, i, o, generator=generator) * 2 - 1) * bound
        b = (torch.rand(batch, 1, o, generator=generator) * 2 - 1) / math.sqrt(i)
        params += [w, b]
    return params


def fit_batch(images: np.ndarray, spec: SirenSpec, recipe: dict, generator: torch.Generator,
              device: torch.device, on_step: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit one SIREN per image, all at once. Returns ``(weights (B, P) float32, psnr (B,))``.

    The loss is the sum over INRs of each INR's mean squared error, so each INR's
    gradient, and with Adam its whole trajectory, is independent of the others.
    The init is drawn from ``generator`` (:func:`init_siren`). ``on_step(fraction)``
    reports the fraction of the work done, in ``[0, 1]``.
    """
    theta = to_internal(init_siren(images.shape[0], spec, generator))
    return fit_from(images, theta, spec, recipe, device, on_step)


def fit_from(images: np.ndarray, theta: torch.Tensor, spec: SirenSpec, recipe: dict, device: torch.device,
             on_step: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_batch` from given initial weights ``theta (B, P)`` (internal layout, CPU)."""
    recipe = {**DEFAULT_RECIPE, **recipe}
    check_recipe(recipe)
    device = torch.device(device)
    b, c = images.shape[:2]
    if theta.shape != (b, spec.num_params):
        raise WsbenchError(f"initial weights have shape {tuple(theta.shape)}, expected {(b, spec.num_params)}")
    if c != spec.out_dim:
        raise WsbenchError(f"images have {c} channels but the SIREN outputs {spec.out_dim}; fix the spec's out_dim")
    if device.type == "cuda":
        from wsbench import inr_cuda  # Triton is imported only when a GPU fit asks for it
        fitted = inr_cuda.fit(images, theta, spec, recipe, device, on_step)
        if fitted is None:  # no fused kernel for this spec or install: the same closed form in PyTorch ops
            fitted = fit_torch(images, theta, spec, recipe, device, on_step)
        weights, quality = fitted
        return weights.numpy(), quality.numpy()
    return _fit_cpu(images, theta, spec, recipe, on_step)


def fit_torch(images: np.ndarray, theta: torch.Tensor, spec: SirenSpec, recipe: dict, device: torch.device,
               on_step: Callable[[float], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed form in PyTorch ops on ``device`` (a GPU without the fused kernel); ``theta`` is left unchanged.

    Returns CPU ``(weights (B, P) in the public layout, psnr (B,))``.
    """
    steps = int(recipe["steps"])
    cb = None if on_step is None else (lambda k: on_step(k / steps))
    theta = theta.to(device, copy=True)
    target = targets_cm(images).to(device)
    grid = PixelGrid.make(images.shape[2], images.shape[3], device)
    fit_internal(theta, target, spec, recipe, grid, cb)
    with torch.no_grad():
        quality = psnr(siren_eval(theta, spec, grid), target)
    return internal_to_public(theta, spec).cpu(), quality.float().cpu()


def _fit_blocks(images: np.ndarray, theta: torch.Tensor, spec: SirenSpec, recipe: dict, block: int,
                report: Callable[[int], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``theta`` (internal layout) in blocks of ``block`` INRs, one after another, single-threaded.

    ``report(n)`` after every step of a block of ``n`` INRs. Returns ``(theta, psnr)``.
    """
    b, _, h, w = images.shape
    grid = PixelGrid.make(h, w)
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
    per = -((-b // block) // workers) * block
    parts = [(lo, min(b, lo + per)) for lo in range(0, b, per)]
    if workers > 1 and b * steps >= CPU_PROCESS_MIN and os.environ.get("WSBENCH_INR_PROCESSES", "1") != "0":
        try:
            return _fit_processes(images, theta, spec, recipe, block, parts, on_step)
        except (OSError, concurrent.futures.process.BrokenProcessPool) as exc:  # no processes here: threads
            _POOL.clear()
            warnings.warn(f"INR fit falls back to threads ({type(exc).__name__}: {exc})", stacklevel=2)
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
