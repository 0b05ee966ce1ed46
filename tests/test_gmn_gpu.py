"""GPU-only checks of the GMN's compiled dense path (skipped without CUDA; run on the GPU machine)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsbench import TaskInfo
from wsbench import config as cfg
from wsbench.cnnzoo import CnnSpec
from wsbench.plugins import load_registry
from wsbench.train import make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _losses(compile_mode: str, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    spec = CnnSpec(image_size=32)
    p = spec.num_params
    info = TaskInfo("bench", 1, (), None, network=spec, target="scalar", views=("weights",),
                    weight_mean=np.zeros(p, np.float32), weight_std=np.full(p, 0.1, np.float32))
    arch = load_registry().architecture("gmn")
    config = cfg.resolve(arch, "cnn-cifar10gs", {"compile": compile_mode, "precision": "fp32", "dropout": 0.0})
    torch.manual_seed(0)
    model = arch.build(info, config).cuda().train()
    opt = make_optimizer(model, config)
    losses = []
    for x, y in batches:
        loss = F.mse_loss(model(x)[0][:, 0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out = model(batches[0][0])[0]
    return losses, out


def test_cuda_graphs_train_as_the_eager_stack_does():
    """compile=cuda-graphs replays the compiled stack as CUDA graphs, one per batch size (the last,
    smaller batch of an epoch too): the same losses step by step, and the same eval outputs, as eager."""
    g = torch.Generator().manual_seed(1)
    p = CnnSpec(image_size=32).num_params
    batches = [((torch.randn(n, p, generator=g) * 0.1).cuda(), torch.rand(n, generator=g).cuda())
               for n in (64, 64, 40, 64, 64, 40)]
    eager, out_eager = _losses("none", batches)
    graphs, out_graphs = _losses("cuda-graphs", batches)
    assert np.allclose(graphs, eager, rtol=1e-3, atol=1e-5), (graphs, eager)
    assert torch.allclose(out_graphs, out_eager, rtol=1e-3, atol=1e-4)
