"""The classifier head of the built-in models, for any architecture plugin: Linear-activation-Dropout
blocks, then a linear classifier, recording each block's output as ``head{k}`` and the logits as ``logits``."""
from __future__ import annotations

from torch import nn


class Head(nn.Module):
    """``z (B, in_dim)`` -> ``logits (B, classes)``; ``reps`` gains ``head1..headK`` and ``logits``."""

    def __init__(self, in_dim: int, hidden, num_classes: int, dropout: float, act=nn.ReLU):
        super().__init__()
        dims = [in_dim, *hidden]
        # Parameters are created in the same order as before the refactor: blocks, then classifier.
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dims[k], dims[k + 1]), act(), nn.Dropout(dropout))
                                    for k in range(len(hidden)))
        self.classifier = nn.Linear(dims[-1], num_classes)

    def forward(self, z, reps: dict):
        for k, block in enumerate(self.blocks):
            z = block(z)
            reps[f"head{k + 1}"] = z
        logits = self.classifier(z)
        reps["logits"] = logits
        return logits
