"""Paper figures of a leaderboard, as PDF and PNG (matplotlib; ``pip install 'wsbench[plot]'``).

``wsbench plot`` draws them from a results root or an exported leaderboard folder:

  accuracy.{pdf,png}          per dataset with a class target (one panel each): test accuracy of every
                              architecture, the mean with its 95 % interval over seeds, every seed as a dot,
                              and the chance level
  scores.{pdf,png}            the same for datasets with a scalar target, on their primary score (Kendall's
                              tau), ranked in its direction, no chance line (scores-<score>.* when scalar
                              datasets rank by different scores)
  stability.{pdf,png}         cross-seed similarity of every layer (mean over seed pairs, 95 % interval,
                              permutation baseline), a row per dataset, a panel per architecture
  cross-<dataset>.{pdf,png}   one dataset's layer x layer similarity between every two architectures, one
                              panel per pair with titled axes and one shared, labelled colour bar

Like the rest of :mod:`wsbench.reporting`, a figure is a function of the tables (a :class:`Board`
plus the per-seed accuracies and the chance level); only :func:`write_figures` touches files.
"""
from __future__ import annotations

import math
from pathlib import Path

from wsbench.errors import WsbenchError
from wsbench.reporting.board import FUNCTION, IMAGES, WEIGHTS, Board, layer_matrices, run_score, score_of
from wsbench.reporting.board import chance_levels as board_chance
from wsbench.reporting.stats import is_missing

FORMATS = ("pdf", "png")
MIN_SPAN = 5.0  # percentage points: the narrowest accuracy axis
MIN_SPAN_FRACTION = 0.05  # of a bounded score's range (0.1 for Kendall's tau): the narrowest axis of other scores
VIEW_COLOURS = {WEIGHTS: "#c2410c", IMAGES: "#1d4ed8", FUNCTION: "#7c3aed"}  # as on the HTML page
VIEW_NAMES = {WEIGHTS: "weight-space model", IMAGES: "image model", FUNCTION: "function-view model"}
METRIC_NAMES = {"cka": "CKA (linear, debiased)", "cka-biased": "CKA (linear, biased)", "cka-rbf": "CKA (RBF)",
                "mknn": "mutual k-NN", "procrustes": "Procrustes similarity", "svcca": "SVCCA"}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a one-line error naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise WsbenchError("wsbench plot needs matplotlib: pip install 'wsbench[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def metric_label(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def chance_levels(predictions: list[dict], classes: dict | None = None) -> dict[str, float]:
    """``{dataset: 1 / number of classes}``: the class names when known, else the labels in the predictions."""
    out = board_chance(predictions)
    for ds, names in (classes or {}).items():
        if names:
            out[ds] = 1.0 / len(names)
    return out


def nice_step(span: float) -> float:
    """A round tick step (1, 2, 5, 10, 20, 25 ... percentage points) giving 4 to 8 ticks over ``span``."""
    for step in (0.5, 1, 2, 5, 10, 20, 25, 50):
        if span / step <= 8:
            return float(step)
    return 50.0


def chance_on_axis(lows: list[float], highs: list[float], chance: float | None) -> bool:
    """Whether the chance level shares the axis with the accuracies: only when it does not squeeze them
    (it lies within one data span of the lowest value); otherwise it is named at the axis' left edge."""
    if chance is None:
        return False
    span = max(highs) - min(lows)
    return min(lows) - chance <= max(span, MIN_SPAN)


def accuracy_range(lows: list[float], highs: list[float], chance: float | None) -> tuple[float, float, float]:
    """``(left, right, step)`` in percent: round limits on a round step, holding every interval (and
    the chance level when it is on the axis, see :func:`chance_on_axis`)."""
    extra = [chance] if chance is not None and chance_on_axis(lows, highs, chance) else []
    lo, hi = min(lows + extra), max(highs + extra)
    if hi - lo < MIN_SPAN:  # one seed, or seeds that agree: a readable axis around them, not a sliver
        mid = (hi + lo) / 2
        lo, hi = max(0.0, min(mid - MIN_SPAN / 2, 100.0 - MIN_SPAN)), min(100.0, max(mid + MIN_SPAN / 2, MIN_SPAN))
    step = nice_step(max(hi - lo, 1.0) * 1.1)
    left = max(0.0, math.floor((lo - 0.05 * (hi - lo + 1)) / step) * step)
    right = min(100.0, math.ceil((hi + 0.05 * (hi - lo + 1)) / step) * step)
    return left, right, step


def round_step(span: float) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving at most 8 ticks over ``span`` > 0."""
    mag = 10.0 ** math.floor(math.log10(span))
    for m in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0):
        if span / (m * mag) <= 8:
            return m * mag
    return 10.0 * mag


def score_range(lows: list[float], highs: list[float], score: str) -> tuple[float, float, float]:
    """``(left, right, step)`` of a score axis in the score's own units (not percent): round limits on
    a round step holding every value, never past the values the score can take (Kendall's tau stays
    in [-1, 1]), and at least :data:`MIN_SPAN_FRACTION` of a bounded range wide (0.1 for tau), so seeds
    that agree give a readable axis rather than a sliver."""
    bound_lo, bound_hi = score_of(score).range or (-math.inf, math.inf)
    lo, hi = min(lows), max(highs)
    finite = math.isfinite(bound_lo) and math.isfinite(bound_hi)
    min_span = MIN_SPAN_FRACTION * (bound_hi - bound_lo) if finite else max(abs(lo), abs(hi), 1e-9) * 0.2
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
        if lo < bound_lo:
            lo, hi = bound_lo, bound_lo + min_span
        if hi > bound_hi:
            lo, hi = bound_hi - min_span, bound_hi
    step = round_step((hi - lo) * 1.1)
    left = max(bound_lo, math.floor((lo - 0.05 * (hi - lo)) / step) * step)
    right = min(bound_hi, math.ceil((hi + 0.05 * (hi - lo)) / step) * step)
    return left, right, step


def accuracy_figure(board: Board, seeds: dict, chance: dict, score: str = "accuracy"):
    """The test ``score`` per dataset ranked by it (default accuracy; only the datasets whose primary
    score it is): ``seeds`` maps ``(dataset, arch)`` to the seeds' values (accuracy 0..1, drawn in %).
    Accuracy has its chance line; other scores none, and an axis in their own units."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MultipleLocator

    sc = score_of(score)
    k = 100 if sc.percent else 1  # axis units per score unit
    shown = [r for r in board.accuracy if (r.get("score") or "accuracy") == score]
    if not shown:
        raise WsbenchError(f"no dataset ranked by {score}")
    datasets = sorted({r["dataset"] for r in shown})
    most = max(sum(1 for r in shown if r["dataset"] == d) for d in datasets)
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(7.2, 3.6 * len(datasets) + 0.6), 0.45 * most + 1.7),
                             squeeze=False, constrained_layout=True)
    for ax, ds in zip(axes[0], datasets):
        rows = [r for r in shown if r["dataset"] == ds]  # ranked, best first
        values = [k * a for r in rows for a in seeds.get((ds, r["arch"]), []) if not math.isnan(a)]
        lows = [k * (r["mean"] if math.isnan(r["ci_low"]) else r["ci_low"]) for r in rows if not math.isnan(r["mean"])]
        highs = [k * (r["mean"] if math.isnan(r["ci_high"]) else r["ci_high"]) for r in rows
                 if not math.isnan(r["mean"])]
        lows, highs = lows + values, highs + values
        level = 100 * chance[ds] if ds in chance and sc.percent else None
        if not lows:  # every seed's score undefined (constant predictions): an empty panel on the score's range
            lows, highs = [v for v in (sc.range or (0.0, 1.0)) if math.isfinite(v)] or [0.0], [1.0]
        left, right, step = accuracy_range(lows, highs, level) if sc.percent else score_range(lows, highs, score)
        for i, r in enumerate(rows):
            y = len(rows) - 1 - i
            colour = VIEW_COLOURS.get(r.get("view"), "#374151")
            if not math.isnan(r["ci_low"]):
                ax.plot([k * r["ci_low"], k * r["ci_high"]], [y, y], color=colour, lw=2.5, solid_capstyle="butt",
                        clip_on=False)
            ax.plot([k * r["mean"]], [y], "o", color=colour, ms=7, zorder=3, clip_on=False)
            for a in seeds.get((ds, r["arch"]), []):
                ax.plot([k * a], [y + 0.25], "|", color=colour, ms=6, alpha=0.8, clip_on=False)
        if level is not None and chance_on_axis(lows, highs, level):
            ax.axvline(level, color="#6b7280", ls="--", lw=1)
            ax.text(level, len(rows) - 0.45, f" chance {level:.3g} %", color="#4b5563", fontsize=8, va="bottom",
                    ha="left")
        elif level is not None:  # far below the accuracies: named, not drawn
            ax.text(0.0, 1.0, f"← chance {level:.3g} %", transform=ax.transAxes, color="#4b5563", fontsize=8,
                    va="bottom", ha="left")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{r['rank']}{'=' if r['tie'] else ''}  {r['arch']}" for r in reversed(rows)])
        ax.set_ylim(-0.6, len(rows) - 0.1)
        ax.set_xlim(left, right)
        ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.set_xlabel("test accuracy (%)" if score == "accuracy" else f"test {sc.label}"
                      + ("" if sc.higher_is_better else " (lower is better)"))
        ax.set_title(ds)
        ax.grid(axis="x", color="#e5e7eb", lw=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    views = sorted({r.get("view") for r in shown} & set(VIEW_COLOURS))
    handles = [Line2D([], [], color=VIEW_COLOURS[v], marker="o", lw=2.5, label=VIEW_NAMES[v]) for v in views]
    handles.append(Line2D([], [], color="#6b7280", marker="|", lw=0, ms=8, label="one seed"))
    if sc.percent:
        handles.append(Line2D([], [], color="#6b7280", ls="--", lw=1, label="chance"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=8)
    name = "Test accuracy" if score == "accuracy" else f"Test {sc.label}"
    fig.suptitle(f"{name}: mean over seeds with 95 % interval (rank; = where intervals overlap)",
                 fontsize=10, wrap=True)
    return fig


def stability_figure(board: Board):
    """Cross-seed similarity per layer: a row of panels per dataset, a panel per architecture, its
    layers from input to output along x."""
    plt = pyplot()
    datasets = sorted({r["dataset"] for r in board.stability})
    archs = sorted({r["arch"] for r in board.stability})
    views = {r["arch"]: r.get("view") for r in board.accuracy}
    most = max(sum(1 for r in board.stability if r["arch"] == a and r["dataset"] == d) for a in archs for d in datasets)
    width = max(7.2, max(2.4, 0.42 * most + 1.0) * len(archs) + 0.6)
    fig, axes = plt.subplots(len(datasets), len(archs), figsize=(width, 2.5 * len(datasets) + 0.9),
                             squeeze=False, constrained_layout=True, sharey=True)
    lo = min([0.0] + [r["ci_low"] for r in board.stability if not math.isnan(r["ci_low"])]
             + [r["null_mean"] for r in board.stability if not is_missing(r.get("null_mean"))])
    lo = 0.0 if lo > -0.02 else math.floor(lo * 10) / 10  # a null level of -0.001 should not move the axis
    for i, ds in enumerate(datasets):
        for j, arch in enumerate(archs):
            ax = axes[i][j]
            rows = sorted((r for r in board.stability if r["dataset"] == ds and r["arch"] == arch),
                          key=lambda r: r["layer_index"])
            if not rows:
                ax.axis("off")
                continue
            colour = VIEW_COLOURS.get(views.get(arch) or "", "#0f766e")
            x = list(range(len(rows)))
            err = [[0.0 if math.isnan(r["ci_low"]) else r["mean"] - r["ci_low"] for r in rows],
                   [0.0 if math.isnan(r["ci_high"]) else r["ci_high"] - r["mean"] for r in rows]]
            ax.errorbar(x, [r["mean"] for r in rows], yerr=err, color=colour, marker="o", ms=4, lw=1.5, capsize=2)
            nulls = [r.get("null_mean") for r in rows]
            if all(not is_missing(v) for v in nulls):
                ax.plot(x, nulls, color="#6b7280", lw=1, ls=":")
            ax.set_xticks(x)
            ax.set_xticklabels([r["layer"] for r in rows], rotation=45, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(rows) - 0.5)
            ax.set_ylim(lo, 1.02)
            ax.set_title(f"{ds}: {arch}", fontsize=9)
            ax.grid(axis="y", color="#e5e7eb", lw=0.8)
            ax.set_axisbelow(True)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        axes[i][0].set_ylabel(f"cross-seed {board.metric}")
    fig.supxlabel("layer (input to output)", fontsize=9)
    null = any(not is_missing(r.get("null_mean")) for r in board.stability)
    fig.suptitle(f"Cross-seed stability per layer: {metric_label(board.metric)} between seeds of one architecture, "
                 "mean over seed pairs with 95 % interval" + ("; dotted: permutation baseline" if null else ""),
                 fontsize=10, wrap=True)
    return fig


def cross_figure(board: Board, dataset: str):
    """One dataset's cross-architecture layer x layer similarity, one panel per architecture pair."""
    plt = pyplot()
    mats = [m for m in layer_matrices(board.cross, board.metric) if m["dataset"] == dataset]
    if not mats:
        raise WsbenchError(f"no cross-architecture similarity for {dataset}")
    cols = min(3, len(mats))
    rows = math.ceil(len(mats) / cols)
    size = max(max(len(m["rows"]), len(m["cols"])) for m in mats)
    side = 0.42 * size + 1.6
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.6, side * cols + 1.0), side * rows + 0.6), squeeze=False,
                             constrained_layout=True)
    image = None
    for ax, m in zip(axes.flat, mats):
        values = [[float("nan") if v is None else v for v in row] for row in m["values"]]
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="equal")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 else "white")
        ax.set_xticks(range(len(m["cols"])))
        ax.set_xticklabels(m["cols"], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(m["rows"])))
        ax.set_yticklabels(m["rows"], fontsize=8)
        ax.set_xlabel(f"{m['arch_b']} layer")
        ax.set_ylabel(f"{m['arch_a']} layer")
        ax.set_title(f"{m['arch_a']} vs {m['arch_b']}", fontsize=10)
    for ax in list(axes.flat)[len(mats):]:
        ax.axis("off")
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, aspect=25)
    bar.set_label(f"{metric_label(board.metric)}, mean over run pairs")
    fig.suptitle(f"{dataset}: cross-architecture similarity, layer by layer", fontsize=10)
    return fig


def write_figures(board: Board, seeds: dict, chance: dict, out: Path, formats=FORMATS) -> list[Path]:
    """Every figure the board has data for, in each of ``formats``, under ``out``; returns the paths."""
    from wsbench.tables import atomic_write

    plt = pyplot()
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise WsbenchError(f"unknown figure format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
    figures = []
    primaries = sorted({r.get("score") or "accuracy" for r in board.accuracy})
    others = [p for p in primaries if p != "accuracy"]
    for score in primaries:
        stem = "accuracy" if score == "accuracy" else "scores" if len(others) == 1 else f"scores-{score}"
        figures.append((stem, accuracy_figure(board, seeds, chance, score)))
    if board.stability:
        figures.append(("stability", stability_figure(board)))
    for ds in sorted({r["dataset"] for r in board.cross}):
        figures.append((f"cross-{ds}", cross_figure(board, ds)))
    if not figures:
        raise WsbenchError("nothing to plot: no finished runs; run `wsbench grid` (and `wsbench similarity`) first")
    written = []
    Path(out).mkdir(parents=True, exist_ok=True)
    def saver(fig, fmt: str):
        def save(tmp: Path) -> None:
            # No creation date in the PDF: the same tables give the same file.
            fig.savefig(tmp, format=fmt, dpi=200, metadata={"CreationDate": None} if fmt == "pdf" else None)
        return save

    for name, fig in figures:
        for fmt in formats:
            path = Path(out) / f"{name}.{fmt}"
            atomic_write(path, saver(fig, fmt))
            written.append(path)
        plt.close(fig)
    return written


def seed_scores(runs: list[dict], board: Board) -> dict:
    """``{(dataset, arch label): [primary test score of each finished seed]}`` (labels as on the board;
    accuracy for a class target, e.g. Kendall's tau for a scalar one; seeds without one left out)."""
    from wsbench.reporting.board import variant_labels

    labels = variant_labels(runs)
    out: dict = {}
    for r in sorted(runs, key=lambda r: (r.get("seed") or 0)):
        if r.get("status") == "finished" and not math.isnan(run_score(r)):
            out.setdefault((r["dataset"], labels.get(r["run_id"], r["arch"])), []).append(run_score(r))
    return out


seed_accuracies = seed_scores  # the name from before scalar targets
