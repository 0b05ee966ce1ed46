"""The leaderboard as text: Markdown pages and rich tables, and the formatters every renderer shares.

Each ``*_table(board)`` gives ``(header, rows)`` of strings; ``render_markdown`` and
``render_rich`` lay them out (:mod:`wsbench.reporting.html` uses the same tables and
formatters). A missing value prints as ``–``.
"""
from __future__ import annotations

from collections.abc import Callable

from wsbench.reporting.board import (
    MAX_IMAGES,
    Board,
    Comparison,
    has_extras,
    layer_matrices,
    sample_groups,
    score_groups,
    score_of,
)
from wsbench.reporting.stats import is_missing
from wsbench.specs import CI_KINDS

# Formatters -----------------------------------------------------------------------------

def fmt_num(x: float | None, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals."""
    return "–" if is_missing(x) else f"{x:.{digits}f}"


def fmt_pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals (no % sign)."""
    return "–" if x is None or is_missing(x) else f"{100 * x:.2f}"


def fmt_interval(lo: float | None, hi: float | None, fmt: Callable[[float], str] = fmt_num) -> str:
    """``[lo, hi]``, each formatted by ``fmt``; ``–`` when either end is missing."""
    if lo is None or hi is None or is_missing(lo) or is_missing(hi):
        return "–"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def class_name(names: list[str], k: int | None) -> str:
    """Class ``k``'s name from a dataset's class names, or ``k`` itself when there is none."""
    return names[k] if k is not None and 0 <= k < len(names) else str(k)


def calibration_note(board: Board) -> str:
    """A sentence saying what calibrated values are, on a calibrated board; else empty."""
    if not board.calibrated:
        return ""
    return (" Calibrated: (value − null mean) / (1 − null mean), 0 at the permutation null and 1 at perfect "
            "similarity (after Gröger et al., ICML 2026).")


# Tables ---------------------------------------------------------------------------------

def fmt_score(name: str | None, x: float | None) -> str:
    """A value of score ``name``: a percentage (no % sign) for accuracy, else 4 decimals."""
    return fmt_pct(x) if score_of(name).percent else fmt_num(x)


def score_label(name: str | None, direction: bool = True) -> str:
    """A score's name as the tables show it, ``MSE (lower is better)`` for a lower-is-better one."""
    sc = score_of(name)
    return sc.label + ("" if sc.higher_is_better or not direction else " (lower is better)")


def accuracy_table(board: Board, rows: list[dict] | None = None) -> tuple[list[str], list[list[str]]]:
    """The ranked test accuracy of class targets (``rows``: a group of :func:`score_groups`; default
    every score row of the board)."""
    head = ["dataset", "rank", "arch", "view", "test acc % (mean)", "std", "95 % CI", "seeds"]
    body = [[r["dataset"], f"{r['rank']}{'=' if r['tie'] else ''}", r["arch"], r["view"] or "",
             fmt_pct(r["mean"]), fmt_pct(r["std"]), fmt_interval(r["ci_low"], r["ci_high"], fmt_pct), str(r["seeds"])]
            for r in (board.accuracy if rows is None else rows)]
    return head, body


def _score_fmt(name: str) -> Callable[[float], str]:
    return lambda x: fmt_score(name, x)


def score_table(names: tuple[str, ...], rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows ranked by the primary score ``names[0]`` with the other scores' means and 95 % intervals
    over seeds beside it (a group of :func:`wsbench.reporting.board.score_groups`)."""
    if names == ("accuracy",):
        return accuracy_table(Board(), rows)
    primary, others = names[0], names[1:]
    def mean_head(name):
        sc = score_of(name)
        return f"{sc.label} (mean" + ("" if sc.higher_is_better else "; lower is better") + ")"
    head = ["dataset", "rank", "arch", "view", f"test {mean_head(primary)}", "std", "95 % CI"]
    for o in others:
        head += [mean_head(o), f"{score_label(o, direction=False)} 95 % CI"]
    head.append("seeds")
    body = []
    for r in rows:
        row = [r["dataset"], f"{r['rank']}{'=' if r['tie'] else ''}", r["arch"], r["view"] or "",
               fmt_score(primary, r["mean"]), fmt_score(primary, r["std"]),
               fmt_interval(r["ci_low"], r["ci_high"], _score_fmt(primary))]
        for o in others:
            row += [fmt_score(o, r.get(f"{o}_mean")),
                    fmt_interval(r.get(f"{o}_ci_low"), r.get(f"{o}_ci_high"), _score_fmt(o))]
        body.append([*row, str(r["seeds"]) + (f" ({r['missing']} undefined)" if r.get("missing") else "")])
    return head, body


def score_title(names: tuple[str, ...]) -> str:
    """The title of a group of score rows: ``Test accuracy``, ``Kendall's tau, with R² and MSE``."""
    if names == ("accuracy",):
        return "Test accuracy"
    others = [score_label(o, direction=False) for o in names[1:]]
    tail = (" and ".join(others) if len(others) < 3 else ", ".join(others[:-1]) + " and " + others[-1])
    return f"Test {score_label(names[0])}" + (f", with {tail}" if others else "")


def class_only(board: Board) -> bool:
    """Whether every ranked dataset has a class target (the page then reads as it always has)."""
    return all(names == ("accuracy",) for names, _ in score_groups(board.accuracy))


SCORES_NOTE = ("Per dataset, architectures ranked by the dataset's primary score, mean over seeds, in the score's "
               "direction (a lower-is-better score ranks ascending); `=` marks ranks that the 95 % intervals cannot "
               "separate. Intervals are 95 % t-intervals over seeds, clipped to the values a score can take. A "
               "scalar target is scored by Kendall's tau-b between predictions and targets (rank agreement), R² "
               "(1 − SSE / SST, can be negative) and MSE (in the target's units).")


def class_agreement(board: Board) -> list[dict]:
    """Agreement rows of class targets: how often two runs predict the same class."""
    return [r for r in board.agreement if not r.get("measure")]


def tau_agreement_rows(board: Board) -> list[dict]:
    """Agreement rows of scalar targets: Kendall's tau between two runs' predictions."""
    return [r for r in board.agreement if r.get("measure") == "kendall_tau"]


VIEW_SIDE = {"images": "image", "function": "function-view"}


def scalar_samples_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "test networks", "weight-view model (runs)", "data-view models (runs)", "weights better",
            "expected if independent", "data view better", "expected if independent", "weight-view mean abs error"]
    body = [[r["dataset"], str(r["networks"]), f"{r['weight_arch'] or '–'} ({r['weight_runs']})",
             f"{r['data_archs'] or '–'} ({r['data_runs']}, {r['data_view']})", str(r["weights_better"]),
             fmt_num(r["expected_weights_better"], 1), str(r["data_better"]), fmt_num(r["expected_data_better"], 1),
             fmt_num(r["weight_mean_abs_error"])] for r in board.scalar_samples]
    return head, body


def tau_agreement_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "arch a", "arch b", "Kendall's tau between predictions (mean)", "95 % CI", "run pairs"]
    body = [[r["dataset"], r["arch_a"], r["arch_b"], fmt_num(r["agreement"]), fmt_interval(r["ci_low"], r["ci_high"]),
             str(r["pairs"]) + (f" ({r['missing']} undefined)" if r.get("missing") else "")]
            for r in tau_agreement_rows(board)]
    return head, body


def scalar_examples_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "weight-view model", "group", "network id", "target", "weight-view mean prediction",
            "data-view mean predictions", "weight-view abs error"]
    body = []
    for s in board.scalar_examples:
        wa = s["weight_arch"]
        others = "; ".join(f"{a} {fmt_num(v)}" for a, v in s["mean_prediction"].items() if a != wa)
        body.append([s["dataset"], wa, s["group"], str(s["sample_id"]), fmt_num(s["target"]),
                     fmt_num(s["mean_prediction"][wa]), others, fmt_num(s["weight_error"])])
    return head, body


SCALAR_SAMPLES_NOTE = (
    "Scalar targets: an architecture's error on a test network is its absolute prediction error averaged over "
    "its seeds. A network is *weights better* for a weight-view model W when W's error is below W's median "
    "error and every data-view model's error (function view for a zoo of networks) is above that model's own "
    "90th percentile; *data view better* is the reverse (every data-view model below its median, W above its "
    "90th percentile). The expected count is what the rule gives if the conditions were independent (the "
    "networks times the product of the conditions' rates); up to 20 example networks are listed per group.")
TAU_AGREEMENT_NOTE = ("Scalar targets: Kendall's tau-b between two runs' predictions over the test networks, "
                      "averaged over run pairs (distinct seeds within an architecture), with its 95 % interval "
                      "over seeds (delete-one-seed jackknife).")


def metric_label(board: Board) -> str:
    """The similarity metric's name as the pages show it: ``cka``, or ``cka (calibrated)``."""
    return f"{board.metric} (calibrated)" if board.calibrated else board.metric


def interval_kinds(rows: list[dict]) -> list[str]:
    """The kinds of interval over samples (``ci_kind``) behind a table's rows, sorted."""
    return sorted({k.strip() for r in rows if r.get("ci_kind") for k in str(r["ci_kind"]).split(",")})


def samples_interval_header(rows: list[dict]) -> str:
    """``bootstrap 95 % CI (samples)`` for percentile intervals, else the kinds by name."""
    kinds = interval_kinds(rows)
    if kinds in ([], ["percentile"]):
        return "bootstrap 95 % CI (samples)"
    return f"{' / '.join(kinds)} 95 % CI (samples)"


def interval_note(rows: list[dict]) -> str:
    """One sentence per interval kind of the rows: what it is and what it covers."""
    return " ".join(f"Interval over samples, {k}: {CI_KINDS[k]}." for k in interval_kinds(rows) if k in CI_KINDS)


def stability_table(board: Board) -> tuple[list[str], list[list[str]]]:
    ex = has_extras(board.stability)
    head = ["dataset", "arch", "layer", f"cross-seed {metric_label(board)} (mean)", "95 % CI (seeds)"]
    head += [samples_interval_header(board.stability)] if ex["boot"] else []
    head += ["permutation null (mean)"] if ex["null"] and not board.calibrated else []
    head += ["seeds (pairs)"]
    body = []
    for r in board.stability:
        row = [r["dataset"], r["arch"], r["layer"], fmt_num(r["mean"]), fmt_interval(r["ci_low"], r["ci_high"])]
        row += [fmt_interval(r["boot_low"], r["boot_high"])] if ex["boot"] else []
        row += [fmt_num(r["null_mean"])] if ex["null"] and not board.calibrated else []
        body.append([*row, f"{r['seeds']} ({r['pairs']})"])
    return head, body


def cross_matrices(board: Board) -> list[tuple[str, list[str], list[list[str]]]]:
    """One layer x layer text matrix per (dataset, arch pair): ``(title, header, rows)``."""
    out = []
    for m in layer_matrices(board.cross, board.metric):
        head = [f"{m['arch_a']} \\ {m['arch_b']}", *m["cols"]]
        rows = [[name, *[fmt_num(v, 3) for v in vals]] for name, vals in zip(m["rows"], m["values"])]
        out.append((f"{m['dataset']}: {m['arch_a']} vs {m['arch_b']} ({metric_label(board)}, mean over seed pairs)",
                    head, rows))
    return out


def samples_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "test samples", "weight-space model (runs)", "image models (runs)",
            "weights right, images wrong", "images right, weights wrong", "all runs right", "all runs wrong"]
    body = [[r["dataset"], str(r["samples"]), f"{r['weight_arch'] or '–'} ({r['weight_runs']})",
             f"{r['image_archs'] or '–'} ({r['image_runs']})", str(r["weights_only"]), str(r["images_only"]),
             str(r["all_right"]), str(r["all_wrong"])] for r in board.samples]
    return head, body


def agreement_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "arch a", "arch b", "same prediction % (mean)", "95 % CI", "run pairs"]
    body = [[r["dataset"], r["arch_a"], r["arch_b"], fmt_pct(r["agreement"]),
             fmt_interval(r["ci_low"], r["ci_high"], fmt_pct), str(r["pairs"])] for r in class_agreement(board)]
    return head, body


def sample_list_table(board: Board, limit: int = 20) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "weight-space model", "group", "sample id", "label", "failing side predicts"]
    body = []
    for (ds, wa, group), chosen in sample_groups(board):
        for s in chosen[:limit]:
            body.append([ds, wa, group, str(s["sample_id"]), str(s["label"]), str(s["wrong_pred"])])
        if len(chosen) > limit:
            body.append([ds, wa, group, f"… {len(chosen) - limit} more", "", ""])
    return head, body


def failures_table(board: Board, width: int = 120) -> tuple[list[str], list[list[str]]]:
    return (["dataset", "arch", "seed", "status", "error"],
            [[r["dataset"], r["arch"], str(r["seed"]), r["status"], (r.get("error") or "")[:width]]
             for r in board.failures])


def comparison_tables(c: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    def mark(r):
        return " *" if r["separated"] else ""
    def score_rows(name):
        f = fmt_pct if name == "accuracy" else fmt_num
        return [[r["dataset"], r["arch"], f(r["a_mean"]), fmt_interval(r["a_low"], r["a_high"], f),
                 str(r["a_n"]),
                 f(r["b_mean"]), fmt_interval(r["b_low"], r["b_high"], f), str(r["b_n"]),
                 (f(r["diff"]) + mark(r)) if not is_missing(r["diff"]) else "–",
                 fmt_interval(r["diff_low"], r["diff_high"], f)]
                for r in c.accuracy if (r.get("score") or "accuracy") == name]

    head = ["dataset", "arch", f"{c.name_a} mean", f"{c.name_a} 95 % CI", "seeds", f"{c.name_b} mean",
            f"{c.name_b} 95 % CI", "seeds", "difference", "95 % CI of difference"]
    acc = (f"Test accuracy %: {c.name_b} − {c.name_a}", head, score_rows("accuracy"))
    others = [(f"Test {score_label(name)}: {c.name_b} − {c.name_a}", head, score_rows(name))
              for name in sorted({r.get("score") or "accuracy" for r in c.accuracy} - {"accuracy"})]
    stab = ("Cross-seed stability: " + f"{c.name_b} − {c.name_a}",
            ["dataset", "arch", "layer", f"{c.name_a} mean", "pairs", f"{c.name_b} mean", "pairs", "difference",
             "95 % CI of difference"],
            [[r["dataset"], r["arch"], r["layer"], fmt_num(r["a_mean"]), str(r["a_n"]), fmt_num(r["b_mean"]),
              str(r["b_n"]),
              (fmt_num(r["diff"]) + mark(r)) if not is_missing(r["diff"]) else "–",
              fmt_interval(r["diff_low"], r["diff_high"])] for r in c.stability])
    return [t for t in (acc, *others, stab) if t[2]]


# Markdown -------------------------------------------------------------------------------

def provenance_table(board: Board) -> tuple[list[str], list[list[str]]]:
    head = ["dataset", "arch", "runs", "code (git commit)", "wsbench", "torch", "threads", "device", "hardware"]
    return head, [[r["dataset"], r["arch"], str(r["runs"]), r["commit"], r["wsbench"], r["torch"], r["threads"],
                   r["device"], r["hardware"]] for r in board.provenance]


def _md_escape(cell) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


NOT_APPLICABLE_NOTE = "Not applicable, so not run (not failures):"


def render_markdown(board: Board, title: str = "wsbench leaderboard", image_dir: str | None = None,
                    image_ids: set | None = None, classes: dict | None = None, html_name: str | None = None) -> str:
    """The Markdown page. With ``image_dir``, split samples whose ``(dataset, sample_id)`` is in
    ``image_ids`` are shown as ``image_dir/<dataset>/<sample_id>.png``."""
    parts = [f"# {title}", ""]
    if html_name:
        parts += [f"The same leaderboard with heatmaps and the sample images: [{html_name}]({html_name}).", ""]
    if class_only(board):
        parts += ["## Test accuracy", "",
                  "Ranked by mean over seeds; `=` marks ranks that the 95 % intervals cannot separate.", ""]
        parts.append(_md_table(*accuracy_table(board)) if board.accuracy else "_no finished runs_")
    else:
        parts += ["## Test scores", "", SCORES_NOTE, ""]
        for names, group in score_groups(board.accuracy):
            parts += [f"### {score_title(names)}", "", _md_table(*score_table(names, group)), ""]
    if board.not_applicable:
        parts += ["", NOT_APPLICABLE_NOTE, "", *(f"- {r['reason']}" for r in board.not_applicable), ""]
    parts += ["", "## Cross-seed stability", "",
              f"{metric_label(board)} between seeds of one architecture, layer by layer: the mean over seed pairs, "
              "and its 95 % interval over seeds (delete-one-seed jackknife: pairs that share a seed are not "
              "counted as independent)." + calibration_note(board)
              + (" " + interval_note(board.stability) if interval_note(board.stability) else ""), ""]
    parts.append(_md_table(*stability_table(board)) if board.stability else "_no similarity computed_")
    parts += ["", "## Cross-architecture similarity", ""]
    mats = cross_matrices(board)
    if not mats:
        parts.append("_no similarity between architectures computed_")
    for title_, head, rows in mats:
        parts += [f"### {title_}", "", _md_table(head, rows), ""]
    parts += ["", "## Sample analysis", ""]
    if not board.samples and not board.scalar_samples:
        parts.append("_no predictions stored_")
    if board.samples:
        parts += [("Test samples that every seed of a weight-space model gets right and every seed of every "
                   "image model gets wrong, and the reverse; each weight-space model is judged on its own."), "",
                  _md_table(*samples_table(board)), ""]
        if class_agreement(board):
            parts += ["### Prediction agreement between architectures", "",
                      "How often two runs predict the same class (distinct seeds within an architecture).", "",
                      _md_table(*agreement_table(board)), ""]
        if board.sample_list:
            parts += ["### The split samples", ""]
            if image_dir:
                parts += markdown_gallery(board, image_dir, image_ids or set(), classes or {})
            else:
                parts += [_md_table(*sample_list_table(board)), ""]
    if board.scalar_samples:
        parts += ["### Networks that split weight-view from data-view models", "", SCALAR_SAMPLES_NOTE, "",
                  _md_table(*scalar_samples_table(board)), ""]
        if tau_agreement_rows(board):
            parts += ["### Prediction agreement between architectures (scalar targets)", "", TAU_AGREEMENT_NOTE, "",
                      _md_table(*tau_agreement_table(board)), ""]
        if board.scalar_examples:
            parts += ["### Example networks", "", _md_table(*scalar_examples_table(board)), ""]
    if board.failures:
        parts += ["", "## Failed runs", "", _md_table(*failures_table(board))]
    if board.provenance:
        parts += ["", "## Provenance", "",
                  "The code, software and hardware of the finished runs (\"not recorded\": stored before wsbench "
                  "recorded it).", "", _md_table(*provenance_table(board))]
    return "\n".join(parts).rstrip() + "\n"


def markdown_gallery(board: Board, image_dir: str, image_ids: set, classes: dict, per_row: int = 8,
                     per_group: int = MAX_IMAGES) -> list[str]:
    """Markdown lines showing the split samples whose ``(dataset, sample_id)`` is in ``image_ids``
    as ``image_dir/<dataset>/<sample_id>.png``, ``per_row`` to a row, at most ``per_group`` a group."""
    out = []
    for (ds, wa, group), every in sample_groups(board):
        # At most the first ``per_group`` (those the export picks): another group's images may be present too.
        chosen = [s for s in every if (ds, s["sample_id"]) in image_ids][:per_group]
        total = len(every)
        if not chosen:
            continue
        names = classes.get(ds) or []
        shown = f", first {len(chosen)} shown" if len(chosen) < total else ""
        out += [(f"**{ds}, {wa}: {group}** ({total} samples{shown}; "
                 "caption: id, true label → what the failing side predicts)"), ""]
        for i in range(0, len(chosen), per_row):
            row = chosen[i:i + per_row]
            # Inline <img> so the small images are scaled up (GitHub keeps width on img tags).
            out.append("| " + " | ".join(f'<img src="{image_dir}/{ds}/{s["sample_id"]}.png" width="56" '
                                         f'alt="sample {s["sample_id"]}">' for s in row) + " |")
            if i == 0:  # one Markdown table: images and captions alternate below its header row
                out.append("|" + "|".join([":---:"] * len(row)) + "|")
            out.append("| " + " | ".join(f"{s['sample_id']}: {class_name(names, s['label'])} → "
                                         f"{class_name(names, s['wrong_pred'])}" for s in row) + " |")
        out.append("")
    return out


def render_comparison_markdown(c: Comparison) -> str:
    parts = [f"# {c.name_b} against {c.name_a}", "",
             "Differences are B − A with a Welch 95 % interval; `*` marks differences whose interval excludes 0.", ""]
    tables = comparison_tables(c)
    if not tables:
        parts.append("_nothing to compare_")
    for title_, head, rows in tables:
        parts += [f"## {title_}", "", _md_table(head, rows), ""]
    return "\n".join(parts).rstrip() + "\n"


# rich -----------------------------------------------------------------------------------

def _rich_table(title, head, rows):
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for h in head:
        t.add_column(h)
    for row in rows:
        t.add_row(*row)
    return t


def render_rich(board: Board) -> list:
    """A list of rich renderables."""
    if not board.accuracy:
        out: list = ["no finished runs"]
    elif class_only(board):
        out = [_rich_table("Test accuracy (ranked; = marks ties the intervals cannot separate)",
                           *accuracy_table(board))]
    else:
        out = [_rich_table(f"{score_title(names)} (ranked in the score's direction; = marks ties the intervals "
                           "cannot separate)", *score_table(names, rows))
               for names, rows in score_groups(board.accuracy)]
    if board.not_applicable:
        out.append("\n".join([NOT_APPLICABLE_NOTE, *(f"  {r['reason']}" for r in board.not_applicable)]))
    if board.stability:
        out.append(_rich_table("Cross-seed stability", *stability_table(board)))
    for title_, head, rows in cross_matrices(board):
        out.append(_rich_table(title_, head, rows))
    if board.samples:
        out.append(_rich_table("Sample analysis", *samples_table(board)))
    if class_agreement(board):
        out.append(_rich_table("Prediction agreement", *agreement_table(board)))
    if board.sample_list:
        out.append(_rich_table("Split samples", *sample_list_table(board, limit=10)))
    if board.scalar_samples:
        out.append(_rich_table("Sample analysis (scalar targets)", *scalar_samples_table(board)))
    if tau_agreement_rows(board):
        out.append(_rich_table("Prediction agreement (Kendall's tau between runs' predictions)",
                               *tau_agreement_table(board)))
    if board.scalar_examples:
        out.append(_rich_table("Example networks", *scalar_examples_table(board)))
    if board.failures:
        out.append(_rich_table("Failed runs", *failures_table(board, 80)))
    return out


def render_comparison_rich(c: Comparison) -> list:
    tables = comparison_tables(c)
    return [_rich_table(t, h, r) for t, h, r in tables] or ["nothing to compare"]
