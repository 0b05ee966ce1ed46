"""Zoos of CNNs of mixed depths and widths (``cnn-*-mixed``): the padded layout and its architecture
columns, training one architecture at a time, resuming, which architectures apply, and the GMN on
per-member parameter graphs (symmetry and a short run end to end). Tiny, CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cnn_study import TINY, cli
from test_cnnzoo import RECIPE, fake_images, killed_and_resumed, tiny_data
from test_gmn import permute_hidden

from wsbench import MixedNetworks, ParamGraph, layer_statistics, role_statistics
from wsbench import cnnzoo as cz
from wsbench.grid import applicability_notes, applicable, grid_cells
from wsbench.plugins import load_registry
from wsbench_plugins.gmn import MixedGMN

SEED = 3


def build(root, progress=None, n=12):
    tx, ty = fake_images(150, 1)
    sx, sy = fake_images(60, 2)
    return cz.build_cnn_zoo(root, "fake-mixed", tx, ty, sx, sy, n=n, seed=SEED, recipe={**RECIPE, "chunk_size": 5},
                            progress=progress, mixed=True)


# The zoo ----------------------------------------------------------------------------------------------

def test_rows_unpad_to_each_members_own_network_and_reproduce_its_function(tmp_path):
    zoo = build(tmp_path)
    n = len(zoo.ids)
    assert zoo.mixed and zoo.weights.shape == (n, zoo.spec.num_params) == (n, 28394)  # 4 conv layers of 32
    assert zoo.manifest["mixed"] == {"depths": [2, 3, 4], "widths": [8, 16, 24, 32], "padding": cz.MIXED_PADDING_RULE}
    assert set(cz.ARCH_COLUMNS) <= set(zoo.manifest["config_columns"])
    # The hyperparameters are the homogeneous zoo's (same seed): the architecture is drawn apart.
    plain = cz.sample_configs(n, SEED)
    assert all(np.array_equal(zoo.configs[k], plain[k]) for k in plain)
    assert len({(d, w) for d, w in zip(zoo.configs["depth"], zoo.configs["width"])}) > 3
    assert cz.member_spec(zoo.spec, 3, 16) == cz.CnnSpec(image_size=16)  # the homogeneous zoo's network
    _, _ = fake_images(150, 1)
    sx, _ = fake_images(60, 2)
    probes = cz.prepare_images(sx[zoo.manifest["probe_ids"]])
    for i in range(n):
        spec = zoo.member_spec(i)
        p = int(zoo.configs["num_params"][i])
        assert spec.channels == (int(zoo.configs["width"][i]),) * int(zoo.configs["depth"][i])
        # Valid convolutions as the Small CNN Zoo's, padded only at depth 4 (16x16 inputs: maps 7, 3, 1, then none).
        assert spec.padding == (1 if len(spec.channels) == 4 else 0) and spec.feature_sizes[-1] >= 1
        assert p == spec.num_params and not zoo.weights[i, p:].any()  # zero padding after its own parameters
        own = torch.as_tensor(np.array(zoo.weights[i, :p]))
        ref = torch.softmax(cz.forward(own, probes, str(zoo.configs["activation"][i]), spec), -1)
        np.testing.assert_allclose(zoo.function[i], ref.numpy(), atol=1e-5)
    assert cz.open_cnn_zoo(zoo.path).mixed  # the manifest and the columns pass the integrity check


def test_a_member_trained_in_a_mixed_chunk_equals_it_trained_alone():
    data = tiny_data()
    spec = cz.mixed_zoo_spec(16)
    cfg = cz.sample_configs(4, 5)
    cfg["optimizer"] = np.array(["sgd", "adam", "rmsprop", "adam"])
    cfg["train_fraction"] = np.array([1.0, 0.5, 1.0, 1.0])
    arch = {"depth": np.array([2, 4, 3, 2]), "width": np.array([8, 8, 16, 8])}
    cfg.update(arch, num_params=np.array([cz.member_spec(spec, d, w).num_params for d, w in zip(*arch.values())]))
    recipe = {**RECIPE, "epochs": 2}
    out = cz.train_chunk(cfg, data, spec, recipe)
    assert out["weights"].shape == (4, spec.num_params) and out["function"].shape == (4, 5, 10)
    for i in range(4):
        own = cz.member_spec(spec, arch["depth"][i], arch["width"][i])
        alone = cz.train_alone({k: v[i] for k, v in cfg.items()}, data, own, recipe)
        np.testing.assert_allclose(out["weights"][i, :own.num_params], alone.float().numpy(), atol=1e-6)
        assert not out["weights"][i, own.num_params:].any()
    # A member's weights do not depend on which other architectures share its chunk.
    again = cz.train_chunk(cz.take(cfg, [3]), data, spec, recipe)
    np.testing.assert_allclose(again["weights"][0], out["weights"][3], atol=1e-12)


def test_a_mixed_chunk_trains_one_architecture_and_train_fraction_per_call(monkeypatch):
    """A call steps as long as its longest-training member: mixing fractions in one call would train
    the short ones' steps for nothing, so each (depth, width, fraction) gets its own call."""
    calls: list[tuple] = []
    real = cz.train_members

    def spy(configs, data, spec, recipe, method="grouped"):
        calls.append((tuple(spec.channels), tuple(sorted(set(configs["train_fraction"].tolist())))))
        return real(configs, data, spec, recipe, method)

    monkeypatch.setattr(cz, "train_members", spy)
    spec = cz.mixed_zoo_spec(16)
    cfg = cz.sample_configs(5, 6)
    cfg["train_fraction"] = np.array([1.0, 0.5, 1.0, 0.5, 0.5])
    arch = {"depth": np.array([2, 2, 2, 3, 2]), "width": np.array([8, 8, 8, 8, 8])}
    cfg.update(arch, num_params=np.array([cz.member_spec(spec, d, w).num_params for d, w in zip(*arch.values())]))
    cz.train_chunk(cfg, tiny_data(), spec, {**RECIPE, "epochs": 1})
    assert sorted(calls) == [((8, 8), (0.5,)), ((8, 8), (1.0,)), ((8, 8, 8), (0.5,))]


def test_a_killed_mixed_build_resumes_to_the_same_zoo(tmp_path):
    whole, resumed, seen = killed_and_resumed(build, tmp_path)
    assert seen == [10, 12]  # the first chunk (5 CNNs) was not trained again
    assert np.array_equal(whole.weights, resumed.weights) and np.array_equal(whole.function, resumed.function)
    for col in ("depth", "width", "num_params"):
        assert np.array_equal(whole.configs[col], resumed.configs[col])


# Which architectures apply --------------------------------------------------------------------------

def test_grid_leaves_out_architectures_that_need_one_shared_layout_with_a_note():
    reg = load_registry()
    archs = ["gmn", "weight-stats", "flat-mlp", "nfn-np", "fn-mlp"]
    cells, left_out = applicable(grid_cells(["cnn-mnist", "cnn-mnist-mixed"], archs, [0]), reg)
    kept = [(c.dataset, c.arch) for c in cells]
    assert kept == [("cnn-mnist", a) for a in archs] + [("cnn-mnist-mixed", "gmn"), ("cnn-mnist-mixed", "fn-mlp")]
    assert left_out == [f"{a} reads weights of one shared layout, and the networks of cnn-mnist-mixed differ in "
                        "architecture" for a in ("weight-stats", "flat-mlp", "nfn-np")]


def test_applicability_notes_name_the_boards_architectures_that_do_not_apply():
    runs = [{"arch": "flat-mlp", "dataset": "cnn-mnist"}, {"arch": "gmn", "dataset": "cnn-mnist-mixed"},
            {"arch": "someone-elses", "dataset": "cnn-mnist"}]
    assert applicability_notes(runs, load_registry()) == [
        {"dataset": "cnn-mnist-mixed", "arch": "flat-mlp",
         "reason": "flat-mlp reads weights of one shared layout, and the networks of cnn-mnist-mixed differ in "
                   "architecture"}]


def test_a_direct_run_of_a_shared_layout_architecture_fails_naming_those_that_apply(tmp_path, capsys):
    code, _, err = cli(capsys, "run", "--arch", "flat-mlp", "--dataset", "cnn-mnist-mixed", "--results", tmp_path)
    assert code == 2
    line = " ".join(err.split())  # one message (rich may wrap it)
    assert "'flat-mlp' needs every network in one shared weight layout" in line
    assert "differ in architecture; architectures that can run on it: fn-mlp, gmn" in line


# The GMN on mixed architectures ---------------------------------------------------------------------

LAYOUTS = MixedNetworks(tuple(cz.CnnSpec(channels=(w,) * d, padding=1, num_classes=3, image_size=8)
                              for d, w in ((2, 3), (3, 4), (4, 2))))


def mixed_rows(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random networks of :data:`LAYOUTS` (layouts in turn), as padded rows with their layout column."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.zeros(n, LAYOUTS.num_params, dtype=torch.float64)
    for i in range(n):
        k = i % len(LAYOUTS.layouts)
        p = LAYOUTS.layouts[k].num_params
        rows[i, 0], rows[i, 1:1 + p] = k, torch.randn(p, generator=g, dtype=torch.float64)
    return rows


def mixed_model(seed: int = 0) -> MixedGMN:
    torch.manual_seed(seed)
    m = MixedGMN(LAYOUTS, num_classes=1, d=8, depth=2, head_hidden=(16,))
    with torch.no_grad():  # residual branches start at zero: perturb every parameter
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.double().eval()


def test_permuting_a_mixed_members_hidden_channels_leaves_its_prediction_unchanged():
    m = mixed_model()
    x = mixed_rows(6)
    xp = x.clone()
    for k, rows, params in LAYOUTS.split(x):
        xp[rows, 1:1 + params.shape[1]] = permute_hidden(params, LAYOUTS.layouts[k], seed=k)
    assert not torch.allclose(x, xp)
    with torch.no_grad():
        a, ra = m(x)
        b, rb = m(xp)
        c, _ = m(x.flip(0))  # and a network's prediction does not depend on the others in its batch
    assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()
    assert all(torch.allclose(ra[k], rb[k], atol=1e-10) for k in ra)
    assert torch.allclose(c.flip(0), a, atol=1e-10)
    # Networks of other depths give readouts of one size; other weights give other predictions.
    scaled = torch.cat([x[:, :1], 1.5 * x[:, 1:]], 1)
    assert ra["mp2"].shape == (6, (1 + 3 + 3 + 4) * 8) and (a - m(scaled)[0]).abs().max() > 1e-3


def test_role_statistics_pool_layers_of_one_role_across_depths():
    rng = np.random.default_rng(0)
    stats = [(n, rng.normal(size=s.num_params), rng.uniform(0.5, 2, s.num_params))
             for n, s in zip((5, 0, 7), LAYOUTS.layouts)]
    got = role_statistics(LAYOUTS.layouts, stats)
    assert [len(r) for r in got] == [3, 4, 5]
    # Depth 3 alone: every layer has a role of its own, and the statistics are its per-layer ones.
    mid = LAYOUTS.layouts[1]
    alone = (4, rng.normal(size=mid.num_params), rng.uniform(0.5, 2, mid.num_params))
    assert np.allclose(role_statistics([mid], [alone])[0], layer_statistics(mid, *alone[1:]))
    assert got[2][1] == got[2][2]  # depth 4: both middle layers share the middle role
    # The output layer's role pools the two layouts with training networks, weighted by their counts.
    (m5, s5), (m7, s7) = ((stats[k][1][-3:], stats[k][2][-3:]) for k in (0, 2))  # dense biases (3 classes)
    mean = (5 * m5.sum() + 7 * m7.sum()) / 36
    var = (5 * (s5**2 + m5**2).sum() + 7 * (s7**2 + m7**2).sum()) / 36 - mean**2
    assert got[0][-1][2:] == pytest.approx((mean, np.sqrt(var)), rel=1e-6) and got[1][-1] == got[0][-1]


def test_each_layout_has_its_own_graph():
    m = mixed_model()
    assert m.graphs == [ParamGraph.for_network(s) for s in LAYOUTS.layouts]
    assert [g.dims for g in m.graphs] == [(1, 3, 3, 3), (1, 4, 4, 4, 3), (1, 2, 2, 2, 2, 3)]


def test_gmn_trains_end_to_end_on_a_mixed_zoo(tmp_path, fake_mnist, capsys):
    res = tmp_path / "results"
    code, out, err = cli(capsys, "run", "--arch", "gmn", "--dataset", "cnn-mnist-mixed", "--epochs", "2",
                         "--limit", "20", "--data-dir", fake_mnist, "--cache-dir", tmp_path / "cache", "--results", res,
                         "--device", "cpu", *TINY)
    assert code == 0, err
    assert "test Kendall's tau" in out
    (zoo,) = (tmp_path / "cache" / "zoos").iterdir()
    assert zoo.name.startswith("cnn-mnist-mixed-") and json.loads((zoo / "manifest.json").read_text())["mixed"]
    # Beside a homogeneous zoo's flat-mlp, the leaderboard says why flat-mlp has no row on the mixed zoo.
    code, out, err = cli(capsys, "run", "--arch", "flat-mlp", "--dataset", "cnn-mnist", "--epochs", "1", "--limit",
                         "20", "--data-dir", fake_mnist, "--cache-dir", tmp_path / "cache", "--results", res,
                         "--device", "cpu", *TINY)
    assert code == 0, err
    code, out, err = cli(capsys, "leaderboard", "--results", res, "--format", "md")
    assert code == 0 and "| gmn |" in out and "| flat-mlp |" in out
    assert ("Not applicable, so not run (not failures):\n\n- flat-mlp reads weights of one shared layout, and the "
            "networks of cnn-mnist-mixed differ in architecture\n") in out
