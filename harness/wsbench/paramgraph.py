"""Parameter graphs of MLPs and CNNs, and the SIREN symmetries an INR is read under.

The parameter graph of an MLP with widths ``d_0 .. d_L`` has a node per neuron and an edge per
weight (``W_l[o, i]`` joins neuron ``i`` of layer ``l`` to neuron ``o`` of layer ``l + 1``); biases
belong to their neurons. Every INR of one :class:`~wsbench.specs.SirenSpec` shares one graph, so a
metanetwork builds it once (:class:`ParamGraph`) and batches the values. The readout groups are the
orbits of the neuron-permutation symmetry: one per input neuron, one per hidden layer, one per
output neuron; edges group by layer.

Conv networks (:meth:`ParamGraph.for_network` on any layout of ``(W shape, b shape)`` layers, e.g.
:class:`wsbench.cnnzoo.CnnSpec`) get the graph of Lim et al. 2024 ("Graph Metanetworks for Processing
Diverse Neural Architectures"), with biases as node features. For conv layers
``W_l (c_{l+1}, c_l, kh_l, kw_l)`` followed by global average pooling and dense layers
``W_l (d_{l+1}, d_l)``:

- nodes: one per input channel, one per output channel of every conv layer, one per output neuron
  of every dense layer: ``N = c_0 + sum_l c_{l+1}``, numbered layer by layer, so the graph has the
  node and edge structure of an MLP of widths ``(c_0, c_1, .., c_L)`` (``dims``);
- edges: one per ``(input channel i, output channel o)`` pair of every layer, ``i -> o``, in the
  order of the flattened weights (``W_l`` row-major over ``(o, i)``): ``E = sum_l c_{l+1} c_l``;
- edge features ``(E, F + 1)`` with ``F = max_l kh_l kw_l``: ``[vec(W_l[o, i]), 0 .., 0, kind]``,
  the whole kernel row-major, zero-padded to ``F``; a dense edge carries its one weight, padded
  alike; ``kind`` is 1 on conv edges and 0 on dense ones. A graph without conv layers keeps the
  MLP's one feature (the weight), with no padding and no flag;
- node features ``(N, 1)``: the channel's or neuron's bias, 0 on input channels;
- global average pooling has no parameters, so it adds no nodes: the last conv layer's channel
  nodes are the dense layer's input nodes, each joined to every output neuron by the dense weight
  ``W[o, c]`` (pooling averages channel ``c`` into the dense layer's input ``c``). The dense
  layer's input width must therefore equal the last conv layer's channels (a flatten layer, whose
  inputs are channel x position, is not this graph).

Permuting the hidden channels of a conv layer (its kernels' output axis and bias, and the next
layer's input axis) leaves the network's function unchanged; on the graph it is a relabelling of
that layer's nodes, so the readout groups are the MLP's: each input channel and each output neuron
is its own group (they are not symmetric), the hidden channels of a layer one group.

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
    """The parameter graph shared by every network of widths ``dims`` (``d_0 .. d_L``).

    Nodes are numbered layer by layer; edges of layer ``l`` follow ``W_l (out, in)`` row-major,
    the order of the flattened weights. Node groups (the orbits of the readout): one per input
    neuron, one per hidden layer, one per output neuron; edge groups: one per layer.

    ``kernels``: per layer the spatial shape of its kernel, ``(kh, kw)`` for a conv layer and ``()``
    for a dense one; empty (the default) for an MLP. Build it from a layout with :meth:`for_network`.
    """

    dims: tuple
    kernels: tuple = ()

    @classmethod
    def for_network(cls, spec: Any) -> ParamGraph:
        """The graph of a layout: any spec with ``layer_shapes`` (see :func:`wsbench.tensor_shapes`).

        Conv layers ``(out, in, *kernel)`` come first, dense layers ``(out, in)`` after them; every
        layer's ``in`` is the previous layer's ``out`` (global average pooling between the last conv
        layer and the first dense one keeps the channel count). Raises ``ValueError`` otherwise.
        """
        shapes = tensor_shapes(spec)
        if not shapes:
            raise ValueError("a parameter graph needs at least one layer")
        dims, kernels, dense_seen = [shapes[0][0][1]], [], False
        for k, (w, b) in enumerate(shapes):
            if len(w) < 2 or b != (w[0],):
                raise ValueError(f"layer {k}: weight {w} and bias {b} are not (out, in, ...) and (out,)")
            if w[1] != dims[-1]:
                hint = (" (a flatten layer between conv and dense layers has no channel graph; global "
                        "average pooling keeps the channels)" if len(shapes[k - 1][0]) > 2 and len(w) == 2 else "")
                raise ValueError(f"layer {k} takes {w[1]} inputs but layer {k - 1} gives {dims[-1]}{hint}")
            if len(w) > 2 and dense_seen:
                raise ValueError(f"layer {k}: a conv layer after a dense layer is not supported")
            dense_seen = dense_seen or len(w) == 2
            dims.append(w[0])
            kernels.append(tuple(w[2:]))
        return cls(tuple(dims), tuple(kernels) if any(kernels) else ())

    @property
    def kernel_shapes(self) -> list[tuple[int, ...]]:
        """Per layer its kernel's spatial shape, ``()`` for dense layers."""
        return list(self.kernels) if self.kernels else [()] * (len(self.dims) - 1)

    @property
    def is_conv(self) -> bool:
        """Whether any layer is a conv layer (then edges carry kernels and a kind flag)."""
        return any(self.kernel_shapes)

    @property
    def kernel_width(self) -> int:
        """``F``: the longest flattened kernel (1 when every layer is dense)."""
        return max(math.prod(k) for k in self.kernel_shapes)

    @property
    def edge_dim(self) -> int:
        """Features per edge: ``F + 1`` (kernel values and the kind flag) with conv layers, else 1."""
        return self.kernel_width + 1 if self.is_conv else 1

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

    def edge_features(self, params: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``[(W (B, out, in, *kernel), b (B, out)), ...]`` -> ``(B, E, edge_dim)`` in edge order.

        Each edge's kernel row-major, zero-padded to ``kernel_width``, then (conv graphs only) its
        kind: 1.0 for a conv edge, 0.0 for a dense one (see the module docstring).
        """
        f, parts = self.kernel_width, []
        for (w, _), kernel, (o, i) in zip(params, self.kernel_shapes, self.layer_shapes):
            n = math.prod(kernel)
            v = w.reshape(w.shape[0], o * i, n)
            if self.is_conv:
                kind = torch.full_like(v[..., :1], 1.0 if kernel else 0.0)
                v = torch.cat([v, v.new_zeros(w.shape[0], o * i, f - n), kind], 2)
            parts.append(v)
        return torch.cat(parts, 1)

    def node_features(self, params: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``[(W, b (B, out)), ...]`` -> ``(B, N, 1)``: 0 on input nodes, then every layer's biases."""
        b0 = params[0][1]
        return torch.cat([b0.new_zeros(b0.shape[0], self.dims[0]), *(b for _, b in params)], 1).unsqueeze(2)


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


# The role of a layer by its position, which networks of every depth share: the first layer, a middle
# one, the last one before the output layer, the output layer (a CNN: first conv, hidden convs, last
# conv, dense). Zoos of mixed depths normalise, encode and pool by role (:func:`role_statistics`).
LAYER_ROLES = ("first", "middle", "last", "output")


def layer_roles(num_layers: int) -> list[int]:
    """Index into :data:`LAYER_ROLES` of every layer of a network of ``num_layers`` layers: the last
    layer is the output; before it, layer 0 is the first, the one before the output the last, any
    others middle (a two-layer network has no middle or last layer)."""
    out = []
    for k in range(num_layers):
        if k == num_layers - 1:
            out.append(3)
        elif k == 0:
            out.append(0)
        else:
            out.append(2 if k == num_layers - 2 else 1)
    return out


def role_statistics(layouts: Any, layout_stats: Any) -> list[list[tuple[float, float, float, float]]]:
    """Per layout, per layer ``(w_mean, w_std, b_mean, b_std)`` pooled over every layout's layers of the
    same role (:func:`layer_roles`), for a zoo of mixed depths and widths.

    ``layouts``: the distinct layouts (``MixedNetworks.layouts``); ``layout_stats``: per layout
    ``(rows, mean (P_k,), std (P_k,))``, per-coordinate statistics of its ``rows`` training networks
    (``TaskInfo.layout_stats``). Each coordinate counts once per network, so a role's mean and
    variance are those of all its values in the training split. A role no training network has gets
    ``(0, 1)``.
    """
    acc = np.zeros((len(LAYER_ROLES), 2, 3))  # role, weight/bias, (values, sum, sum of squares)
    for spec, (rows, mean, std) in zip(layouts, layout_stats):
        mean = np.asarray(mean, dtype=np.float64)
        second = np.asarray(std, dtype=np.float64) ** 2 + mean ** 2
        shapes, k = tensor_shapes(spec), 0
        for role, (w_shape, b_shape) in zip(layer_roles(len(shapes)), shapes):
            for j, n in enumerate((math.prod(w_shape), math.prod(b_shape))):
                acc[role, j] += rows * np.array([n, mean[k:k + n].sum(), second[k:k + n].sum()])
                k += n
    stats = []
    for role in range(len(LAYER_ROLES)):
        vals: list[float] = []
        for j in range(2):
            n, s1, s2 = acc[role, j]
            m = s1 / n if n else 0.0
            vals += [float(m), float(np.sqrt(max(s2 / n - m * m, 0.0)) + 1e-8) if n else 1.0]
        stats.append((vals[0], vals[1], vals[2], vals[3]))
    return [[stats[r] for r in layer_roles(len(tensor_shapes(spec)))] for spec in layouts]


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
