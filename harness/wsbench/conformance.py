"""The conformance check a plugin author runs on an architecture: ``wsbench plugins check NAME``.

It builds the architecture on a tiny in-memory task (no download, no INR fitting) and checks
what the harness relies on:

- ``build``: ``build(info, config)`` returns an ``nn.Module`` whose ``forward(x)`` returns
  ``(logits (B, classes), OrderedDict name -> (B, ...))`` with finite logits;
- ``representations``: the names are non-empty, unique strings, the same names in the same order
  for every batch, one row per sample, and the training loop stores exactly those layers with one
  row per test sample;
- ``one step``: one AdamW step lowers the loss on its batch (at the architecture's learning rate,
  or a tenth or hundredth of it: the loop warms the rate up);
- ``deterministic``: the same seed gives the same parameters, predictions, history and
  representations (two full runs of the training loop).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsbench import config as cfg
from wsbench.inr import init_siren
from wsbench.specs import ArchitectureSpec, SirenSpec, TaskInfo
from wsbench.task import Task
from wsbench.train import train
from wsbench.weights import flatten

CHECK_DATASET = "conformance"  # matches no dataset_defaults, so the architecture's own defaults apply


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str


def tiny_task(num_classes: int = 3, per_split: int = 12, seed: int = 0) -> Task:
    """A task of ``3 * per_split`` samples: 8x8 grayscale images and SIREN 2-8-8-1 weights.

    Images and weights carry a class-dependent offset, so a model can learn something.
    """
    gen = torch.Generator().manual_seed(seed)
    n = 3 * per_split
    labels = torch.arange(n) % num_classes
    spec = SirenSpec(in_dim=2, hidden=(8, 8), out_dim=1)
    params = init_siren(n, spec, gen)
    inr_params = [(params[2 * k].transpose(1, 2), params[2 * k + 1].squeeze(1)) for k in range(len(params) // 2)]
    weights = flatten(inr_params) + 0.05 * labels.float().unsqueeze(1)
    noise = torch.rand(n, 1, 8, 8, generator=gen) * 128
    images = (noise + 40 * labels.float().view(-1, 1, 1, 1)).clamp(0, 255).to(torch.uint8).numpy()
    w = weights.float().numpy()
    splits = {s: np.arange(k * per_split, (k + 1) * per_split) for k, s in enumerate(("train", "val", "test"))}
    tr = splits["train"]
    x = images[tr].astype(np.float32) / 255.0
    info = TaskInfo(dataset=CHECK_DATASET, num_classes=num_classes, image_shape=(1, 8, 8), inr=spec,
                    image_mean=np.array([x.mean()], dtype=np.float32),
                    image_std=np.array([x.std() + 1e-6], dtype=np.float32),
                    weight_mean=w[tr].mean(0), weight_std=w[tr].std(0) + 1e-6)
    return Task(info=info, ids=np.arange(n, dtype=np.int64), labels=labels.numpy().astype(np.int64), images=images,
                weights=w, psnr=np.zeros(n, dtype=np.float32), splits=splits)


def _forward(model, x):
    out = model(x)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise AssertionError(f"forward must return (logits, layers), got {type(out).__name__}")
    logits, layers = out
    if not isinstance(layers, (OrderedDict, dict)):
        raise AssertionError(f"layers must be an ordered dict of name -> (B, d) tensor, got {type(layers).__name__}")
    return logits, layers


def check_architecture(arch: ArchitectureSpec, device: str = "cpu", seed: int = 0,
                       overrides: dict | None = None) -> list[CheckResult]:
    """Run every check (see the module docstring); each result says what failed and why.

    ``overrides`` are config values (as ``--set``), e.g. a smaller width for a quick check.
    """
    task = tiny_task()
    config = cfg.resolve(arch, CHECK_DATASET, {"epochs": 2, "batch_size": 8, "eval_batch_size": 16,
                                               "warmup_epochs": 0, **(overrides or {})})
    dev = torch.device(device)
    x_all = task.inputs(arch.view).to(dev)
    y_all = torch.from_numpy(task.labels).to(dev)
    results: list[CheckResult] = []

    def run(name, fn):
        try:
            detail = fn()
            results.append(CheckResult(name, True, detail or "ok"))
            return True
        except Exception as exc:  # a check reports, it never crashes the command
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
            return False

    state: dict = {}

    def build():
        torch.manual_seed(seed)
        model = arch.build(task.info, dict(config))
        if not isinstance(model, torch.nn.Module):
            raise AssertionError(f"build returned a {type(model).__name__}, not a torch.nn.Module")
        model = model.to(dev).eval()
        with torch.no_grad():
            logits, layers = _forward(model, x_all[:5])
        want = (5, task.info.num_classes)
        if tuple(logits.shape) != want:
            raise AssertionError(f"logits have shape {tuple(logits.shape)}, expected (batch, classes) = {want}")
        if not bool(torch.isfinite(logits).all()):
            raise AssertionError("logits are not finite")
        state["model"], state["names"] = model, list(layers)
        return f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(layers)} layers"

    def representations():
        model, names = state["model"], state["names"]
        if not names:
            raise AssertionError("forward returned no representation layers; return at least one (B, d) tensor")
        bad = [n for n in names if not isinstance(n, str) or not n]
        if bad or len(set(names)) != len(names):
            raise AssertionError(f"layer names must be unique non-empty strings, got {names}")
        with torch.no_grad():
            _, layers = _forward(model, x_all[:7])
        if list(layers) != names:
            raise AssertionError(f"layer names change with the batch: {names} for 5 samples, {list(layers)} for 7")
        for n, rep in layers.items():
            if not isinstance(rep, torch.Tensor) or rep.dim() < 1 or rep.shape[0] != 7:
                shape = tuple(rep.shape) if isinstance(rep, torch.Tensor) else type(rep).__name__
                raise AssertionError(f"layer {n!r} must have one row per sample (7), got {shape}")
        return ", ".join(names)

    def one_step():
        # The loop warms the learning rate up, so a first full-size step may overshoot; a model
        # passes if one step at its lr, or at a tenth or a hundredth of it, lowers the loss.
        tried = []
        for scale in (1.0, 0.1, 0.01):
            torch.manual_seed(seed)
            model = arch.build(task.info, dict(config)).to(dev).train()
            lr = float(config["lr"]) * scale
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
            idx = torch.arange(8, device=dev)

            def loss(model=model, idx=idx):
                torch.manual_seed(seed + 1)  # the same dropout masks before and after the step
                return F.cross_entropy(_forward(model, x_all[idx])[0], y_all[idx])
            before = loss()
            if not before.requires_grad:
                raise AssertionError("the loss does not depend on any parameter; are the logits detached?")
            opt.zero_grad(set_to_none=True)
            before.backward()
            before = before.item()
            if all(p.grad is None for p in model.parameters()):
                raise AssertionError("no parameter received a gradient; are the logits detached?")
            opt.step()
            with torch.no_grad():
                after = float(loss())
            if math.isfinite(after) and after < before:
                return f"loss {before:.4f} -> {after:.4f} at lr {lr:g}"
            tried.append(f"{before:.5f} -> {after:.5f} at lr {lr:g}")
        raise AssertionError("one AdamW step did not lower the loss on its batch: " + "; ".join(tried))

    def deterministic():
        torch.manual_seed(seed)
        a = arch.build(task.info, dict(config)).state_dict()
        torch.manual_seed(seed)
        b = arch.build(task.info, dict(config)).state_dict()
        diff = [k for k in a if not torch.equal(a[k], b[k])]
        if diff:
            raise AssertionError(f"the same seed built different parameters: {', '.join(diff[:3])}")
        r1 = train(task, arch, dict(config), seed, dev)
        r2 = train(task, arch, dict(config), seed, dev)
        names = state.get("names")
        if names is not None and list(r1.layers) != names:
            raise AssertionError(f"the training loop stored layers {list(r1.layers)}, forward declared {names}")
        n_test = len(task.splits["test"])
        short = [k for k, v in r1.layers.items() if v.shape[0] != n_test]
        if short:
            raise AssertionError(f"stored layers {short} do not have one row per test sample ({n_test})")
        if r1.history != r2.history:
            raise AssertionError(f"the same seed gave different training histories: {r1.history} vs {r2.history}")
        if not np.array_equal(r1.preds, r2.preds) or not np.allclose(r1.confidence, r2.confidence, rtol=0, atol=1e-6):
            raise AssertionError("the same seed gave different test predictions")
        for k in r1.layers:
            if not np.allclose(r1.layers[k], r2.layers[k], rtol=0, atol=1e-5):
                raise AssertionError(f"the same seed gave different representations in layer {k!r}")
        return f"2 runs identical (test acc {r1.test_acc:.3f})"

    if run("build", build):
        run("representations", representations)
    else:
        results.append(CheckResult("representations", False, "skipped: build failed"))
    run("one step", one_step)
    run("deterministic", deterministic)
    return results
