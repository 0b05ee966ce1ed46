"""The SIREN fit: closed-form gradient vs autograd, Adam vs torch.optim.Adam, batch independence,
early stop, layouts, and a zoo build that resumes after its process is killed."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from wsbench import inr
from wsbench.inr import fit_batch, fit_from, init_siren
from wsbench.siren import (
    DEFAULT_RECIPE,
    PixelGrid,
    adam_step,
    internal_to_public,
    lr_at,
    psnr,
    public_to_internal,
    siren_eval,
    siren_grads,
    targets_from_images,
    to_internal,
)
from wsbench.specs import SirenSpec
from wsbench.weights import coordinates, render, siren_forward
from wsbench.zoo import build_zoo

SPECS = [SirenSpec(hidden=(32, 32), out_dim=1), SirenSpec(hidden=(32, 32), out_dim=3),
         SirenSpec(hidden=(16,), out_dim=2), SirenSpec(hidden=(8, 8, 8), out_dim=1, w0=10.0)]


def _images(n, c, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def _autograd_loss(params, target, spec, h, w):
    coords = coordinates(h, w).to(target).expand(target.shape[0], -1, -1)
    pred = siren_forward(params, coords, spec.w0)
    return (pred - target).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(map(str, s.dims)))
def test_closed_form_gradient_matches_autograd(spec):
    h, w = 7, 5
    params = [p.double() for p in init_siren(3, spec, torch.Generator().manual_seed(1))]
    target = targets_from_images(_images(3, spec.out_dim, h, w)).double()
    grad, mse = siren_grads(to_internal(params), target.transpose(1, 2).contiguous(), spec,
                            PixelGrid.make(h, w, dtype=torch.float64))
    ps = [p.clone().requires_grad_() for p in params]
    err = _autograd_loss(ps, target, spec, h, w)
    err.sum().backward()
    ref = to_internal([p.grad for p in ps])
    assert torch.allclose(grad, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(mse, err.detach(), rtol=1e-12)


def test_closed_form_forward_and_layouts_round_trip():
    spec = SPECS[1]
    theta = to_internal(init_siren(4, spec, torch.Generator().manual_seed(2)))
    public = internal_to_public(theta, spec)
    assert torch.equal(public_to_internal(public, spec), theta)
    # Public layout: first the first layer's W as (out, in) row-major.
    w1 = theta[:, :2 * 32].view(4, 2, 32)
    assert torch.equal(public[:, :64].view(4, 32, 2), w1.transpose(1, 2))
    out = siren_eval(theta, spec, PixelGrid.make(6, 9))
    ref = render(public, spec, 6, 9).reshape(4, 3, 54)
    assert torch.allclose(out, ref, atol=1e-5)


def test_fit_matches_autograd_with_torch_adam():
    """A few steps of the fit equal autograd + torch.optim.Adam (float32, decaying learning rate)."""
    spec = SPECS[0]
    images = _images(4, 1, 6, 6)
    recipe = {**DEFAULT_RECIPE, "steps": 6, "lr": 1e-2, "decay_frac": 0.5, "lr_final": 0.1}
    weights, quality = fit_batch(images, spec, recipe, torch.Generator().manual_seed(0), torch.device("cpu"))
    params = [p.requires_grad_() for p in init_siren(4, spec, torch.Generator().manual_seed(0))]
    opt = torch.optim.Adam(params, lr=recipe["lr"])
    target = targets_from_images(images)
    for step in range(recipe["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        opt.zero_grad()
        _autograd_loss(params, target, spec, 6, 6).sum().backward()
        opt.step()
    ref = internal_to_public(to_internal([p.detach() for p in params]), spec)
    assert np.allclose(weights, ref.numpy(), atol=2e-5)
    rendered = render(torch.from_numpy(weights), spec, 6, 6)
    target = torch.from_numpy(images).float().div(127.5).sub(1).flatten(1)
    assert np.allclose(quality, psnr(rendered.flatten(1), target), atol=1e-3)


def test_adam_step_is_torch_adam():
    theta = torch.randn(3, 10)
    grads = [torch.randn(3, 10) for _ in range(4)]
    p = theta.clone().requires_grad_()
    opt = torch.optim.Adam([p], lr=0.01)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    for k, g in enumerate(grads, 1):
        adam_step(theta, g, m, v, k, 0.01)
        p.grad = g.clone()
        opt.step()
    assert torch.allclose(theta, p.detach(), atol=1e-7)


def test_each_inr_is_independent_of_its_batch(monkeypatch):
    """Same INRs whether fitted 7 at once in CPU blocks of 3 or one at a time."""
    spec = SPECS[1]
    images = _images(7, 3, 8, 8)
    theta = to_internal(init_siren(7, spec, torch.Generator().manual_seed(3)))
    recipe = {"steps": 5, "lr": 5e-3}
    monkeypatch.setattr(inr, "CPU_BLOCK", 3)
    together, _ = fit_from(images, theta, spec, recipe, torch.device("cpu"))
    alone = [fit_from(images[i:i + 1], theta[i:i + 1], spec, recipe, torch.device("cpu"))[0] for i in range(7)]
    assert np.allclose(together, np.concatenate(alone), rtol=0, atol=1e-6)


def test_psnr_target_freezes_inrs_that_reach_it():
    spec = SPECS[0]
    images = _images(4, 1, 6, 6)
    images[:2] = 128  # constant images are fitted almost at once
    theta = to_internal(init_siren(4, spec, torch.Generator().manual_seed(0)))
    recipe = {"steps": 200, "lr": 1e-2, "psnr_target": 35.0}
    w, q = fit_from(images, theta, spec, recipe, torch.device("cpu"))
    w_full, _ = fit_from(images, theta, spec, {**recipe, "psnr_target": None}, torch.device("cpu"))
    assert (q[:2] >= 35.0).all()
    assert not np.allclose(w[:2], w_full[:2])  # stopped early
    assert np.array_equal(w[2:], w_full[2:]) or (q[2:] >= 35.0).all()


def test_lr_schedule():
    r = {"lr": 1e-2, "steps": 100, "decay_frac": 0.5, "lr_final": 0.01}
    assert lr_at(0, r) == lr_at(49, r) == 1e-2
    assert math.isclose(lr_at(99, r), 1e-4) and lr_at(60, r) < 1e-2
    assert all(lr_at(k, r) >= lr_at(k + 1, r) for k in range(99))
    assert lr_at(99, {"lr": 1e-3, "steps": 100}) == 1e-3


def test_bad_recipe_is_one_line_error():
    from wsbench.errors import WsbenchError
    with pytest.raises(WsbenchError, match="known optimizers: adam"):
        fit_batch(_images(1, 1, 4, 4), SPECS[0], {"optimizer": "sgd"}, torch.Generator(), torch.device("cpu"))
    with pytest.raises(WsbenchError, match="3 channels"):
        fit_batch(_images(1, 3, 4, 4), SPECS[0], {}, torch.Generator(), torch.device("cpu"))


def test_shared_init_gives_equal_images_equal_inrs(tmp_path):
    """init=shared: every INR, in every chunk, starts from one draw, so equal images give equal INRs;
    independent inits give different weights for the same image."""
    images = np.repeat(_images(1, 1, 6, 6), 5, axis=0)
    images[2] = _images(1, 1, 6, 6, seed=1)[0]
    spec = SirenSpec(hidden=(8, 8))
    recipe = {"steps": 4, "lr": 5e-3, "chunk_size": 2}
    shared = np.asarray(build_zoo(tmp_path, "t", images, np.arange(5), spec, {**recipe, "init": "shared"}).weights)
    indep = np.asarray(build_zoo(tmp_path, "t", images, np.arange(5), spec, recipe).weights)
    assert np.array_equal(shared[0], shared[1]) and np.array_equal(shared[0], shared[4])  # across chunks too
    assert not np.allclose(shared[0], shared[2])
    assert not np.allclose(indep[0], indep[1])
    from wsbench.errors import WsbenchError
    with pytest.raises(WsbenchError, match="known inits: independent, shared"):
        build_zoo(tmp_path, "t", images, np.arange(5), spec, {**recipe, "init": "same"})
    assert len(list((tmp_path / "zoos").iterdir())) == 2  # the bad recipe left no folder


_CHILD = textwrap.dedent("""
    import sys, time, numpy as np, torch
    import wsbench.zoo as zoo
    from wsbench.specs import SirenSpec
    real = zoo.fit_from
    calls = []
    def fit_from(*a, **kw):
        calls.append(1)
        if len(calls) == 4:  # in the middle of the 4th chunk: signal the parent, wait to be killed
            print("KILLME", flush=True)
            time.sleep(600)
        return real(*a, **kw)
    zoo.fit_from = fit_from
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 6, 6), dtype=np.uint8)
    zoo.build_zoo(sys.argv[1], "t", images, np.arange(40), SirenSpec(hidden=(8, 8)),
                  {"steps": 20, "lr": 5e-3, "chunk_size": 8}, seed=1)
""")


def test_killed_build_resumes_from_finished_chunks(tmp_path, monkeypatch):
    monkeypatch.setenv("WSBENCH_INR_COMPILE", "0")  # the child starts fast; both sides run the same ops
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 6, 6), dtype=np.uint8)
    spec, recipe = SirenSpec(hidden=(8, 8)), {"steps": 20, "lr": 5e-3, "chunk_size": 8}
    cache = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(cache)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore", "WSBENCH_INR_COMPILE": "0"})
    try:
        assert child.stdout.readline().strip() == "KILLME"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (folder,) = (cache / "zoos").iterdir()
    assert json.loads((folder / "done.json").read_text()) == [0, 1, 2]
    assert not (folder / "manifest.json").exists()
    seen = []
    zoo = build_zoo(cache, "t", images, np.arange(40), spec, recipe, seed=1,
                    progress=lambda done, total, db: seen.append(done))
    assert seen[0] >= 24  # the three finished chunks were not fitted again
    fresh = build_zoo(tmp_path / "fresh", "t", images, np.arange(40), spec, recipe, seed=1)
    assert np.array_equal(np.asarray(zoo.weights), np.asarray(fresh.weights))
    assert np.array_equal(zoo.psnr, fresh.psnr)
    assert zoo.manifest["key"] == fresh.manifest["key"] and zoo.manifest["count"] == 40
    assert not (folder / "done.json").exists() and not (folder / "psnr.partial.npy").exists()


def test_triton_kernel_matches_closed_form_in_interpreter():
    """The CUDA kernel's arithmetic, run by Triton's CPU interpreter (skipped without Triton)."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import numpy as np, torch
        from wsbench import inr_cuda
        from wsbench.inr import init_siren
        from wsbench.siren import DEFAULT_RECIPE, PixelGrid, fit_internal, siren_eval, targets_cm, to_internal
        from wsbench.specs import SirenSpec
        rng = np.random.default_rng(0)
        for c, h, w in ((1, 5, 7), (3, 4, 6)):
            spec = SirenSpec(hidden=(16, 16), out_dim=c)
            imgs = rng.integers(0, 256, (2, c, h, w), dtype=np.uint8)
            theta = to_internal(init_siren(2, spec, torch.Generator().manual_seed(0)))
            recipe = {**DEFAULT_RECIPE, "steps": 3, "lr": 1e-2}
            ref = theta.clone()
            fit_internal(ref, targets_cm(imgs), spec, recipe, PixelGrid.make(h, w))
            mse = inr_cuda.fit_triton(torch.from_numpy(imgs), theta, spec, recipe, precision="ieee", fast=False)
            assert torch.allclose(theta, ref, atol=1e-5), (theta - ref).abs().max()
            ref_mse = (siren_eval(ref, spec, PixelGrid.make(h, w)) - targets_cm(imgs)).pow(2).mean((1, 2))
            assert torch.allclose(mse, ref_mse, rtol=1e-4)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                         env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_process_pool_gives_the_thread_results(monkeypatch):
    """Large CPU fits run in worker processes; the INRs are the ones threads give."""
    spec = SPECS[0]
    images = _images(12, 1, 6, 6)
    theta = to_internal(init_siren(12, spec, torch.Generator().manual_seed(5)))
    recipe = {"steps": 3, "lr": 5e-3}
    monkeypatch.setattr(inr, "CPU_BLOCK", 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setenv("WSBENCH_INR_PROCESSES", "0")
        in_threads = fit_from(images, theta, spec, recipe, torch.device("cpu"))
        monkeypatch.setenv("WSBENCH_INR_PROCESSES", "1")
        monkeypatch.setattr(inr, "CPU_PROCESS_MIN", 1)
        seen = []
        in_processes = fit_from(images, theta, spec, recipe, torch.device("cpu"), on_step=seen.append)
    finally:
        torch.set_num_threads(threads)
    assert inr.process_pool_workers() == 2
    assert np.array_equal(in_threads[0], in_processes[0]) and np.array_equal(in_threads[1], in_processes[1])
    assert seen and seen[-1] == 1.0


def test_gpu_fit_declines_what_its_kernel_cannot_run_and_the_driver_fits_the_closed_form():
    """``inr_cuda.fit`` returns None for a spec (or install) its kernel cannot run; the driver's
    PyTorch-ops fit it falls back to gives the CPU fit's INRs."""
    from wsbench import inr_cuda
    spec = SPECS[2]  # one hidden layer: never the fused kernel
    images = _images(3, 2, 5, 5)
    theta = to_internal(init_siren(3, spec, torch.Generator().manual_seed(4)))
    recipe = {**DEFAULT_RECIPE, "steps": 4, "lr": 5e-3}
    assert not inr_cuda.supported(spec)
    assert inr_cuda.fit(images, theta, spec, recipe, torch.device("cpu")) is None
    start = theta.clone()
    weights, quality = inr.fit_torch(images, theta, spec, recipe, torch.device("cpu"), None)
    assert torch.equal(theta, start)  # the caller's initial weights are left alone
    ref_w, ref_q = fit_from(images, theta, spec, recipe, torch.device("cpu"))
    assert np.allclose(weights.numpy(), ref_w, atol=1e-6) and np.allclose(quality.numpy(), ref_q, atol=1e-4)


def _imported(module: str) -> set[str]:
    """Every module a source file imports, at its top or inside a function."""
    import ast
    import importlib.util
    from pathlib import Path
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_inr_modules_import_alone_without_a_cycle():
    """siren (the closed form) imports neither driver; inr_cuda (the kernel) imports siren, never the driver."""
    assert not {"wsbench.inr", "wsbench.inr_cuda"} & _imported("wsbench.siren")
    assert "wsbench.inr" not in _imported("wsbench.inr_cuda") and "wsbench.siren" in _imported("wsbench.inr_cuda")
    code = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
            "print(' '.join(sorted(m for m in sys.modules "
            "if m in ('wsbench.inr', 'wsbench.inr_cuda', 'wsbench.siren'))))")
    names = ("wsbench.siren", "wsbench.inr_cuda", "wsbench.inr")
    loaded = {name: subprocess.run([sys.executable, "-c", code, name], check=True, capture_output=True,
                                   text=True).stdout.strip() for name in names}
    assert loaded == {"wsbench.siren": "wsbench.siren", "wsbench.inr_cuda": "wsbench.inr_cuda wsbench.siren",
                      "wsbench.inr": "wsbench.inr wsbench.siren"}
