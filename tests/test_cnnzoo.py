"""The CNN zoo engine (wsbench.cnnzoo) and the Small CNN Zoo importer: tiny, CPU, seconds."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsbench import cnnzoo as cz
from wsbench.importers import import_small_cnn_zoo
from wsbench.zoo import ZooDamaged

SPEC = cz.CnnSpec(image_size=16)
RECIPE = {**cz.CPU_RECIPE, "epochs": 1, "train_subset": 128, "test_subset": 40, "train_eval": 32, "n_probe": 6,
          "chunk_size": 3}


def fake_images(n: int, seed: int, channels: int = 1, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def tiny_data(dtype=torch.float64) -> cz.Data:
    x, y = fake_images(96, 0)
    t = cz.prepare_images(x).to(dtype)
    return cz.Data(t, torch.as_tensor(y), t[:40], torch.as_tensor(y[:40]), t[:5])


def test_default_spec_has_4970_parameters_and_layout_round_trips():
    spec = cz.CnnSpec()
    assert spec.num_params == 4970 and spec.feature_sizes == [13, 6, 2]
    assert cz.CnnSpec(image_size=32).feature_sizes == [15, 7, 3]
    flat = torch.randn(3, spec.num_params)
    layers = cz.unflatten(flat, spec)
    assert [tuple(w.shape[1:]) for w, _ in layers] == [(16, 1, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (10, 16)]
    assert torch.equal(cz.flatten(layers), flat)
    assert spec.kernel_mask.sum() == 144 + 2304 + 2304 + 160


def test_batched_training_equals_each_member_alone():
    data = tiny_data()
    cfg = cz.sample_configs(3, 5)
    cfg["optimizer"] = np.array(["sgd", "adam", "rmsprop"])
    cfg["train_fraction"] = np.array([1.0, 0.5, 1.0])
    recipe = {**RECIPE, "epochs": 2}
    out = cz.train_members(cfg, data, SPEC, recipe)
    for i in range(3):
        alone = cz.train_alone({k: v[i] for k, v in cfg.items()}, data, SPEC, recipe)
        np.testing.assert_allclose(out["weights"][i], alone.float().numpy(), atol=1e-6)
    # and the result does not depend on which members share the chunk
    again = cz.train_members(cz.take(cfg, [2]), data, SPEC, recipe)
    np.testing.assert_allclose(again["weights"][0], out["weights"][2], atol=1e-12)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_vectorised_optimizer_matches_torch_optim(name):
    g = torch.Generator().manual_seed(0)
    theta0 = torch.randn(2, 7, generator=g, dtype=torch.float64)
    grads = [torch.randn(2, 7, generator=g, dtype=torch.float64) for _ in range(5)]
    code = {"sgd": 0, "adam": 1, "rmsprop": 2}[name]
    theta = theta0.clone()
    state = cz.OptState(torch.zeros_like(theta), torch.zeros_like(theta), torch.zeros(2, dtype=torch.int64))
    lr = torch.tensor([0.01, 0.03], dtype=torch.float64)
    for gr in grads:
        cz.optimizer_step(theta, gr, state, torch.tensor([code, code]), lr, torch.tensor([True, True]))
    for m in range(2):
        p = theta0[m].clone().requires_grad_(True)
        rate = float(lr[m])
        opt: torch.optim.Optimizer
        if name == "sgd":
            opt = torch.optim.SGD([p], lr=rate)
        elif name == "adam":
            opt = torch.optim.Adam([p], lr=rate, betas=cz.ADAM_BETAS, eps=cz.EPS)
        else:
            opt = torch.optim.RMSprop([p], lr=rate, alpha=cz.RMSPROP_RHO, eps=cz.EPS)
        for gr in grads:
            p.grad = gr[m].clone()
            opt.step()
        torch.testing.assert_close(theta[m], p.detach(), rtol=1e-12, atol=1e-12)


def test_inactive_members_are_not_updated():
    theta = torch.ones(2, 3)
    state = cz.OptState(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))
    cz.optimizer_step(theta, torch.ones(2, 3), state, torch.tensor([1, 1]), torch.tensor([0.1, 0.1]),
                      torch.tensor([True, False]))
    assert torch.all(theta[1] == 1) and torch.all(theta[0] < 1) and state.t.tolist() == [1, 0]


def test_config_sampling_is_deterministic_and_in_range():
    a, b, c = cz.sample_configs(500, 1), cz.sample_configs(500, 1), cz.sample_configs(500, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["lr"], c["lr"])
    for key, (lo, hi) in cz.RANGES.items():
        assert a[key].min() >= lo and a[key].max() <= hi
    assert set(a["optimizer"]) == set(cz.OPTIMIZERS) and set(a["activation"]) == set(cz.ACTIVATIONS)
    assert set(a["train_fraction"]) <= set(cz.TRAIN_FRACTIONS) and set(a["init"]) <= set(cz.INITS)


def build(tmp_path, progress=None, **kw):
    tx, ty = fake_images(150, 1, channels=3)
    sx, sy = fake_images(60, 2, channels=3)
    return cz.build_cnn_zoo(tmp_path, "fake", tx, ty, sx, sy, n=7, seed=3, recipe={**RECIPE, **kw},
                            progress=progress)


def killed_and_resumed(build_zoo, tmp_path) -> tuple[cz.CnnZoo, cz.CnnZoo, list[int]]:
    """``(whole, resumed, progress)``: a zoo built at once, and the same zoo killed after its first chunk
    (checked: no manifest, one chunk recorded) and built again, with the progress of the second build."""
    whole = build_zoo(tmp_path / "a")

    def die(done, total):
        raise KeyboardInterrupt("killed after a chunk")

    with pytest.raises(KeyboardInterrupt):
        build_zoo(tmp_path / "b", progress=die)
    folder = next((tmp_path / "b" / "zoos").iterdir())
    assert not (folder / "manifest.json").exists() and json.loads((folder / "done.json").read_text()) == [0]
    seen: list[int] = []
    resumed = build_zoo(tmp_path / "b", progress=lambda d, t: seen.append(d))
    return whole, resumed, seen


def test_zoo_resumes_after_a_kill_with_identical_arrays(tmp_path):
    whole, resumed, seen = killed_and_resumed(build, tmp_path)
    sizes = [len(r) for r in cz.chunk_rows(cz.sample_configs(7, 3), RECIPE["chunk_size"])]
    assert len(sizes) > 2 and seen == list(np.cumsum(sizes)[1:])  # the first chunk was not trained again
    assert np.array_equal(whole.weights, resumed.weights) and np.array_equal(whole.function, resumed.function)
    for t in cz.TARGETS:
        assert np.array_equal(whole.targets[t], resumed.targets[t], equal_nan=True)
    assert whole.weights.shape == (7, 4970) and whole.manifest["n_probe"] == 6


def test_function_view_shape_and_determinism(tmp_path):
    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert a.function is not None and a.function.shape == (7, 6, 10)
    np.testing.assert_allclose(a.function.sum(-1), 1.0, rtol=1e-5)
    assert np.array_equal(a.function, b.function) and a.manifest["probe_ids"] == b.manifest["probe_ids"]
    # the probe outputs are the reference forward's softmax on the probe images
    _, _ = fake_images(150, 1, channels=3)
    sx, _ = fake_images(60, 2, channels=3)
    x = cz.prepare_images(sx[a.manifest["probe_ids"]])
    ref = torch.softmax(cz.forward(torch.as_tensor(np.array(a.weights[0])), x, str(a.configs["activation"][0])), -1)
    np.testing.assert_allclose(a.function[0], ref.numpy(), atol=1e-5)


def test_truncated_weights_raise_zoo_damaged_naming_the_fix(tmp_path):
    zoo = build(tmp_path)
    with open(zoo.path / "weights.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ZooDamaged, match=r"CNN zoo .* is damaged: weights.npy .*`wsbench zoo build --dataset fake"):
        cz.open_cnn_zoo(zoo.path)


def write_release(folder, keras_rows: np.ndarray, with_layout: bool) -> None:
    """A tiny copy in the release's layout: 2 checkpoints per CNN, the last one final."""
    folder.mkdir()
    np.save(folder / "weights.npy", keras_rows.astype(np.float32))
    lines = ["config.activation,config.learning_rate,config.optimizer,config.train_fraction,modeldir,step,"
             "test_accuracy,test_loss,train_accuracy"]
    for i in range(len(keras_rows)):
        cnn, step = i // 2, (i % 2) * 100
        lines.append(f"{'relu' if cnn % 2 == 0 else 'tanh'},0.01,adam,0.5,dir{cnn},{step},0.{i},1.5,0.{i}")
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    if with_layout:
        rows, k = ["varname,start_idx,end_idx,size,shape"], 0
        shapes = [(3, 3, 1, 16), (16,), (3, 3, 16, 16), (16,), (3, 3, 16, 16), (16,), (16, 10), (10,)]
        for li, shape in enumerate(shapes):
            size = int(np.prod(shape))
            rows.append(f"layer{li},{k},{k + size},{size},\"{shape}\"")
            k += size
        (folder / "layout.csv").write_text("\n".join(rows) + "\n")


def keras_forward(row: np.ndarray, x: np.ndarray, act) -> np.ndarray:
    """The release's CNN computed by hand in TF layout: NHWC, kernels (kh, kw, in, out), stride 2, valid."""
    k, h = 0, x.transpose(0, 2, 3, 1)
    for cin in (1, 16, 16):
        w = row[k:k + 9 * cin * 16].reshape(3, 3, cin, 16)
        k += 9 * cin * 16
        b = row[k:k + 16]
        k += 16
        s = (h.shape[1] - 3) // 2 + 1
        out = np.zeros((h.shape[0], s, s, 16))
        for i in range(s):
            for j in range(s):
                out[:, i, j] = np.einsum("nabc,abco->no", h[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3], w) + b
        h = act(out)
    dense = row[k:k + 160].reshape(16, 10)
    return h.mean(axis=(1, 2)) @ dense + row[k + 160:k + 170]


@pytest.mark.parametrize("with_layout", [True, False])
def test_small_cnn_zoo_import_round_trip(tmp_path, with_layout):
    rows = np.random.default_rng(0).normal(0, 0.3, (6, 4970))
    write_release(tmp_path / "release", rows, with_layout)
    zoo = import_small_cnn_zoo(tmp_path / "release", tmp_path / "cache", "tiny")
    assert zoo.weights.shape == (3, 4970) and zoo.function is None and zoo.manifest["n_probe"] == 0
    np.testing.assert_allclose(zoo.targets["test_acc"], [0.1, 0.3, 0.5])  # the final checkpoints
    assert list(zoo.configs["activation"]) == ["relu", "tanh", "relu"]
    x = np.random.default_rng(1).uniform(-1, 1, (4, 1, 28, 28))
    for i, act in enumerate([lambda z: np.maximum(z, 0), np.tanh, lambda z: np.maximum(z, 0)]):
        ours = cz.forward(torch.as_tensor(np.array(zoo.weights[i]), dtype=torch.float64), torch.as_tensor(x),
                          str(zoo.configs["activation"][i]))
        np.testing.assert_allclose(ours.numpy(), keras_forward(rows[2 * i + 1].astype(np.float32), x, act),
                                   rtol=1e-4, atol=1e-5)
    assert cz.open_cnn_zoo(zoo.path).manifest["imported"] == "small-cnn-zoo"


def test_prepare_images_grays_rgb_as_the_channel_mean_in_minus_one_one():
    x = np.array([[[[0]], [[255]], [[51]]]], dtype=np.uint8)
    assert torch.allclose(cz.prepare_images(x), torch.tensor([[[[102 / 127.5 - 1]]]]))
    assert F.interpolate is not None


@pytest.mark.parametrize("size", [16, 32])
def test_every_batching_method_equals_each_member_alone_with_its_dropout(size):
    """grouped, bmm and taps (channels-first) give each member the logits of the plain forward pass
    with that member's own dropout masks (dropout_keep), whatever the layout the masks are laid on."""
    spec = cz.CnnSpec(image_size=size)
    k, b = 5, 4
    cfg = cz.sample_configs(k, 1)
    cfg["dropout"] = np.array([0.0, 0.3, 0.5, 0.7, 0.1])
    cfg["activation"] = np.array(["relu", "tanh", "relu", "tanh", "relu"])
    theta = cz.init_members(cfg, spec, torch.float64)
    x = torch.randn(k, b, 1, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    relu = torch.as_tensor(cfg["activation"] == "relu")
    rate, seeds = torch.as_tensor(cfg["dropout"]), torch.as_tensor(cfg["seed"])
    drop = cz.Dropout.at_step(seeds, torch.full((k,), 3), rate, 3, torch.float64)
    shapes = [(b, c, s, s) for c, s in zip(spec.channels, spec.feature_sizes)]
    ref = torch.stack([
        cz.forward(theta[i], x[i], str(cfg["activation"][i]), spec,
                   [cz.dropout_keep(seeds[i:i + 1], torch.tensor([3]), j, shp, rate[i:i + 1])[0]
                    for j, shp in enumerate(shapes)], float(cfg["dropout"][i]))
        for i in range(k)])
    for method in cz.METHODS:
        torch.testing.assert_close(cz.batched_logits(theta, x, spec, relu, drop, method), ref, rtol=0, atol=1e-12)
    # dropout is really applied: without it the logits differ
    assert not torch.allclose(cz.batched_logits(theta, x, spec, relu, None, "taps"), ref)


def test_taps_training_equals_grouped_training():
    data = tiny_data()
    cfg = cz.sample_configs(3, 7)
    recipe = {**RECIPE, "epochs": 2}
    a = cz.train_members(cfg, data, SPEC, recipe, "grouped")
    b = cz.train_members(cfg, data, SPEC, recipe, "taps")
    for key in ("weights", "function", "test_acc"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-9)


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile needs a C compiler")
def test_compiled_activation_and_dropout_equal_eager():
    z = torch.randn(3, 4, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    relu = torch.tensor([True, False, True]).view(3, 1, 1, 1, 1)
    key = torch.tensor([11, 12, 13]).view(3, 1, 1, 1, 1)
    thresh = (torch.tensor([0.2, 0.5, 0.0], dtype=torch.float64) * 2.0**32).to(torch.int64).view(3, 1, 1, 1, 1)
    scale = (1 / (1 - torch.tensor([0.2, 0.5, 0.0], dtype=torch.float64))).view(3, 1, 1, 1, 1)
    pos = torch.arange(4 * 2 * 25).view(1, 4, 2, 5, 5)
    eager = cz.act_dropout(z, relu, key, thresh, scale, pos)
    (g_eager,) = torch.autograd.grad(eager.square().sum(), z)
    fused = cz.unit_fn(True)(z, relu, key, thresh, scale, pos)
    (g_fused,) = torch.autograd.grad(fused.square().sum(), z)
    torch.testing.assert_close(fused, eager)
    torch.testing.assert_close(g_fused, g_eager)
    assert torch.equal(eager[2], torch.relu(z[2]))  # rate 0 keeps every unit, unscaled
    dropped = eager[1] == 0  # tanh is never exactly 0 here: zeros are dropped units, the rest scaled by 2
    assert 0.3 < dropped.float().mean() < 0.7
    torch.testing.assert_close(eager[1][~dropped], 2 * torch.tanh(z[1][~dropped]))


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile needs a C compiler")
def test_compiled_activation_and_dropout_compiles_once_for_every_chunk_and_layer_shape():
    """Chunks differ in size and layers in map size: one shape-generic kernel serves them all (a
    kernel per shape hit torch's recompile limit on the GPU zoo and fell back to eager mid-build)."""
    from torch._dynamo.utils import counters

    unit = cz.unit_fn(True)
    before = counters["frames"]["total"]
    for k in (3, 4, 5, 7, 9, 11):
        for c, s in ((4, 5), (4, 3), (2, 1)):
            z = torch.randn(k, c, 2, s, s)
            ones = (k, 1, 1, 1, 1)
            out = unit(z, (torch.arange(k) % 2 == 0).view(ones), torch.arange(k).view(ones),
                       torch.full(ones, 2**31), torch.full(ones, 2.0), torch.arange(c * 2 * s * s).view(1, c, 2, s, s))
            assert out.shape == z.shape
    assert counters["frames"]["total"] - before <= 2  # size-1 maps get their own graph (torch specialises 0 and 1)


def test_chunks_never_mix_train_fractions_and_cover_every_row_once():
    cfg = cz.sample_configs(1000, 4)
    chunks = cz.chunk_rows(cfg, 90)
    assert np.array_equal(np.sort(np.concatenate(chunks)), np.arange(1000))
    assert all(len(set(cfg["train_fraction"][r])) == 1 and len(r) <= 90 for r in chunks)
    for f in cz.TRAIN_FRACTIONS:  # each fraction in the fewest chunks, of sizes one apart at most
        sizes = [len(r) for r in chunks if cfg["train_fraction"][r[0]] == f]
        assert len(sizes) == -(-int((cfg["train_fraction"] == f).sum()) // 90) and max(sizes) - min(sizes) <= 1


def test_checkpoint_at_epoch_one_equals_a_zoo_trained_one_epoch(tmp_path):
    """A member's randomness depends only on its seed and step, so its weights after epoch 1 of a
    2-epoch run are exactly those of a 1-epoch run; the checkpoint is sealed, listed and reopened."""
    x, y = fake_images(96, 0)
    tx, ty = fake_images(40, 1)
    kw = dict(n=5, seed=3, device="cpu")
    two = cz.build_cnn_zoo(tmp_path / "a", "toy", x, y, tx, ty, recipe={**RECIPE, "epochs": 2,
                                                                       "checkpoint_epochs": [1]}, **kw)
    one = cz.build_cnn_zoo(tmp_path / "b", "toy", x, y, tx, ty, recipe={**RECIPE, "epochs": 1}, **kw)
    assert list(two.checkpoints) == [1] and one.checkpoints == {}
    np.testing.assert_array_equal(np.asarray(two.checkpoints[1]), np.asarray(one.weights))
    assert not np.array_equal(np.asarray(two.weights), np.asarray(one.weights))
    assert "weights_epoch1.npy" in two.manifest["files"]
    with pytest.raises(cz.WsbenchError, match=r"checkpoint_epochs=\[3\].*between 1 and epochs=2"):
        cz.check_recipe({"epochs": 2, "checkpoint_epochs": [3]})


@pytest.mark.parametrize("method", ["grouped", "taps"])
def test_bfloat16_recipe_is_mixed_precision_close_to_float32(method):
    """dtype=bfloat16 runs each step's forward in bf16 but keeps float32 master weights, updates and
    evaluation: the weights stay float32, differ from the float32 run (the recipe is not ignored), stay
    close to it after two epochs, and the same recipe gives the same bits twice."""
    data = tiny_data(torch.float32)
    cfg = cz.sample_configs(4, 9)
    cfg["optimizer"] = np.array(["sgd", "adam", "rmsprop", "adam"])
    cfg["lr"] = np.array([1e-2, 1e-3, 1e-3, 3e-3])  # moderate rates, so the runs do not diverge
    full = cz.train_members(cfg, data, SPEC, {**RECIPE, "epochs": 2}, method)
    half = cz.train_members(cfg, data, SPEC, {**RECIPE, "epochs": 2, "dtype": "bfloat16"}, method)
    again = cz.train_members(cfg, data, SPEC, {**RECIPE, "epochs": 2, "dtype": "bfloat16"}, method)
    assert half["weights"].dtype == np.float32
    np.testing.assert_array_equal(half["weights"], again["weights"])
    assert not np.array_equal(half["weights"], full["weights"])
    rel = np.linalg.norm(half["weights"] - full["weights"], axis=1) / np.linalg.norm(full["weights"], axis=1)
    assert rel.max() < 0.05, rel
    np.testing.assert_allclose(half["test_acc"], full["test_acc"], atol=0.1)


def test_recipe_dtype_names_the_choices():
    with pytest.raises(cz.WsbenchError, match="recipe dtype 'float16': choose one of float32, float64, bfloat16"):
        cz.check_recipe({"dtype": "float16"})
