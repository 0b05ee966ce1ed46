"""The leaderboard as one self-contained HTML page: tables, inline SVG figures and the
split samples as inline PNGs. No script, no external file, no network needed.

``render_html(board, images=..., classes=...)`` is a pure function: images arrive as
PNG bytes keyed by ``(dataset, sample_id)`` (the CLI loads them), ``png_bytes``
encodes a ``(C, H, W)`` or ``(H, W)`` uint8 array.
"""
from __future__ import annotations

import base64
import html
import itertools
import math
import struct
import zlib
from datetime import datetime, timezone

import numpy as np

from wsbench import __version__
from wsbench.reporting.board import (
    FUNCTION,
    IMAGES,
    MAX_IMAGES,
    WEIGHTS,
    Board,
    has_extras,
    layer_matrices,
    sample_groups,
    score_groups,
    score_of,
)
from wsbench.reporting.stats import is_missing
from wsbench.reporting.text import (
    NOT_APPLICABLE_NOTE,
    SCALAR_SAMPLES_NOTE,
    SCORES_NOTE,
    TAU_AGREEMENT_NOTE,
    agreement_table,
    calibration_note,
    class_agreement,
    class_name,
    class_only,
    failures_table,
    fmt_interval,
    fmt_num,
    fmt_pct,
    interval_note,
    metric_label,
    provenance_table,
    samples_table,
    scalar_examples_table,
    scalar_samples_table,
    score_table,
    score_title,
    stability_table,
    tau_agreement_rows,
    tau_agreement_table,
)

# Perceptually ordered colour ramp (dark blue -> teal -> yellow), interpolated linearly.
_RAMP = [(0.0, (48, 18, 59)), (0.25, (50, 104, 174)), (0.5, (33, 165, 133)), (0.75, (170, 210, 60)),
         (1.0, (250, 230, 35))]
VIEW_COLOURS = {WEIGHTS: "#c2410c", IMAGES: "#1d4ed8", FUNCTION: "#7c3aed"}
VIEW_NAMES = {WEIGHTS: "weight-space model", IMAGES: "image model", FUNCTION: "function-view model"}


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 image ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)`` as PNG."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    if a.dtype != np.uint8:
        raise ValueError(f"png_bytes needs uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        colour, rows = 0, a
    elif a.ndim == 3 and a.shape[2] == 3:
        colour, rows = 2, a.reshape(a.shape[0], -1)
    else:
        raise ValueError(f"png_bytes needs (H, W), (1, H, W) or (3, H, W), got {image.shape}")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + np.ascontiguousarray(r).tobytes() for r in rows)  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def colour(t: float) -> str:
    """Hex colour of ``t`` in [0, 1] on the ramp; grey for NaN."""
    if t is None or math.isnan(t):
        return "#e5e7eb"
    t = min(1.0, max(0.0, t))
    for (t0, c0), (t1, c1) in itertools.pairwise(_RAMP):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return _hex(round(a + f * (b - a)) for a, b in zip(c0, c1))
    return _hex(_RAMP[-1][1])


def _hex(rgb) -> str:
    r, g, b = rgb
    return f"#{r:02x}{g:02x}{b:02x}"


def _ink(t: float) -> str:
    """Text colour readable on ``colour(t)``."""
    return "#111" if t is not None and not math.isnan(t) and t > 0.55 else "#fff"


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _f(x, d=3) -> str:
    return fmt_num(x, d)


# Figures ----------------------------------------------------------------------------------

def heatmap_svg(matrix: dict, cell: int = 44, label_w: int = 90, vmin: float = 0.0, vmax: float = 1.0,
                title: str = "", extra_tip=None, xlabel: str = "", ylabel: str = "", bar_label: str = "") -> str:
    """A layer x layer heatmap (a ``board.layer_matrices`` item) as SVG with values and tooltips.

    ``xlabel``/``ylabel`` title the column and row axes, ``bar_label`` the colour bar."""
    rows, cols, values = matrix["rows"], matrix["cols"], matrix["values"]
    pad = 18 if ylabel else 0  # room for the rotated row-axis title
    label_w += pad
    top = 16 + int(4.6 * max([len(str(c)) for c in cols] + [4])) + (16 if xlabel else 0)  # 45-degree labels
    w = label_w + cell * len(cols) + 10
    h = top + cell * len(rows) + 40 + (14 if bar_label else 0)
    parts = [(f'<svg class="heatmap" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
              f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(title)}">')]
    if xlabel:
        parts.append(f'<text x="{label_w + cell * len(cols) / 2}" y="12" text-anchor="middle" class="axis">'
                     f'{_e(xlabel)}</text>')
    if ylabel:
        yc = top + cell * len(rows) / 2
        parts.append(f'<text x="12" y="{yc}" transform="rotate(-90 12 {yc})" text-anchor="middle" class="axis">'
                     f'{_e(ylabel)}</text>')
    for j, name in enumerate(cols):
        x = label_w + j * cell + cell / 2
        parts.append(f'<text x="{x}" y="{top - 6}" transform="rotate(-45 {x} {top - 6})" class="tick">'
                     f'{_e(name)}</text>')
    for i, name in enumerate(rows):
        y = top + i * cell + cell / 2 + 4
        parts.append(f'<text x="{label_w - 6}" y="{y}" text-anchor="end" class="tick">{_e(name)}</text>')
        for j, col in enumerate(cols):
            v = values[i][j]
            t = (v - vmin) / (vmax - vmin) if vmax > vmin and not (v is None or math.isnan(v)) else float("nan")
            x, y0 = label_w + j * cell, top + i * cell
            tip = f"{name} × {col}: {_f(v)}"
            c = matrix.get("cells", {}).get((name, col))
            if c is not None:
                tip += f"; 95 % CI {fmt_interval(c['ci_low'], c['ci_high'])}; {c['pairs']} pairs"
                if not is_missing(c.get("null_mean")):
                    tip += f"; null {_f(c['null_mean'])}"
            if extra_tip:
                tip += extra_tip(i, j)
            parts.append(f'<g><title>{_e(tip)}</title><rect x="{x}" y="{y0}" width="{cell}" height="{cell}" '
                         f'fill="{colour(t)}" stroke="#fff"/>'
                         f'<text x="{x + cell / 2}" y="{y0 + cell / 2 + 4}" text-anchor="middle" class="val" '
                         f'style="fill:{_ink(t)}">{"" if v is None or math.isnan(v) else f"{v:.2f}"}</text></g>')
    # Colour bar.
    bar_y = top + cell * len(rows) + 14
    bar_w = min(160, cell * len(cols))
    for k in range(20):
        parts.append(f'<rect x="{label_w + k * bar_w / 20}" y="{bar_y}" width="{bar_w / 20 + 0.5}" height="8" '
                     f'fill="{colour(k / 19)}"/>')
    parts.append(f'<text x="{label_w}" y="{bar_y + 20}" class="tick">{vmin:.3g}</text>'
                 f'<text x="{label_w + bar_w}" y="{bar_y + 20}" text-anchor="end" class="tick">{vmax:.3g}</text>')
    if bar_label:
        parts.append(f'<text x="{label_w + bar_w / 2}" y="{bar_y + 32}" text-anchor="middle" class="tick">'
                     f'{_e(bar_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def accuracy_svg(rows: list[dict], width: int = 560, chance: float | None = None, score: str = "accuracy") -> str:
    """Mean test score with its 95 % interval per architecture (one dataset), as SVG: round ticks,
    an axis title (the score's label; accuracy in %), and the ``chance`` level as a dashed line
    (named at the left edge when it lies far below the accuracies, so it does not squeeze them).
    Scores other than accuracy have no chance line and an axis in their own units, within the values
    they can take (:func:`wsbench.reporting.figures.score_range`)."""
    from wsbench.reporting.figures import accuracy_range, chance_on_axis, score_range

    sc = score_of(score)
    k = 100 if sc.percent else 1  # axis units per score unit
    label_w, row_h, top = 120, 26, 12
    lows = [k * (r["ci_low"] if not math.isnan(r["ci_low"]) else min(r["worst"], r["best"])) for r in rows]
    highs = [k * (r["ci_high"] if not math.isnan(r["ci_high"]) else max(r["worst"], r["best"])) for r in rows]
    level = None if chance is None or not sc.percent else 100 * chance
    left, right, step = accuracy_range(lows, highs, level) if sc.percent else score_range(lows, highs, score)
    lo, hi = left / k, right / k
    plot_w = width - label_w - 20
    h = top + row_h * len(rows) + 44
    name = "test accuracy" if score == "accuracy" else f"test {sc.label}"

    def x(v):
        return label_w + (v - lo) / (hi - lo) * plot_w
    parts = [(f'<svg class="forest" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
              f'viewBox="0 0 {width} {h}" role="img" aria-label="{_e(name)} with 95 % intervals">')]
    for i in range(round((right - left) / step) + 1):
        v = (left + i * step) / k
        parts.append(f'<line x1="{x(v)}" x2="{x(v)}" y1="{top - 4}" y2="{h - 38}" stroke="#e5e7eb"/>'
                     f'<text x="{x(v)}" y="{h - 22}" text-anchor="middle" class="tick">'
                     f'{k * v if sc.percent else round(v, 12):g}</text>')
    parts.append(f'<text x="{label_w + plot_w / 2}" y="{h - 4}" text-anchor="middle" class="axis">'
                 + (f"{name} (%)" if sc.percent else _e(name)) + "</text>")
    if level is not None and chance is not None and chance_on_axis(lows, highs, level):
        parts.append(f'<line x1="{x(chance)}" x2="{x(chance)}" y1="{top - 4}" y2="{h - 38}" stroke="#6b7280" '
                     f'stroke-dasharray="4 3"/><text x="{x(chance) + 3}" y="{top + 4}" class="tick">'
                     f"chance {level:.3g} %</text>")
    elif level is not None:
        parts.append(f'<text x="{label_w}" y="{top + 4}" class="tick">← chance {level:.3g} %</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        c = VIEW_COLOURS.get(r.get("view") or "", "#374151")
        if sc.percent:
            value = f"{fmt_pct(r['mean'])} % (95 % CI {fmt_interval(r['ci_low'], r['ci_high'], fmt_pct)}"
        else:
            value = f"{sc.label} {fmt_num(r['mean'])} (95 % CI {fmt_interval(r['ci_low'], r['ci_high'])}"
        tip = f"{r['arch']}: {value}, {r['seeds']} seeds)"
        parts.append(f'<g><title>{_e(tip)}</title>'
                     f'<text x="{label_w - 8}" y="{y + 4}" text-anchor="end" class="tick">'
                     f'{r["rank"]}{"=" if r["tie"] else ""} {_e(r["arch"])}</text>')
        if not math.isnan(r["ci_low"]):
            parts.append(f'<line x1="{x(r["ci_low"])}" x2="{x(r["ci_high"])}" y1="{y}" y2="{y}" stroke="{c}" '
                         f'stroke-width="3"/>')
        if not math.isnan(r["mean"]):
            parts.append(f'<circle cx="{x(r["mean"])}" cy="{y}" r="5" fill="{c}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def stability_svg(rows: list[dict], metric: str, panel_w: int = 220, height: int = 200) -> str:
    """Cross-seed similarity per layer, one panel per architecture (one dataset), as SVG.

    Dots: mean over seed pairs; bars: its 95 % interval over seeds; grey ticks:
    permutation baseline when stored.
    """
    archs = sorted({r["arch"] for r in rows})
    left, top, bottom = 34, 22, 48
    plot_h = height - top - bottom
    w = left + panel_w * len(archs) + 10
    lo = min([0.0] + [r["ci_low"] for r in rows if not math.isnan(r["ci_low"])]
             + [r["null_mean"] for r in rows if not is_missing(r.get("null_mean"))])
    lo = 0.0 if lo > -0.02 else math.floor(lo * 10) / 10  # a null mean of -0.001 should not move the axis
    hi = max([1.0] + [r["ci_high"] for r in rows if not math.isnan(r["ci_high"])])

    def y(v):
        return top + (hi - v) / (hi - lo) * plot_h
    parts = [(f'<svg class="stability" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" '
              f'viewBox="0 0 {w} {height}" role="img" aria-label="cross-seed {_e(metric)} per layer">')]
    for k in range(5):
        v = lo + k * (hi - lo) / 4
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4}" text-anchor="end" class="tick">{v:.2f}</text>')
    for p, arch in enumerate(archs):
        x0 = left + p * panel_w
        layers = sorted((r for r in rows if r["arch"] == arch), key=lambda r: r["layer_index"])
        step = (panel_w - 30) / max(1, len(layers))
        parts.append(f'<rect x="{x0 + 4}" y="{top}" width="{panel_w - 12}" height="{plot_h}" fill="#f9fafb" '
                     f'stroke="#e5e7eb"/><text x="{x0 + panel_w / 2}" y="{top - 8}" text-anchor="middle" '
                     f'class="panel">{_e(arch)}</text>')
        for k in range(5):
            v = lo + k * (hi - lo) / 4
            parts.append(f'<line x1="{x0 + 4}" x2="{x0 + panel_w - 8}" y1="{y(v)}" y2="{y(v)}" stroke="#eef0f3"/>')
        prev = None
        for i, r in enumerate(layers):
            cx = x0 + 18 + step * (i + 0.5)
            tip = (f"{arch} {r['layer']}: {_f(r['mean'])}, 95 % CI {fmt_interval(r['ci_low'], r['ci_high'])} "
                   f"over {r.get('seeds', '?')} seeds ({r['pairs']} seed pairs)")
            if not is_missing(r.get("boot_low")):
                tip += f"; {r.get('ci_kind') or 'bootstrap'} {fmt_interval(r['boot_low'], r['boot_high'])}"
            if not is_missing(r.get("null_mean")):
                tip += f"; null {_f(r['null_mean'])}"
            parts.append(f'<g><title>{_e(tip)}</title>')
            if prev is not None:
                parts.append(f'<line x1="{prev[0]}" y1="{prev[1]}" x2="{cx}" y2="{y(r["mean"])}" stroke="#9ca3af"/>')
            if not math.isnan(r["ci_low"]):
                parts.append(f'<line x1="{cx}" x2="{cx}" y1="{y(r["ci_low"])}" y2="{y(r["ci_high"])}" '
                             f'stroke="#0f766e" stroke-width="2"/>')
            if not is_missing(r.get("null_mean")):
                parts.append(f'<line x1="{cx - 7}" x2="{cx + 7}" y1="{y(r["null_mean"])}" y2="{y(r["null_mean"])}" '
                             f'stroke="#6b7280" stroke-dasharray="2 2" stroke-width="2"/>')
            parts.append(f'<circle cx="{cx}" cy="{y(r["mean"])}" r="4.5" fill="#0f766e"/>'
                         f'<text x="{cx}" y="{top + plot_h + 14}" transform="rotate(30 {cx} {top + plot_h + 14})" '
                         f'class="tick">{_e(r["layer"])}</text></g>')
            prev = (cx, y(r["mean"]))
    parts.append("</svg>")
    return "".join(parts)


# Page ----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;margin:0;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:34px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}.meta,.note{color:#4b5563}.note{font-size:13px;max-width:900px}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13px}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}td{white-space:nowrap}
th{background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.tie td:nth-child(2){color:#92400e}.figs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
svg text{font:11px system-ui,sans-serif;fill:#374151}svg text.val{font-size:10px}svg text.panel{font-weight:600}
svg text.axis{font-size:12px;font-weight:600;fill:#111827}
.gallery{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0 14px}
figure{margin:0;text-align:center;font-size:11px;color:#374151;width:84px}
figure img{width:72px;height:72px;image-rendering:pixelated;border:1px solid #d1d5db;display:block;margin:0 auto 3px}
.legend span{display:inline-block;width:10px;height:10px;border-radius:50%;margin:0 4px 0 10px}
.fail td{color:#991b1b}
"""


def _table(head, rows, cls="", num_cols=(), row_cls=None) -> str:
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for k, row in enumerate(rows):
        rc = f' class="{row_cls(k)}"' if row_cls and row_cls(k) else ""
        out.append(f"<tr{rc}>" + "".join(f'<td class="num">{_e(c)}</td>' if i in num_cols else f"<td>{_e(c)}</td>"
                                         for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def heatmap_range(values) -> tuple[float, float]:
    """Colour scale of a heatmap: [0, 1] for similarity-like values (CKA, agreement; the debiased
    estimator's small negatives clip to 0), else the values' own range."""
    vals = [v for row in values for v in row if v is not None and not math.isnan(v)]
    if not vals or (min(vals) >= -0.2 and max(vals) <= 1.0):
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    return (lo, hi) if hi > lo else (lo - 1, hi + 1)


def _agreement_matrix(rows: list[dict], ds: str) -> dict:
    archs = sorted({r["arch_a"] for r in rows if r["dataset"] == ds} | {r["arch_b"] for r in rows
                                                                          if r["dataset"] == ds})
    by = {}
    for r in rows:
        if r["dataset"] == ds:
            by[(r["arch_a"], r["arch_b"])] = by[(r["arch_b"], r["arch_a"])] = r
    values = [[by[(a, b)]["agreement"] if (a, b) in by else float("nan") for b in archs] for a in archs]
    cells = {k: {**v, "mean": v["agreement"]} for k, v in by.items()}
    return {"rows": archs, "cols": archs, "values": values, "cells": cells}


def _heatmaps(mats: list[dict], title, metric: str) -> str:
    """Titled layer x layer heatmaps, each on its own value range, a row per dataset; axes titled with the
    architectures' layers and the colour bar with the metric."""
    parts = []
    for ds in sorted({m["dataset"] for m in mats}):
        row = []
        for m in (m for m in mats if m["dataset"] == ds):
            vmin, vmax = heatmap_range(m["values"])
            t = title(m)
            row.append(f"<div><h3>{_e(t)}</h3>"
                       + heatmap_svg(m, vmin=vmin, vmax=vmax, title=t, xlabel=f"{m['arch_b']} layer",
                                     ylabel=f"{m['arch_a']} layer", bar_label=f"{metric}, mean over run pairs")
                       + "</div>")
        parts.append('<div class="figs">' + "".join(row) + "</div>")
    return "".join(parts)


def _source_name(source: str) -> str:
    """What the page says it was made from: the folder's name, never a machine-local path."""
    return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or source


def render_html(board: Board, title: str = "wsbench leaderboard", images: dict | None = None,
                classes: dict | None = None, source: str = "", max_images: int = MAX_IMAGES) -> str:
    """The whole page. ``images``: ``{(dataset, sample_id): png bytes}``; ``classes``: ``{dataset: [names]}``."""
    images, classes = images or {}, classes or {}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">wsbench {_e(__version__)} · generated {now}'
            + (f" · from <code>{_e(_source_name(source))}</code>" if source else "")
            + f" · similarity metric <b>{_e(metric_label(board))}</b></p>"]

    # Scores (test accuracy when every dataset has a class target: the page then reads as it always has).
    if class_only(board):
        body.append('<section id="accuracy"><h2>Test accuracy</h2><p class="note">Architectures ranked by mean test '
                    'accuracy over seeds, with the standard deviation and a 95 % t-interval of the mean. '
                    '<b>=</b> marks ranks that the intervals cannot separate. Colour: '
                    '<span class="legend"><span style="background:#c2410c"></span>weight-space model'
                    '<span style="background:#1d4ed8"></span>image model</span></p>')
    else:
        views = [v for v in VIEW_COLOURS if v in {r.get("view") for r in board.accuracy}]
        legend = "".join(f'<span style="background:{VIEW_COLOURS[v]}"></span>{VIEW_NAMES[v]}' for v in views)
        note = _e(SCORES_NOTE.replace("`", ""))  # the Markdown page's code marks
        body.append(f'<section id="accuracy"><h2>Test scores</h2><p class="note">{note} Colour: '
                    f'<span class="legend">{legend}</span></p>')
    if board.accuracy:
        for names, group in score_groups(board.accuracy):
            if not class_only(board):
                body.append(f"<h3>{_e(score_title(names))}</h3>")
            head, rows = score_table(names, group)
            body.append(_table(head, rows, "accuracy",
                               num_cols={4, 5, 7} if names == ("accuracy",) else {4, 5, *range(7, len(head), 2)},
                               row_cls=lambda k, group=group: "tie" if group[k]["tie"] else ""))
            body.append('<div class="figs">')
            for ds in sorted({r["dataset"] for r in group}):
                ds_rows = [r for r in group if r["dataset"] == ds]
                body.append(f'<div><h3>{_e(ds)}</h3>'
                            f'{accuracy_svg(ds_rows, chance=board.chance.get(ds), score=names[0])}</div>')
            body.append("</div>")
    else:
        body.append("<p><i>no finished runs</i></p>")
    if board.not_applicable:
        items = "".join(f"<li>{_e(r['reason'])}</li>" for r in board.not_applicable)
        body.append(f'<p class="note">{_e(NOT_APPLICABLE_NOTE)}</p><ul class="note">{items}</ul>')
    body.append("</section>")

    # Stability.
    body.append(f'<section id="stability"><h2>Cross-seed stability</h2><p class="note">{_e(metric_label(board))} '
                "between two seeds of the same architecture, layer by layer: dots are the mean over seed pairs, bars "
                "its 95 % interval over seeds (delete-one-seed jackknife: pairs that share a seed are not counted as "
                "independent)"
                + ("; dashed grey ticks the permutation baseline" if has_extras(board.stability)["null"] else "")
                + ". The heatmaps compare every layer of one seed with every layer of another."
                + _e(calibration_note(board)) + " " + _e(interval_note(board.stability)) + "</p>")
    if board.stability:
        for ds in sorted({r["dataset"] for r in board.stability}):
            body.append(f"<h3>{_e(ds)}</h3>" + stability_svg([r for r in board.stability if r["dataset"] == ds],
                                                            board.metric))
        head, rows = stability_table(board)
        body.append(_table(head, rows, "stability", num_cols={3}))
        mats = layer_matrices(board.within, board.metric)
        if mats:
            body.append(_heatmaps(mats, lambda m: f"{m['dataset']}: {m['arch_a']}, seed vs seed", board.metric))
    else:
        body.append("<p><i>no similarity computed: run <code>wsbench similarity</code></i></p>")
    body.append("</section>")

    # Cross-architecture.
    body.append(f'<section id="cross"><h2>Cross-architecture similarity</h2><p class="note">Layer × layer '
                f"{_e(metric_label(board))} between two architectures, mean over all their run pairs (hover a cell "
                "for its 95 % interval over seeds).</p>")
    mats = layer_matrices(board.cross, board.metric)
    if mats:
        body.append(_heatmaps(mats, lambda m: f"{m['dataset']}: {m['arch_a']} (rows) vs {m['arch_b']} (columns)",
                              board.metric))
    else:
        body.append("<p><i>no similarity between architectures computed</i></p>")
    body.append("</section>")

    # Samples.
    body.append('<section id="samples"><h2>Sample analysis</h2><p class="note">Test samples that every seed of every '
                "weight-space model gets right and every seed of every image model gets wrong, and the reverse; "
                "and how often two runs predict the same class.</p>")
    if board.samples:
        head, rows = samples_table(board)
        body.append(_table(head, rows, "samples", num_cols={1, 4, 5, 6, 7}))
        class_rows = class_agreement(board)
        for ds in sorted({r["dataset"] for r in class_rows}):
            m = _agreement_matrix(class_rows, ds)
            t = f"{ds}: same prediction, run pairs"
            body.append(f"<h3>{_e(t)}</h3>" + heatmap_svg(m, cell=56, label_w=110, title=t, xlabel="architecture",
                                                          ylabel="architecture",
                                                          bar_label="fraction of test samples"))
        if class_rows:
            head, rows = agreement_table(board)
            body.append(_table(head, rows, "agreement", num_cols={3, 5}))
        body.append(_gallery(board, images, classes, max_images))
    if board.scalar_samples:
        body.append(f'<h3>Networks that split weight-view from data-view models</h3><p class="note">'
                    f"{_e(SCALAR_SAMPLES_NOTE)}</p>")
        head, rows = scalar_samples_table(board)
        body.append(_table(head, rows, "scalar-samples", num_cols={1, 4, 5, 6, 7, 8}))
        tau_rows = tau_agreement_rows(board)
        if tau_rows:
            body.append(f'<p class="note">{_e(TAU_AGREEMENT_NOTE)}</p>')
        for ds in sorted({r["dataset"] for r in tau_rows}):
            m = _agreement_matrix(tau_rows, ds)
            vmin, vmax = heatmap_range(m["values"])
            t = f"{ds}: Kendall's tau between predictions, run pairs"
            body.append(f"<h3>{_e(t)}</h3>" + heatmap_svg(m, cell=56, label_w=110, vmin=vmin, vmax=vmax, title=t,
                                                          xlabel="architecture", ylabel="architecture",
                                                          bar_label="Kendall's tau"))
        if tau_rows:
            head, rows = tau_agreement_table(board)
            body.append(_table(head, rows, "agreement", num_cols={3, 5}))
        if board.scalar_examples:
            head, rows = scalar_examples_table(board)
            body.append("<h3>Example networks</h3>" + _table(head, rows, "scalar-examples", num_cols={3, 4, 5, 7}))
    if not board.samples and not board.scalar_samples:
        body.append("<p><i>no predictions stored</i></p>")
    body.append("</section>")

    if board.failures:
        head, rows = failures_table(board, 300)
        body.append('<section id="failures"><h2>Failed runs</h2>' + _table(head, rows, "fail") + "</section>")
    if board.provenance:
        head, rows = provenance_table(board)
        body.append('<section id="provenance"><h2>Provenance</h2><p class="note">The code, software and hardware '
                    'of the finished runs ("not recorded": stored before wsbench recorded it).</p>'
                    + _table(head, rows, "provenance", num_cols={2}) + "</section>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body><main>{''.join(body)}</main></body></html>\n")


def _gallery(board: Board, images: dict, classes: dict, max_images: int) -> str:
    out = []
    for (ds, wa, group), chosen in sample_groups(board):
        names = classes.get(ds) or []
        what = (f"right in every {wa} run, wrong in every image run" if group == "weights-only"
                else f"right in every image run, wrong in every {wa} run")
        shown = chosen[:max_images]
        out.append(f"<h3>{_e(ds)}: {len(chosen)} samples {what}"
                   + (f" (first {len(shown)} shown)" if len(shown) < len(chosen) else "") + "</h3>"
                   + f'<div class="gallery" data-group="{_e(group)}">')
        for s in shown:
            png = images.get((ds, s["sample_id"]))
            tip = "; ".join(f"{a}: {100 * f:.0f}% of seeds right" for a, f in sorted(s["right_fraction"].items()))
            img = (f'<img alt="sample {s["sample_id"]}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                   if png else '<div style="width:72px;height:72px;background:#f3f4f6;margin:0 auto 3px"></div>')
            out.append(f'<figure title="{_e(tip)}">{img}<figcaption>#{s["sample_id"]}<br>'
                       f'{_e(class_name(names, s["label"]))} → '
                       f'{_e(class_name(names, s["wrong_pred"]))}</figcaption></figure>')
        out.append("</div>")
    if not out:
        out.append("<p><i>no sample splits the two kinds of model</i></p>")
    return "".join(out)
