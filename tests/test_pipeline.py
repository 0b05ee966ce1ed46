"""End to end on the built-in task: task alignment, training, store, grid resumption, CLI errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch

from wsbench.config import parse_overrides, resolve, run_id
from wsbench.errors import WsbenchError
from wsbench.plugins import load_registry
from wsbench.runner import Cell, Runner, Settings
from wsbench.siren import DEFAULT_RECIPE, psnr
from wsbench.store import Store
from wsbench.task import split_ids
from wsbench.train import train
from wsbench.weights import render


def test_splits_are_disjoint_seeded_and_cover_train():
    a = split_ids(100, 30, num_val=20, split_seed=0)
    b = split_ids(100, 30, num_val=20, split_seed=0)
    c = split_ids(100, 30, num_val=20, split_seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["val"], c["val"])
    assert len(a["val"]) == 20 and len(a["train"]) == 80
    assert np.array_equal(np.sort(np.concatenate([a["train"], a["val"]])), np.arange(100))
    assert np.array_equal(a["test"], 100 + np.arange(30))
    lim = split_ids(100, 30, num_val=20, split_seed=0, limit=5)
    assert [len(lim[k]) for k in ("train", "val", "test")] == [5, 5, 5]
    assert set(lim["train"]) <= set(a["train"]) and set(lim["val"]) <= set(a["val"])


def test_two_views_are_the_same_samples(shapes_task):
    """Each INR, rendered on the pixel grid, reproduces the image of its own row."""
    t = shapes_task
    _, h, w = t.info.image_shape
    rec = render(torch.from_numpy(np.array(t.weights)), t.info.inr, h, w)
    target = torch.from_numpy(t.images).float() / 127.5 - 1
    own = psnr(rec, target)
    shuffled = psnr(rec, target.roll(1, 0))
    assert own.mean() > 30 and (own > shuffled).all()
    assert np.allclose(own.numpy(), t.psnr, atol=1e-3)
    assert len(set(t.ids.tolist())) == len(t.ids)


def test_training_is_deterministic_and_selects_on_validation(shapes_task):
    reg = load_registry()
    arch = reg.architecture("mlp")
    config = resolve(arch, "shapes", {"epochs": 3})
    a = train(shapes_task, arch, config, seed=7, device=torch.device("cpu"))
    b = train(shapes_task, arch, config, seed=7, device=torch.device("cpu"))
    c = train(shapes_task, arch, config, seed=8, device=torch.device("cpu"))
    assert a.test_acc == b.test_acc and np.array_equal(a.preds, b.preds)
    assert all(np.array_equal(a.layers[k], b.layers[k]) for k in a.layers)
    assert not np.array_equal(a.layers["fc1"], c.layers["fc1"])
    assert a.val_acc == max(h["val_acc"] for h in a.history)
    assert a.history[a.best_epoch - 1]["val_acc"] == a.val_acc
    assert list(a.layers) == ["fc1", "fc2", "fc3", "logits"]
    n = len(shapes_task.splits["test"])
    assert all(v.shape[0] == n for v in a.layers.values())
    assert np.array_equal(a.test_ids, shapes_task.ids[shapes_task.splits["test"]])


def test_config_resolution_and_errors():
    arch = load_registry().architecture("mlp")
    cfg = resolve(arch, "shapes", parse_overrides(["lr=0.01", "hidden=[8,8]"]))
    assert cfg["lr"] == 0.01 and cfg["hidden"] == [8, 8]
    with pytest.raises(WsbenchError, match="unknown config key.*lrr.*known keys:.*lr"):
        resolve(arch, "shapes", {"lrr": 1})
    with pytest.raises(WsbenchError, match="not key=value"):
        parse_overrides(["lr"])
    assert run_id("shapes", "mlp", 0, cfg, None) != run_id("shapes", "mlp", 1, cfg, None)
    assert run_id("shapes", "mlp", 0, cfg, None) != run_id("shapes", "mlp", 0, cfg, 10)


def test_overrides_scoped_to_one_architecture(tmp_path):
    reg = load_registry()
    mlp, flat = reg.architecture("mlp"), reg.architecture("flat-mlp")
    sets = parse_overrides(["lr=0.01", "mlp.lr=0.02", "mlp.hidden=[8]"])
    assert resolve(mlp, "shapes", sets)["lr"] == 0.02 and resolve(mlp, "shapes", sets)["hidden"] == [8]
    assert resolve(flat, "shapes", sets)["lr"] == 0.01  # mlp's keys do not reach flat-mlp
    with pytest.raises(WsbenchError, match="unknown config key.*bogus.*'mlp'"):
        resolve(mlp, "shapes", {"mlp.bogus": 1})
    # A TOML config file's [ARCH] table is that architecture's overrides.
    f = tmp_path / "c.toml"
    f.write_text('lr = 0.01\n[mlp]\nlr = 0.03\n')
    assert parse_overrides([], f) == {"lr": 0.01, "mlp.lr": 0.03}
    assert resolve(mlp, "shapes", parse_overrides([], f))["lr"] == 0.03


def test_store_representations_round_trip(tmp_path, shapes_task):
    settings = Settings(out=tmp_path / "r", limit=120, overrides={"epochs": 1})
    runner = Runner(load_registry(), settings)
    runner._tasks["shapes"] = shapes_task
    row = runner.run(Cell("shapes", "flat-mlp", 0))
    store = Store(tmp_path / "r")
    ids, reps = store.representations("shapes", "flat-mlp", row["run_id"])
    config = runner.config_for(Cell("shapes", "flat-mlp", 0))[0]
    again = train(shapes_task, load_registry().architecture("flat-mlp"), config, 0, torch.device("cpu"))
    order = np.argsort(again.test_ids)
    assert np.array_equal(ids, again.test_ids[order])
    for k in again.layers:
        assert np.array_equal(reps[k], again.layers[k][order])
    preds = store.read("predictions").to_pylist()
    assert len(preds) == len(ids) and all(p["schema_version"] == 1 for p in preds)
    assert not [p for p in (tmp_path / "r").rglob("*") if p.name.startswith(".")]


def _wsbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "wsbench", *args], capture_output=True, text=True, cwd=cwd,
                          env=os.environ.copy())


def test_grid_rerun_trains_nothing_and_reads_as_hive(tmp_path):
    out = tmp_path / "R"
    args = ["grid", "--arch", "flat-mlp", "--arch", "mlp", "--dataset", "shapes", "--seeds", "3",
            "--limit", "60", "--epochs", "2", "--out", str(out)]
    first = _wsbench(*args)
    assert first.returncode == 0, first.stderr
    files = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    mtimes = {p: (out / p).stat().st_mtime_ns for p in files}
    second = _wsbench(*args)
    assert second.returncode == 0 and "nothing to train" in " ".join(second.stderr.split())
    assert sorted(p.relative_to(out) for p in out.rglob("*.parquet")) == files
    assert all((out / p).stat().st_mtime_ns == t for p, t in mtimes.items())
    table = pads.dataset(out / "runs", partitioning="hive").to_table()
    assert table.num_rows == 6
    rows = table.to_pylist()
    assert {(r["dataset"], r["arch"]) for r in rows} == {("shapes", "flat-mlp"), ("shapes", "mlp")}
    assert sorted(r["seed"] for r in rows) == [0, 0, 1, 1, 2, 2]
    for r in rows:
        assert r["status"] == "finished" and r["torch_version"] and r["wall_time_s"] > 0
        assert json.loads(r["config"])["epochs"] == 2

    sim = _wsbench("similarity", "--metric", "cka", "--out", str(out))
    assert sim.returncode == 0, sim.stderr
    board = _wsbench("leaderboard", "--format", "md", "--out", str(out))
    assert board.returncode == 0, board.stderr
    assert "| shapes |" in board.stdout and "flat-mlp" in board.stdout and "Cross-seed" in board.stdout


@pytest.mark.parametrize("args, needle", [
    (["run", "--arch", "nope"], "unknown architecture 'nope'; known architectures:"),
    (["run", "--arch", "mlp", "--dataset", "nope"], "unknown dataset 'nope'; known datasets:"),
    (["similarity", "--metric", "nope"], "unknown metric 'nope'; known metrics:"),
    (["grid", "--arch", "mlp", "--seeds", "x"], "--seeds 'x'"),
    (["run", "--arch", "mlp", "--set", "bogus=1"], "unknown config key(s) bogus"),
    (["run", "--arch", "mlp", "--recipe", "bogus=1"], "unknown INR recipe key 'bogus'; known keys:"),
    (["grid", "--arch", "mlp", "--recipe", "steps=0"], "INR recipe needs steps >= 1"),
    (["run", "--arch", "flat-mlp", "--set", "augment=crop-flip"],
     "augment 'crop-flip' does not apply to the weights view; known for weights: none, affine, affine-flip"),
    (["grid", "--arch", "mlp", "--set", "augment=affine"], "known for images: none, crop-flip"),
    (["grid", "--arch", "mlp", "--set", "gnm.probes=0"], "config override gnm.<key>: unknown architecture 'gnm'"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    res = _wsbench(*args, "--out", str(tmp_path / "r"))
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()


def test_recipe_override_fits_another_zoo_and_gives_runs_their_own_ids(tmp_path):
    reg = load_registry()
    cache = tmp_path / "cache"
    plain = Runner(reg, Settings(out=tmp_path / "r", limit=30, cache_dir=cache, overrides={"epochs": 1}))
    other = Runner(reg, Settings(out=tmp_path / "r", limit=30, cache_dir=cache, overrides={"epochs": 1},
                                 recipe={"steps": 20}))
    cell = Cell("shapes", "flat-mlp", 0)
    (c1, id1), (c2, id2) = plain.config_for(cell), other.config_for(cell)
    shapes_recipe = {**DEFAULT_RECIPE, **reg.dataset("shapes").inr_recipe}
    assert c1["inr_recipe"] == shapes_recipe and c2["inr_recipe"] == {**shapes_recipe, "steps": 20} and id1 != id2
    # Image models read no zoo: a recipe override neither changes their config nor their id.
    assert plain.config_for(Cell("shapes", "mlp", 0)) == other.config_for(Cell("shapes", "mlp", 0))
    t1, t2 = plain.task("shapes"), other.task("shapes")
    assert t1.zoo.path != t2.zoo.path and t2.zoo.manifest["recipe"]["steps"] == 20
    assert t1.zoo.manifest["recipe"]["steps"] == reg.dataset("shapes").inr_recipe["steps"]
    # Fewer fitting steps, same images: a worse fit of the very same samples.
    assert np.array_equal(t1.ids, t2.ids) and t2.psnr.mean() < t1.psnr.mean() - 1
    other.run(cell)
    (row,) = Store(tmp_path / "r").runs()
    assert row["run_id"] == id2 and json.loads(row["config"])["inr_recipe"]["steps"] == 20
    assert row["zoo_key"] == t2.zoo.manifest["key"] != t1.zoo.manifest["key"]
