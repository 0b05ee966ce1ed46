"""The Ray executor on a local 2-CPU cluster: one task per cell, workers write to the shared root."""
import os
import subprocess
import sys

import pyarrow.dataset as pads
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'wsbench[ray]'); the Ray executor is untested")


def test_grid_on_a_local_ray_cluster_stores_every_cell_once_and_resumes(tmp_path, shapes_task):
    out = tmp_path / "R"
    # The session's limited shapes task (conftest) has its zoo cached already: workers load it.
    args = [sys.executable, "-m", "wsbench", "grid", "--arch", "flat-mlp", "--arch", "mlp", "--seeds", "2",
            "--limit", "120", "--epochs", "2", "--cache-dir", str(shapes_task.zoo.path.parent.parent),
            "--out", str(out), "--executor", "ray"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "grid: 4 finished" in first.stdout
    runs = pads.dataset(out / "runs", partitioning="hive").to_table().to_pylist()
    assert len(runs) == len({r["run_id"] for r in runs}) == 4
    assert {r["status"] for r in runs} == {"finished"} and {r["arch"] for r in runs} == {"flat-mlp", "mlp"}
    preds = pads.dataset(out / "predictions", partitioning="hive").to_table()
    assert preds.num_rows == 4 * 120
    assert not (out / ".claims").exists()
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to train" in again.stderr and "grid: 4 skipped" in again.stdout


def test_ray_executor_runs_cells_in_workers_and_isolates_failures(tmp_path, shapes_task):
    """In-process: a NaN cell is stored as diverged by its worker and the others finish."""
    import ray

    from wsbench.executors import RayExecutor
    from wsbench.grid import run_grid
    from wsbench.plugins import load_registry
    from wsbench.runner import Cell, Runner, Settings
    from wsbench.store import Store
    settings = Settings(out=tmp_path / "R", limit=120, cache_dir=shapes_task.zoo.path.parent.parent,
                        overrides={"epochs": 2, "lr": 1e30})
    runner = Runner(load_registry(), settings)
    ex = RayExecutor(runner, num_cpus=2)
    try:
        events = []
        outcomes = run_grid([Cell("shapes", "mlp", 0), Cell("shapes", "flat-mlp", 0)], runner, ex,
                            on_event=events.append)
        assert ex.slots == 2 and ex.gpus == 0
        assert [o.status for o in outcomes] == ["diverged", "diverged"]
        starts = [e for e in events if e["type"] == "start"]
        assert len(starts) == 2 and all(not e["where"].endswith(f":{os.getpid()}") for e in starts)
        assert any(e["type"] == "epoch" for e in events)
    finally:
        ex.close()
    assert not ray.is_initialized()
    rows = Store(tmp_path / "R").runs()
    assert {r["status"] for r in rows} == {"diverged"} and all("NonFiniteLoss" in r["error"] for r in rows)
