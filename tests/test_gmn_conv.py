"""Parameter graphs of conv networks and the GMN on CNN zoos: the graph against a hand-built one, the
symmetries the model must respect (hidden channels) and break (input channels, output classes), and a
short training run on a synthetic conv zoo."""
import json
import math

import numpy as np
import pytest
import torch
from test_gmn import permute_hidden
from test_scalar_tasks import TinyConvSpec

from wsbench import ParamGraph, SirenSpec, TaskInfo, WsbenchError, flatten, unflatten
from wsbench.cnnzoo import CnnSpec
from wsbench.cnnzoo import forward as cnn_forward
from wsbench.config import resolve
from wsbench.plugins import load_registry
from wsbench_plugins.gmn import GMN, build


class MixedKernelSpec:
    """Conv 2 -> 3 with 2x2 kernels, conv 3 -> 2 with 1x3 kernels, dense 2 -> 2: kernels of other sizes."""

    layer_shapes = (((3, 2, 2, 2), (3,)), ((2, 3, 1, 3), (2,)), ((2, 2), (2,)))
    num_params = 24 + 3 + 18 + 2 + 4 + 2


# The graph -------------------------------------------------------------------------------------------

def test_conv_graph_equals_the_hand_built_graph_of_a_tiny_cnn():
    # TinyConvSpec: conv 1 -> 3 (3x3), conv 3 -> 4 (3x3), global average pooling, dense 4 -> 2.
    g = ParamGraph.for_network(TinyConvSpec)
    assert g.dims == (1, 3, 4, 2) and g.kernels == ((3, 3), (3, 3), ())
    # Nodes: input channel 0; conv1 channels 1-3; conv2 channels 4-7; output neurons 8-9.
    assert g.num_nodes == 10 and g.num_edges == 3 + 12 + 8 and g.edge_dim == 10
    # Flat layout offsets (by hand): conv1 W 0..26, b 27..29; conv2 W 30..137, b 138..141; dense W 142..149,
    # b 150..151. Values are their own flat positions plus one, so every feature names its coordinate.
    x = torch.arange(1.0, TinyConvSpec.num_params + 1).unsqueeze(0)
    want_edges, want_feats = [], []
    for o in range(3):  # conv1: input channel 0 -> conv1 channel o, kernel W1[o, 0]
        want_edges.append((0, 1 + o))
        want_feats.append([*range(1 + 9 * o, 10 + 9 * o), 1])
    for o in range(4):  # conv2: conv1 channel i -> conv2 channel o, kernel W2[o, i]
        for i in range(3):
            start = 30 + 27 * o + 9 * i
            want_edges.append((1 + i, 4 + o))
            want_feats.append([*range(start + 1, start + 10), 1])
    for o in range(2):  # dense after pooling: conv2 channel i -> output o, weight W3[o, i], padded
        for i in range(4):
            want_edges.append((4 + i, 8 + o))
            want_feats.append([143 + 4 * o + i] + [0] * 8 + [0])
    assert g.edge_index().t().tolist() == [list(e) for e in want_edges]
    params = unflatten(x, TinyConvSpec)
    assert g.edge_features(params)[0].tolist() == [[float(v) for v in f] for f in want_feats]
    nodes = g.node_features(params)[0, :, 0].tolist()
    assert nodes == [0.0, 28.0, 29.0, 30.0, 139.0, 140.0, 141.0, 142.0, 151.0, 152.0]
    # Readout groups: the input channel and each output neuron alone, hidden channels per layer.
    assert g.node_group().tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 3, 4]
    assert g.edge_group().tolist() == [0] * 3 + [1] * 12 + [2] * 8


def test_kernels_of_other_sizes_are_padded_to_the_widest():
    g = ParamGraph.for_network(MixedKernelSpec)
    assert g.dims == (2, 3, 2, 2) and g.kernel_width == 4 and g.edge_dim == 5
    x = torch.randn(3, MixedKernelSpec.num_params)
    (w1, _), (w2, _), (w3, _) = unflatten(x, MixedKernelSpec)
    e = g.edge_features(unflatten(x, MixedKernelSpec))
    assert e.shape == (3, 6 + 6 + 4, 5)
    assert torch.equal(e[:, 1, :4], w1[:, 0, 1].flatten(1)) and bool((e[:, :6, 4] == 1).all())
    assert torch.equal(e[:, 6 + 4, :3], w2[:, 1, 1, 0]) and bool((e[:, 6:12, 3] == 0).all())
    assert torch.equal(e[:, 12 + 3, 0], w3[:, 1, 1]) and bool((e[:, 12:, 1:] == 0).all())


def test_the_small_cnn_zoo_network_graph():
    g = ParamGraph.for_network(CnnSpec())
    # 1 input channel, 3 x 16 channels, 10 classes; 16 + 256 + 256 + 160 edges of 9 kernel values and a flag.
    assert (g.num_nodes, g.num_edges, g.edge_dim, g.num_groups) == (59, 688, 10, 1 + 3 + 10 + 4)


def test_an_mlp_layout_gives_the_mlp_graph_with_one_feature_per_edge():
    spec = SirenSpec(2, (4, 3), 1)
    g = ParamGraph.for_network(spec)
    assert g == ParamGraph(tuple(spec.dims)) and not g.is_conv and g.edge_dim == 1
    x = torch.randn(2, spec.num_params)
    params = unflatten(x, spec)
    assert torch.equal(g.edge_features(params)[..., 0], torch.cat([w.flatten(1) for w, _ in params], 1))


@pytest.mark.parametrize("shapes, match", [
    ((((4, 1, 3, 3), (4,)), ((10, 64), (10,))), "takes 64 inputs but layer 0 gives 4 .a flatten layer"),
    ((((4, 2), (4,)), ((3, 4, 3, 3), (3,))), "conv layer after a dense layer"),
    ((((4, 2), (3,)),), "are not .out, in, .... and .out,."),
])
def test_layouts_without_a_channel_graph_are_refused(shapes, match):
    class Spec:
        layer_shapes = shapes
    with pytest.raises(ValueError, match=match):
        ParamGraph.for_network(Spec)


# The model on conv networks -----------------------------------------------------------------------

SPEC = CnnSpec(in_channels=2, channels=(4, 3, 5), num_classes=3, image_size=15)


def _model(spec=SPEC, seed=0, **kw):
    torch.manual_seed(seed)
    m = GMN(spec, num_classes=2, d=8, depth=2, head_hidden=(16,), canon="none", **kw)
    with torch.no_grad():  # residual branches start at zero: perturb every parameter
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def _weights(spec=SPEC, n=4, seed=0):
    return torch.randn(n, spec.num_params, generator=torch.Generator().manual_seed(seed))


def test_hidden_channel_permutations_are_a_symmetry_of_the_cnn():
    x = _weights(n=2).double()
    xp = permute_hidden(x, SPEC)
    images = torch.rand(5, 2, 15, 15, dtype=torch.float64) * 2 - 1
    for k in range(2):  # the reference CNN (two input channels: conv2d reads them as given)
        a, b = (cnn_forward(v[k], images, "tanh", spec=SPEC) for v in (x, xp))
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("impl", ["dense", "pyg"])
def test_hidden_channel_permutation_leaves_the_output_unchanged(impl):
    m = _model(impl=impl).double()
    x = _weights().double()
    xp = permute_hidden(x, SPEC)
    assert not torch.allclose(x, xp)
    with torch.no_grad():
        a, ra = m(x)
        b, rb = m(xp)
    assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()
    for k in ra:
        assert torch.allclose(ra[k], rb[k], atol=1e-10), k


def test_permuting_input_channels_or_output_classes_is_not_a_symmetry():
    m = _model().double()
    x = _weights().double()
    layers = unflatten(x, SPEC)
    (w1, b1), *rest = layers
    inputs_swapped = flatten([(w1.flip(2), b1), *rest])  # the CNN's two input channels exchanged
    w, b = layers[-1]
    classes_rolled = flatten([*layers[:-1], (w[:, [1, 2, 0]], b[:, [1, 2, 0]])])
    with torch.no_grad():
        out = m(x)[0]
        assert (out - m(inputs_swapped)[0]).abs().max() > 1e-3
        assert (out - m(classes_rolled)[0]).abs().max() > 1e-3
    # The graph keeps input and output nodes apart: each has its own encoding and readout group.
    enc = m.node_encoding()
    g = m.graph
    assert not torch.allclose(enc[0], enc[1]) and not torch.allclose(enc[-3], enc[-2])
    groups = g.node_group().tolist()
    assert groups[:2] == [0, 1] and groups[-3:] == [5, 6, 7]


def test_dense_and_pyg_paths_agree_on_conv_graphs():
    m = _model(spec=MixedKernelSpec, impl="dense")
    x = _weights(MixedKernelSpec, n=3)
    a, ra = m(x)
    m.impl = "pyg"
    b, rb = m(x)
    assert torch.allclose(a, b, atol=1e-5)
    for k in ra:
        assert torch.allclose(ra[k], rb[k], atol=1e-5), k


def test_conv_graph_values_are_normalised_kernels_and_biases():
    stats = [(0.5, 2.0, -1.0, 4.0)] * 4
    torch.manual_seed(0)
    m = GMN(SPEC, num_classes=1, d=4, depth=1, head_hidden=(), canon="none", stats=stats)
    x = _weights(n=2)
    nodes, edges = m.graph_values(x)
    assert nodes.shape == (2, 2 + 4 + 3 + 5 + 3, 1) and edges.shape == (2, 8 + 12 + 15 + 15, 10)
    w1, b1 = unflatten(x, SPEC)[0]
    assert torch.allclose(edges[:, 1, :9], (w1[:, 0, 1].flatten(1) - 0.5) / 2.0)
    assert torch.allclose(nodes[:, 2:6, 0], (b1 + 1.0) / 4.0) and bool((nodes[:, :2] == 0).all())
    assert bool((edges[:, -15:, 1:] == 0).all())  # dense edges: padding and kind stay 0 after normalising


def _info(spec=SPEC):
    p = spec.num_params
    return TaskInfo(dataset="cnn-mnist", num_classes=1, image_shape=(), inr=None, network=spec, target="scalar",
                    views=("weights", "function"), weight_mean=np.zeros(p, np.float32),
                    weight_std=np.ones(p, np.float32))


def test_build_reads_cnn_zoos_with_their_defaults_and_refuses_siren_options():
    arch = load_registry().architecture("gmn")
    config = resolve(arch, "cnn-mnist", {})
    assert config["canon"] == "none" and config["probes"] == 0
    model = build(_info(), config)
    assert model.graph.is_conv and model(_weights(n=3))[0].shape == (3, 1)
    for key, value in (("canon", "phase"), ("probes", 8), ("augment", "affine")):
        with pytest.raises(WsbenchError, match=f"gmn: {key}=.* applies to SIREN INRs only.*--set {key}="):
            build(_info(), {**config, key: value})

    class Flattened:
        layer_shapes = (((4, 1, 3, 3), (4,)), ((10, 64), (10,)))
        num_params = 36 + 4 + 640 + 10
    msg = "cannot build a parameter graph of the Flattened networks of dataset .cnn-mnist.: layer 1 takes 64"
    with pytest.raises(WsbenchError, match=msg):
        build(_info(Flattened), config)


# Training on a zoo of CNNs ------------------------------------------------------------------------

CONV_ZOO = CnnSpec(channels=(4, 4), num_classes=3, image_size=8)
CONV_ZOO_SIZE = 96


def conv_networks(request):
    """96 random CNNs of :data:`CONV_ZOO` whose scalar target is a channel-permutation invariant function
    of their weights (the mean absolute dense weight, which the graph's dense edges carry) plus noise."""
    from wsbench import NetworkZoo
    rng = np.random.default_rng(0)
    n, spec = CONV_ZOO_SIZE, CONV_ZOO
    scale = rng.uniform(0.2, 1.5, (n, 1))
    w = (rng.normal(size=(n, spec.num_params)) * np.where(np.arange(spec.num_params) >= 188, scale, 0.5))
    w = w.astype(np.float32)
    target = np.abs(w[:, 188:188 + 12]).mean(1) + 0.02 * rng.normal(size=n)
    perm = rng.permutation(n)
    splits = {"test": np.sort(perm[:32]), "val": np.sort(perm[32:48]), "train": np.sort(perm[48:])}
    return NetworkZoo(ids=np.arange(n, dtype=np.int64), targets=target, splits=splits, views={"weights": w},
                      network=spec, key="conv-toy-0000")


def conv_registry():
    from wsbench import DatasetSpec, hookimpl

    class _P:
        @staticmethod
        @hookimpl
        def register_datasets(register):
            register(DatasetSpec(name="conv-toy", target="scalar", views=("weights",), networks=conv_networks,
                                 zoo_recipes={"cpu": {"zoo_size": CONV_ZOO_SIZE}}))
    return load_registry(extra_plugins=[(_P, "conv-toy-dist", "0.0")])


def test_gmn_trains_on_a_zoo_of_cnns_and_stores_a_finished_run(tmp_path):
    from wsbench.grid import Cell
    from wsbench.runner import Runner, Settings
    assert CONV_ZOO.num_params == 188 + 12 + 3  # dense W starts at 188 (conv1 36 + 4, conv2 144 + 4)
    overrides = {"epochs": 15, "canon": "none", "probes": 0, "hidden_dim": 16, "depth": 2, "head_hidden": [32],
                 "batch_size": 16, "lr": 3e-3}
    runner = Runner(conv_registry(), Settings(out=tmp_path / "r", device="cpu", overrides=overrides))
    row = runner.run(Cell("conv-toy", "gmn", 0))
    assert row["status"] == "finished" and row["target"] == "scalar" and row["score"] == "kendall_tau"
    tau = json.loads(row["test_scores"])["kendall_tau"]
    assert math.isfinite(tau) and tau == row["test_score"]
    assert tau > 0.25, tau  # the target is on the dense edges: the model learns to rank by it (0.41 here)
    layers = json.loads(row["layers"])
    assert "mp1" in layers and "mp2" in layers
