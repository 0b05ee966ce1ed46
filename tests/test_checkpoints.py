"""Training state kept while a run trains (resume after a kill, SIGKILL included), saved models
(safetensors) that reload to the stored numbers, and per-epoch tracking to TensorBoard."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from wsbench.models import evaluate, find_model, read_model
from wsbench.plugins import load_registry
from wsbench.runner import Cell, Runner, Settings
from wsbench.store import Store

LIMIT = 120  # the session's shapes_task (conftest)
# Columns of a runs row that a resumed run must share with an uninterrupted one, value for value.
SAME = ("run_id", "seed", "status", "test_acc", "val_acc", "best_epoch", "epochs", "n_train", "n_val", "n_test",
        "config", "history", "layers", "zoo_key", "inr_psnr_mean")


def _runner(out: Path, shapes_task, **kw) -> Runner:
    runner = Runner(load_registry(), Settings(out=out, limit=LIMIT, device="cpu", **kw))
    runner._tasks["shapes"] = shapes_task  # the session's task: its zoo is fitted once
    return runner


def _stored(out: Path, cell: Cell, rid: str) -> tuple[dict, list, dict]:
    store = Store(out)
    row = pq.read_table(store.path("runs", rid, dataset=cell.dataset, arch=cell.arch)).to_pylist()[0]
    preds = pq.read_table(store.path("predictions", rid, dataset=cell.dataset, arch=cell.arch)).to_pylist()
    _, reps = store.representations(cell.dataset, cell.arch, rid)
    return row, preds, reps


def _assert_same_run(a: Path, b: Path, cell: Cell, rid: str) -> None:
    row_a, preds_a, reps_a = _stored(a, cell, rid)
    row_b, preds_b, reps_b = _stored(b, cell, rid)
    assert {k: row_a[k] for k in SAME} == {k: row_b[k] for k in SAME}
    assert preds_a == preds_b  # labels, predictions and confidences, bit for bit
    assert list(reps_a) == list(reps_b)
    for k in reps_a:
        assert np.array_equal(reps_a[k], reps_b[k]), k


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from wsbench.plugins import load_registry
    from wsbench.runner import Cell, Runner, Settings
    out, cache, threads, epochs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    runner = Runner(load_registry(), Settings(out=out, cache_dir=cache, limit=120, device="cpu",
                                              overrides={"epochs": epochs}))

    def on_epoch(epoch, total, entry):
        print(f"epoch {epoch}", flush=True)  # the epoch's training state is on disk by now
        time.sleep(0.5)

    runner.run(Cell("shapes", "gmn", 0), on_epoch=on_epoch)
""")


def test_a_run_killed_mid_training_resumes_and_matches_an_uninterrupted_run(tmp_path, shapes_task):
    """SIGKILL after epoch 3 of 8; the rerun continues after the last saved epoch (same run id, the dead
    process's claim taken over) and stores what an uninterrupted run stores, bit for bit."""
    cell, epochs = Cell("shapes", "gmn", 0), 8
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cache = shapes_task.zoo.path.parents[1]
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(killed), str(cache), str(torch.get_num_threads()),
                              str(epochs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=os.environ.copy())
    try:
        for line in child.stdout:
            if line.strip() == "epoch 3":
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, child.stderr.read()[-2000:]

    runner = _runner(killed, shapes_task, overrides={"epochs": epochs})
    _, rid = runner.config_for(cell)
    checkpoint = runner.checkpoint_path(rid)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] >= 3 and len(saved["history"]) == saved["epoch"]
    assert runner.claims.owner(rid) is not None  # the dead child's claim is still there
    assert Store(killed).run_status("shapes", "gmn", rid) is None

    seen = []
    row = runner.run(cell, on_epoch=lambda e, n, h: seen.append(e))
    assert row["status"] == "finished" and row["resumed_from"] == saved["epoch"]
    assert seen == list(range(saved["epoch"] + 1, epochs + 1))  # only the epochs left were trained
    assert not (killed / ".checkpoints").exists() and not (killed / ".claims").exists()

    reference = _runner(clean, shapes_task, overrides={"epochs": epochs}).run(cell)
    assert reference["resumed_from"] == 0 and reference["run_id"] == rid
    _assert_same_run(killed, clean, cell, rid)


def test_an_interrupted_run_keeps_its_state_and_a_failed_one_drops_it(tmp_path, shapes_task):
    cell = Cell("shapes", "mlp", 1)  # dropout: the global generator must be restored too
    out = tmp_path / "r"
    runner = _runner(out, shapes_task, overrides={"epochs": 6})
    _, rid = runner.config_for(cell)

    def stop(epoch, total, entry):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(cell, on_epoch=stop)
    assert torch.load(runner.checkpoint_path(rid), weights_only=True)["epoch"] == 2
    assert runner.run(cell)["resumed_from"] == 2
    _runner(tmp_path / "clean", shapes_task, overrides={"epochs": 6}).run(cell)
    _assert_same_run(out, tmp_path / "clean", cell, rid)

    # A checkpoint of another model under the same id (the code changed) is not loaded: training starts afresh.
    other = _runner(tmp_path / "o", shapes_task, overrides={"epochs": 2})
    _, rid2 = other.config_for(cell)
    path = other.checkpoint_path(rid2)
    path.parent.mkdir(parents=True)
    torch.save({"format": 1, "epoch": 1, "model": {"w": torch.zeros(3)}}, path)
    with pytest.warns(UserWarning, match="does not fit the model"):
        assert other.run(cell)["resumed_from"] == 0


def test_saved_models_reload_to_the_stored_accuracy_predictions_and_representations(tmp_path, shapes_task):
    out = tmp_path / "r"
    runner = _runner(out, shapes_task, save_models=True, overrides={"epochs": 3})
    cache = shapes_task.zoo.path.parents[1]
    for arch in ("gmn", "cnn"):  # cnn: BatchNorm statistics are part of the saved state
        cell = Cell("shapes", arch, 0)
        row = runner.run(cell)
        path = find_model(out, row["run_id"][:8])
        assert path == out / "models" / "dataset=shapes" / f"arch={arch}" / f"{row['run_id']}.safetensors"
        _, meta = read_model(path)
        assert meta["run_id"] == row["run_id"] and meta["arch"] == arch and meta["limit"] == LIMIT
        assert meta["config"] == json.loads(row["config"]) and meta["test_acc"] == row["test_acc"]
        assert json.loads(path.with_suffix(".json").read_text()) == meta

        ev = evaluate(out, row["run_id"], "test", cache_dir=cache, device="cpu", want_layers=True)
        assert ev.accuracy == row["test_acc"]
        _, preds, reps = _stored(out, cell, row["run_id"])
        order = np.argsort(ev.sample_ids)
        assert [p["sample_id"] for p in preds] == ev.sample_ids.tolist()
        assert [p["pred"] for p in preds] == ev.preds.tolist()
        assert [p["confidence"] for p in preds] == ev.confidence.astype(np.float32).tolist()
        for k, v in reps.items():
            assert np.array_equal(v, ev.layers[k][order]), k
        # The selected epoch's validation accuracy is the stored one: the weights are those of that epoch.
        val = evaluate(out, row["run_id"], "val", cache_dir=cache, device="cpu").accuracy
        assert val == pytest.approx(row["val_acc"], abs=1e-6)  # stored as a float32 mean


def test_model_eval_command_prints_accuracy_and_writes_representations(tmp_path, shapes_task):
    out = tmp_path / "r"
    row = _runner(out, shapes_task, save_models=True, overrides={"epochs": 2}).run(Cell("shapes", "flat-mlp", 0))
    cache = shapes_task.zoo.path.parents[1]
    reps = tmp_path / "train-reps.parquet"
    res = subprocess.run([sys.executable, "-m", "wsbench", "model", "eval", row["run_id"][:10], "--results", str(out),
                          "--cache-dir", str(cache), "--device", "cpu", "--split", "train", "--representations",
                          str(reps), "--json"], capture_output=True, text=True, env=os.environ.copy())
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["split"] == "train" and got["n"] == LIMIT and got["stored_test_acc"] == row["test_acc"]
    table = pq.read_table(reps)
    assert set(table.column("layer").to_pylist()) == {"fc1", "fc2", "fc3", "logits"}
    assert table.num_rows == 4 * LIMIT
    res = subprocess.run([sys.executable, "-m", "wsbench", "model", "eval", "ffff", "--results", str(out)],
                         capture_output=True, text=True, env=os.environ.copy())
    assert res.returncode == 2 and "no saved model matches run id 'ffff'" in res.stderr


def test_tensorboard_tracking_writes_every_epoch(tmp_path, shapes_task):
    pytest.importorskip("tensorboard", reason="tensorboard is in the test extra; install it to run this test")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    row = _runner(out, shapes_task, track="tensorboard", overrides={"epochs": 3}).run(Cell("shapes", "mlp", 0))
    logdir = out / "tensorboard" / "shapes" / "mlp" / f"seed0-{row['run_id']}"
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert {"train/loss", "val/acc", "lr", "epoch_seconds", "test/acc"} <= set(acc.Tags()["scalars"])
    history = json.loads(row["history"])
    assert [e.step for e in acc.Scalars("val/acc")] == [1, 2, 3]
    assert [e.value for e in acc.Scalars("val/acc")] == pytest.approx([h["val_acc"] for h in history])
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([h["train_loss"] for h in history])
    assert acc.Scalars("test/acc")[0].value == pytest.approx(row["test_acc"])

    custom = tmp_path / "tb"
    _runner(tmp_path / "r2", shapes_task, track=f"tensorboard:{custom}", overrides={"epochs": 1}).run(
        Cell("shapes", "mlp", 0))
    assert list((custom / "shapes" / "mlp").glob("seed0-*/events.out.tfevents.*"))
