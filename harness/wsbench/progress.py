"""The rich displays of long commands.

:class:`GridDisplay`, the grid's one display: an overall bar (cells done / failed /
remaining, ETA), a bar per running cell (epoch, loss, validation accuracy) and a bar per
INR zoo being fitted; a line per ended cell is printed above the bars and stays in the log.
:class:`StudyDisplay` shows a study's stages (zoo, grid, similarity) one after another.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def bars(console: Console) -> Progress:
    """Progress bars with a count, an info field, elapsed and remaining time."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


def zoo_bar(progress: Progress, dataset: str):
    """A ``progress(done, total, mean_psnr)`` callback for an INR zoo fit: one bar with INRs/s and PSNR."""
    state = {"t0": time.perf_counter()}

    def cb(done, total, mean_psnr):
        if "id" not in state:
            state["id"] = progress.add_task(f"INR zoo {dataset}", total=total, info="")
            state["base"] = done  # a resumed build starts with finished chunks: not part of the rate
        rate = (done - state["base"]) / max(1e-9, time.perf_counter() - state["t0"])
        db = "" if mean_psnr != mean_psnr else f"  PSNR {mean_psnr:.1f} dB"
        progress.update(state["id"], completed=done, info=f"{rate:,.0f} INRs/s{db}")
    return cb


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class GridDisplay:
    """Feed it the grid's events (``display(event)``, see :func:`wsbench.grid.run_grid`);
    use it as a context manager.

    ``slots`` is how many cells run at once (for the ETA).
    """

    def __init__(self, console: Console, slots: int = 1):
        self.console = console
        self.slots = max(1, slots)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.grid_task = None
        self.total = 0
        self.counts = {"done": 0, "failed": 0}
        self.running: dict = {}  # cell -> {"task", "t0", "frac"}
        self.durations: list[float] = []
        self.zoo_tasks: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._refresh()
        return self.progress.__exit__(*exc)

    # ETA: mean wall time of the cells trained here (or, before any ends, the running
    # cells' projected times) times the work left, spread over the slots.
    def eta(self) -> float | None:
        per_cell = None
        if self.durations:
            per_cell = sum(self.durations) / len(self.durations)
        else:
            projected = [(time.perf_counter() - r["t0"]) / r["frac"] for r in self.running.values() if r["frac"] > 0]
            if projected:
                per_cell = sum(projected) / len(projected)
        if per_cell is None:
            return None
        remaining = self.total - self.counts["done"] - self.counts["failed"]
        left_running = sum(1 - r["frac"] for r in self.running.values())
        return per_cell * (remaining - len(self.running) + left_running) / self.slots

    def _refresh(self):
        if self.grid_task is None:
            return
        done, failed = self.counts["done"], self.counts["failed"]
        remaining = self.total - done - failed
        fail = f"[red]{failed} failed[/red]" if failed else "0 failed"
        self.progress.update(self.grid_task, completed=done + failed,
                             info=f"{done} done · {fail} · {remaining} remaining · ETA {_clock(self.eta())}")

    def _print(self, *args, **kwargs) -> None:
        # soft_wrap: a log line stays one line (and greppable) when the output is not a terminal.
        self.console.print(*args, soft_wrap=True, **kwargs)

    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "plan":
            self.total = event["total"]
            self.counts["done"] = event["skipped"]
            self.grid_task = self.progress.add_task("grid", total=self.total, info="")
            if event["skipped"] == self.total:
                self._print(f"all {self.total} cells already stored in {event.get('out')}; nothing to train")
            elif event["skipped"]:
                self._print(f"{event['skipped']} of {self.total} cells already stored; skipping them")
        elif kind == "ready":
            self.slots = max(1, int(event["slots"]))
        elif kind == "zoo":
            ds = event["dataset"]
            if ds not in self.zoo_tasks:
                self.zoo_tasks[ds] = self.progress.add_task(f"INR zoo {ds}", total=event["total"], info="")
            psnr = event["psnr"]
            self.progress.update(self.zoo_tasks[ds], completed=event["done"],
                                 info="" if psnr != psnr else f"PSNR {psnr:.1f} dB")
        elif kind == "start":
            cell = event["cell"]
            if cell not in self.running:
                where = f"  [dim]{event['where']}[/dim]" if event.get("where") else ""
                self.running[cell] = {"task": self.progress.add_task(cell.label, total=None, info=f"starting{where}"),
                                      "t0": time.perf_counter(), "frac": 0.0}
        elif kind == "epoch":
            cell = event["cell"]
            if cell not in self.running:
                self(dict(type="start", cell=cell))
            r = self.running[cell]
            r["frac"] = event["epoch"] / max(1, event["total"])
            val = event.get("val_acc")
            loss = event.get("train_loss")
            self.progress.update(r["task"], total=event["total"], completed=event["epoch"],
                                 info=f"epoch {event['epoch']}/{event['total']} · loss {loss:.3f} · "
                                      f"val {100 * val:.1f}%")
        elif kind == "end":
            self._end(event)
        elif kind == "wait":
            names = ", ".join(c.label for c in event["cells"][:3]) + (" …" if len(event["cells"]) > 3 else "")
            self._print(f"[yellow]waiting[/yellow] for {len(event['cells'])} cell(s) another process is "
                               f"training: {names}")
        self._refresh()

    def _end(self, event: dict) -> None:
        cell, status, row = event["cell"], event["status"], event.get("row") or {}
        r = self.running.pop(cell, None)
        if r is not None:
            self.progress.remove_task(r["task"])
            if status == "finished":
                self.durations.append(time.perf_counter() - r["t0"])
        if event.get("failed"):
            self.counts["failed"] += 1
            self._print(f"[red]✗ {cell.label}: {status}[/red] {(row.get('error') or '')[:160]}",
                               highlight=False)
        else:
            self.counts["done"] += 1
            acc = row.get("test_acc")
            extra = {"elsewhere": " (trained by another process)", "skipped": " (already stored)"}.get(status, "")
            acc_text = f"test {100 * acc:.2f}%" if isinstance(acc, float) else ""
            wall = f" in {row['wall_time_s']:.1f} s" if isinstance(row.get("wall_time_s"), float) else ""
            self._print(f"[green]✓[/green] {cell.label}: {acc_text}{wall}{extra}", highlight=False)


class StudyDisplay:
    """Feed it a study's events (``display(event)``, see :func:`wsbench.study.run_study`);
    use it as a context manager. Each stage gets its own display while it runs: a zoo bar,
    the :class:`GridDisplay`, a similarity bar."""

    def __init__(self, console: Console):
        self.console = console
        self.current: Any = None  # the display of the stage under way
        self.update: Callable[[dict], None] | None = None  # its progress callback (zoo, similarity)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close(*exc)
        return False

    def _close(self, *exc) -> None:
        if self.current is not None:
            self.current.__exit__(*(exc or (None, None, None)))
        self.current = self.update = None

    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "stage":
            self._close()
            if event["phase"] == "start" and event["stage"] == "grid":
                self.current = GridDisplay(self.console).__enter__()
            elif event["phase"] == "start" and event["stage"] in ("zoo", "similarity"):
                self.current = bars(self.console).__enter__()
                ds = event["dataset"]
                if event["stage"] == "zoo":
                    cb = zoo_bar(self.current, ds)
                    self.update = lambda e: cb(e["done"], e["total"], e["psnr"])
                else:
                    bar = self.current.add_task(f"similarity {ds}", total=None, info="")
                    self.update = lambda e: self.current.update(bar, total=e["total"], completed=e["done"])
        elif kind == "warning":
            self.console.print(f"[yellow]warning:[/yellow] {event['message']}", highlight=False)
        elif isinstance(self.current, GridDisplay):
            self.current(event)
        elif kind in ("zoo", "similarity") and self.update is not None:
            self.update(event)
