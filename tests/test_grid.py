"""The grid at scale: failure isolation, claims, concurrent grids, SIGKILL resumption."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict

import pyarrow.dataset as pads
import pytest
import torch
from conftest import install_crashing_plugin
from torch import nn
from typer.testing import CliRunner

from wsbench import plugins as plugin_mod
from wsbench.claims import Claims
from wsbench.errors import WsbenchError
from wsbench.executors import LocalExecutor, ProcessExecutor, make_executor
from wsbench.grid import grid_cells, run_grid, summarize
from wsbench.hookspecs import hookimpl
from wsbench.plugins import load_registry
from wsbench.runner import Cell, Runner, Settings, failure_status
from wsbench.specs import ArchitectureSpec
from wsbench.store import Store
from wsbench.tables import run_rows
from wsbench.train import NonFiniteLoss

LIMIT = 120  # the session's shapes_task (conftest): its INR zoo is fitted once for every test


class _Tiny(nn.Module):
    """A linear model on pixels that can be told to fail in its forward pass."""

    def __init__(self, info, config):
        super().__init__()
        c, h, w = info.image_shape
        self.fc = nn.Linear(c * h * w, info.num_classes)
        self.mode = config["mode"]

    def forward(self, x):
        if self.mode == "boom":
            raise ValueError("boom in forward")
        if self.mode == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        if self.mode == "cpu-oom":
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        logits = self.fc(x.flatten(1))
        return logits, OrderedDict(logits=logits)


class _TestPlugin:
    @hookimpl
    def register_architectures(self, register):
        for mode in ("ok", "boom", "oom", "cpu-oom"):
            register(ArchitectureSpec(name=f"tiny-{mode}", view="images", build=_Tiny,
                                      description="test", defaults={"mode": mode, "epochs": 2}))


@pytest.fixture
def registry(monkeypatch):
    """Built-in plugins plus the throwaway ``tiny-*`` architectures, also for the CLI."""
    reg = load_registry(extra_plugins=[(_TestPlugin(), "wsbench-test", "0")])
    monkeypatch.setattr(plugin_mod, "_cached", reg)
    return reg


@pytest.fixture
def task(shapes_task):
    """The limited shapes task of the session; subprocesses reuse its zoo through --cache-dir."""
    assert len(shapes_task.splits["test"]) == LIMIT
    return shapes_task


def _cache_dir(task):
    return str(task.zoo.path.parent.parent)


def _runner(registry, out, task, **overrides):
    r = Runner(registry, Settings(out=out, limit=LIMIT, cache_dir=_cache_dir(task), overrides=overrides or None))
    r._tasks["shapes"] = task
    return r


def test_failure_status_classifies_nan_oom_and_errors():
    assert failure_status(NonFiniteLoss("nan")) == "diverged"
    assert failure_status(MemoryError()) == "oom"
    assert failure_status(torch.cuda.OutOfMemoryError("CUDA out of memory")) == "oom"
    assert failure_status(RuntimeError("DefaultCPUAllocator: can't allocate memory")) == "oom"
    assert failure_status(ValueError("x")) == "failed"


def test_failing_cells_are_stored_and_the_grid_goes_on(registry, tmp_path, task):
    runner = _runner(registry, tmp_path / "r", task)
    cells = [Cell("shapes", a, 0) for a in ("tiny-boom", "tiny-oom", "tiny-cpu-oom", "tiny-ok")]
    events = []
    outcomes = run_grid(cells, runner, LocalExecutor(runner), on_event=events.append)
    assert [o.status for o in outcomes] == ["failed", "oom", "oom", "finished"]
    assert summarize(outcomes) == {"failed": 1, "finished": 1, "oom": 2}
    rows = {r["arch"]: r for r in Store(tmp_path / "r").runs()}
    assert rows["tiny-boom"]["status"] == "failed" and rows["tiny-boom"]["error"] == "ValueError: boom in forward"
    assert "boom in forward" in rows["tiny-boom"]["traceback"] and "Traceback" in rows["tiny-boom"]["traceback"]
    assert rows["tiny-oom"]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert rows["tiny-ok"]["status"] == "finished" and rows["tiny-ok"]["test_acc"] >= 0
    # Failed cells have no predictions or representations, so similarity never sees them.
    assert {r["arch"] for r in Store(tmp_path / "r").read("predictions").to_pylist()} == {"tiny-ok"}
    ends = [e for e in events if e["type"] == "end"]
    assert [e["status"] for e in ends] == ["failed", "oom", "oom", "finished"]
    assert not (tmp_path / "r" / ".claims").exists()


def test_grid_cli_lists_failures_and_exits_nonzero(registry, tmp_path, task):
    from wsbench.cli import app
    args = ["grid", "--arch", "tiny-boom", "--arch", "tiny-ok", "--seeds", "2", "--limit", str(LIMIT),
            "--cache-dir", _cache_dir(task), "--out", str(tmp_path / "r")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "grid: 2 failed, 2 finished" in res.output
    assert "failed shapes/tiny-boom/seed 0: ValueError: boom in forward" in res.output
    assert "failed shapes/tiny-boom/seed 1" in res.output and "2 of 4 cells failed" in res.output
    # A rerun retries the failed cells only.
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "grid: 2 failed, 2 skipped" in res.output


def test_nan_loss_is_stored_as_diverged_and_the_grid_goes_on(registry, tmp_path, task):
    runner = _runner(registry, tmp_path / "r", task, lr=1e30, epochs=2)
    outcomes = run_grid([Cell("shapes", "mlp", 0), Cell("shapes", "flat-mlp", 0)], runner, LocalExecutor(runner))
    assert [o.status for o in outcomes] == ["diverged", "diverged"]
    rows = Store(tmp_path / "r").runs()
    assert {r["status"] for r in rows} == {"diverged"} and all("NonFiniteLoss: loss became nan" in r["error"]
                                                              for r in rows)
    good = _runner(registry, tmp_path / "r", task, epochs=1)
    assert [o.status for o in run_grid([Cell("shapes", "mlp", 0)], good, LocalExecutor(good))] == ["finished"]


def test_run_without_isolation_stores_then_raises(registry, tmp_path, task):
    runner = _runner(registry, tmp_path / "r", task)
    with pytest.raises(ValueError, match="boom"):
        runner.run(Cell("shapes", "tiny-boom", 0))
    assert Store(tmp_path / "r").runs()[0]["status"] == "failed"


# Claims ----------------------------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_claim(claims: Claims, run_id: str, **fields):
    claims.dir.mkdir(parents=True, exist_ok=True)
    claims.path(run_id).write_text(json.dumps({"run_id": run_id, "token": "t-other", **fields}))


def test_claim_is_exclusive_while_its_owner_lives(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    ca = a.acquire("r1")
    assert ca is not None and b.acquire("r1") is None
    assert b.holder("r1")["pid"] == os.getpid()
    a.release(ca)
    cb = b.acquire("r1")
    assert cb is not None and b.still_mine(cb) and not a.still_mine(ca)
    b.release(cb)
    assert not (tmp_path / ".claims").exists()


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    from wsbench.claims import host_key
    c = Claims(tmp_path)
    _write_claim(c, "r1", host=host_key(), pid=_dead_pid(), start=None)
    claim = c.acquire("r1")
    assert claim is not None and c.still_mine(claim)
    assert [p.name for p in c.dir.iterdir()] == ["r1.json"]  # the stale file was moved aside and removed


def test_a_claim_is_whole_the_moment_it_appears(tmp_path, monkeypatch):
    # A grid killed right after claiming must leave a claim naming its pid (taken over at once),
    # never an empty file (judged by age alone, which stalled the next grid for minutes).
    import wsbench.claims as claims_mod
    seen = []
    real_link = os.link

    def spy(src, dst):
        seen.append(json.loads(open(src).read()))
        return real_link(src, dst)
    monkeypatch.setattr(claims_mod.os, "link", spy)
    c = Claims(tmp_path)
    claim = c.acquire("r1")
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["token"] == claim.token
    assert Claims(tmp_path).acquire("r1") is None  # the no-clobber link refuses a second owner
    assert [p.name for p in c.dir.iterdir()] == ["r1.json"]  # no private files left behind
    c.release(claim)
    assert not (tmp_path / ".claims").exists()


def test_claim_from_another_host_goes_stale_only_after_silence(tmp_path):
    c = Claims(tmp_path, stale_after_s=60)
    _write_claim(c, "r1", host="elsewhere:boot", pid=1, start=None)
    assert c.acquire("r1") is None  # fresh: its owner may be alive on the other host
    old = time.time() - 120
    os.utime(c.path("r1"), (old, old))
    assert c.acquire("r1") is not None
    # A claim file left empty by an owner killed mid-write is judged by its age too.
    c.dir.joinpath("r2.json").write_text("")
    assert c.acquire("r2") is None
    os.utime(c.path("r2"), (old, old))
    assert c.acquire("r2") is not None


def test_heartbeat_keeps_a_held_claim_fresh(tmp_path):
    c = Claims(tmp_path, stale_after_s=0.4, heartbeat_s=0.05)
    claim = c.acquire("r1")
    old = time.time() - 100
    os.utime(claim.path, (old, old))
    time.sleep(0.3)
    assert c.owner("r1")["age_s"] < 0.3


@pytest.mark.parametrize("stores", [True, False])
def test_grid_waits_for_a_cell_claimed_elsewhere(registry, tmp_path, task, stores):
    """Stored by the other owner: counted as done elsewhere; released unstored: run here."""
    runner = _runner(registry, tmp_path / "r", task, epochs=1)
    cell = Cell("shapes", "tiny-ok", 0)
    _, rid = runner.config_for(cell)
    other = Claims(tmp_path / "r")
    claim = other.acquire(rid)

    def finish_elsewhere():
        time.sleep(0.3)
        if stores:
            Store(tmp_path / "r").write("runs", rid, run_rows([{"run_id": rid, "seed": 0, "status": "finished",
                                                                 "test_acc": 0.5}]),
                                        dataset="shapes", arch="tiny-ok")
        other.release(claim)
    t = threading.Thread(target=finish_elsewhere)
    t.start()
    events = []
    outcomes = run_grid([cell], runner, LocalExecutor(runner), on_event=events.append, poll_s=0.05)
    t.join()
    assert [e["type"] for e in events if e["type"] == "wait"] == ["wait"]
    if stores:
        assert outcomes[0].status == "elsewhere" and outcomes[0].row["test_acc"] == 0.5
    else:
        assert outcomes[0].status == "finished" and outcomes[0].row["wall_time_s"] > 0


def test_unknown_executor_lists_the_known_ones(registry, tmp_path):
    runner = Runner(registry, Settings(out=tmp_path))
    with pytest.raises(WsbenchError, match="unknown executor 'dask'; known executors: local, ray"):
        make_executor("dask", runner)
    with pytest.raises(WsbenchError, match="--ray-address needs --executor ray"):
        make_executor("local", runner, ray_address="auto")


def test_workers_choose_the_local_executor_kind(registry, tmp_path):
    runner = Runner(registry, Settings(out=tmp_path))
    assert isinstance(make_executor("local", runner), LocalExecutor)
    ex = make_executor("local", runner, workers=3)
    assert isinstance(ex, ProcessExecutor) and ex.slots == 3
    ex.close()
    with pytest.raises(WsbenchError, match="--workers 0: use 1"):
        make_executor("local", runner, workers=0)
    with pytest.raises(WsbenchError, match="--workers is for --executor local"):
        make_executor("ray", runner, workers=2)


# Processes -------------------------------------------------------------------------------

GRID = ["grid", "--arch", "flat-mlp", "--arch", "mlp", "--seeds", "2", "--limit", str(LIMIT)]


def _cmd(*args):
    return [sys.executable, "-m", "wsbench", *args]


def _env():
    """The test's environment (its cache included), one torch thread per grid process: two
    processes on two cores must not oversubscribe them."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _expected_ids(out, epochs):
    runner = Runner(load_registry(), Settings(out=out, limit=LIMIT, overrides={"epochs": epochs}))
    return {runner.config_for(Cell("shapes", a, s))[1] for a in ("flat-mlp", "mlp") for s in (0, 1)}


def _check_store(out, expected):
    runs = pads.dataset(out / "runs", partitioning="hive").to_table().to_pylist()
    assert sorted(r["run_id"] for r in runs) == sorted(expected)  # exactly the expected runs, once each
    assert {r["status"] for r in runs} == {"finished"}
    for table in ("runs", "predictions", "representations"):
        assert sorted(p.stem for p in (out / table).rglob("*.parquet")) == sorted(expected)
    preds = pads.dataset(out / "predictions", partitioning="hive").to_table().to_pylist()
    assert len(preds) == LIMIT * len(expected)
    assert len({(p["run_id"], p["sample_id"]) for p in preds}) == len(preds)


def _finished_count(stdout: str) -> int:
    line = [x for x in stdout.splitlines() if x.startswith("grid:")][-1]
    return sum(int(part.split()[0]) for part in line[5:].split(",") if part.split()[1] == "finished")


def test_sigkill_mid_cell_then_rerun_completes_with_exactly_the_expected_runs(tmp_path, task):
    out = tmp_path / "R"
    args = _cmd(*GRID, "--epochs", "60", "--cache-dir", _cache_dir(task), "--out", str(out))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=_env())
    deadline = time.time() + 120
    killed_in = None
    try:
        while time.time() < deadline and proc.poll() is None:
            stored = {p.stem for p in (out / "runs").rglob("*.parquet")} if (out / "runs").exists() else set()
            claims = {p.stem for p in (out / ".claims").glob("*.json")} if (out / ".claims").exists() else set()
            training = claims - stored
            if stored and training:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_in = training.pop()
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and killed_in is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_in is not None, "the grid ended before it could be killed mid-cell"
    assert proc.returncode == -signal.SIGKILL
    assert (out / ".claims" / f"{killed_in}.json").exists()  # the dead owner's claim is left behind
    stored = {p.stem for p in (out / "runs").rglob("*.parquet")}
    assert 1 <= len(stored) < 4

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300, env=_env())
    assert rerun.returncode == 0, rerun.stderr
    expected = _expected_ids(out, 60)
    assert killed_in in expected
    _check_store(out, expected)
    # The rerun trains the missing cells only.
    assert _finished_count(rerun.stdout) == 4 - len(stored) and f"{len(stored)} skipped" in rerun.stdout
    assert not (out / ".claims").exists()


def test_two_concurrent_grids_on_one_root_never_duplicate_a_run(tmp_path, task):
    out = tmp_path / "R"
    args = _cmd(*GRID, "--epochs", "40", "--cache-dir", _cache_dir(task), "--out", str(out))
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, se) in zip(procs, results):
        assert p.returncode == 0, se
    _check_store(out, _expected_ids(out, 40))
    # Every cell was trained by exactly one of the two processes.
    assert sum(_finished_count(so) for so, _ in results) == 4
    assert not (out / ".claims").exists()


# Worker processes (the local executor with --workers N) --------------------------------------

def _worker_grid(runner, cells):
    """Run ``cells`` in 2 worker processes; outcomes and events."""
    ex = make_executor("local", runner, workers=2)
    events = []
    try:
        return run_grid(cells, runner, ex, on_event=events.append), events
    finally:
        ex.close()


def test_worker_processes_store_each_cell_once_and_a_rerun_trains_nothing(tmp_path, task):
    out = tmp_path / "R"
    runner = _runner(load_registry(), out, task, epochs=2)
    cells = grid_cells(["shapes"], ["flat-mlp", "mlp"], [0, 1, 2])
    outcomes, events = _worker_grid(runner, cells)
    assert [o.status for o in outcomes] == ["finished"] * 6
    where = {e["where"] for e in events if e["type"] == "start"}
    assert len(where) == 2 and not any(w.endswith(f":{os.getpid()}") for w in where)  # two workers, not us
    assert any(e["type"] == "epoch" for e in events)  # progress comes back from the workers
    assert [e["type"] for e in events if e["type"] in ("plan", "ready")] == ["plan", "ready"]
    assert next(e for e in events if e["type"] == "ready")["slots"] == 2
    _check_store(out, {runner.config_for(c)[1] for c in cells})
    assert not (out / ".claims").exists()
    again, events = _worker_grid(_runner(load_registry(), out, task, epochs=2), cells)
    assert [o.status for o in again] == ["skipped"] * 6
    assert not [e for e in events if e["type"] in ("start", "epoch")]




@pytest.fixture
def crashing_plugin(tmp_path, monkeypatch):
    """An installed distribution (a dist-info on sys.path, which spawned workers inherit) whose
    architecture ``crash`` ends the process that builds it."""
    install_crashing_plugin(tmp_path, monkeypatch)
    return load_registry(strict=True)


def test_a_dying_worker_leaves_its_cell_failed_and_the_others_finish(tmp_path, task, crashing_plugin):
    out = tmp_path / "R"
    runner = _runner(crashing_plugin, out, task, epochs=2)
    cells = [Cell("shapes", "crash", 0), *grid_cells(["shapes"], ["flat-mlp", "mlp"], [0, 1])]
    outcomes, events = _worker_grid(runner, cells)
    assert [o.status for o in outcomes] == ["failed"] + ["finished"] * 4
    error = outcomes[0].row["error"]
    assert error.startswith("WorkerDied: worker process") and "exited with code 3 while running shapes/crash/seed 0" \
        in error
    ends = {e["cell"]: e for e in events if e["type"] == "end"}
    assert ends[cells[0]]["failed"] and not any(ends[c]["failed"] for c in cells[1:])
    rows = {r["arch"] + str(r["seed"]): r for r in Store(out).runs()}
    assert len(rows) == 5 and rows["crash0"]["status"] == "failed" and "WorkerDied" in rows["crash0"]["error"]
    assert not (out / ".claims").exists()  # the dead worker's claim was taken over and released
    # A rerun retries the failed cell only.
    again, _ = _worker_grid(_runner(crashing_plugin, out, task, epochs=2), cells)
    assert [o.status for o in again] == ["failed"] + ["skipped"] * 4

