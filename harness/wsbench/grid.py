"""The seed x architecture grid: run every cell not yet stored through an executor,
wait for cells another process is training, and report one outcome per cell.

Rerunning a grid resumes it: stored, finished cells are skipped. A killed grid
(SIGKILL included) leaves a claim whose owner is dead: the next grid takes it
over and trains the missing cells only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from wsbench.errors import WsbenchError
from wsbench.executors import make_executor
from wsbench.plugins import Registry
from wsbench.runner import FAILED_STATUSES, Cell, Runner, Settings, inapplicable


def grid_cells(datasets: Iterable[str], architectures: Iterable[str], seeds: Iterable[int]) -> list[Cell]:
    """Every (dataset, architecture, seed) cell, in that nesting order; a name or seed given twice
    counts once (a repeated cell would wait on itself and report ``elsewhere``)."""
    names = list(dict.fromkeys(datasets))
    archs = list(dict.fromkeys(architectures))
    unique_seeds = list(dict.fromkeys(seeds))
    return [Cell(d, a, s) for d in names for a in archs for s in unique_seeds]


def applicable(cells: list[Cell], registry: Registry) -> tuple[list[Cell], list[str]]:
    """The cells whose architecture applies to their dataset (:func:`wsbench.runner.inapplicable`: it reads
    a view the dataset offers, and it reads mixed architectures where the dataset's networks differ), and
    one line per (dataset, architecture) left out, saying why. A grid or study over zoos of different
    kinds (INR and CNN zoos, say) runs every combination that applies; an empty result is the caller's error."""
    keep, skipped = [], {}
    for c in cells:
        why = inapplicable(registry.architecture(c.arch), registry.dataset(c.dataset))
        if why is None:
            keep.append(c)
        else:
            skipped[(c.dataset, c.arch)] = why
    return keep, list(skipped.values())


def applicability_notes(runs: Iterable[dict], registry: Registry) -> list[dict]:
    """For a leaderboard: ``{dataset, arch, reason}`` for every architecture of ``runs`` that does not apply
    to one of their datasets (:func:`wsbench.runner.inapplicable`), so the page says why a cell is empty.
    Names this registry does not know (results from elsewhere) are passed over."""
    rows = list(runs)
    archs, datasets = sorted({r["arch"] for r in rows}), sorted({r["dataset"] for r in rows})
    out = []
    for d in datasets:
        for a in archs:
            try:
                why = inapplicable(registry.architecture(a), registry.dataset(d))
            except WsbenchError:
                continue
            if why is not None:
                out.append({"dataset": d, "arch": a, "reason": why})
    return out


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

    Events passed to ``on_event`` (dicts with ``type``): ``plan`` (total, skipped, the cells to run),
    ``ready`` (slots: cells run at once), ``start`` / ``epoch`` / ``end`` per cell (from the executor), ``wait`` (cells
    claimed by other processes). An ``end`` event carries the cell's ``status``, its
    ``row`` and ``failed`` (the status is one of :data:`FAILED_STATUSES`). Cells
    claimed by a live process elsewhere are waited for: stored by it, they count as
    ``elsewhere``; if their claim goes stale (the owner died), they are run here.
    """
    sink = on_event or (lambda e: None)

    def emit(event: dict) -> None:
        if event["type"] == "end":
            event = {**event, "failed": event["status"] in FAILED_STATUSES}
        sink(event)

    runner.validate(cells)
    outcomes: dict[Cell, CellOutcome] = {}
    todo = []
    for c in cells:
        if runner.is_done(c):
            outcomes[c] = CellOutcome(c, "skipped", {"run_id": runner.config_for(c)[1], "status": "skipped"})
        else:
            todo.append(c)
    emit({"type": "plan", "total": len(cells), "skipped": len(cells) - len(todo), "out": str(runner.settings.out),
          "cells": list(todo)})
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
                row = runner.stored_row(cell) if now is not None and now != before else None
                if row is not None:
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


def summarize(outcomes: Iterable[CellOutcome]) -> dict[str, int]:
    """How many cells ended in each status, sorted by status."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return dict(sorted(counts.items()))


def run_cells(cells: list[Cell], settings: Settings, registry: Registry, executor: str = "local", workers: int = 1,
              ray_address: str | None = None, isolate: bool = True,
              on_event: Callable[[dict], None] | None = None) -> list[CellOutcome]:
    """:func:`run_grid` with a Runner of its own and the executor called ``executor``
    (:func:`wsbench.executors.make_executor`), closed at the end."""
    runner = Runner(registry, settings)
    runner.validate(cells)  # before the executor starts (Ray, worker processes): bad names fail at once
    runner.store.check_writable()
    runner.store.sweep()  # temporaries of writers killed earlier (SIGKILL leaves them)
    ex = make_executor(executor, runner, ray_address, isolate=isolate, workers=workers)
    try:
        return run_grid(cells, runner, ex, on_event=on_event)
    finally:
        ex.close()
