"""Running grid cells: resolve the config, claim the run, train, store; and the grid loop.

A cell is (dataset, architecture, seed); its run id hashes those with the resolved
config and ``--limit`` (config.run_id). Before training, a process claims the run
id with a file under ``<results>/.claims/`` (see :class:`Claims`), so two grid
processes, or Ray workers, sharing one results root never train the same run
twice; the store's one-file-per-run atomic writes mean that even a lost claim
can only overwrite a run with an equivalent file, never corrupt or duplicate it.

A failing cell (an exception, a NaN loss, running out of memory) is stored with
its status and error and the grid goes on. A killed grid (SIGKILL included)
leaves a claim whose owner is dead: the next grid takes it over and trains the
missing cells only.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import torch

from wsbench import __version__, augment
from wsbench import config as cfg
from wsbench.errors import WsbenchError
from wsbench.inr import DEFAULT_RECIPE
from wsbench.plugins import Registry
from wsbench.store import Store, representation_table, run_rows
from wsbench.task import Task, make_task
from wsbench.train import NonFiniteLoss, RunResult, resolve_device, train

FAILED_STATUSES = ("failed", "diverged", "oom")


@dataclass(frozen=True)
class Cell:
    dataset: str
    arch: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.arch}/seed {self.seed}"


@dataclass
class Settings:
    """Options shared by every cell of a command."""

    out: Path = Path("results")
    data_dir: Path | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    limit: int | None = None
    overrides: dict | None = None
    recipe: dict | None = None  # INR fitting recipe overrides (a different zoo, so different run ids)

    def absolute(self) -> "Settings":
        """The same settings with absolute paths (workers may run in another directory)."""
        def a(p):
            return None if p is None else Path(p).expanduser().resolve()
        return Settings(out=a(self.out), data_dir=a(self.data_dir), cache_dir=a(self.cache_dir),
                        device=self.device, limit=self.limit, overrides=dict(self.overrides or {}),
                        recipe=dict(self.recipe or {}))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def failure_status(exc: BaseException) -> str:
    """``diverged`` for a NaN/inf loss, ``oom`` for CPU or CUDA out-of-memory, else ``failed``."""
    if isinstance(exc, NonFiniteLoss):
        return "diverged"
    if isinstance(exc, MemoryError) or isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return "oom"
    # Some allocators raise a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory").
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"
    return "failed"


# Claims ----------------------------------------------------------------------------------

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def host_key() -> str:
    """This machine: host name plus boot id, so a rebooted host does not trust its old pids."""
    return f"{socket.gethostname()}:{_boot_id()}"


def _proc_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot) from /proc, to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def _pid_alive(pid: int, start: str | None) -> bool:
    if Path("/proc").is_dir():
        now = _proc_start(pid)  # None for a missing or zombie process
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    run_id: str
    path: Path
    token: str


class Claims:
    """Exclusive claims on run ids: one file ``<root>/.claims/<run_id>.json`` each.

    A claim is written whole to a private file and hard-linked into place (an
    atomic no-clobber create on local and NFS file systems); it holds the owner's
    host, pid, process start time and a random token. While held, a background
    thread touches it every ``heartbeat_s``.
    A claim is stale when its owner is on this host and no longer alive, or when
    it has not been touched for ``stale_after_s`` (owners on other hosts). A stale
    claim is taken over by renaming it aside (atomic: only one taker succeeds)
    and checking that the renamed file is the one judged stale.
    """

    def __init__(self, root: Path | str, stale_after_s: float | None = None, heartbeat_s: float | None = None):
        self.dir = Path(root) / ".claims"
        self.stale_after_s = float(stale_after_s if stale_after_s is not None
                                   else os.environ.get("WSBENCH_CLAIM_STALE_S", 600))
        self.heartbeat_s = float(heartbeat_s if heartbeat_s is not None else min(30.0, self.stale_after_s / 4))
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def owner(self, run_id: str) -> dict | None:
        """The claim's contents plus its age in seconds, or None when unclaimed."""
        p = self.path(run_id)
        try:
            info = json.loads(p.read_text())
            info["age_s"] = time.time() - p.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Unreadable (written by another tool or damaged): judge by age alone.
            try:
                return {"token": None, "age_s": time.time() - p.stat().st_mtime}
            except FileNotFoundError:
                return None
        return info

    def is_stale(self, info: dict) -> bool:
        if info.get("host") == host_key() and info.get("pid") is not None:
            if not _pid_alive(int(info["pid"]), info.get("start")):
                return True
        return info["age_s"] > self.stale_after_s

    def holder(self, run_id: str) -> dict | None:
        """The live owner of a claim, or None when it is free or stale."""
        info = self.owner(run_id)
        return None if info is None or self.is_stale(info) else info

    def acquire(self, run_id: str) -> Claim | None:
        """Claim ``run_id``; None when a live owner holds it."""
        token = uuid.uuid4().hex
        record = {"run_id": run_id, "host": host_key(), "hostname": platform.node(), "pid": os.getpid(),
                  "start": _proc_start(os.getpid()), "token": token, "claimed_at": _now()}
        for _ in range(5):
            # The claim is written whole under a private name and hard-linked into place (no-clobber),
            # so no reader ever sees an empty claim: a process killed right after claiming leaves a
            # claim naming its dead pid, which the next grid takes over at once.
            tmp = self.dir / f".{run_id}.{token}.tmp"
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(record))
                os.link(tmp, self.path(run_id))
            except FileNotFoundError:
                continue  # another process removed the empty claims folder meanwhile
            except FileExistsError:
                info = self.owner(run_id)
                if info is None:
                    continue  # released meanwhile: try again
                if not self.is_stale(info):
                    return None
                self._break(run_id, info)
                continue
            finally:
                tmp.unlink(missing_ok=True)
            claim = Claim(run_id, self.path(run_id), token)
            with self._lock:
                self._held[run_id] = claim
            self._ensure_heartbeat()
            return claim
        return None

    def _break(self, run_id: str, judged: dict) -> None:
        """Move a stale claim aside; put it back if someone else's fresh claim was moved instead."""
        aside = self.dir / f".{run_id}.stale.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path(run_id), aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text()).get("token")
        except (OSError, ValueError):
            moved = None
        if moved != judged.get("token"):
            try:
                os.link(aside, self.path(run_id))  # no-clobber restore of the live claim
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def still_mine(self, claim: Claim) -> bool:
        try:
            return json.loads(claim.path.read_text()).get("token") == claim.token
        except (OSError, ValueError):
            return False

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.run_id, None)
        if self.still_mine(claim):
            claim.path.unlink(missing_ok=True)
        try:
            self.dir.rmdir()  # leave no trace in the results root once nothing is claimed
        except OSError:
            pass

    def _ensure_heartbeat(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return

        def beat():
            while True:
                time.sleep(self.heartbeat_s)
                with self._lock:
                    held = list(self._held.values())
                for c in held:
                    try:
                        os.utime(c.path)
                    except OSError:
                        pass
        self._thread = threading.Thread(target=beat, name="wsbench-claims", daemon=True)
        self._thread.start()


# Runner ----------------------------------------------------------------------------------

class Runner:
    """Runs cells against one store, keeping each dataset's Task in memory once built."""

    def __init__(self, registry: Registry, settings: Settings, claims: Claims | None = None):
        self.registry = registry
        self.settings = settings
        self.store = Store(settings.out)
        self.claims = claims or Claims(settings.out)
        self.device = resolve_device(settings.device)
        self._tasks: dict[str, Task] = {}

    def config_for(self, cell: Cell) -> tuple[dict, str]:
        arch = self.registry.architecture(cell.arch)
        for name in sorted(cfg.scopes(self.settings.overrides or {})):
            try:
                self.registry.architecture(name)
            except WsbenchError as exc:
                raise WsbenchError(f"config override {name}.<key>: {exc}") from None
        config = cfg.resolve(arch, cell.dataset, self.settings.overrides or {})
        augment.check(config.get("augment", "none"), arch.view)
        if arch.view == "weights":
            # The zoo's whole recipe is stored with the run and is part of its id: a model trained on another
            # zoo (a --recipe override, or a changed dataset default) is another variant, never a cached hit.
            config["inr_recipe"] = self.recipe(cell.dataset)
        return config, cfg.run_id(cell.dataset, cell.arch, cell.seed, config, self.settings.limit)

    def validate(self, cells: list[Cell]) -> None:
        """Fail before any work on an unknown name or config key."""
        for cell in cells:
            self.registry.dataset(cell.dataset)
            self.config_for(cell)

    def status(self, cell: Cell) -> str | None:
        _, rid = self.config_for(cell)
        return self.store.run_status(cell.dataset, cell.arch, rid)

    def is_done(self, cell: Cell) -> bool:
        return self.status(cell) == "finished"

    def recipe(self, dataset: str) -> dict:
        """The INR recipe the dataset's zoo is fitted with: defaults <- dataset's recipe <- ``--recipe``."""
        return dict(sorted({**DEFAULT_RECIPE, **self.registry.dataset(dataset).inr_recipe,
                            **(self.settings.recipe or {})}.items()))

    def task(self, dataset: str, progress=None) -> Task:
        if dataset not in self._tasks:
            spec = replace(self.registry.dataset(dataset), inr_recipe=self.recipe(dataset))
            self._tasks[dataset] = make_task(spec, self.settings.data_dir, self.settings.cache_dir,
                                             self.settings.limit, str(self.device), progress=progress)
        return self._tasks[dataset]

    def run(self, cell: Cell, on_epoch: Callable | None = None, isolate: bool = False) -> dict:
        """Train one cell unless it is stored and finished; return its ``runs`` row.

        The returned row's ``status`` is ``finished``, ``skipped`` (already stored),
        ``busy`` (claimed by a live process elsewhere) or, with ``isolate``, one of
        :data:`FAILED_STATUSES` (stored with the error). Without ``isolate`` a
        failure is stored and then re-raised.
        """
        arch = self.registry.architecture(cell.arch)
        config, rid = self.config_for(cell)
        if self.store.run_status(cell.dataset, cell.arch, rid) == "finished":
            return {"run_id": rid, "status": "skipped"}
        claim = self.claims.acquire(rid)
        if claim is None:
            return {"run_id": rid, "status": "busy", "owner": self.claims.owner(rid)}
        started_clock = time.perf_counter()
        try:
            # Re-check under the claim: another process may have stored it since the first look.
            if self.store.run_status(cell.dataset, cell.arch, rid) == "finished":
                return {"run_id": rid, "status": "skipped"}
            task = self.task(cell.dataset)
            started = _now()
            result = train(task, arch, config, cell.seed, self.device, on_epoch=on_epoch)
            row = self._row(cell, arch, config, rid, task, started, result)
            self._write(cell, rid, row, result)
            return row
        except (KeyboardInterrupt, WsbenchError):
            raise
        except Exception as exc:
            row = self.record_failure(cell, exc, started_clock)
            if not isolate:
                raise
            return row
        finally:
            self.claims.release(claim)

    def _row(self, cell, arch, config, rid, task, started, result: RunResult) -> dict:
        return {
            "run_id": rid, "seed": cell.seed, "status": "finished", "error": None,
            "test_acc": result.test_acc, "val_acc": result.val_acc, "best_epoch": result.best_epoch,
            "epochs": int(config["epochs"]), "n_train": int(len(task.splits["train"])),
            "n_val": int(len(task.splits["val"])), "n_test": int(len(task.splits["test"])),
            "view": arch.view, "limit": self.settings.limit,
            "config": json.dumps(config, sort_keys=True), "history": json.dumps(result.history),
            "layers": json.dumps(list(result.layers)), "zoo_key": task.zoo.manifest["key"] if task.zoo else None,
            "inr_psnr_mean": float(np.mean(task.psnr)),
            "wsbench_version": __version__, "plugin_distribution": arch.distribution,
            "plugin_version": arch.version, "torch_version": torch.__version__,
            "device": str(self.device), "host": platform.node(),
            "wall_time_s": round(result.wall_time_s, 3), "started_at": started, "finished_at": _now(),
        }

    def _write(self, cell: Cell, rid: str, row: dict, result: RunResult) -> None:
        parts = {"dataset": cell.dataset, "arch": cell.arch}
        preds = pa.table({
            "run_id": pa.array([rid] * len(result.test_ids)),
            "sample_id": pa.array(result.test_ids.astype(np.int64)),
            "label": pa.array(result.labels.astype(np.int64)),
            "pred": pa.array(result.preds.astype(np.int64)),
            "correct": pa.array(result.preds == result.labels),
            "confidence": pa.array(result.confidence.astype(np.float32)),
        })
        self.store.write("predictions", rid, preds, **parts)
        self.store.write("representations", rid, representation_table(rid, result.test_ids, result.layers), **parts)
        # The runs row last: its presence marks the run as stored.
        self.store.write("runs", rid, run_rows([row]), **parts)

    def record_failure(self, cell: Cell, exc: BaseException, started: float, status: str | None = None) -> dict:
        """Store a failed cell with its status and error, so the grid can go on."""
        arch = self.registry.architecture(cell.arch)
        config, rid = self.config_for(cell)
        status = status or failure_status(exc)
        if status == "oom":
            # Give the memory back before the next cell.
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        row = {
            "run_id": rid, "seed": cell.seed, "status": status,
            "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": tb[-4000:],
            "config": json.dumps(config, sort_keys=True), "view": arch.view, "limit": self.settings.limit,
            "wsbench_version": __version__, "plugin_distribution": arch.distribution,
            "plugin_version": arch.version, "torch_version": torch.__version__, "device": str(self.device),
            "host": platform.node(), "wall_time_s": round(time.perf_counter() - started, 3), "finished_at": _now(),
        }
        self.store.write("runs", rid, run_rows([row]), dataset=cell.dataset, arch=cell.arch)
        return row


# The grid --------------------------------------------------------------------------------

@dataclass
class CellOutcome:
    """What became of one cell in one grid invocation.

    ``status``: finished (trained here), skipped (stored before), elsewhere (stored
    by another process while this grid waited), or one of :data:`FAILED_STATUSES`.
    """

    cell: Cell
    status: str
    row: dict

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


def run_grid(cells: list[Cell], runner: Runner, executor, on_event: Callable[[dict], None] | None = None,
             poll_s: float = 1.0) -> list[CellOutcome]:
    """Run every cell not yet stored through ``executor`` and return one outcome per cell.

    Events passed to ``on_event`` (dicts with ``type``): ``plan`` (total, skipped),
    ``ready`` (slots: cells run at once), ``start`` / ``epoch`` / ``end`` per cell (from the executor), ``wait`` (cells
    claimed by other processes). Cells claimed by a live process elsewhere are
    waited for: stored by it, they count as ``elsewhere``; if their claim goes
    stale (the owner died), they are run here.
    """
    emit = on_event or (lambda e: None)
    runner.validate(cells)
    outcomes: dict[Cell, CellOutcome] = {}
    todo = []
    for c in cells:
        if runner.is_done(c):
            outcomes[c] = CellOutcome(c, "skipped", {"run_id": runner.config_for(c)[1], "status": "skipped"})
        else:
            todo.append(c)
    emit({"type": "plan", "total": len(cells), "skipped": len(cells) - len(todo), "out": str(runner.settings.out)})
    if todo:
        executor.prepare(sorted({c.dataset for c in todo}), emit)
        emit({"type": "ready", "slots": getattr(executor, "slots", 1)})
    pending = todo
    while pending:
        waiting: dict[Cell, int | None] = {}  # cell -> mtime of its runs file when found busy
        for cell, row in executor.run(pending, emit):
            if row.get("status") == "busy":
                waiting[cell] = _runs_mtime(runner, cell)
            elif row.get("status") == "skipped":
                # Stored by another process between our first look and the claim.
                outcomes[cell] = CellOutcome(cell, "elsewhere", row)
            else:
                outcomes[cell] = CellOutcome(cell, row["status"], row)
        pending = []
        if waiting:
            emit({"type": "wait", "cells": list(waiting)})
        while waiting and not pending:
            time.sleep(poll_s)
            for cell, before in list(waiting.items()):
                _, rid = runner.config_for(cell)
                if runner.claims.holder(rid) is not None:
                    continue
                del waiting[cell]
                now = _runs_mtime(runner, cell)
                if now is not None and now != before:
                    row = _stored_row(runner, cell, rid)
                    status = "elsewhere" if row["status"] == "finished" else row["status"]
                    outcomes[cell] = CellOutcome(cell, status, row)
                    emit({"type": "end", "cell": cell, "status": status, "row": row})
                else:
                    pending.append(cell)  # the owner died or let go without storing: run it here
    return [outcomes[c] for c in cells]


def _runs_mtime(runner: Runner, cell: Cell) -> int | None:
    _, rid = runner.config_for(cell)
    try:
        return runner.store.path("runs", rid, dataset=cell.dataset, arch=cell.arch).stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _stored_row(runner: Runner, cell: Cell, rid: str) -> dict:
    import pyarrow.parquet as pq
    return pq.read_table(runner.store.path("runs", rid, dataset=cell.dataset, arch=cell.arch)).to_pylist()[0]


def summarize(outcomes: Iterable[CellOutcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return dict(sorted(counts.items()))
