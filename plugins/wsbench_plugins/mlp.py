"""``flat-mlp`` (an MLP on flattened network weights), ``mlp`` (an MLP on pixels), ``fn-mlp`` (an MLP
on a network's outputs on the zoo's probe inputs, the function view) and ``weight-stats`` (an MLP on
per-tensor weight statistics, the accuracy-prediction baseline of Unterthiner et al. 2020)."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from wsbench import ArchitectureSpec, Param, hookimpl, tensor_shapes, unflatten


class MLP(nn.Module):
    """``x (B, ...)`` -> ``(logits (B, classes), {"fc1": (B, h1), ...})``.

    Inputs are flattened and standardised with the given per-feature mean/std
    (training-split statistics), then pass ``len(hidden)`` Linear-ReLU(-Dropout) blocks.
    The representation of block ``k`` is its post-activation output, ``fc{k}``.
    """

    def __init__(self, in_dim: int, hidden, num_classes: int, dropout: float = 0.0, mean=None, std=None):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1)
                             if mean is not None else torch.zeros(1, in_dim))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1)
                             if std is not None else torch.ones(1, in_dim))
        dims = [in_dim, *hidden]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(dims[i], dims[i + 1]), nn.ReLU(), nn.Dropout(dropout)) for i in range(len(hidden)))
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        h = (x.flatten(1) - self.mean) / self.std
        layers = OrderedDict()
        for i, block in enumerate(self.blocks):
            h = block(h)
            layers[f"fc{i + 1}"] = h
        logits = self.head(h)
        layers["logits"] = logits
        return logits, layers


def build_flat_mlp(info, config):
    return MLP(info.weight_dim, config["hidden"], info.num_classes, config["dropout"],
               mean=info.weight_mean, std=info.weight_std)


def build_function_mlp(info, config):
    # Standardised per feature with training-split statistics (probabilities of a rare class are tiny).
    return MLP(math.prod(info.function_shape), config["hidden"], info.num_classes, config["dropout"],
               mean=info.function_mean, std=info.function_std)


STAT_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
ASINH_SCALE = 1e-3


class WeightStats(nn.Module):
    """``x (B, P)`` -> per weight and bias tensor of every layer its mean, variance and quantiles
    0, 25, 50, 75 and 100 % (7 numbers a tensor, as Unterthiner et al. 2020's statistics features),
    standardised by a BatchNorm without parameters, then an MLP. Representations: ``stats`` (the
    standardised features), ``fc{k}``, ``logits``."""

    q: torch.Tensor  # a registered buffer: the quantile levels

    def __init__(self, network, hidden, num_outputs: int, dropout: float = 0.0, transform: str = "none"):
        super().__init__()
        self.network = network
        self.transform = transform
        n_tensors = 2 * len(tensor_shapes(network))
        self.register_buffer("q", torch.tensor(STAT_QUANTILES, dtype=torch.float32))
        self.norm = nn.BatchNorm1d(n_tensors * (2 + len(STAT_QUANTILES)), affine=False)
        self.mlp = MLP(n_tensors * (2 + len(STAT_QUANTILES)), hidden, num_outputs, dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for w, b in unflatten(x, self.network):
            for t in (w.flatten(1), b.flatten(1)):
                feats += [t.mean(1, keepdim=True), t.var(1, unbiased=False, keepdim=True),
                          torch.quantile(t, self.q.to(t.dtype), dim=1).T]
        f = torch.cat(feats, 1)
        # The statistics span orders of magnitude across a zoo (init scales and learning rates are
        # log-uniform); asinh(x / 1e-3) is linear near 0 and logarithmic beyond, a monotone squashing
        # that trees (Unterthiner et al.'s GBMs) get for free and an MLP does not.
        return torch.asinh(f / ASINH_SCALE) if self.transform == "asinh" else f

    def forward(self, x):
        z = self.norm(self.features(x))
        out, layers = self.mlp(z)
        return out, OrderedDict([("stats", z), *layers.items()])


def build_weight_stats(info, config):
    return WeightStats(info.network, config["hidden"], info.num_classes, config["dropout"], config["transform"])


def build_image_mlp(info, config):
    c, h, w = info.image_shape
    # Image inputs arrive standardised per channel by the harness.
    return MLP(c * h * w, config["hidden"], info.num_classes, config["dropout"])


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="flat-mlp", view="weights", build=build_flat_mlp,
        description="MLP on the flattened INR weights (standardised per coordinate)",
        defaults={"hidden": [256, 256, 256], "dropout": 0.1, "epochs": 30},
    ))
    register(ArchitectureSpec(
        name="mlp", view="images", build=build_image_mlp,
        description="MLP on the image pixels",
        defaults={"hidden": [256, 256, 256], "dropout": 0.1, "epochs": 30},
    ))
    register(ArchitectureSpec(
        name="fn-mlp", view="function", build=build_function_mlp,
        description="MLP on a network's outputs on the zoo's probe inputs (the function view)",
        defaults={"hidden": [256, 256, 256], "dropout": 0.1, "epochs": 30},
    ))
    register(ArchitectureSpec(
        name="weight-stats", view="weights", build=build_weight_stats,
        description="MLP on per-tensor weight statistics: mean, variance, quantiles (Unterthiner et al. 2020)",
        # transform=asinh on the published study's CPU CNN zoos, 5 seeds: tau 0.595 -> 0.628 (MNIST),
        # 0.641 -> 0.670 (FMNIST), 0.499 -> 0.523 (CIFAR-10-GS), intervals apart on the last two
        # (benchmarks/results/weight_stats_transform_cpu.json), and 0.824 -> 0.838 on the 10-epoch GPU
        # CIFAR-10-GS zoo (cnn_zoo_gpu_h200.json); "none" stays the default, so published numbers hold.
        defaults={"hidden": [256, 256], "dropout": 0.0, "epochs": 30, "transform": "none"},
        params={"transform": Param(str, choices=("none", "asinh"),
                                   help="squash the statistics with asinh(x / 1e-3) before the MLP")},
    ))
