"""Leaderboards: pure functions of the stored tables, and their renderers.

``build(runs, similarity)`` turns table rows into a :class:`Board`; the renderers
turn a Board into rich tables or Markdown. Nothing here trains or reads files.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

# Two-sided 95 % Student-t critical values by degrees of freedom (1..30); 1.96 beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def mean_ci(values) -> tuple[float, float, float, float]:
    """``(mean, std, ci_low, ci_high)``: sample std and a 95 % t-interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan"), float("nan")
    s = float(v.std(ddof=1))
    h = t95(len(v) - 1) * s / math.sqrt(len(v))
    return m, s, m - h, m + h


@dataclass
class Board:
    accuracy: list = field(default_factory=list)  # dict rows, ranked within dataset
    stability: list = field(default_factory=list)  # cross-seed similarity per architecture and layer
    cross: list = field(default_factory=list)  # cross-architecture layer x layer similarity
    failures: list = field(default_factory=list)  # runs that did not finish


def accuracy_rows(runs: list[dict]) -> list[dict]:
    """Per dataset, architectures ranked by mean test accuracy over seeds.

    ``rank`` is 1 + the number of architectures whose interval lies wholly above
    this one's: architectures the intervals cannot separate share a rank.
    """
    groups = defaultdict(list)
    for r in runs:
        if r.get("status") == "finished":
            groups[(r["dataset"], r["arch"])].append(r)
    rows = []
    for (ds, arch), rs in groups.items():
        accs = [r["test_acc"] for r in sorted(rs, key=lambda r: r["seed"])]
        m, s, lo, hi = mean_ci(accs)
        rows.append({"dataset": ds, "arch": arch, "view": rs[0].get("view"), "mean": m, "std": s,
                     "ci_low": lo, "ci_high": hi, "seeds": len(accs),
                     "best": max(accs), "worst": min(accs)})
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        block = sorted([r for r in rows if r["dataset"] == ds], key=lambda r: (-r["mean"], r["arch"]))
        def low(r):
            return r["mean"] if math.isnan(r["ci_low"]) else r["ci_low"]

        def high(r):
            return r["mean"] if math.isnan(r["ci_high"]) else r["ci_high"]

        for r in block:
            r["rank"] = 1 + sum(1 for o in block if o is not r and low(o) > high(r))
        ranks = [r["rank"] for r in block]
        for r in block:
            r["tie"] = ranks.count(r["rank"]) > 1
        out += block
    return out


def stability_rows(similarity: list[dict], metric: str) -> list[dict]:
    """Cross-seed similarity: same architecture, different seeds, same layer, averaged over seed pairs."""
    groups = defaultdict(list)
    for s in similarity:
        if s["metric"] == metric and s["arch_a"] == s["arch_b"] and s["layer_a"] == s["layer_b"]:
            groups[(s["dataset"], s["arch_a"], s["layer_index_a"], s["layer_a"])].append(s["value"])
    rows = []
    for (ds, arch, li, layer), vals in sorted(groups.items()):
        m, sd, lo, hi = mean_ci(vals)
        rows.append({"dataset": ds, "metric": metric, "arch": arch, "layer_index": li, "layer": layer,
                     "mean": m, "std": sd, "ci_low": lo, "ci_high": hi, "pairs": len(vals)})
    return rows


def cross_rows(similarity: list[dict], metric: str) -> list[dict]:
    """Cross-architecture similarity per (arch_a layer, arch_b layer), averaged over seed pairs."""
    groups = defaultdict(list)
    for s in similarity:
        if s["metric"] != metric or s["arch_a"] == s["arch_b"]:
            continue
        a = (s["arch_a"], s["layer_index_a"], s["layer_a"])
        b = (s["arch_b"], s["layer_index_b"], s["layer_b"])
        if a[0] > b[0]:
            a, b = b, a
        groups[(s["dataset"], *a, *b)].append(s["value"])
    rows = []
    for (ds, aa, ia, la, ab, ib, lb), vals in sorted(groups.items()):
        m, sd, lo, hi = mean_ci(vals)
        rows.append({"dataset": ds, "metric": metric, "arch_a": aa, "layer_index_a": ia, "layer_a": la,
                     "arch_b": ab, "layer_index_b": ib, "layer_b": lb, "mean": m, "std": sd,
                     "ci_low": lo, "ci_high": hi, "pairs": len(vals)})
    return rows


def build(runs: list[dict], similarity: list[dict], metric: str = "cka") -> Board:
    return Board(
        accuracy=accuracy_rows(runs),
        stability=stability_rows(similarity, metric),
        cross=cross_rows(similarity, metric),
        failures=[r for r in runs if r.get("status") not in ("finished", None)],
    )


# Rendering --------------------------------------------------------------------------------

def _f(x, digits=4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def accuracy_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "rank", "arch", "view", "test acc % (mean)", "std", "95 % CI", "seeds"]
    body = [[r["dataset"], f"{r['rank']}{'=' if r['tie'] else ''}", r["arch"], r["view"] or "",
             _pct(r["mean"]), _pct(r["std"]), f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]", str(r["seeds"])]
            for r in board.accuracy]
    return head, body


def stability_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "arch", "layer", "cross-seed similarity (mean)", "95 % CI", "seed pairs"]
    body = [[r["dataset"], r["arch"], r["layer"], _f(r["mean"]), f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
             str(r["pairs"])] for r in board.stability]
    return head, body


def cross_matrices(board: Board) -> list[tuple[str, list[str], list[list[str]]]]:
    """One layer x layer matrix per (dataset, arch pair): ``(title, header, rows)``."""
    out = []
    keys = sorted({(r["dataset"], r["arch_a"], r["arch_b"]) for r in board.cross})
    for ds, aa, ab in keys:
        cells = [r for r in board.cross if (r["dataset"], r["arch_a"], r["arch_b"]) == (ds, aa, ab)]
        la = sorted({(r["layer_index_a"], r["layer_a"]) for r in cells})
        lb = sorted({(r["layer_index_b"], r["layer_b"]) for r in cells})
        value = {(r["layer_a"], r["layer_b"]): r["mean"] for r in cells}
        head = [f"{aa} \\ {ab}", *[n for _, n in lb]]
        rows = [[n, *[_f(value.get((n, m)), 3) for _, m in lb]] for _, n in la]
        out.append((f"{ds}: {aa} vs {ab} ({board.cross[0]['metric']}, mean over seed pairs)", head, rows))
    return out


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(board: Board, title: str = "wsbench leaderboard") -> str:
    parts = [f"# {title}", "", "## Test accuracy", "",
             "Ranked by mean over seeds; `=` marks ranks that the 95 % intervals cannot separate.", ""]
    parts.append(_md_table(*accuracy_table(board)) if board.accuracy else "_no finished runs_")
    parts += ["", "## Cross-seed stability", "",
              "Similarity between seeds of one architecture, layer by layer.", ""]
    parts.append(_md_table(*stability_table(board)) if board.stability else "_no similarity computed_")
    parts += ["", "## Cross-architecture similarity", ""]
    mats = cross_matrices(board)
    if not mats:
        parts.append("_no similarity computed_")
    for title_, head, rows in mats:
        parts += [f"### {title_}", "", _md_table(head, rows), ""]
    if board.failures:
        parts += ["", "## Failed runs", "",
                  _md_table(["dataset", "arch", "seed", "status", "error"],
                            [[r["dataset"], r["arch"], str(r["seed"]), r["status"], (r.get("error") or "")[:120]]
                             for r in board.failures])]
    return "\n".join(parts).rstrip() + "\n"


def render_rich(board: Board):
    """A list of rich renderables."""
    from rich.table import Table

    def table(title, head, rows):
        t = Table(title=title, title_justify="left")
        for h in head:
            t.add_column(h)
        for row in rows:
            t.add_row(*row)
        return t

    out = []
    out.append(table("Test accuracy (ranked; = marks ties the intervals cannot separate)", *accuracy_table(board))
               if board.accuracy else "no finished runs")
    if board.stability:
        out.append(table("Cross-seed stability", *stability_table(board)))
    for title_, head, rows in cross_matrices(board):
        out.append(table(title_, head, rows))
    if board.failures:
        out.append(table("Failed runs", ["dataset", "arch", "seed", "status", "error"],
                         [[r["dataset"], r["arch"], str(r["seed"]), r["status"], (r.get("error") or "")[:80]]
                          for r in board.failures]))
    return out
