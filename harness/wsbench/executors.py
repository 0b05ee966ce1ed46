"""Executors: where grid cells run. ``local`` (default, one cell after another in this
process) or ``ray`` (one cell per Ray task, a GPU per task when the cluster has GPUs).

Both go through :class:`wsbench.runner.Runner`, so claims, failure isolation and the
store layout are the same; workers write straight to the shared results root.

An executor has ``prepare(datasets, emit)`` (build each dataset's task and INR zoo
once, before any cell), ``run(cells, emit)`` (yield ``(cell, row)`` as cells end;
``row["status"]`` as in ``Runner.run``) and ``close()``. ``emit`` receives progress
events: ``zoo``, ``start``, ``epoch``, ``end``.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Iterator

from wsbench.errors import WsbenchError
from wsbench.runner import Cell, Runner, Settings

EXECUTORS = ("local", "ray")
Emit = Callable[[dict], None]


def _zoo_events(emit: Emit, dataset: str):
    def cb(done, total, mean_psnr):
        emit({"type": "zoo", "dataset": dataset, "done": done, "total": total, "psnr": mean_psnr})
    return cb


def _epoch_event(cell: Cell, epoch: int, total: int, h: dict) -> dict:
    return {"type": "epoch", "cell": cell, "epoch": epoch, "total": total,
            "train_loss": h.get("train_loss"), "val_acc": h.get("val_acc")}


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


# Ray -------------------------------------------------------------------------------------

# Environment a worker needs to see the same plugins, caches and data as the driver.
_FORWARDED_ENV = ("WSBENCH_PLUGINS", "WSBENCH_STRICT", "WSBENCH_CACHE", "WSBENCH_DATA", "WSBENCH_CLAIM_STALE_S")

# One Runner per worker process and settings, so a reused worker keeps its Tasks in memory.
_worker_runners: dict = {}


def _worker_runner(settings: Settings) -> Runner:
    from wsbench.plugins import registry
    key = repr(settings)
    if key not in _worker_runners:
        _worker_runners[key] = Runner(registry(), settings)
    return _worker_runners[key]


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
        self._task = None

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
            try:
                ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, runtime_env={"env_vars": env}, **kwargs)
            except ConnectionError as exc:
                raise WsbenchError(f"could not reach the Ray cluster at {self.address!r} ({exc}); check "
                                   "--ray-address or leave it out to start a local cluster") from None
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
            # The worker died (killed, out of memory) before it could store the failure itself.
            oom = isinstance(exc, getattr(ray.exceptions, "OutOfMemoryError", ()))
            return self.runner.record_failure(cell, exc, started, status="oom" if oom else "failed")

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str, runner: Runner, ray_address: str | None = None, isolate: bool = True):
    """The executor called ``name`` (one of :data:`EXECUTORS`)."""
    if name == "local":
        if ray_address:
            raise WsbenchError("--ray-address needs --executor ray")
        return LocalExecutor(runner, isolate=isolate)
    if name == "ray":
        return RayExecutor(runner, address=ray_address)
    raise WsbenchError(f"unknown executor {name!r}; known executors: {', '.join(EXECUTORS)}")
