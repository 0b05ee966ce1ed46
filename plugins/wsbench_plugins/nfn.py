"""``nfn-np``: a neural functional equivariant to neuron permutations (Zhou et al. 2023, NFN-NP).

The NP setting treats every layer's neurons, inputs and outputs included, as permutable, so a
linear layer may only mix an entry with the means that share its neuron indices. For the weight
``W_l[j, k]`` (``j`` a neuron of layer ``l + 1``, ``k`` one of layer ``l``) those are: itself, its
row mean over ``k``, its column mean over ``j``, the bias ``b_l[j]``, the previous layer's bias
``b_{l-1}[k]`` and row mean of ``W_{l-1}`` at ``k``, the next layer's column mean of ``W_{l+1}``
at ``j``, and the global means of every layer. Biases ``b_l[j]`` likewise mix with themselves,
the row mean of ``W_l`` at ``j``, the column mean of ``W_{l+1}`` at ``j`` and the global means.
Each term has its own channel-mixing matrix. After the equivariant layers, every layer's weights
and biases are averaged (an invariant) and an MLP classifies.

Convolutional layers (a CNN zoo): a conv weight ``W_l[j, k, :, :]`` is one entry of the same
neuron-permutation structure (``j`` an output channel, ``k`` an input channel) whose ``k x k``
kernel values are its input features (Zhou et al. 2023 treat the spatial dimensions as channels the
same way), so the first layer reads ``k * k`` features on conv weights and one on dense weights
and biases. Global average pooling keeps the last conv layer's channels as the dense layer's
inputs, so the structure runs through unchanged. Published: 78.5 % on MNIST INRs
(Zhou et al. 2023, table as cited by ScaleGMN, Kalogeropoulos et al. 2024).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from wsbench import ArchitectureSpec, Head, WsbenchError, hookimpl, layer_statistics, tensor_shapes, unflatten

Params = list  # [(W (B, out, in, c), b (B, out, c)), ...], channels last


def pooled(params: Params) -> torch.Tensor:
    """Every layer's mean weight and mean bias, ``(B, 2L * c)``: the invariants of the NP group."""
    return torch.cat([t for w, b in params for t in (w.mean((1, 2)), b.mean(1))], 1)


class NPLinear(nn.Module):
    """One NP-equivariant linear layer: ``cw[l]`` -> ``cout`` channels on layer ``l``'s weights and
    ``cb[l]`` -> ``cout`` on its biases (after the first layer every ``cw``, ``cb`` is the width)."""

    def __init__(self, cw: list[int], cb: list[int], cout: int):
        super().__init__()
        L = self.num_layers = len(cw)

        def lins(widths):
            return nn.ModuleList(nn.Linear(c, cout, bias=False) for c in widths)
        prev_w, prev_b, next_w = [cw[max(k - 1, 0)] for k in range(L)], [cb[max(k - 1, 0)] for k in range(L)], \
            [cw[min(k + 1, L - 1)] for k in range(L)]
        # Weight outputs: self, row mean, column mean, own bias, previous bias, previous row mean, next column mean.
        self.w_self, self.w_row, self.w_col, self.w_b = lins(cw), lins(cw), lins(cw), lins(cb)
        self.w_bprev, self.w_prevrow, self.w_nextcol = lins(prev_b), lins(prev_w), lins(next_w)
        # Bias outputs: self, own row mean, next column mean.
        self.b_self, self.b_row, self.b_nextcol = lins(cb), lins(cw), lins(next_w)
        # Global means of every layer into each output, with the output's bias term.
        g = sum(cw) + sum(cb)
        self.w_glob = nn.ModuleList(nn.Linear(g, cout) for _ in range(L))
        self.b_glob = nn.ModuleList(nn.Linear(g, cout) for _ in range(L))

    def forward(self, params: Params) -> Params:
        g = pooled(params)
        rows = [w.mean(2) for w, _ in params]  # (B, out, c): indexed by a neuron of layer l + 1
        cols = [w.mean(1) for w, _ in params]  # (B, in, c): indexed by a neuron of layer l
        out = []
        for k, (w, b) in enumerate(params):
            nw = (self.w_self[k](w) + self.w_row[k](rows[k]).unsqueeze(2) + self.w_col[k](cols[k]).unsqueeze(1)
                  + self.w_b[k](b).unsqueeze(2) + self.w_glob[k](g)[:, None, None])
            nb = self.b_self[k](b) + self.b_row[k](rows[k]) + self.b_glob[k](g)[:, None]
            if k > 0:
                nw = nw + (self.w_bprev[k](params[k - 1][1]) + self.w_prevrow[k](rows[k - 1])).unsqueeze(1)
            if k < self.num_layers - 1:
                nw = nw + self.w_nextcol[k](cols[k + 1]).unsqueeze(2)
                nb = nb + self.b_nextcol[k](cols[k + 1])
            out.append((nw, nb))
        return out


class NFNNP(nn.Module):
    """``x (B, P)`` -> ``(logits, {"np1": ..., "head1": ..., "logits": ...})``; ``np{k}`` are the
    pooled invariants after equivariant layer ``k``."""

    stats: torch.Tensor  # a registered buffer (L, 4); nn.Module.__getattr__ alone would type it Tensor | Module

    def __init__(self, spec, num_classes: int, channels: int = 64, depth: int = 3,
                 head_hidden=(256,), dropout: float = 0.0, stats=None):
        super().__init__()
        self.spec = spec
        shapes = tensor_shapes(spec)
        L = len(shapes)
        stats = stats or [(0.0, 1.0, 0.0, 1.0)] * L
        self.register_buffer("stats", torch.tensor(stats, dtype=torch.float32))
        # Input features per weight entry: 1 for a dense weight, k * k for a conv kernel.
        cw = [math.prod(w[2:]) for w, _ in shapes]
        self.eq = nn.ModuleList(NPLinear(cw if k == 0 else [channels] * L, [1] * L if k == 0 else [channels] * L,
                                         channels) for k in range(depth))
        self.head = Head(2 * L * channels, head_hidden, num_classes, dropout)

    def forward(self, x: torch.Tensor):
        params = []
        for k, (w, b) in enumerate(unflatten(x, self.spec)):
            wm, ws, bm, bs = self.stats[k]
            w = (w - wm) / ws
            # (B, out, in) -> (B, out, in, 1); a conv kernel (B, out, in, k, k) -> (B, out, in, k * k)
            w = w.unsqueeze(-1) if w.dim() == 3 else w.flatten(3)
            params.append((w, ((b - bm) / bs).unsqueeze(-1)))
        reps = OrderedDict()
        for k, lin in enumerate(self.eq):
            params = [(torch.relu(w), torch.relu(b)) for w, b in lin(params)]
            reps[f"np{k + 1}"] = pooled(params)
        z = pooled(params)
        return self.head(z, reps), reps


def build(info, config) -> NFNNP:
    if config["weight_norm"] not in ("per-layer", "none"):
        raise WsbenchError(f"nfn-np: unknown weight_norm {config['weight_norm']!r}; known: per-layer, none")
    stats = layer_statistics(info.network, info.weight_mean, info.weight_std) \
        if config["weight_norm"] == "per-layer" else None
    return NFNNP(info.network, info.num_classes, int(config["channels"]), int(config["depth"]),
                 tuple(config["head_hidden"]), float(config["dropout"]), stats)


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="nfn-np", view="weights", build=build,
        description="NFN-NP (Zhou et al. 2023): neuron-permutation-equivariant linear layers, pooled, MLP head",
        defaults={"channels": 64, "depth": 3, "head_hidden": [256], "dropout": 0.1, "weight_norm": "per-layer",
                  "epochs": 50, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-2, "warmup_epochs": 1,
                  "grad_clip": 1.0},
    ))
