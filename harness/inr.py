"""SIREN INR zoos: one SIREN per image, all fitted together as stacked tensors.

Weights of one INR are flattened layer by layer as ``W (out, in)`` row-major then
``b (out,)``, the order of a ``seq.{k}.weight, seq.{k}.bias`` state dict, so
zoos imported from other projects and zoos fitted here share one layout.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

# Recipe defaults; a dataset's ``inr_recipe`` overrides them. w0 and the init
# follow Sitzmann et al. 2020 (SIREN): first layer U(-1/in, 1/in), later layers
# U(-sqrt(6/in)/w0, sqrt(6/in)/w0), biases U(-1/sqrt(in), 1/sqrt(in)).
DEFAULT_RECIPE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "steps": 200,
    "w0": 30.0,
    "psnr_target": None,  # stop a chunk early once every INR in it reaches this PSNR (dB)
    "chunk_size": 2048,
}


@dataclass(frozen=True)
class SirenSpec:
    """An MLP-shaped SIREN ``in_dim -> hidden... -> out_dim`` with sine activations."""

    in_dim: int = 2
    hidden: tuple = (32, 32)
    out_dim: int = 1
    w0: float = 30.0

    @property
    def dims(self) -> list[int]:
        return [self.in_dim, *self.hidden, self.out_dim]

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(out, in)`` of every linear layer."""
        d = self.dims
        return [(d[i + 1], d[i]) for i in range(len(d) - 1)]

    @property
    def num_params(self) -> int:
        return sum(o * i + o for o, i in self.layer_shapes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


def unflatten(weights: torch.Tensor, spec: SirenSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(B, P)`` -> ``[(W (B, out, in), b (B, out)), ...]`` per layer."""
    out, k = [], 0
    for o, i in spec.layer_shapes:
        w = weights[:, k:k + o * i].reshape(-1, o, i)
        k += o * i
        b = weights[:, k:k + o]
        k += o
        out.append((w, b))
    return out


def flatten(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Inverse of :func:`unflatten`."""
    parts = []
    for w, b in layers:
        parts += [w.reshape(w.shape[0], -1), b]
    return torch.cat(parts, dim=1)


def coordinates(height: int, width: int) -> torch.Tensor:
    """Pixel-centre coordinates in ``[-1, 1]^2``, ``(H*W, 2)``, row-major (y, x)."""
    ys = torch.linspace(-1, 1, height)
    xs = torch.linspace(-1, 1, width)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2)


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


def siren_forward(params: Sequence[torch.Tensor], coords: torch.Tensor, w0: float) -> torch.Tensor:
    """``coords (B, M, in)`` -> ``(B, M, out)``; sine after every layer but the last."""
    h = coords
    n = len(params) // 2
    for k in range(n):
        h = torch.baddbmm(params[2 * k + 1], h, params[2 * k])
        if k < n - 1:
            h = torch.sin(w0 * h)
    return h


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-INR PSNR in dB for signals in ``[-1, 1]`` (peak-to-peak 2), ``(B,)``."""
    mse = (pred - target).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(4.0 / mse)


def fit_batch(images: np.ndarray, spec: SirenSpec, recipe: dict, generator: torch.Generator,
              device: torch.device, on_step: Callable[[int], None] | None = None):
    """Fit one SIREN per image, all at once. Returns ``(weights (B, P) float32, psnr (B,))``.

    The loss is the sum over INRs of each INR's mean squared error, so each INR's
    gradient, and with Adam its whole trajectory, is independent of the others.
    """
    b, c, h, w = images.shape
    target = targets_from_images(images).to(device)
    coords = coordinates(h, w).to(device).expand(b, -1, -1)
    params = [p.to(device).requires_grad_() for p in init_siren(b, spec, generator)]
    fused = device.type == "cuda"
    opt = torch.optim.Adam(params, lr=recipe["lr"], fused=fused) if fused else torch.optim.Adam(params, lr=recipe["lr"])
    target_db = recipe.get("psnr_target")
    for step in range(recipe["steps"]):
        opt.zero_grad(set_to_none=True)
        pred = siren_forward(params, coords, spec.w0)
        err = (pred - target).pow(2).flatten(1).mean(1)
        err.sum().backward()
        opt.step()
        if on_step is not None:
            on_step(step)
        if target_db is not None and step % 25 == 24:
            if bool((10.0 * torch.log10(4.0 / err.detach().clamp_min(1e-12)) >= target_db).all()):
                break
    with torch.no_grad():
        pred = siren_forward(params, coords, spec.w0)
        quality = psnr(pred, target)
        layers = [(params[2 * k].transpose(1, 2), params[2 * k + 1].squeeze(1)) for k in range(len(params) // 2)]
        flat = flatten(layers)
    return flat.float().cpu().numpy(), quality.float().cpu().numpy()


def render(weights: torch.Tensor, spec: SirenSpec, height: int, width: int) -> torch.Tensor:
    """Evaluate INRs on the pixel grid: ``(B, P)`` -> ``(B, C, H, W)`` in ``[-1, 1]``."""
    layers = unflatten(weights, spec)
    params = []
    for w, b in layers:
        params += [w.transpose(1, 2), b.unsqueeze(1)]
    coords = coordinates(height, width).to(weights).expand(weights.shape[0], -1, -1)
    out = siren_forward(params, coords, spec.w0)
    return out.reshape(weights.shape[0], height, width, -1).permute(0, 3, 1, 2)
