"""The Ray executor on a local 2-CPU cluster: one task per cell, workers write to the shared root."""
import os
import subprocess
import sys

import pyarrow.dataset as pads
import pytest
from conftest import install_crashing_plugin

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


# An editable install finds wsbench through a finder that runs after sys.path's (setuptools adds it to
# sys.meta_path); this sitecustomize does the same for the source tree under test.
_EDITABLE_FINDER = """
import importlib.machinery, sys
ROOTS = {roots!r}

class _Editable:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in ROOTS:
            return importlib.machinery.PathFinder.find_spec(name, [ROOTS[name]])
        return None

# After sys.path's own finder, as an editable install's is (and before any other editable wsbench installed).
sys.meta_path.insert(sys.meta_path.index(importlib.machinery.PathFinder) + 1, _Editable)
"""


def test_ray_workers_import_the_installed_wsbench_not_a_wsbench_folder_in_the_working_directory(tmp_path,
                                                                                                 shapes_task):
    """Issue #14 item 8: started from a folder holding a ``wsbench/`` checkout, Ray workers imported that
    folder (Ray puts the driver's working directory first on their sys.path) and every cell failed with
    ``cannot import name '__version__'``."""
    import wsbench
    import wsbench_plugins
    site = tmp_path / "site"
    site.mkdir()
    roots = {"wsbench": str(os.path.dirname(os.path.dirname(wsbench.__file__))),
             "wsbench_plugins": str(os.path.dirname(os.path.dirname(wsbench_plugins.__file__)))}
    (site / "sitecustomize.py").write_text(_EDITABLE_FINDER.format(roots=roots))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "wsbench_cli.py").write_text("from wsbench.cli import main\nmain()\n")
    work = tmp_path / "work"
    (work / "wsbench" / "harness").mkdir(parents=True)  # a checkout of the repository, named like the package
    (work / "wsbench" / "README.md").write_text("a checkout\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    args = [sys.executable, str(tmp_path / "bin" / "wsbench_cli.py"), "grid", "--arch", "mlp", "--seeds", "1",
            "--limit", "120", "--epochs", "1", "--cache-dir", str(shapes_task.zoo.path.parent.parent),
            "--out", "R", "--executor", "ray"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=work, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "grid: 1 finished" in res.stdout
    assert "__version__" not in res.stderr and "Traceback" not in res.stderr




def test_a_crashed_ray_worker_leaves_its_cell_failed_and_no_claim_behind(tmp_path, shapes_task, monkeypatch):
    """Issue #14 item 8: a Ray worker that died mid-cell left its claim in ``.claims/``."""
    import ray

    from wsbench.executors import RayExecutor
    from wsbench.grid import run_grid
    from wsbench.plugins import load_registry
    from wsbench.runner import Cell, Runner, Settings
    from wsbench.store import Store
    install_crashing_plugin(tmp_path, monkeypatch)
    settings = Settings(out=tmp_path / "R", limit=120, cache_dir=shapes_task.zoo.path.parent.parent,
                        overrides={"epochs": 1})
    runner = Runner(load_registry(strict=True), settings)
    ex = RayExecutor(runner, num_cpus=2)
    try:
        outcomes = run_grid([Cell("shapes", "crash", 0), Cell("shapes", "mlp", 0)], runner, ex)
    finally:
        ex.close()
    assert not ray.is_initialized()
    assert [o.status for o in outcomes] == ["failed", "finished"]
    rows = {r["arch"]: r for r in Store(tmp_path / "R").runs()}
    assert rows["crash"]["status"] == "failed"
    assert not (tmp_path / "R" / ".claims").exists() or not list((tmp_path / "R" / ".claims").iterdir())
