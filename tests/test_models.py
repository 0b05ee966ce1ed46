"""The image CNN and the NFN-NP baseline: shapes, representation names, symmetries, defaults."""
import numpy as np
import pytest
import torch

from wsbench.config import resolve
from wsbench.plugins import load_registry
from wsbench.specs import SirenSpec, TaskInfo
from wsbench.weights import flatten, unflatten
from wsbench_plugins.cnn import CNN
from wsbench_plugins.nfn import NFNNP, NPLinear


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_cnn_layers_are_pooled_blocks_and_head(shape):
    model = CNN(shape[0], 10, channels=(4, 8, 8), head_hidden=(6,)).eval()
    logits, layers = model(torch.randn(3, *shape))
    assert logits.shape == (3, 10)
    assert list(layers) == ["block1", "block2", "block3", "head1", "logits"]
    assert [v.shape for v in layers.values()] == [(3, 4), (3, 8), (3, 8), (3, 6), (3, 10)]


def test_cnn_cifar_defaults_use_crop_flip():
    spec = load_registry().architecture("cnn")
    assert resolve(spec, "cifar10", {})["augment"] == "crop-flip"
    assert resolve(spec, "mnist", {})["augment"] == "none"


def _nfn(spec, seed=0):
    torch.manual_seed(seed)
    return NFNNP(spec, 4, channels=6, depth=2, head_hidden=(8,)).eval()


def _permute(x, spec, perms):
    """Apply one permutation per layer of neurons (inputs, hidden..., outputs) to every INR."""
    out = []
    for k, (w, b) in enumerate(unflatten(x, spec)):
        out.append((w[:, perms[k + 1]][:, :, perms[k]], b[:, perms[k + 1]]))
    return flatten(out)


def test_nfn_np_is_invariant_to_every_neuron_permutation():
    spec = SirenSpec(2, (5, 4), 3)
    m = _nfn(spec)
    x = torch.randn(3, spec.num_params)
    gen = torch.Generator().manual_seed(1)
    perms = [torch.randperm(d, generator=gen) for d in spec.dims]
    with torch.no_grad():
        assert torch.allclose(m(x)[0], m(_permute(x, spec, perms))[0], atol=1e-5)


def test_np_linear_layer_is_equivariant():
    spec = SirenSpec(2, (5, 4), 3)
    torch.manual_seed(0)
    layer = NPLinear([2, 2, 2], [2, 2, 2], 3)  # 3 layers, 2 channels on weights and biases, 3 out
    gen = torch.Generator().manual_seed(2)
    layers = [(torch.randn(2, o, i, 2, generator=gen), torch.randn(2, o, 2, generator=gen))
              for o, i in spec.layer_shapes]
    perms = [torch.randperm(d, generator=gen) for d in spec.dims]

    def permute(ls):
        return [(w[:, perms[k + 1]][:, :, perms[k]], b[:, perms[k + 1]]) for k, (w, b) in enumerate(ls)]
    with torch.no_grad():
        a, b = permute(layer(layers)), layer(permute(layers))
    for (wa, ba), (wb, bb) in zip(a, b):
        assert torch.allclose(wa, wb, atol=1e-5) and torch.allclose(ba, bb, atol=1e-5)


def test_nfn_np_learns_per_layer_statistics_from_task_info():
    spec = SirenSpec(2, (4,), 1)
    p = spec.num_params
    info = TaskInfo("t", 3, (1, 8, 8), spec, weight_mean=np.full(p, 2.0, np.float32),
                    weight_std=np.full(p, 3.0, np.float32))
    arch = load_registry().architecture("nfn-np")
    model = arch.build(info, resolve(arch, "t", {}))
    assert torch.allclose(model.stats, torch.tensor([[2.0, 3.0, 2.0, 3.0]] * 2), atol=1e-5)


@pytest.mark.parametrize("arch", ["gmn", "cnn"])
def test_per_dataset_defaults_exist_for_the_study_datasets(arch):
    spec = load_registry().architecture(arch)
    assert {"mnist", "fmnist", "cifar10"} <= set(spec.dataset_defaults)
