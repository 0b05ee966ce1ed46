"""Zoos of networks with a scalar target: scores, training, storage, views and the models that read them."""
import itertools
import json
import math

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch
from conftest import toy_registry

from wsbench import WsbenchError, flatten, tensor_shapes, unflatten
from wsbench.grid import Cell
from wsbench.runner import Runner, Settings
from wsbench.scores import SCORES, TARGET_SCORES, kendall_tau, mse, primary, r2


def tau_reference(x, y) -> float:
    """Kendall's tau-b by its definition, pair by pair."""
    s = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        s += a * b
        tx += a == 0
        ty += b == 0
    n0 = len(x) * (len(x) - 1) / 2
    return s / math.sqrt((n0 - tx) * (n0 - ty))


# Scores ---------------------------------------------------------------------------------------------

def test_kendall_tau_closed_forms():
    # 6 pairs, one discordant (2, 3 swapped): (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    x = np.arange(10.0)
    assert kendall_tau(x, x) == pytest.approx(1.0) and kendall_tau(x, -x) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1.0], [2.0])) and math.isnan(kendall_tau(np.ones(5), x[:5]))
    with pytest.raises(ValueError, match="3 values against 2"):
        kendall_tau([1, 2, 3], [1, 2])


@pytest.mark.parametrize("seed", range(4))
def test_kendall_tau_matches_the_definition_with_ties_and_chunks(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 40).astype(float)  # many ties
    assert kendall_tau(x, y, chunk=7) == pytest.approx(tau_reference(x, y), abs=1e-12)
    # Invariant under strictly increasing maps of either side.
    assert kendall_tau(np.exp(x), y ** 3) == pytest.approx(kendall_tau(x, y), abs=1e-12)


def test_r2_and_mse_closed_forms():
    y = np.array([0.1, 0.4, 0.3, 0.9])
    assert r2(y, y) == 1.0 and r2(np.full(4, y.mean()), y) == pytest.approx(0.0)
    assert mse(y + 0.1, y) == pytest.approx(0.01)
    assert r2(y + 0.1, y) == pytest.approx(1 - 0.04 / ((y - y.mean()) ** 2).sum())
    assert math.isnan(r2(y, np.ones(4)))


def test_every_target_has_a_primary_score_with_a_direction():
    assert primary("class").name == "accuracy" and primary("scalar").name == "kendall_tau"
    assert not SCORES["mse"].higher_is_better and SCORES["kendall_tau"].range == (-1.0, 1.0)
    assert set(TARGET_SCORES) == {"class", "scalar"}


# Runs on a zoo of networks ------------------------------------------------------------------------

@pytest.fixture
def toy_runner(tmp_path):
    return Runner(toy_registry(), Settings(out=tmp_path / "r", device="cpu", overrides={"epochs": 4}))


def test_a_scalar_run_stores_its_scores_and_predictions(toy_runner, tmp_path):
    row = toy_runner.run(Cell("toy-zoo", "fn-mlp", 0))
    assert row["target"] == "scalar" and row["score"] == "kendall_tau" and row["test_acc"] is None
    scores = json.loads(row["test_scores"])
    assert list(scores) == ["kendall_tau", "r2", "mse"] and scores["kendall_tau"] == row["test_score"]
    preds = pads.dataset(tmp_path / "r" / "predictions", partitioning="hive").to_table().to_pylist()
    assert len(preds) == 30 and all(p["label"] is None and p["pred"] is None for p in preds)
    ids = {p["sample_id"] for p in preds}
    assert min(ids) >= 1000  # the zoo's own network ids
    t = np.array([p["target"] for p in preds])
    p = np.array([p["prediction"] for p in preds])
    assert kendall_tau(p, t) == pytest.approx(row["test_score"]) and mse(p, t) == pytest.approx(scores["mse"])
    assert row["test_score"] > 0.3  # the function view carries the target: the model learns it


def test_same_seed_same_scores_and_the_limit_trims_each_split(toy_runner, tmp_path):
    a = toy_runner.run(Cell("toy-zoo", "flat-mlp", 0))
    other = Runner(toy_registry(), Settings(out=tmp_path / "r2", device="cpu", overrides={"epochs": 4}))
    assert other.run(Cell("toy-zoo", "flat-mlp", 0))["test_scores"] == a["test_scores"]
    limited = Runner(toy_registry(), Settings(out=tmp_path / "r3", device="cpu", limit=10, overrides={"epochs": 1}))
    row = limited.run(Cell("toy-zoo", "flat-mlp", 0))
    assert (row["n_train"], row["n_val"], row["n_test"]) == (10, 10, 10)


def test_an_architecture_of_another_view_is_refused_before_any_work(toy_runner):
    with pytest.raises(WsbenchError) as err:
        toy_runner.validate([Cell("toy-zoo", "mlp", 0)])
    msg = str(err.value)
    fits = msg.split("can run on it: ")[1].split(", ")
    assert "'images' view" in msg and "weights, function" in msg and "fn-mlp" in fits and "mlp" not in fits
    assert not toy_runner._tasks  # nothing was built


def test_a_recipe_key_the_zoo_does_not_have_is_an_error_naming_its_keys(tmp_path):
    runner = Runner(toy_registry(), Settings(out=tmp_path, device="cpu", recipe={"zoo_sise": 5}))
    with pytest.raises(WsbenchError, match="zoo_sise: not a recipe key of dataset 'toy-zoo'; its keys: zoo_size"):
        runner.validate([Cell("toy-zoo", "flat-mlp", 0)])


def test_cli_refuses_a_view_mismatch_in_one_line_before_building_a_zoo(tmp_path, capsys):
    from wsbench.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--arch", "mlp", "--dataset", "cnn-mnist", "--results", str(tmp_path),
              "--data-dir", str(tmp_path / "nodata")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "reads the 'images' view, which dataset 'cnn-mnist' does not offer" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nodata").exists()


# Models on conv weights -------------------------------------------------------------------------------

class TinyConvSpec:
    """Two 3x3 conv layers (1 -> 3 -> 4 channels) and a dense layer 4 -> 2, in the (W shape, b shape) form."""

    layer_shapes = (((3, 1, 3, 3), (3,)), ((4, 3, 3, 3), (4,)), ((2, 4), (2,)))
    num_params = 3 * 9 + 3 + 4 * 3 * 9 + 4 + 8 + 2


def test_unflatten_reads_conv_kernels_and_flatten_inverts_it():
    x = torch.randn(5, TinyConvSpec.num_params)
    params = unflatten(x, TinyConvSpec)
    assert [tuple(w.shape[1:]) for w, _ in params] == [w for w, _ in tensor_shapes(TinyConvSpec)]
    assert params[1][0][2, 3, 1, 2, 0] == x[2, 30 + 3 * 27 + 1 * 9 + 2 * 3 + 0]  # W2[3, 1, 2, 0] of row 2
    assert torch.equal(flatten(params), x)


def _permute_hidden_channel_pair(x: torch.Tensor, spec, layer: int, perm: torch.Tensor) -> torch.Tensor:
    """Permute output channels of ``layer`` and, consistently, the input channels of ``layer + 1``."""
    params = [(w.clone(), b.clone()) for w, b in unflatten(x, spec)]
    w, b = params[layer]
    params[layer] = (w[:, perm], b[:, perm])
    w2, b2 = params[layer + 1]
    params[layer + 1] = (w2[:, :, perm], b2)
    return flatten(params)


@pytest.mark.parametrize("arch", ["nfn-np", "weight-stats", "flat-mlp"])
def test_weight_models_build_on_conv_weights(arch):
    from wsbench import TaskInfo
    info = TaskInfo(dataset="t", num_classes=1, image_shape=(), inr=None, network=TinyConvSpec, target="scalar",
                    views=("weights",), weight_mean=np.zeros(TinyConvSpec.num_params, np.float32),
                    weight_std=np.ones(TinyConvSpec.num_params, np.float32))
    spec = toy_registry().architecture(arch)
    from wsbench.config import resolve
    model = spec.build(info, resolve(spec, "t", {})).double().eval()
    x = torch.randn(6, TinyConvSpec.num_params, dtype=torch.float64)
    out, layers = model(x)
    assert out.shape == (6, 1) and all(v.shape[0] == 6 for v in layers.values())
    if arch in ("nfn-np", "weight-stats"):  # invariant to permuting hidden channels, as a CNN's function is
        perm = torch.tensor([2, 0, 1])
        y = _permute_hidden_channel_pair(x, TinyConvSpec, 0, perm)
        assert not torch.equal(x, y)
        assert torch.allclose(model(y)[0], out, atol=1e-10)


def test_weight_stats_features_are_the_per_tensor_statistics():
    from wsbench_plugins.mlp import WeightStats
    model = WeightStats(TinyConvSpec, [8], 1)
    x = torch.randn(3, TinyConvSpec.num_params)
    feats = model.features(x)
    assert feats.shape == (3, 6 * 7)
    w1 = x[1, :27].numpy()  # conv1's kernel of row 1
    want = [w1.mean(), w1.var(), *np.quantile(w1, [0, 0.25, 0.5, 0.75, 1.0])]
    assert np.allclose(feats[1, :7].numpy(), want, atol=1e-6)
    # transform=asinh squashes the same statistics: asinh(x / 1e-3), monotone, so their order is kept
    squashed = WeightStats(TinyConvSpec, [8], 1, transform="asinh").features(x)
    assert np.allclose(squashed[1, :7].numpy(), np.arcsinh(np.asarray(want) / 1e-3), rtol=1e-5)


def test_weight_stats_refuses_an_unknown_transform_naming_the_known_ones(capsys):
    from wsbench.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--arch", "weight-stats", "--dataset", "cnn-mnist", "--set", "transform=log"])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and "transform" in err and "none" in err and "asinh" in err
    assert "Traceback" not in err


def test_plugins_json_lists_each_datasets_target_views_and_recipes(capsys):
    from wsbench.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["plugins", "--json"])
    assert exit_.value.code in (0, None)
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    cnn = rows["cnn-cifar10gs"]
    assert cnn["target"] == "scalar" and cnn["views"] == ["weights", "function"]
    assert cnn["zoo_recipes"]["cpu"]["zoo_size"] == 1000 and cnn["zoo_recipes"]["cuda"]["zoo_size"] == 30000
    assert rows["mnist"]["target"] == "class" and rows["mnist"]["views"] == ["weights", "images"]
    assert "inr_recipe" in rows["mnist"] and rows["fn-mlp"]["view"] == "function"


def test_a_runs_score_reads_as_one_phrase():
    from wsbench.scores import row_text
    assert row_text({"score": "accuracy", "test_score": 0.5}) == "test accuracy 50.00%"
    assert row_text({"test_acc": 0.25}) == "test accuracy 25.00%"  # rows stored before score columns
    assert row_text({"score": "kendall_tau", "test_score": 0.71}) == "test Kendall's tau 0.710"
    assert row_text({"score": "mse", "test_score": None}) == ""


@pytest.mark.parametrize("args, needle", [
    (["--recipe", "zoo_size=abc"], "'zoo_size' = 'abc' is not valid; expected an integer >= 3"),
    (["--recipe", "epochs=0"], "'epochs' = 0 is not valid; expected an integer >= 1"),
    (["--recipe", "train_subset=0"], "'train_subset' = 0 is not valid"),
    (["--recipe", "dtype=float16"], "expected one of 'float32', 'float64'"),
    (["--recipe", "zoo_sise=5"], "zoo_sise: not a recipe key of dataset 'cnn-mnist'"),
    (["--limit", "0"], "--limit 0: give a positive number"),
])
def test_a_bad_cnn_zoo_recipe_fails_in_one_line_before_any_work(tmp_path, capsys, args, needle):
    from wsbench.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["zoo", "build", "--dataset", "cnn-mnist", "--data-dir", str(tmp_path / "nodata"),
              "--cache-dir", str(tmp_path / "cache"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "cache" / "zoos").exists() and not (tmp_path / "nodata").exists()


def test_a_grid_over_zoos_of_different_kinds_runs_what_applies_and_names_the_rest(tmp_path, capsys):
    from wsbench.cli import main
    from wsbench.grid import applicable, grid_cells
    reg = toy_registry()
    cells, left_out = applicable(grid_cells(["toy-zoo", "shapes"], ["fn-mlp", "mlp"], [0]), reg)
    assert cells == [Cell("toy-zoo", "fn-mlp", 0), Cell("shapes", "mlp", 0)]
    assert left_out == ["mlp reads the 'images' view, which toy-zoo does not offer (weights, function)",
                        "fn-mlp reads the 'function' view, which shapes does not offer (weights, images)"]
    with pytest.raises(SystemExit) as exit_:  # nothing applies: a one-line error before any work
        main(["grid", "--arch", "mlp", "--dataset", "cnn-mnist", "--results", str(tmp_path), "--seeds", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no architecture of this grid applies" in err and len(err.splitlines()) == 1


def test_a_saved_scalar_model_reloads_to_its_stored_scores(tmp_path):
    from wsbench.models import evaluate
    runner = Runner(toy_registry(), Settings(out=tmp_path / "r", device="cpu", save_models=True,
                                             overrides={"epochs": 3}))
    row = runner.run(Cell("toy-zoo", "weight-stats", 0))
    ev = evaluate(tmp_path / "r", row["run_id"], "test", registry=toy_registry(), device="cpu")
    assert ev.scalar and math.isnan(ev.accuracy)
    assert ev.scores["kendall_tau"] == pytest.approx(row["test_score"], abs=1e-12)
    assert ev.scores == pytest.approx(json.loads(row["test_scores"]), rel=1e-6)
    val = evaluate(tmp_path / "r", row["run_id"], "val", registry=toy_registry(), device="cpu")
    assert val.scores["kendall_tau"] == pytest.approx(row["val_score"], abs=1e-9)
