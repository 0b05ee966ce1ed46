"""The parameter graph of an MLP-shaped network, and the SIREN symmetries it is read under.

The parameter graph of an MLP with widths ``d_0 .. d_L`` has a node per neuron and an edge per
weight (``W_l[o, i]`` joins neuron ``i`` of layer ``l`` to neuron ``o`` of layer ``l + 1``); biases
belong to their neurons. Every INR of one :class:`~wsbench.specs.SirenSpec` shares one graph, so a
metanetwork builds it once (:class:`ParamGraph`) and batches the values. The readout groups are the
orbits of the neuron-permutation symmetry: one per input neuron, one per hidden layer, one per
output neuron; edges group by layer.

Tools on the flat weight layout of :mod:`wsbench.weights`, for any weight-space model:

- :func:`layer_statistics`: per-layer ``(w_mean, w_std, b_mean, b_std)`` from the per-coordinate
  training statistics a model gets in ``TaskInfo.weight_mean``/``weight_std`` (metanetworks on
  SIRENs train at chance without normalising their inputs);
- :func:`canonical_signs` and :func:`canonical_phases`: SIRENs have more symmetries than neuron
  permutations (sine is odd and periodic), and these map every INR to one representative of its
  orbit, per neuron, so they commute with permutations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from wsbench.weights import tensor_shapes


@dataclass(frozen=True)
class ParamGraph:
    """The parameter graph shared by every MLP of widths ``dims`` (``d_0 .. d_L``).

    Nodes are numbered layer by layer; edges of layer ``l`` follow ``W_l (out, in)`` row-major,
    the order of the flattened weights. Node groups (the orbits of the readout): one per input
    neuron, one per hidden layer, one per output neuron; edge groups: one per layer.
    """

    dims: tuple

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        return [(self.dims[k + 1], self.dims[k]) for k in range(len(self.dims) - 1)]

    @cached_property
    def node_offsets(self) -> list[int]:
        return [int(v) for v in np.cumsum([0, *self.dims])]

    @cached_property
    def edge_offsets(self) -> list[int]:
        return [int(v) for v in np.cumsum([0, *(o * i for o, i in self.layer_shapes)])]

    @property
    def edge_counts(self) -> list[int]:
        return [o * i for o, i in self.layer_shapes]

    @property
    def num_nodes(self) -> int:
        return self.node_offsets[-1]

    @property
    def num_edges(self) -> int:
        return self.edge_offsets[-1]

    @property
    def num_hidden_layers(self) -> int:
        return len(self.dims) - 2

    @property
    def num_node_groups(self) -> int:
        return self.dims[0] + self.num_hidden_layers + self.dims[-1]

    @property
    def num_groups(self) -> int:
        """Pooled vectors per graph: node groups then edge groups."""
        return self.num_node_groups + len(self.layer_shapes)

    def edge_index(self) -> torch.Tensor:
        """``(2, E)`` (source, target) in the order of the flattened weights."""
        parts = []
        for k, (o, i) in enumerate(self.layer_shapes):
            dst = torch.arange(o).repeat_interleave(i) + self.node_offsets[k + 1]
            src = torch.arange(i).repeat(o) + self.node_offsets[k]
            parts.append(torch.stack([src, dst]))
        return torch.cat(parts, 1)

    def node_group(self) -> torch.Tensor:
        """``(N,)`` readout group of every node."""
        d0, hl = self.dims[0], self.num_hidden_layers
        parts = [torch.arange(d0)]
        parts += [torch.full((self.dims[k],), d0 + k - 1) for k in range(1, hl + 1)]
        parts.append(d0 + hl + torch.arange(self.dims[-1]))
        return torch.cat(parts)

    def edge_group(self) -> torch.Tensor:
        """``(E,)`` layer of every edge."""
        return torch.cat([torch.full((o * i,), k) for k, (o, i) in enumerate(self.layer_shapes)])


def layer_statistics(spec: Any, mean: np.ndarray, std: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Per-layer ``(w_mean, w_std, b_mean, b_std)`` from per-coordinate training statistics.

    A layer's values pool equally many samples per coordinate, so its mean is the mean of the
    coordinate means and its variance the mean of ``std_c^2 + mean_c^2`` minus the squared mean.
    """
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(std, dtype=np.float64) ** 2
    out, k = [], 0
    for w_shape, b_shape in tensor_shapes(spec):
        stats: list[float] = []
        for n in (math.prod(w_shape), math.prod(b_shape)):
            m = mean[k:k + n].mean()
            v = (var[k:k + n] + mean[k:k + n] ** 2).mean() - m * m
            stats += [float(m), float(np.sqrt(max(v, 0.0)) + 1e-8)]
            k += n
        out.append((stats[0], stats[1], stats[2], stats[3]))
    return out


def canonical_signs(params: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Flip hidden neurons so that their biases are non-negative (a SIREN symmetry: sine is odd).

    ``params``: ``[(W (B, out, in), b (B, out)), ...]``; returns new tensors, same shapes.
    """
    out = list(params)
    for k in range(len(out) - 1):
        w, b = out[k]
        s = torch.where(b < 0, -1.0, 1.0).to(b.dtype)  # (B, out)
        out[k] = (w * s.unsqueeze(2), b * s)
        w_next, b_next = out[k + 1]
        out[k + 1] = (w_next * s.unsqueeze(1), b_next)
    return out


def canonical_phases(params: list[tuple[torch.Tensor, torch.Tensor]],
                     w0: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Map every hidden neuron's phase ``w0 * b`` into ``[0, pi/2]`` without changing the INR.

    Three identities of ``sin(a + phase)`` do it: ``sin(a + pi) = -sin(a)`` (shift the phase by
    pi, flip the outgoing weights), repeated to bring the phase into ``[0, pi)``; then
    ``sin(a + phase) = sin(-a + (pi - phase))`` (negate the incoming weights, reflect the phase),
    for phases above pi/2. Sign flips are covered: the result is the same for both signs.
    """
    out = list(params)
    for k in range(len(out) - 1):
        w, b = out[k]
        phase = w0 * b
        shifts = torch.floor(phase / math.pi)
        phase = phase - shifts * math.pi
        flip_out = 1.0 - 2.0 * torch.remainder(shifts, 2.0)  # (-1)^shifts
        reflect = phase > math.pi / 2
        phase = torch.where(reflect, math.pi - phase, phase)
        out[k] = (w * torch.where(reflect, -1.0, 1.0).to(w.dtype).unsqueeze(2), phase / w0)
        w_next, b_next = out[k + 1]
        out[k + 1] = (w_next * flip_out.unsqueeze(1), b_next)
    return out
