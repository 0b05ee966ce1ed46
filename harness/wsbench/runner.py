"""Running one cell: resolve the config, claim the run, train, store.

A cell is (dataset, architecture, seed); its run id hashes those with the resolved
config and ``--limit`` (config.run_id). Before training, the runner claims the run
id (:mod:`wsbench.claims`), so processes sharing one results root never train the
same run twice; the store's one-file-per-run atomic writes mean that even a lost
claim can only overwrite a run with an equivalent file, never corrupt or duplicate it.

A failing cell (an exception, a NaN loss, running out of memory) is stored with
its status and error (see :func:`failure_status`), so the grid can go on.

While a run trains, its training state is kept after every epoch in
``<results>/.checkpoints/<run_id>/last.pt`` (:func:`wsbench.train.train`): a run killed
mid-training (SIGKILL included) is taken over under the same run id by the next command,
which continues after the last finished epoch; the folder is removed once the run is stored.
With ``save_models`` the selected model is kept as ``<results>/models/dataset=D/arch=A/<run_id>.safetensors``
(:mod:`wsbench.models`).
"""
from __future__ import annotations

import gc
import json
import math
import platform
import shutil
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wsbench import __version__, augment
from wsbench import config as cfg
from wsbench.claims import Claims, utc_now
from wsbench.errors import WsbenchError
from wsbench.plugins import Registry
from wsbench.provenance import run_provenance
from wsbench.siren import DEFAULT_RECIPE
from wsbench.specs import ArchitectureSpec, DatasetSpec
from wsbench.store import Store
from wsbench.tables import prediction_table, representation_table, run_rows
from wsbench.task import Task, make_task
from wsbench.train import NonFiniteLoss, RunResult, resolve_device, train

# The statuses of a cell stored as failed (see failure_status).
FAILED_STATUSES = ("failed", "diverged", "oom")


class PluginExit(RuntimeError):
    """An architecture's code called ``sys.exit()`` while training: its cell fails, the grid goes on."""


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
    save_models: bool = False  # keep each trained run's selected model as safetensors (wsbench.models)
    track: str | None = None  # experiment tracking: "tensorboard[:DIR]" or "wandb[:PROJECT]" (wsbench.tracking)

    def absolute(self) -> Settings:
        """The same settings with absolute paths (workers may run in another directory)."""
        def a(p):
            return None if p is None else Path(p).expanduser().resolve()
        return Settings(out=a(self.out), data_dir=a(self.data_dir), cache_dir=a(self.cache_dir),
                        device=self.device, limit=self.limit, overrides=dict(self.overrides or {}),
                        recipe=dict(self.recipe or {}), save_models=self.save_models, track=self.track)


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


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def inapplicable(arch: ArchitectureSpec, ds: DatasetSpec) -> str | None:
    """Why architecture ``arch`` cannot run on dataset ``ds`` (one line), or None when it can: it reads a
    view the dataset does not offer, or it reads weights of one shared layout and the dataset's networks
    differ in architecture (``DatasetSpec.mixed_networks`` without ``ArchitectureSpec.mixed_networks``)."""
    if arch.view not in ds.offered_views:
        views = ", ".join(ds.offered_views)
        return f"{arch.name} reads the {arch.view!r} view, which {ds.name} does not offer ({views})"
    if arch.view == "weights" and ds.mixed_networks and not arch.mixed_networks:
        return (f"{arch.name} reads weights of one shared layout, and the networks of {ds.name} differ in "
                "architecture")
    return None


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
        ds = self.registry.dataset(cell.dataset)
        if inapplicable(arch, ds):
            fits = ", ".join(sorted(a.name for a in self.registry.architectures.values() if not inapplicable(a, ds)))
            if arch.view not in ds.offered_views:
                raise WsbenchError(f"architecture {cell.arch!r} reads the {arch.view!r} view, which dataset "
                                   f"{cell.dataset!r} does not offer (its views: {', '.join(ds.offered_views)}); "
                                   f"architectures that can run on it: {fits}")
            raise WsbenchError(f"architecture {cell.arch!r} needs every network in one shared weight layout, and the "
                               f"networks of dataset {cell.dataset!r} differ in architecture; architectures that can "
                               f"run on it: {fits}")
        if ds.networks is not None:
            # A zoo of networks: its whole recipe is part of the run's config and id (see DatasetSpec.zoo_recipes).
            config["zoo_recipe"] = self.recipe(cell.dataset)
        elif arch.view == "weights":
            # The zoo's whole recipe is stored with the run and is part of its id: a model trained on another
            # zoo (a --recipe override, or a changed dataset default) is another variant, never a cached hit.
            config["inr_recipe"] = self.recipe(cell.dataset)
        return config, cfg.run_id(cell.dataset, cell.arch, cell.seed, config, self.settings.limit)

    def validate(self, cells: list[Cell]) -> None:
        """Fail before any work on an unknown name, a seed out of range, or a config key or value
        that is not valid (:func:`wsbench.config.resolve` types every value)."""
        cfg.check_limit(self.settings.limit)
        for cell in cells:
            cfg.check_seed(cell.seed)
            self.registry.dataset(cell.dataset)
            self.recipe(cell.dataset)
            self.config_for(cell)

    def status(self, cell: Cell) -> str | None:
        _, rid = self.config_for(cell)
        return self.store.run_status(cell.dataset, cell.arch, rid)

    def is_done(self, cell: Cell) -> bool:
        """Whether the cell is stored, finished, with readable predictions and representations: a
        cell whose files are damaged is trained again."""
        _, rid = self.config_for(cell)
        return self.store.is_complete(cell.dataset, cell.arch, rid)

    def stored_row(self, cell: Cell) -> dict | None:
        """The cell's stored ``runs`` row, or None when it has none (or its file is damaged)."""
        _, rid = self.config_for(cell)
        return self.store.run_row(cell.dataset, cell.arch, rid)

    def recipe(self, dataset: str) -> dict:
        """The INR recipe the dataset's zoo is fitted with: defaults <- dataset's recipe <- ``--recipe``
        (checked against :data:`wsbench.config.RECIPE_PARAMS`; values as given, so zoo keys stay put)."""
        spec = self.registry.dataset(dataset)
        if spec.networks is not None:
            base = dict(spec.zoo_recipes.get(self.device.type) or spec.zoo_recipes.get("cpu") or {})
            unknown = sorted(set(self.settings.recipe or {}) - set(base))
            if unknown:
                raise WsbenchError(f"--recipe {unknown[0]}: not a recipe key of dataset {dataset!r}; its keys: "
                                   f"{', '.join(sorted(base)) or '(none)'}")
            merged = {**base, **(self.settings.recipe or {})}
            where = f"zoo recipe of dataset {dataset!r}"
            return dict(sorted((k, cfg.check_value(k, v, spec.zoo_params.get(k) or cfg.infer_param(base[k]), where,
                                                   flag="--recipe")) for k, v in merged.items()))
        unknown = sorted(set(self.settings.recipe or {}) - set(DEFAULT_RECIPE))
        if unknown:
            known = ", ".join(sorted(DEFAULT_RECIPE))
            raise WsbenchError(f"unknown INR recipe key {unknown[0]!r}; known keys: {known} (dataset {dataset!r})")
        recipe = dict(sorted({**DEFAULT_RECIPE, **spec.inr_recipe, **(self.settings.recipe or {})}.items()))
        cfg.check_recipe_values(recipe, f"INR recipe of dataset {dataset!r}")
        return recipe

    def task(self, dataset: str, progress=None, repair: bool = False) -> Task:
        """The dataset's Task, built once; ``repair`` fits a damaged cached zoo again instead of failing."""
        if dataset not in self._tasks:
            spec, recipe = self.registry.dataset(dataset), self.recipe(dataset)
            if spec.networks is None:
                spec = replace(spec, inr_recipe=recipe)
            self._tasks[dataset] = make_task(spec, self.settings.data_dir, self.settings.cache_dir,
                                             self.settings.limit, str(self.device), progress=progress,
                                             repair=repair, recipe=recipe)
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
        if self.store.is_complete(cell.dataset, cell.arch, rid):
            return {"run_id": rid, "status": "skipped"}
        claim = self.claims.acquire(rid)
        if claim is None:
            return {"run_id": rid, "status": "busy", "owner": self.claims.owner(rid)}
        started_clock = time.perf_counter()
        try:
            # Re-check under the claim: another process may have stored it since the first look.
            if self.store.is_complete(cell.dataset, cell.arch, rid):
                return {"run_id": rid, "status": "skipped"}
            task = self.task(cell.dataset)
            started = utc_now()
            tracker = None
            if self.settings.track:
                from wsbench.tracking import make_tracker
                tracker = make_tracker(self.settings.track, self.settings.out, cell.dataset, cell.arch, cell.seed,
                                       rid, config)
            try:
                result = train(task, arch, config, cell.seed, self.device, on_epoch=on_epoch,
                               checkpoint=self.checkpoint_path(rid), tracker=tracker)
                if tracker is not None:
                    tracker.log({"test/acc": result.test_acc}, result.best_epoch)
            except SystemExit as exc:  # a plugin calling sys.exit() must fail its cell, not end the grid
                raise PluginExit(f"architecture {cell.arch!r} called sys.exit({exc.code!r}) while training; "
                                 "a plugin must raise an exception instead") from exc
            finally:
                if tracker is not None:
                    tracker.close()
            row = self._row(cell, arch, config, rid, task, started, result)
            if self.settings.save_models:
                from wsbench.models import save_model
                save_model(self.model_path(cell, rid), result.state_dict, row, cell)
            self._write(cell, rid, row, result)
            self.drop_checkpoint(rid)
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

    def checkpoint_path(self, run_id: str) -> Path:
        """Where a run's training state is kept while it trains (see the module docstring)."""
        return Path(self.settings.out) / ".checkpoints" / run_id / "last.pt"

    def drop_checkpoint(self, run_id: str) -> None:
        shutil.rmtree(self.checkpoint_path(run_id).parent, ignore_errors=True)
        try:
            self.checkpoint_path(run_id).parent.parent.rmdir()  # no trace once nothing trains
        except OSError:
            pass

    def model_path(self, cell: Cell, run_id: str) -> Path:
        """Where ``--save-models`` keeps a run's selected model."""
        return Path(self.settings.out) / "models" / f"dataset={cell.dataset}" / f"arch={cell.arch}" / \
            f"{run_id}.safetensors"

    def _row(self, cell, arch, config, rid, task, started, result: RunResult) -> dict:
        return {
            "run_id": rid, "seed": cell.seed, "status": "finished", "error": None,
            "test_acc": None if math.isnan(result.test_acc) else result.test_acc,
            "val_acc": None if math.isnan(result.val_acc) else result.val_acc, "best_epoch": result.best_epoch,
            "target": task.info.target, "score": next(iter(result.scores), None),
            "test_score": _finite(next(iter(result.scores.values()), None)), "val_score": _finite(result.val_score),
            "test_scores": json.dumps({k: _finite(v) for k, v in result.scores.items()}),
            "epochs": int(config["epochs"]), "n_train": len(task.splits["train"]),
            "n_val": len(task.splits["val"]), "n_test": len(task.splits["test"]),
            "view": arch.view, "limit": self.settings.limit,
            "config": json.dumps(config, sort_keys=True), "history": json.dumps(result.history),
            "layers": json.dumps(list(result.layers)),
            "zoo_key": task.zoo_key or None,
            "inr_psnr_mean": None if np.isnan(task.psnr).all() else float(np.nanmean(task.psnr)),
            "wsbench_version": __version__, "plugin_distribution": arch.distribution,
            "plugin_version": arch.version, "torch_version": torch.__version__,
            "device": str(self.device), "threads": torch.get_num_threads(), "host": platform.node(),
            "wall_time_s": round(result.wall_time_s, 3), "started_at": started, "finished_at": utc_now(),
            **run_provenance(self.device), "resumed_from": result.resumed_from,
        }

    def _write(self, cell: Cell, rid: str, row: dict, result: RunResult) -> None:
        parts = {"dataset": cell.dataset, "arch": cell.arch}
        preds = prediction_table(rid, result.test_ids, result.labels, result.preds, result.confidence,
                                 scalar=self.registry.dataset(cell.dataset).target == "scalar")
        self.store.write("predictions", rid, preds, **parts)
        self.store.write("representations", rid, representation_table(rid, result.test_ids, result.layers), **parts)
        # The runs row last: its presence marks the run as stored.
        self.store.write("runs", rid, run_rows([row]), **parts)

    def record_failure(self, cell: Cell, exc: BaseException, started: float, status: str | None = None,
                       keep_checkpoint: bool = False) -> dict:
        """Store a failed cell with its status and error, so the grid can go on.

        Its training state is dropped (a rerun starts it afresh) unless ``keep_checkpoint``: a
        worker that died (killed from outside) leaves a state the rerun resumes from.
        """
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
            "threads": torch.get_num_threads(), "host": platform.node(),
            "wall_time_s": round(time.perf_counter() - started, 3), "finished_at": utc_now(),
            **run_provenance(self.device),
        }
        self.store.write("runs", rid, run_rows([row]), dataset=cell.dataset, arch=cell.arch)
        if not keep_checkpoint:
            self.drop_checkpoint(rid)
        return row
