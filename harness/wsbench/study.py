"""Studies: a named, versioned grid (datasets x architectures x seeds) with its similarity
measures and leaderboard export, run with one command and resumed where it stopped.

A study is a TOML file: the built-in ones live in ``wsbench/studies/``; any path works too.
:func:`run_study` drives it: per dataset the INR zoo, the seed x architecture grid and the
similarity; then one leaderboard export for all. Wall times of every stage are appended to
``<out>/study-<name>.json``.
"""
from __future__ import annotations

import json
import platform
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import tomllib

from wsbench import plugins, reporting, similarity
from wsbench.claims import utc_now
from wsbench.config import MAX_SEED_COUNT
from wsbench.errors import WsbenchError
from wsbench.executors import make_executor
from wsbench.grid import applicability_notes, applicable, grid_cells, run_grid
from wsbench.plugins import Registry
from wsbench.reporting import export
from wsbench.runner import Runner, Settings
from wsbench.store import Store
from wsbench.tables import write_text
from wsbench.train import resolve_device

STUDY_DIR = Path(__file__).parent / "studies"


@dataclass
class Study:
    name: str
    title: str
    datasets: list
    architectures: list
    seeds: int
    metrics: list
    resamples: int = 1000
    permutations: int = 100
    export: str = ""
    published: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # per-architecture overrides: {"gmn": {"probes": 0}}
    path: str = ""

    def overrides(self) -> dict:
        """The study's config as ``ARCH.key`` overrides (wsbench.config.scoped)."""
        from wsbench.config import scoped
        bad = sorted(k for k, v in self.config.items() if not isinstance(v, dict))
        if bad:
            raise WsbenchError(f"study {self.name!r}: config.{bad[0]} must be a table of one architecture's "
                               f"keys, e.g. [config.gmn] probes = 0")
        return scoped(self.config)


# A study's name becomes a file name (``study-<name>.json``): a plain name, never a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_study_fields(raw: dict, path: Path) -> None:
    """Every field of a study file has its type (a string where a list belongs would be read letter
    by letter); a one-line error names the field, what it holds and an example."""
    def fail(key: str, expected: str, example: str) -> WsbenchError:
        return WsbenchError(f"study file {path}: {key} = {raw[key]!r} is not {expected}; write e.g. {example}")
    for key in ("datasets", "architectures", "metrics"):
        v = raw.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise fail(key, "a non-empty list of names", f'{key} = ["{v if isinstance(v, str) else "name"}"]')
        if len(set(v)) != len(v):
            raise fail(key, "a list of distinct names", f"{key} = {sorted(set(v))!r}")
    for key in ("name", "title", "export"):
        if key in raw and not isinstance(raw[key], str):
            raise fail(key, "a string", f'{key} = "text"')
    if not NAME.fullmatch(raw["name"]):
        raise fail("name", "a plain name (letters, digits, '.', '_', '-'; it names the study's log file)",
                   'name = "my-study"')
    seeds = raw.get("seeds")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEED_COUNT:
        raise fail("seeds", f"a count of seeds from 1 to {MAX_SEED_COUNT}", "seeds = 5")
    for key in ("resamples", "permutations"):
        v = raw.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise fail(key, "a count (0 or more)", f"{key} = 100")
    for key in ("published", "config"):
        if key in raw and not isinstance(raw[key], dict):
            raise fail(key, "a table", f"[{key}]")


def known_studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.toml"))


def load_study(name_or_path: str) -> Study:
    """A built-in study by name, or a study TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        path = STUDY_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise WsbenchError(f"unknown study {name_or_path!r}; known studies: {', '.join(known_studies())} "
                           "(or pass the path of a study .toml file)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise WsbenchError(f"study file {path} is not valid TOML ({exc}); fix its syntax") from None
    fields = set(Study.__dataclass_fields__) - {"path"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise WsbenchError(f"study file {path}: unknown key(s) {', '.join(unknown)}; known keys: "
                           f"{', '.join(sorted(fields))}")
    missing = [k for k in ("name", "title", "datasets", "architectures", "seeds", "metrics") if k not in raw]
    if missing:
        raise WsbenchError(f"study file {path}: missing key(s) {', '.join(missing)}")
    check_study_fields(raw, path)
    study = Study(**raw, path=str(path))
    study.overrides()  # a malformed [config] table is an error now, not when the grid starts
    return study


def log_stage(out: Path, study: Study, record: dict) -> None:
    """Append one stage's record (wall time and what it did) to ``<out>/study-<name>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"study-{study.name}.json"
    log: dict = json.loads(path.read_text()) if path.exists() else {"study": study.name, "stages": []}
    log["stages"].append(record)
    write_text(path, json.dumps(log, indent=2) + "\n")


def study_settings(study: Study, settings: Settings) -> Settings:
    """The command's settings with the study's per-architecture config added (the command's
    own overrides win)."""
    return replace(settings, overrides={**study.overrides(), **(settings.overrides or {})})


@dataclass
class StudyReport:
    """What :func:`run_study` did: failed cells, and the leaderboard when it exported one."""

    failed_cells: int = 0
    board: Any = None  # wsbench.reporting board of the export
    exported: list | None = None  # files written by the export, None when it was skipped
    export_to: str | None = None
    outcomes: list = field(default_factory=list)  # every grid cell's CellOutcome, dataset by dataset


def run_study(study: Study, settings: Settings, *, datasets: list[str] | None = None, seeds: list[int] | None = None,
              workers: int = 1, resamples: int | None = None, export_to: str | None = None,
              registry: Registry | None = None, images: Callable[[str], Any] | None = None,
              on_event: Callable[[dict], None] | None = None) -> StudyReport:
    """Run ``study`` end to end, resuming where it stopped.

    Per dataset (``datasets``: a subset of the study's, default all): the INR zoo, the
    seed x architecture grid (``seeds``, default ``range(study.seeds)``; ``workers`` > 1
    runs cells in that many worker processes) and the similarity (``resamples`` overrides
    the study's); then the leaderboard export to ``export_to`` (default the study's;
    ``"none"`` or empty skips it), with sample images from ``images(dataset)`` when given.
    Each stage's wall time is appended to ``<out>/study-<name>.json`` (:func:`log_stage`).

    Events passed to ``on_event``: ``stage`` (``phase`` start with ``stage`` and
    ``dataset``; ``phase`` end with the logged ``record``), ``zoo`` (dataset, done,
    total, psnr), the grid's events (:func:`wsbench.grid.run_grid`), ``similarity``
    (dataset, done, total) and ``warning`` (message).
    """
    emit = on_event or (lambda e: None)
    reg = registry or plugins.registry()
    unknown = sorted(set(datasets or ()) - set(study.datasets))
    if unknown:
        raise WsbenchError(f"--dataset {', '.join(unknown)} is not in study {study.name!r}; its datasets: "
                           f"{', '.join(study.datasets)}")
    datasets = [d for d in study.datasets if not datasets or d in datasets]
    seeds = list(range(study.seeds)) if seeds is None else list(seeds)
    metrics = [reg.metric(m) for m in study.metrics]
    settings = study_settings(study, settings)
    out = Path(settings.out)
    runner = Runner(reg, settings)
    planned, left_out = applicable(grid_cells(datasets, study.architectures, seeds or [0]), reg)
    if not planned:
        raise WsbenchError(f"study {study.name!r}: no architecture applies to its datasets: {'; '.join(left_out)}")
    runner.validate(planned)
    runner.store.check_writable()
    runner.store.sweep()
    dev = str(resolve_device(settings.device))
    store = Store(out)
    report = StudyReport()

    def stage(name: str, dataset: str | None = None) -> float:
        emit({"type": "stage", "phase": "start", "stage": name, "dataset": dataset})
        return time.perf_counter()

    def done(record: dict, t0: float) -> None:
        head = {k: record[k] for k in ("dataset", "stage") if k in record}
        record = {**head, "seconds": round(time.perf_counter() - t0, 2), **record, "at": utc_now()}
        log_stage(out, study, record)
        emit({"type": "stage", "phase": "end", "stage": record["stage"], "dataset": record.get("dataset"),
              "record": record})

    executor = make_executor("local", runner, workers=workers)

    def one_dataset(ds: str) -> None:
        t0 = stage("zoo", ds)
        task = runner.task(ds, progress=lambda k, n, psnr: emit(
            {"type": "zoo", "dataset": ds, "done": k, "total": n, "psnr": psnr}))
        done({"dataset": ds, "stage": "zoo", "inrs": len(task.ids),
              "psnr": task.zoo.manifest["psnr"] if task.zoo else None, "device": dev, "host": platform.node()}, t0)
        t0 = stage("grid", ds)
        cells, left_out = applicable(grid_cells([ds], study.architectures, seeds), reg)
        if left_out:
            emit({"type": "note", "dataset": ds, "text": "not applicable, left out: " + "; ".join(left_out)})
        outcomes = run_grid(cells, runner, executor, on_event=emit)
        report.failed_cells += sum(o.failed for o in outcomes)
        report.outcomes += outcomes
        done({"dataset": ds, "stage": "grid", "cells": len(cells), "workers": workers, "device": dev}, t0)
        t0 = stage("similarity", ds)
        similarity.compute(store, metrics, [ds], device=dev,
                           resamples=study.resamples if resamples is None else resamples,
                           permutations=study.permutations,
                           progress=lambda k, n: emit({"type": "similarity", "dataset": ds, "done": k, "total": n}))
        done({"dataset": ds, "stage": "similarity", "metrics": study.metrics, "device": dev}, t0)

    try:
        for ds in datasets:
            one_dataset(ds)
    finally:
        executor.close()
    target = export_to if export_to is not None else study.export
    if target and target != "none":
        t0 = stage("export")
        tables = export.load(out)
        board = reporting.build(tables.runs, tables.similarity, metric=study.metrics[0],
                                not_applicable=applicability_notes(tables.runs, reg),
                                predictions=tables.predictions, value_range=metrics[0].range)
        if images is not None:
            export.attach_images(tables, board, images, warn=lambda m: emit({"type": "warning", "message": m}))
        written = export.write_export(tables, board, Path(target), study.title)
        done({"stage": "export", "to": target, "files": len(written)}, t0)
        report.board, report.exported, report.export_to = board, written, target
    return report
