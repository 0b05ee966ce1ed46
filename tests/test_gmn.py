"""The graph metanetwork: symmetries it must respect and break, dense == PyG, statistics, specs."""
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from wsbench import ParamGraph, canonical_phases, canonical_signs, layer_statistics
from wsbench.errors import WsbenchError
from wsbench.plugins import load_registry
from wsbench.specs import SirenSpec, TaskInfo
from wsbench.weights import flatten, siren_forward, unflatten
from wsbench_plugins.gmn import GMN, build

SPECS = [SirenSpec(2, (6, 5), 1), SirenSpec(2, (4, 3, 4), 3), SirenSpec(3, (5,), 2)]


def _model(spec, seed=0, **kw):
    torch.manual_seed(seed)
    m = GMN(spec, num_classes=4, d=8, depth=2, head_hidden=(16,), **{"canon": "phase", **kw})
    # Residual branches start at zero; perturb every parameter so each layer really computes something.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def _weights(spec, n=5, seed=0):
    return torch.randn(n, spec.num_params, generator=torch.Generator().manual_seed(seed))


def permute_hidden(x, spec, seed=0):
    """Permute the hidden neurons of every network (each its own permutation), weights and biases alike, and
    the next layer's input axis with them: for a CNN its hidden channels (the next conv's kernels, or the
    dense layer's columns after pooling)."""
    gen = torch.Generator().manual_seed(seed)
    layers = [(w.clone(), b.clone()) for w, b in unflatten(x, spec)]
    for n in range(x.shape[0]):
        for k in range(len(layers) - 1):
            perm = torch.randperm(layers[k][1].shape[1], generator=gen)
            w, b = layers[k]
            w[n], b[n] = w[n][perm], b[n][perm]
            layers[k + 1][0][n] = layers[k + 1][0][n][:, perm]
    return flatten(layers)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(map(str, s.dims)))
@pytest.mark.parametrize("impl, probes", [("dense", 0), ("pyg", 0), ("dense", 3), ("pyg", 3)])
def test_hidden_permutation_leaves_logits_unchanged(spec, impl, probes):
    # float64: probe values are sines of w0-scaled sums, where float32 rounding of a reordered sum shows.
    m = _model(spec, impl=impl, probes=probes).double()
    x = _weights(spec).double()
    xp = permute_hidden(x, spec)
    assert not torch.allclose(x, xp)
    with torch.no_grad():
        a, ra = m(x)
        b, rb = m(xp)
    assert torch.allclose(a, b, atol=1e-9), (a - b).abs().max()
    for k in ra:  # every pooled representation is invariant too
        assert torch.allclose(ra[k], rb[k], atol=1e-9), k


@pytest.mark.parametrize("probes", [0, 3])
def test_permuting_input_coordinates_changes_logits(probes):
    spec = SPECS[0]
    m = _model(spec, probes=probes)
    x = _weights(spec)
    layers = unflatten(x, spec)
    swapped = flatten([(layers[0][0].flip(2), layers[0][1]), *layers[1:]])  # swap the x and y inputs
    with torch.no_grad():
        assert (m(x)[0] - m(swapped)[0]).abs().max() > 1e-3


def test_permuting_output_neurons_changes_logits():
    spec = SPECS[1]
    m = _model(spec)
    x = _weights(spec)
    layers = unflatten(x, spec)
    w, b = layers[-1]
    permuted = flatten([*layers[:-1], (w[:, [1, 2, 0]], b[:, [1, 2, 0]])])
    with torch.no_grad():
        assert (m(x)[0] - m(permuted)[0]).abs().max() > 1e-3


def _flip_sign(x, spec, layer=0, neuron=1):
    layers = [(w.clone(), b.clone()) for w, b in unflatten(x, spec)]
    layers[layer][0][:, neuron] *= -1
    layers[layer][1][:, neuron] *= -1
    layers[layer + 1][0][:, :, neuron] *= -1
    return flatten(layers)


def _shift_phase(x, spec, layer=0, neuron=2, turns=1):
    """Shift a hidden neuron's phase by ``turns * pi`` and negate its outgoing weights if ``turns`` is odd."""
    layers = [(w.clone(), b.clone()) for w, b in unflatten(x, spec)]
    layers[layer][1][:, neuron] += turns * torch.pi / spec.w0
    layers[layer + 1][0][:, :, neuron] *= (-1) ** turns
    return flatten(layers)


@pytest.mark.parametrize("canon", ["sign", "phase", "none"])
def test_sign_flips_are_invariant_unless_canon_is_none(canon):
    spec = SPECS[0]
    x = _weights(spec)
    xf = _flip_sign(x, spec)
    with torch.no_grad():
        m = _model(spec, canon=canon)
        diff = (m(x)[0] - m(xf)[0]).abs().max()
    assert diff < 1e-5 if canon != "none" else diff > 1e-3


@pytest.mark.parametrize("turns", [1, 2, -3])
def test_phase_shifts_are_invariant_only_with_phase_canon(turns):
    spec = SPECS[1]
    x = _weights(spec) * 0.3
    xs = _shift_phase(x, spec, turns=turns)
    with torch.no_grad():
        on, off = _model(spec, canon="phase"), _model(spec, canon="sign")
        assert (on(x)[0] - on(xs)[0]).abs().max() < 1e-4
        assert (off(x)[0] - off(xs)[0]).abs().max() > 1e-3


def test_canonical_phases_lie_in_range_and_keep_the_function():
    from wsbench.weights import render
    spec = SirenSpec(2, (6, 5), 1, w0=30.0)
    x = _weights(spec) * 0.2
    canon = canonical_phases(unflatten(x, spec), spec.w0)
    for _, b in canon[:-1]:
        assert bool(((b * spec.w0 >= 0) & (b * spec.w0 <= torch.pi / 2 + 1e-6)).all())
    assert torch.allclose(render(flatten(canon), spec, 6, 6), render(x, spec, 6, 6), atol=1e-4)


def test_canonical_signs_make_hidden_biases_nonnegative_and_keep_the_function():
    from wsbench.weights import render
    spec = SirenSpec(2, (6, 5), 1, w0=3.0)
    x = _weights(spec) * 0.5
    canon = canonical_signs(unflatten(x, spec))
    assert all(bool((b >= 0).all()) for _, b in canon[:-1])
    assert torch.allclose(render(flatten(canon), spec, 5, 5), render(x, spec, 5, 5), atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(map(str, s.dims)))
@pytest.mark.parametrize("aggr, probes", [("mean", 0), ("sum", 0), ("sum", 4)])
def test_dense_and_pyg_paths_agree(spec, aggr, probes):
    m = _model(spec, impl="dense", aggr=aggr, probes=probes)
    x = _weights(spec, n=3)
    a, ra = m(x)
    ga = torch.autograd.grad(a.square().sum(), list(m.parameters()))
    m.impl = "pyg"
    b, rb = m(x)
    gb = torch.autograd.grad(b.square().sum(), list(m.parameters()))
    assert list(ra) == list(rb)
    for k in ra:
        assert torch.allclose(ra[k], rb[k], atol=1e-5), k
    for u, v in zip(ga, gb):  # relative: probe gradients pass through sines of w0-scaled inputs (up to 1e6)
        assert (u - v).abs().max() <= 1e-4 + 1e-5 * v.abs().max()


def test_probe_values_are_the_inr_at_the_probe_points():
    """Outputs carry the INR's values there (the rendered image), inputs the coordinates, hidden neurons
    their sines; with canonicalisation off they are those of the weights as given."""
    spec = SPECS[1]
    m = _model(spec, probes=5, canon="none")
    x = _weights(spec, n=3) * 0.3
    nodes, _ = m.graph_values(x)
    assert nodes.shape == (3, m.graph.num_nodes, 6)
    params = []
    for w, b in unflatten(x, spec):
        params += [w.transpose(1, 2), b.unsqueeze(1)]
    coords = m.probe_coords.detach().expand(3, -1, -1)
    out = siren_forward(params, coords, spec.w0)  # (B, K, out)
    assert torch.allclose(nodes[:, -spec.out_dim:, 1:], out.transpose(1, 2), atol=1e-5)
    assert torch.allclose(nodes[:, :spec.in_dim, 1:], coords.transpose(1, 2))
    first = torch.sin(spec.w0 * siren_forward(params[:2], coords, spec.w0))
    assert torch.allclose(nodes[:, spec.in_dim:spec.in_dim + spec.hidden[0], 1:], first.transpose(1, 2), atol=1e-5)
    # Canonicalisation keeps the function, so the output neurons' probe values do not move.
    canon = _model(spec, probes=5, canon="phase")
    assert torch.allclose(canon.graph_values(x)[0][:, -spec.out_dim:, 1:], out.transpose(1, 2), atol=1e-4)


def test_vectorised_batch_equals_from_data_list():
    spec = SPECS[1]
    m = _model(spec, probes=2)
    x = _weights(spec, n=3)
    ref = Batch.from_data_list(m.graphs(x))
    nodes, edges = m.graph_values(x)
    ours = m.to_batch(nodes, edges)
    for key in ("x", "edge_index", "edge_attr", "batch", "node_group", "edge_group"):
        assert torch.equal(getattr(ours, key), getattr(ref, key)), key


def test_graph_structure_counts_and_edge_order():
    g = ParamGraph((2, 3, 1))
    assert (g.num_nodes, g.num_edges, g.num_node_groups, g.num_groups) == (6, 9, 4, 6)
    ei = g.edge_index()
    # W_0 (3, 2) row-major: edge 1 is W_0[0, 1], from input 1 (node 1) to hidden 0 (node 2).
    assert ei[:, 1].tolist() == [1, 2]
    assert ei[:, 6].tolist() == [2, 5]  # first edge of W_1: hidden 0 -> output
    assert g.node_group().tolist() == [0, 1, 2, 2, 2, 3]


def test_layer_statistics_are_exact():
    spec = SirenSpec(2, (4, 3), 1)
    data = np.random.default_rng(0).normal(size=(50, spec.num_params)) * np.linspace(0.5, 2, spec.num_params) + 1.0
    stats = layer_statistics(spec, data.mean(0), data.std(0))
    k = 0
    for (o, i), (wm, ws, bm, bs) in zip(spec.layer_shapes, stats):
        w, b = data[:, k:k + o * i], data[:, k + o * i:k + o * i + o]
        k += o * i + o
        assert np.allclose([wm, ws, bm, bs], [w.mean(), w.std(), b.mean(), b.std()], atol=1e-6)


def _info(spec):
    p = spec.num_params
    return TaskInfo("t", 3, (1, 8, 8), spec, weight_mean=np.zeros(p, np.float32), weight_std=np.ones(p, np.float32))


def test_build_uses_defaults_and_rejects_bad_options():
    spec = load_registry().architecture("gmn")
    assert spec.defaults["weight_norm"] == "per-layer" and spec.defaults["impl"] == "dense"
    config = {**spec.defaults}
    model = build(_info(SPECS[0]), config)
    assert model(_weights(SPECS[0], 2))[0].shape == (2, 3)
    with pytest.raises(WsbenchError, match="unknown impl 'sparse'; known: dense, pyg"):
        build(_info(SPECS[0]), {**config, "impl": "sparse"})
    with pytest.raises(WsbenchError, match="known: phase, sign, none"):
        build(_info(SPECS[0]), {**config, "canon": "scale"})
    with pytest.raises(WsbenchError, match="known: per-layer, none"):
        build(_info(SPECS[0]), {**config, "weight_norm": "global"})
    with pytest.raises(WsbenchError, match="probes must be 0 .off. or more, got -1"):
        build(_info(SPECS[0]), {**config, "probes": -1})
    assert build(_info(SPECS[0]), {**config, "probes": 7}).probe_coords.shape == (7, 2)


def test_no_hidden_layer_spec_works():
    spec = SirenSpec(2, (), 1)
    m = _model(spec)
    assert m(_weights(spec, 2))[0].shape == (2, 4)
