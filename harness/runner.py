"""Running grid cells: resolve the config, skip stored runs, train, store."""
from __future__ import annotations

import json
import platform
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from wsbench import __version__, config as cfg
from wsbench.plugins import Registry
from wsbench.store import Store, representation_table, run_rows
from wsbench.task import Task, make_task
from wsbench.train import RunResult, resolve_device, train


@dataclass(frozen=True)
class Cell:
    dataset: str
    arch: str
    seed: int


@dataclass
class Settings:
    """Options shared by every cell of a command."""

    out: Path = Path("results")
    data_dir: Path | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    limit: int | None = None
    overrides: dict | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Runner:
    """Runs cells against one store, keeping each dataset's Task in memory once built."""

    def __init__(self, registry: Registry, settings: Settings):
        self.registry = registry
        self.settings = settings
        self.store = Store(settings.out)
        self.device = resolve_device(settings.device)
        self._tasks: dict[str, Task] = {}

    def config_for(self, cell: Cell) -> tuple[dict, str]:
        arch = self.registry.architecture(cell.arch)
        config = cfg.resolve(arch, cell.dataset, self.settings.overrides or {})
        return config, cfg.run_id(cell.dataset, cell.arch, cell.seed, config, self.settings.limit)

    def validate(self, cells: list[Cell]) -> None:
        """Fail before any work on an unknown name or config key."""
        for cell in cells:
            self.registry.dataset(cell.dataset)
            self.config_for(cell)

    def is_done(self, cell: Cell) -> bool:
        _, rid = self.config_for(cell)
        return self.store.run_status(cell.dataset, cell.arch, rid) == "finished"

    def task(self, dataset: str, progress=None) -> Task:
        if dataset not in self._tasks:
            spec = self.registry.dataset(dataset)
            self._tasks[dataset] = make_task(spec, self.settings.data_dir, self.settings.cache_dir,
                                             self.settings.limit, str(self.device), progress=progress)
        return self._tasks[dataset]

    def run(self, cell: Cell, on_epoch: Callable | None = None) -> dict:
        """Train one cell unless it is stored and finished; return its ``runs`` row."""
        arch = self.registry.architecture(cell.arch)
        config, rid = self.config_for(cell)
        if self.store.run_status(cell.dataset, cell.arch, rid) == "finished":
            return {"run_id": rid, "status": "skipped"}
        task = self.task(cell.dataset)
        started = _now()
        result = train(task, arch, config, cell.seed, self.device, on_epoch=on_epoch)
        row = self._row(cell, arch, config, rid, task, started, result)
        self._write(cell, rid, row, result)
        return row

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

    def record_failure(self, cell: Cell, exc: BaseException, started: float) -> dict:
        """Store a failed cell with its status and error, so the grid can go on."""
        arch = self.registry.architecture(cell.arch)
        config, rid = self.config_for(cell)
        status = "diverged" if type(exc).__name__ == "NonFiniteLoss" else "failed"
        row = {
            "run_id": rid, "seed": cell.seed, "status": status,
            "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:],
            "config": json.dumps(config, sort_keys=True), "view": arch.view, "limit": self.settings.limit,
            "wsbench_version": __version__, "plugin_distribution": arch.distribution,
            "plugin_version": arch.version, "torch_version": torch.__version__, "device": str(self.device),
            "host": platform.node(), "wall_time_s": round(time.perf_counter() - started, 3), "finished_at": _now(),
        }
        self.store.write("runs", rid, run_rows([row]), dataset=cell.dataset, arch=cell.arch)
        return row
