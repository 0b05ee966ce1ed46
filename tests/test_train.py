"""The training loop's BatchNorm recalibration: exact statistics, training untouched."""
import numpy as np
import torch
from torch import nn

from wsbench.config import resolve
from wsbench.plugins import load_registry
from wsbench.train import make_optimizer, recalibrate_batchnorm, train


class _WithLayers(nn.Module):
    """A plain module with the harness's ``(logits, layers)`` output."""

    def __init__(self, net=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = net or nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 3))

    def forward(self, x):
        return self.net(x), {}


def test_statistics_are_the_average_of_the_batches_statistics():
    model = _WithLayers()
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1)) * 3 + 2
    rows = torch.arange(5, 37)  # 32 rows: batches of 16
    bn = model.net[1]
    bn.momentum = 0.3
    assert recalibrate_batchnorm(model, x, rows, 16)
    with torch.no_grad():
        h = model.net[0](x[rows]).view(2, 16, 4)
    assert torch.allclose(bn.running_mean, h.mean(1).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, h.var(1, unbiased=True).mean(0), atol=1e-5)
    assert bn.momentum == 0.3 and not model.training and not bn.training


def test_a_model_without_batchnorm_or_rows_is_left_alone():
    plain = _WithLayers(nn.Sequential(nn.Linear(5, 3)))
    assert not recalibrate_batchnorm(plain, torch.randn(4, 5), torch.arange(4), 2)
    model = _WithLayers()
    before = model.net[1].running_mean.clone()
    assert not recalibrate_batchnorm(model, torch.randn(4, 5), torch.arange(1), 2)
    assert torch.equal(model.net[1].running_mean, before)


def test_recalibration_changes_evaluation_only(shapes_task):
    """Same losses epoch by epoch (weights and random draws untouched); other evaluation-mode outputs."""
    arch = load_registry().architecture("cnn")
    cpu = torch.device("cpu")
    base = {"epochs": 2, "channels": [4, 8], "head_hidden": [8], "batch_size": 16}
    off = train(shapes_task, arch, resolve(arch, "shapes", {**base, "bn_recalibrate": 0}), seed=3, device=cpu)
    on = train(shapes_task, arch, resolve(arch, "shapes", base), seed=3, device=cpu)
    assert [h["train_loss"] for h in on.history] == [h["train_loss"] for h in off.history]
    assert not np.array_equal(on.layers["logits"], off.layers["logits"])


def test_optimizer_is_adamw_from_the_config_and_not_fused_on_cpu():
    opt = make_optimizer(_WithLayers(), {"lr": 3e-3, "weight_decay": 0.05})
    assert isinstance(opt, torch.optim.AdamW) and not opt.defaults["fused"]
    assert opt.defaults["lr"] == 3e-3 and opt.defaults["weight_decay"] == 0.05
