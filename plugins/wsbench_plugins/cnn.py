"""``cnn``: a VGG-style convolutional network on the images.

Blocks of two 3x3 convolution-batchnorm-ReLU layers, max-pooled between blocks. The
representation of block ``k`` is its output averaged over space, ``block{k}`` ``(B, C_k)``;
then the head's hidden layers ``head{k}`` and the ``logits``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from wsbench import ArchitectureSpec, Head, hookimpl


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CNN(nn.Module):
    """``x (B, C, H, W)`` standardised images -> ``(logits (B, classes), layers)``."""

    def __init__(self, in_channels: int, num_classes: int, channels=(64, 128, 256), head_hidden=(256,),
                 dropout: float = 0.0):
        super().__init__()
        blocks, cin = [], in_channels
        for c in channels:
            blocks.append(nn.Sequential(_conv(cin, c), _conv(c, c)))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        # Pool between blocks only while the map is at least 2 pixels wide (16x16 shapes still get 3 blocks).
        self.pool = nn.MaxPool2d(2)
        self.head = Head(cin, head_hidden, num_classes, dropout)

    def forward(self, x: torch.Tensor):
        layers = OrderedDict()
        h = x
        for k, block in enumerate(self.blocks):
            if k > 0 and min(h.shape[-2:]) >= 2:
                h = self.pool(h)
            h = block(h)
            layers[f"block{k + 1}"] = h.mean((2, 3))
        z = layers[f"block{len(self.blocks)}"]
        return self.head(z, layers), layers


def build(info, config) -> CNN:
    return CNN(info.image_shape[0], info.num_classes, tuple(config["channels"]), tuple(config["head_hidden"]),
               float(config["dropout"]))


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="cnn", view="images", build=build,
        description="VGG-style CNN on the images (conv blocks pooled to vectors, then an MLP head)",
        defaults={"channels": [64, 128, 256], "head_hidden": [256], "dropout": 0.2, "epochs": 20,
                  "batch_size": 128, "lr": 2e-3, "weight_decay": 5e-2, "warmup_epochs": 1,
                  "label_smoothing": 0.0},
        dataset_defaults={
            "mnist": {"epochs": 10},
            "fmnist": {"epochs": 20, "augment": "none"},
            # Crop-flip augmentation is what takes a small CNN past 80 % on CIFAR-10; 20 epochs keep
            # five seeds inside one GPU hold of the study.
            "cifar10": {"epochs": 20, "augment": "crop-flip", "label_smoothing": 0.1},
        },
    ))
