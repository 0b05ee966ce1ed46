"""The flat weight layout of an INR zoo, and evaluating INRs from it.

One INR of a :class:`~wsbench.specs.SirenSpec` ``in_dim -> hidden... -> out_dim`` is one row of
``spec.num_params`` float32 numbers: for every linear layer ``k`` in order, its weight
``W_k (out, in)`` row-major, then its bias ``b_k (out,)``. That is the order of a
``seq.{k}.weight, seq.{k}.bias`` state dict, so zoos imported from other projects and zoos fitted
here share one layout. A zoo is ``(N, P)``; ``unflatten`` turns a batch ``(B, P)`` into per-layer
tensors. The SIREN computes ``h_0 = x`` (coordinates in ``[-1, 1]^2``, row-major ``(y, x)``),
``h_{k+1} = sin(w0 (W_k h_k + b_k))`` for hidden layers and ``W_L h_L + b_L`` for the output,
whose values are pixel intensities scaled to ``[-1, 1]``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from wsbench.specs import SirenSpec


def tensor_shapes(spec: Any) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(W shape, b shape)`` of every layer of a network spec, in the flat layout's order.

    ``spec.layer_shapes`` lists either ``(out, in)`` per dense layer (:class:`SirenSpec`) or
    ``(W shape, b shape)`` per layer (:class:`wsbench.cnnzoo.CnnSpec`: conv ``(out, in, k, k)``).
    """
    out: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for shape in spec.layer_shapes:
        if all(isinstance(d, int) for d in shape):
            o, i = shape
            out.append(((int(o), int(i)), (int(o),)))
        else:
            w, b = shape
            out.append((tuple(int(d) for d in w), tuple(int(d) for d in b)))
    return out


def unflatten(weights: torch.Tensor, spec: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(B, P)`` -> ``[(W (B, *W shape), b (B, out)), ...]`` per layer (``(B, out, in)`` for a SIREN;
    ``(B, out, in, k, k)`` for a conv layer), views into ``weights``."""
    out, k = [], 0
    for w_shape, b_shape in tensor_shapes(spec):
        nw, nb = math.prod(w_shape), math.prod(b_shape)
        w = weights[:, k:k + nw].reshape(-1, *w_shape)
        k += nw
        b = weights[:, k:k + nb].reshape(-1, *b_shape)
        k += nb
        out.append((w, b))
    return out


def flatten(params: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Inverse of :func:`unflatten`."""
    parts = []
    for w, b in params:
        parts += [w.reshape(w.shape[0], -1), b]
    return torch.cat(parts, dim=1)


def coordinates(height: int, width: int) -> torch.Tensor:
    """Pixel-centre coordinates in ``[-1, 1]^2``, ``(H*W, 2)``, row-major (y, x)."""
    ys = torch.linspace(-1, 1, height)
    xs = torch.linspace(-1, 1, width)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2)


def siren_forward(params: Sequence[torch.Tensor], coords: torch.Tensor, w0: float) -> torch.Tensor:
    """``coords (B, M, in)`` -> ``(B, M, out)``; sine after every layer but the last.

    The reference implementation (autograd-friendly); :func:`wsbench.inr.fit_batch` uses the closed form.
    """
    h = coords
    n = len(params) // 2
    for k in range(n):
        h = torch.baddbmm(params[2 * k + 1], h, params[2 * k])
        if k < n - 1:
            h = torch.sin(w0 * h)
    return h



def render(weights: torch.Tensor, spec: SirenSpec, height: int, width: int) -> torch.Tensor:
    """Evaluate INRs on the pixel grid: ``(B, P)`` -> ``(B, C, H, W)`` in ``[-1, 1]``."""
    stacked = []  # the bmm layout siren_forward takes: W^T (B, in, out), b (B, 1, out)
    for w, b in unflatten(weights, spec):
        stacked += [w.transpose(1, 2), b.unsqueeze(1)]
    coords = coordinates(height, width).to(weights).expand(weights.shape[0], -1, -1)
    out = siren_forward(stacked, coords, spec.w0)
    return out.reshape(weights.shape[0], height, width, -1).permute(0, 3, 1, 2)
