"""Executors: where grid cells run.

- ``local`` with one worker (:class:`LocalExecutor`): one cell after another in this process;
- ``local`` with N workers (:class:`ProcessExecutor`): N worker processes of this machine,
  a cell to each idle one (several small models share one GPU well);
- ``ray`` (:class:`RayExecutor`): one cell per Ray task, a GPU per task when the cluster has GPUs.

All go through :class:`wsbench.runner.Runner`, so claims, failure isolation and the
store layout are the same; workers build their Runner from the command's
:class:`~wsbench.runner.Settings` and write straight to the shared results root.

An executor has ``prepare(datasets, emit)`` (build each dataset's task and INR zoo
once, before any cell), ``run(cells, emit)`` (yield ``(cell, row)`` as cells end;
``row["status"]`` as in ``Runner.run``) and ``close()``. ``emit`` receives progress
events: ``zoo``, ``start``, ``epoch``, ``end``.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing import util
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Callable, Iterator

import torch

from wsbench.errors import WsbenchError
from wsbench.runner import Cell, Runner, Settings

EXECUTORS = ("local", "ray")  # local runs in this process, or in worker processes with workers > 1
Emit = Callable[[dict], None]


def _zoo_events(emit: Emit, dataset: str):
    def cb(done, total, mean_psnr):
        emit({"type": "zoo", "dataset": dataset, "done": done, "total": total, "psnr": mean_psnr})
    return cb


def _epoch_event(cell: Cell, epoch: int, total: int, h: dict) -> dict:
    return {"type": "epoch", "cell": cell, "epoch": epoch, "total": total,
            "train_loss": h.get("train_loss"), "val_acc": h.get("val_acc"), "val_score": h.get("val_score"),
            "seconds": h.get("seconds")}


class LocalExecutor:
    """Cells one after another in this process (the Task of each dataset is built once)."""

    name = "local"

    def __init__(self, runner: Runner, isolate: bool = True):
        self.runner = runner
        self.isolate = isolate

    def prepare(self, datasets: list[str], emit: Emit) -> None:
        for ds in datasets:
            self.runner.task(ds, progress=_zoo_events(emit, ds))

    def run(self, cells: list[Cell], emit: Emit) -> Iterator[tuple[Cell, dict]]:
        for cell in cells:
            emit({"type": "start", "cell": cell})
            row = self.runner.run(cell, isolate=self.isolate,
                                  on_epoch=lambda e, n, h, _c=cell: emit(_epoch_event(_c, e, n, h)))
            if row["status"] != "busy":
                emit({"type": "end", "cell": cell, "status": row["status"], "row": row})
            yield cell, row

    def close(self) -> None:
        pass


# Worker processes --------------------------------------------------------------------------

# One Runner per worker process (local or Ray) and settings, so a reused worker keeps its Tasks in memory.
_worker_runners: dict = {}


def _worker_runner(settings: Settings) -> Runner:
    from wsbench.plugins import registry
    key = repr(settings)
    if key not in _worker_runners:
        _worker_runners[key] = Runner(registry(), settings)
    return _worker_runners[key]


class WorkerDied(RuntimeError):
    """A worker process ended (killed, crashed in native code, ``os._exit``) while running a cell."""


def process_worker(settings: Settings, conn: Connection, threads: int) -> None:
    """Body of one worker process: run the cells sent on ``conn`` until it sends None.

    Sends ``start`` and ``epoch`` events, then ``done`` with the cell's row; an
    invalid cell (a :class:`WsbenchError`) is sent back as ``error`` and ends the worker.
    """
    torch.set_num_threads(threads)
    try:
        runner = _worker_runner(settings)
        where = f"{socket.gethostname()}:{os.getpid()}"
        while True:
            cell = conn.recv()
            if cell is None:
                return
            conn.send({"type": "start", "cell": cell, "where": where, "device": str(runner.device)})
            row = runner.run(cell, isolate=True,
                             on_epoch=lambda e, n, h, _c=cell: conn.send(_epoch_event(_c, e, n, h)))
            conn.send({"type": "done", "cell": cell, "row": row})
    except WsbenchError as exc:
        conn.send({"type": "error", "message": str(exc)})
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # interrupted, or the driver has gone: stored runs are kept, claims go stale


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    cell: Cell | None = None  # the cell it is running
    started: float = 0.0


class ProcessExecutor:
    """Cells in ``workers`` spawned processes of this machine, one cell to each idle worker.

    The driver fits each dataset's INR zoo before any cell, so workers load it from the
    cache. Each worker builds its own Runner from the settings (as a Ray worker does) and
    sends its events back through a pipe of its own. A worker that dies while running a
    cell has that cell stored as ``failed`` (under the run's claim, which the dead worker
    left behind) and is replaced; the other workers go on. Torch threads are shared out:
    ``OMP_NUM_THREADS`` if set, else the CPU count over the workers.
    """

    name = "local"

    def __init__(self, runner: Runner, workers: int, threads: int | None = None, poll_s: float = 0.5):
        if workers < 2:
            raise WsbenchError(f"ProcessExecutor needs 2 or more workers, not {workers}; use LocalExecutor for one")
        self.runner = runner
        self.settings = runner.settings.absolute()
        self.workers = workers
        env_threads = os.environ.get("OMP_NUM_THREADS", "").strip()
        self.threads = threads or (int(env_threads) if env_threads.isdigit() and int(env_threads) > 0
                                   else max(1, (os.cpu_count() or 1) // workers))
        self.poll_s = poll_s
        self._ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
        self._pool: list[_Worker] = []
        # Stop the workers before multiprocessing joins its children at interpreter exit.
        util.Finalize(self, ProcessExecutor._stop, args=(self._pool,), exitpriority=10)

    @property
    def slots(self) -> int:
        return self.workers

    def prepare(self, datasets: list[str], emit: Emit) -> None:
        for ds in datasets:
            self.runner.task(ds, progress=_zoo_events(emit, ds))

    def _spawn(self) -> _Worker:
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(target=process_worker, args=(self.settings, theirs, self.threads),
                                 name="wsbench-worker")
        proc.start()
        theirs.close()  # the worker's end lives in the worker only: its death reads as EOF here
        worker = _Worker(proc, ours)
        self._pool.append(worker)
        return worker

    def run(self, cells: list[Cell], emit: Emit) -> Iterator[tuple[Cell, dict]]:
        pending = deque(cells)
        while pending or any(w.cell is not None for w in self._pool):
            while pending and len(self._pool) < self.workers:
                self._spawn()
            for w in list(self._pool):
                if w.cell is None and not w.process.is_alive():
                    self._reap(w)  # ended while idle (killed from outside): replaced next round
                elif w.cell is None and pending:
                    w.cell, w.started = pending.popleft(), time.perf_counter()
                    w.conn.send(w.cell)
            busy = [w for w in self._pool if w.cell is not None]
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=self.poll_s)
            for w in busy:
                for cell, row in self._drain(w, emit):
                    if row["status"] != "busy":
                        emit({"type": "end", "cell": cell, "status": row["status"], "row": row})
                    yield cell, row

    def _drain(self, w: _Worker, emit: Emit) -> list[tuple[Cell, dict]]:
        """Handle what worker ``w`` has sent; a dead worker's cell is stored as failed."""
        ended = []
        alive = w.process.is_alive()  # looked at first: what a dead worker sent is all in the pipe
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg["type"] == "done":
                    ended.append((msg["cell"], msg["row"]))
                    w.cell = None
                elif msg["type"] == "error":
                    raise WsbenchError(msg["message"])
                else:
                    emit(msg)
        except (EOFError, OSError):
            alive = False  # the pipe closed: the worker has ended
        if alive:
            return ended
        self._reap(w)
        if w.cell is not None:
            ended.append((w.cell, self._died(w, w.cell)))
        return ended

    def _reap(self, w: _Worker) -> None:
        w.process.join(timeout=5)
        w.conn.close()
        self._pool.remove(w)

    def _died(self, w: _Worker, cell: Cell) -> dict:
        """The row of ``cell``, whose worker ``w`` died: stored as failed under the run's claim."""
        code = w.process.exitcode
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               and -code in signal.valid_signals() else f"exited with code {code}")
        _, rid = self.runner.config_for(cell)
        claim = self.runner.claims.acquire(rid)  # the dead worker's claim is stale: taken over at once
        if claim is None:
            return {"run_id": rid, "status": "busy", "owner": self.runner.claims.owner(rid)}
        try:
            stored = self.runner.stored_row(cell)
            if stored is not None and stored["status"] == "finished":
                return stored  # it died after storing the run
            exc = WorkerDied(f"worker process {w.process.pid} {how} while running {cell.label}")
            return self.runner.record_failure(cell, exc, w.started, status="failed", keep_checkpoint=True)
        finally:
            self.runner.claims.release(claim)

    @staticmethod
    def _stop(pool: list) -> None:
        for w in pool:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in pool:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout=5)
            w.conn.close()
        pool.clear()

    def close(self) -> None:
        self._stop(self._pool)


# Ray -------------------------------------------------------------------------------------

# Environment a worker needs to see the same plugins, caches and data as the driver.
_FORWARDED_ENV = ("WSBENCH_PLUGINS", "WSBENCH_STRICT", "WSBENCH_CACHE", "WSBENCH_DATA", "WSBENCH_CLAIM_STALE_S")

def ray_cell(settings: Settings, cell: Cell, sink) -> dict:
    """Body of one Ray task: run one cell on this worker, streaming epochs to ``sink``."""
    runner = _worker_runner(settings)
    sink.put.remote({"type": "start", "cell": cell, "where": f"{socket.gethostname()}:{os.getpid()}",
                     "device": str(runner.device)})

    def on_epoch(epoch, total, h):
        sink.put.remote(_epoch_event(cell, epoch, total, h))
    row = runner.run(cell, on_epoch=on_epoch, isolate=True)
    # Plain values only travel back; the traceback stays in the store.
    return {k: v for k, v in row.items() if k != "owner"}


class _Sink:
    """A Ray actor collecting worker events for the driver to drain."""

    def __init__(self):
        self.events = []

    def put(self, event):
        self.events.append(event)

    def drain(self):
        out, self.events = self.events, []
        return out


class RayExecutor:
    """One cell per Ray task on a cluster (``address``) or a new local Ray instance.

    Paths are made absolute; on a multi-node cluster the results root and the cache
    directory must be on a file system every node mounts at the same path. The
    driver fits each dataset's INR zoo before submitting cells, so workers load it
    from the cache instead of fitting it concurrently.
    """

    name = "ray"

    def __init__(self, runner: Runner, address: str | None = None, num_cpus: int | None = None,
                 poll_s: float = 0.2):
        try:
            import ray
        except ImportError:
            raise WsbenchError("--executor ray needs Ray; install it with pip install 'wsbench[ray]'") from None
        self.ray = ray
        self.runner = runner
        self.settings = runner.settings.absolute()
        self.address, self.num_cpus, self.poll_s = address, num_cpus, poll_s
        self._owns = False
        self._task: Any = None  # the Ray remote function of a cell, once connected
        self._cwd: str | None = None
        self._where: dict[Cell, str] = {}  # cell -> "host:pid" of the worker running it (from its start event)

    def _connect(self) -> None:
        """Start or join the cluster (only once there is a cell to run)."""
        ray = self.ray
        if self._task is not None:
            return
        self._owns = not ray.is_initialized()
        if self._owns:
            env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
            for k, v in (("WSBENCH_CACHE", self.settings.cache_dir), ("WSBENCH_DATA", self.settings.data_dir)):
                if v is not None:
                    env[k] = str(v)
            kwargs = {"num_cpus": self.num_cpus} if self.num_cpus and not self.address else {}
            # Ray puts the driver's working directory first on every worker's sys.path: a folder there named
            # like a package (a `wsbench/` checkout beside the results) would shadow the installed wsbench in
            # the workers (an editable install is found after sys.path). So Ray starts from an empty folder of
            # its own, kept until close() (a local cluster's workers run in it); settings are absolute paths.
            self._cwd = tempfile.mkdtemp(prefix="wsbench-ray-")
            here = os.getcwd()
            os.chdir(self._cwd)
            try:
                ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, runtime_env={"env_vars": env}, **kwargs)
            except ConnectionError as exc:
                raise WsbenchError(f"could not reach the Ray cluster at {self.address!r} ({exc}); check "
                                   "--ray-address or leave it out to start a local cluster") from None
            finally:
                os.chdir(here)
        resources = ray.cluster_resources()
        self.gpus = float(resources.get("GPU", 0))
        self.cpus = float(resources.get("CPU", 0))
        self._task = ray.remote(ray_cell).options(num_cpus=1, num_gpus=1 if self.gpus >= 1 else 0,
                                                  max_retries=0)
        self._sink_cls = ray.remote(_Sink).options(num_cpus=0)

    @property
    def slots(self) -> int:
        """How many cells run at once (1 before the cluster is reached)."""
        if self._task is None:
            return 1
        return max(1, int(self.gpus) if self.gpus >= 1 else int(self.cpus))

    def prepare(self, datasets: list[str], emit: Emit) -> None:
        for ds in datasets:
            self.runner.task(ds, progress=_zoo_events(emit, ds))
        self._connect()

    def run(self, cells: list[Cell], emit: Emit) -> Iterator[tuple[Cell, dict]]:
        ray = self.ray
        self._connect()
        sink = self._sink_cls.remote()
        started = {}
        refs = {}
        for cell in cells:
            refs[self._task.remote(self.settings, cell, sink)] = cell
            started[cell] = time.perf_counter()
        ended = set()
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=self.poll_s)
                for event in ray.get(sink.drain.remote()):
                    if event["type"] == "start":
                        self._where[event["cell"]] = event["where"]
                    if event["cell"] not in ended:  # a late epoch event must not revive an ended cell
                        emit(event)
                for ref in ready:
                    cell = refs.pop(ref)
                    ended.add(cell)
                    row = self._result(ref, cell, started[cell])
                    if row["status"] != "busy":
                        emit({"type": "end", "cell": cell, "status": row["status"], "row": row})
                    yield cell, row
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            ray.kill(sink)

    def _result(self, ref, cell: Cell, started: float) -> dict:
        ray = self.ray
        try:
            return ray.get(ref)
        except WsbenchError:
            raise  # a RayTaskError is also an instance of its cause: bad input, not a failed cell
        except ray.exceptions.RayError as exc:
            # The worker died (killed, out of memory) before it could store the failure itself; its claim
            # is left behind: take it over (at once when the worker ran on this host, else by its owner's
            # name, since Ray says that worker is gone) and store the failure under it.
            oom = isinstance(exc, getattr(ray.exceptions, "OutOfMemoryError", ()))
            _, rid = self.runner.config_for(cell)
            host, _, pid = self._where.get(cell, "").rpartition(":")
            if pid.isdigit():
                self.runner.claims.break_owned_by(rid, host, int(pid))
            claim = self.runner.claims.acquire(rid)
            try:
                return self.runner.record_failure(cell, exc, started, status="oom" if oom else "failed")
            finally:
                if claim is not None:
                    self.runner.claims.release(claim)

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
        if self._cwd is not None:
            shutil.rmtree(self._cwd, ignore_errors=True)
            self._cwd = None


def make_executor(name: str, runner: Runner, ray_address: str | None = None, isolate: bool = True,
                  workers: int = 1):
    """The executor called ``name`` (one of :data:`EXECUTORS`).

    ``local`` with ``workers`` 1 runs cells in this process (``isolate``: store a failure
    and go on, else re-raise it); with more, in that many worker processes, which always
    isolate failures (as Ray workers do).
    """
    if name == "local":
        if ray_address:
            raise WsbenchError("--ray-address needs --executor ray")
        if workers < 1:
            raise WsbenchError(f"--workers {workers}: use 1 (this process) or more (worker processes)")
        if workers > 1:
            return ProcessExecutor(runner, workers)
        return LocalExecutor(runner, isolate=isolate)
    if name == "ray":
        if workers != 1:
            raise WsbenchError("--workers is for --executor local; Ray runs as many cells at once as the cluster "
                               "has GPUs (or CPUs)")
        return RayExecutor(runner, address=ray_address)
    raise WsbenchError(f"unknown executor {name!r}; known executors: {', '.join(EXECUTORS)}")
