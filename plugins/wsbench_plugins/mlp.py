"""``flat-mlp`` (an MLP on flattened INR weights) and ``mlp`` (an MLP on pixels)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from wsbench import ArchitectureSpec, hookimpl


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
