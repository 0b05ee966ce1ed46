"""The rich displays of long commands.

:class:`GridDisplay`, the grid's one display: an overall bar (cells done / failed /
remaining, ETA), a bar per running cell (epoch, loss, validation accuracy, s/epoch) and a bar per
INR zoo being fitted (INRs/s, PSNR, ETA); a line per ended cell is printed above the bars and stays
in the log. When the console is not a terminal (output piped to a file, as under SLURM), bars
cannot redraw: every epoch and every fitted zoo chunk is logged as one plain line with its rate
and ETA instead.
:class:`StudyDisplay` shows a study's stages (zoo, grid, similarity) one after another.

ETAs come from epoch times, not cell wall times: a cell's first seconds (building the model,
moving data, compiling) say little about the epochs to come.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from wsbench.scores import row_text


def bars(console: Console) -> Progress:
    """Progress bars with a count, an info field, elapsed and remaining time."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


class ZooRate:
    """Rate and ETA of an INR zoo fit from its ``(done, total, mean_psnr)`` reports."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.t0: float | None = None
        self.base = 0  # a resumed build starts with finished chunks: not part of the rate
        self.last_line = -math.inf
        self.last_psnr: float | None = None

    def update(self, done: int, total: int) -> tuple[float, float | None]:
        """``(INRs per second, seconds left)`` (None before any INR is fitted here)."""
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.base = now, done
        rate = (done - self.base) / max(1e-9, now - self.t0)
        return rate, ((total - done) / rate if rate > 0 else None)

    def text(self, done: int, total: int, mean_psnr: float) -> str:
        rate, left = self.update(done, total)
        db = "" if mean_psnr != mean_psnr else f" · PSNR {mean_psnr:.1f} dB"
        return f"{rate:,.1f} networks/s{db} · ETA {_clock(left)}"

    def line_due(self, done: int, total: int, mean_psnr: float, every_s: float = 30.0) -> bool:
        """Whether a plain log line is due: a chunk ended (its mean PSNR changed), the fit ended, or
        ``every_s`` seconds passed."""
        now = time.perf_counter()
        chunk = mean_psnr == mean_psnr and mean_psnr != self.last_psnr
        if chunk or done >= total or now - self.last_line >= every_s:
            self.last_line, self.last_psnr = now, (mean_psnr if mean_psnr == mean_psnr else self.last_psnr)
            return True
        return False


def zoo_bar(progress: Progress, dataset: str):
    """A ``progress(done, total, mean_psnr)`` callback for an INR zoo fit: one bar with INRs/s, PSNR and
    ETA (a plain line per fitted chunk when the console is not a terminal)."""
    state: dict = {}
    rate = ZooRate(dataset)

    def cb(done, total, mean_psnr):
        if "id" not in state:
            state["id"] = progress.add_task(f"zoo {dataset}", total=total, info="")
        info = rate.text(done, total, mean_psnr)
        progress.update(state["id"], completed=done, info=info)
        if not progress.console.is_terminal and rate.line_due(done, total, mean_psnr):
            progress.console.print(f"zoo {dataset}: {done}/{total} networks · {info}", highlight=False,
                                   soft_wrap=True)
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
        self.plain = not console.is_terminal  # bars cannot redraw in a file: log a line per epoch instead
        self.slots = max(1, slots)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.grid_task: TaskID | None = None
        self.total = 0
        self.counts = {"done": 0, "failed": 0}
        self.running: dict = {}  # cell -> {"task", "t0", "epoch", "epochs", "epoch_s": [seconds per epoch]}
        self.durations: dict[str, list[float]] = {}  # arch -> wall times of its cells trained here
        self.pending: list = []  # cells planned and not started (for the ETA)
        self.zoo_tasks: dict = {}
        self.zoo_rates: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._refresh()
        return self.progress.__exit__(*exc)

    # ETA ----------------------------------------------------------------------------------------
    @staticmethod
    def _epoch_time(r: dict) -> float | None:
        """A running cell's time per epoch: the mean after its first epoch (which carries the start-up)."""
        times = r["epoch_s"][1:] or r["epoch_s"]
        return sum(times) / len(times) if times else None

    def _cell_time(self, arch: str) -> float | None:
        """Expected wall time of a whole cell of ``arch``: the cells of it that ended here, else the epoch
        times of a running one."""
        if self.durations.get(arch):
            return sum(self.durations[arch]) / len(self.durations[arch])
        for c, r in self.running.items():
            per_epoch = self._epoch_time(r)
            if c.arch == arch and per_epoch is not None and r["epochs"]:
                return per_epoch * r["epochs"]
        return None

    def eta(self) -> float | None:
        """Seconds until the timed part of the grid ends: the running cells' epochs left at their epoch
        time, plus the cells not started at their architecture's cell time, spread over the slots.
        Cells of an architecture not timed yet are left out (:meth:`untimed` counts them: guessing
        them from another architecture is what made ETAs several times too long). None while no
        running cell has finished an epoch."""
        work, timed = 0.0, False
        for r in self.running.values():
            per_epoch = self._epoch_time(r)
            if per_epoch is not None:
                work, timed = work + per_epoch * (r["epochs"] - r["epoch"]), True
        for c in self.pending:
            t = self._cell_time(c.arch)
            if t is not None:
                work, timed = work + t, True
        return work / self.slots if timed else None

    def untimed(self) -> int:
        """Cells left out of :meth:`eta`: not started (or not through an epoch) with no time for their
        architecture yet."""
        running = sum(1 for r in self.running.values() if self._epoch_time(r) is None)
        return running + sum(1 for c in self.pending if self._cell_time(c.arch) is None)

    def eta_text(self) -> str:
        n = self.untimed()
        return f"ETA {_clock(self.eta())}" + (f" + {n} cell{'s' if n > 1 else ''} not timed yet" if n else "")

    def _refresh(self):
        if self.grid_task is None:
            return
        done, failed = self.counts["done"], self.counts["failed"]
        remaining = self.total - done - failed
        fail = f"[red]{failed} failed[/red]" if failed else "0 failed"
        self.progress.update(self.grid_task, completed=done + failed,
                             info=f"{done} done · {fail} · {remaining} remaining · {self.eta_text()}")

    def _print(self, *args, **kwargs) -> None:
        # soft_wrap: a log line stays one line (and greppable) when the output is not a terminal.
        self.console.print(*args, soft_wrap=True, **kwargs)

    # Events -------------------------------------------------------------------------------------
    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "plan":
            self.total = event["total"]
            self.counts["done"] = event["skipped"]
            self.pending = list(event.get("cells") or [])
            self.grid_task = self.progress.add_task("grid", total=self.total, info="")
            if event["skipped"] == self.total:
                self._print(f"all {self.total} cells already stored in {event.get('out')}; nothing to train")
            elif event["skipped"]:
                self._print(f"{event['skipped']} of {self.total} cells already stored; skipping them")
        elif kind == "ready":
            self.slots = max(1, int(event["slots"]))
        elif kind == "zoo":
            self._zoo(event)
        elif kind == "start":
            cell = event["cell"]
            if cell not in self.running:
                where = f"  [dim]{event['where']}[/dim]" if event.get("where") else ""
                self.running[cell] = {"task": self.progress.add_task(cell.label, total=None, info=f"starting{where}"),
                                      "t0": time.perf_counter(), "epoch": 0, "epochs": 0, "epoch_s": []}
                if cell in self.pending:
                    self.pending.remove(cell)
        elif kind == "epoch":
            self._epoch(event)
        elif kind == "end":
            self._end(event)
        elif kind == "wait":
            names = ", ".join(c.label for c in event["cells"][:3]) + (" …" if len(event["cells"]) > 3 else "")
            self._print(f"[yellow]waiting[/yellow] for {len(event['cells'])} cell(s) another process is "
                        f"training: {names}")
        self._refresh()

    def _zoo(self, event: dict) -> None:
        ds, done, total, psnr = event["dataset"], event["done"], event["total"], event["psnr"]
        if ds not in self.zoo_tasks:
            self.zoo_tasks[ds] = self.progress.add_task(f"zoo {ds}", total=total, info="")
            self.zoo_rates[ds] = ZooRate(ds)
        rate = self.zoo_rates[ds]
        info = rate.text(done, total, psnr)
        self.progress.update(self.zoo_tasks[ds], completed=done, info=info)
        if self.plain and rate.line_due(done, total, psnr):
            self._print(f"zoo {ds}: {done}/{total} networks · {info}", highlight=False)

    def _epoch(self, event: dict) -> None:
        cell = event["cell"]
        if cell not in self.running:
            self(dict(type="start", cell=cell))
        r = self.running[cell]
        r["epoch"], r["epochs"] = event["epoch"], event["total"]
        if event.get("seconds") is not None:
            r["epoch_s"].append(float(event["seconds"]))
        loss = event.get("train_loss") or 0.0
        per_epoch = self._epoch_time(r)
        pace = "" if per_epoch is None else f" · {per_epoch:.2f} s/epoch"
        val = (f"val {100 * event['val_acc']:.1f}%" if event.get("val_acc") is not None
               else f"val score {event.get('val_score') or 0.0:.3f}")
        info = f"epoch {event['epoch']}/{event['total']} · loss {loss:.3f} · {val}{pace}"
        self.progress.update(r["task"], total=event["total"], completed=event["epoch"], info=info)
        if self.plain:
            left = None if per_epoch is None else per_epoch * (r["epochs"] - r["epoch"])
            self._print(f"{cell.label}: {info} · cell ETA {_clock(left)} · grid {self.eta_text()}",
                        highlight=False)

    def _end(self, event: dict) -> None:
        cell, status, row = event["cell"], event["status"], event.get("row") or {}
        r = self.running.pop(cell, None)
        if cell in self.pending:
            self.pending.remove(cell)
        if r is not None:
            self.progress.remove_task(r["task"])
            if status == "finished":
                self.durations.setdefault(cell.arch, []).append(time.perf_counter() - r["t0"])
        if event.get("failed"):
            self.counts["failed"] += 1
            self._print(f"[red]✗ {cell.label}: {status}[/red] {escape((row.get('error') or '')[:160])}",
                        highlight=False)
        else:
            self.counts["done"] += 1
            extra = {"elsewhere": " (trained by another process)", "skipped": " (already stored)"}.get(status, "")
            acc_text = row_text(row)
            wall = f" in {row['wall_time_s']:.1f} s" if isinstance(row.get("wall_time_s"), float) else ""
            resumed = f" (resumed after epoch {row['resumed_from']})" if row.get("resumed_from") else ""
            self._print(f"[green]✓[/green] {cell.label}: {acc_text}{wall}{resumed}{extra}", highlight=False)


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
        elif kind == "note":
            self.console.print(f"{event['dataset']}: {escape(event['text'])}", highlight=False, soft_wrap=True)
        elif isinstance(self.current, GridDisplay):
            self.current(event)
        elif kind in ("zoo", "similarity") and self.update is not None:
            self.update(event)
