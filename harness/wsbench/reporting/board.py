"""Leaderboards as pure functions of the stored tables.

``build(runs, similarity, predictions)`` turns table rows (lists of dicts, as
``pyarrow.Table.to_pylist`` gives them) into a :class:`Board`; ``compare(a, b)``
sets two Boards side by side. :mod:`wsbench.reporting.text` and
:mod:`wsbench.reporting.html` render them. Nothing here trains, reads files or
loads images.

Scores: each dataset is ranked by its primary score (:mod:`wsbench.scores`: test accuracy for a
class target; Kendall's tau for a scalar target, with R² and MSE beside it), in the score's own
direction (an MSE ranks ascending).

Intervals: the seed is the unit. A score is one number per seed: a 95 % Student-t
interval of the mean over seeds, clipped to the values the score can take. Similarity
is one number per *pair* of runs, and pairs share seeds (5 seeds make 10 pairs within an
architecture, 25 across two), so pairs are not counted as independent: the mean over pairs
gets the delete-one-seed jackknife interval of :func:`wsbench.reporting.stats.unit_mean_ci`
(every run is a unit, grouped by architecture; t on S - 1 df for S seeds), and so does
prediction agreement between runs (the same-class rate for a class target, Kendall's tau
between two runs' predictions for a scalar one). These intervals are over seeds with the
test samples held fixed; the per-pair interval over samples (``boot_low``, ``boot_high``, with its ``ci_kind``) and the
permutation baseline (``null_mean``) are carried along when the similarity rows have
them. ``build(..., calibrated=True)`` uses every row's null-calibrated value instead of
its raw value (see :func:`calibrated_rows`).
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from wsbench.reporting.stats import NAN, diff_ci_se, is_missing, mean_ci, nanmean, unit_mean_ci
from wsbench.scores import SCORES, TARGET_SCORES, Score

WEIGHTS, IMAGES, FUNCTION = "weights", "images", "function"
# The data-driven side a weight-space model is set against: images for INR datasets, a network's
# outputs on fixed probe inputs for zoos of trained networks.
DATA_VIEWS = (IMAGES, FUNCTION)
MAX_IMAGES = 64  # split samples shown per (dataset, architecture, group): pages and exports stay small
MAX_EXAMPLES = 20  # example networks kept per (dataset, weight-view architecture, group), scalar targets


@dataclass
class Board:
    """Everything a leaderboard shows, as rows (lists of dicts) derived from the tables."""

    metric: str = "cka"
    calibrated: bool = False  # similarity values are null-calibrated (value - null) / (1 - null)
    accuracy: list = field(default_factory=list)  # ranked within dataset
    stability: list = field(default_factory=list)  # cross-seed similarity per architecture and layer
    within: list = field(default_factory=list)  # same architecture, other seed, layer x layer
    cross: list = field(default_factory=list)  # cross-architecture layer x layer similarity
    samples: list = field(default_factory=list)  # sample analysis: one summary row per dataset
    sample_list: list = field(default_factory=list)  # the samples that split weight and image models
    agreement: list = field(default_factory=list)  # prediction agreement between architectures
    scalar_samples: list = field(default_factory=list)  # sample analysis of scalar targets: per (dataset, W)
    scalar_examples: list = field(default_factory=list)  # example networks that split W from the data side
    failures: list = field(default_factory=list)  # runs that did not finish
    provenance: list = field(default_factory=list)  # per dataset and architecture: code, hardware, versions
    chance: dict = field(default_factory=dict)  # dataset -> chance accuracy (1 / classes seen in the predictions)
    # Architectures of the board that do not apply to one of its datasets: {dataset, arch, reason} rows, sorted
    # (wsbench.grid.applicability_notes; the caller passes them, the tables do not hold them).
    not_applicable: list = field(default_factory=list)


# Scores ---------------------------------------------------------------------------------

def score_of(name: str | None) -> Score:
    """The :class:`wsbench.scores.Score` of a stored score name (None, as in rows stored before scores
    were recorded: accuracy); an unknown name is higher-is-better with no range."""
    name = name or "accuracy"
    return SCORES.get(name) or Score(name, lambda p, t: NAN, name)


def run_score(r: dict) -> float:
    """A run's test value of its primary score: ``test_acc`` for accuracy (rows stored before scores
    were recorded have only that), else ``test_score``; NaN when missing."""
    name = r.get("score") or "accuracy"
    v = r.get("test_acc") if name == "accuracy" else None
    if is_missing(v):
        v = r.get("test_score")
    return NAN if v is None or is_missing(v) else float(v)


def _other_scores(rs: list[dict], primary: str) -> list[str]:
    """The scores besides the primary one the runs recorded, in the target's order (:data:`TARGET_SCORES`)."""
    seen: list[str] = []
    for r in rs:
        try:
            names = list(json.loads(r.get("test_scores") or "{}"))
        except ValueError:
            names = []
        seen += [n for n in names if n != primary and n not in seen]
    order = [n for t in TARGET_SCORES.values() for n in t]
    return sorted(seen, key=lambda n: (order.index(n) if n in order else len(order), n))


def _seed_stats(values: list[float], sc: Score) -> tuple[float, float, float, float]:
    """Mean, std and the 95 % t-interval over seeds, the interval clipped to the score's range."""
    m, sd, lo, hi = mean_ci(values)
    lo, hi = clip_interval(lo, hi, sc.range)
    return m, sd, lo, hi


def accuracy_rows(runs: list[dict]) -> list[dict]:
    """Per dataset, architectures ranked by the mean over seeds of the dataset's primary test score,
    in the score's direction (higher first, or lower first for a score such as MSE).

    ``rank`` is 1 + the number of architectures whose interval lies wholly on the better side of this
    one's: architectures the intervals cannot separate share a rank. A class target's rows keep the
    keys they always had (accuracy, from ``test_acc``); rows of any other score also carry ``target``,
    ``score``, ``higher_is_better``, ``missing`` (seeds whose score is NaN, e.g. a constant
    prediction's Kendall tau, left out) and, per other score S the runs recorded (R², MSE),
    ``S_mean``, ``S_std``, ``S_ci_low``, ``S_ci_high``. ``best``/``worst``: the best and worst seed in
    the score's direction.
    """
    groups = defaultdict(list)
    for r in runs:
        if r.get("status") == "finished":
            groups[(r["dataset"], r["arch"])].append(r)
    rows = []
    for (ds, arch), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        name = Counter(r.get("score") or "accuracy" for r in rs).most_common(1)[0][0]
        sc = score_of(name)
        every = [run_score(r) for r in rs]
        accs = [v for v in every if not math.isnan(v)]
        m, s, lo, hi = _seed_stats(accs, sc)
        best, worst = (max(accs), min(accs)) if accs else (NAN, NAN)
        row = {"dataset": ds, "arch": arch, "view": rs[0].get("view"), "mean": m, "std": s,
               "se": s / math.sqrt(len(accs)) if len(accs) > 1 else NAN, "df": len(accs) - 1,
               "ci_low": lo, "ci_high": hi, "seeds": len(accs),
               "best": best if sc.higher_is_better else worst, "worst": worst if sc.higher_is_better else best}
        if name != "accuracy":
            row.update({"target": rs[0].get("target") or "scalar", "score": name,
                        "higher_is_better": sc.higher_is_better, "missing": len(every) - len(accs)})
            for other in _other_scores(rs, name):
                vals = []
                for r in rs:
                    try:
                        v = json.loads(r.get("test_scores") or "{}").get(other)
                    except ValueError:
                        v = None
                    if not is_missing(v):
                        vals.append(float(v))
                om, osd, olo, ohi = _seed_stats(vals, score_of(other))
                row.update({f"{other}_mean": om, f"{other}_std": osd, f"{other}_ci_low": olo, f"{other}_ci_high": ohi})
        rows.append(row)
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        block = [r for r in rows if r["dataset"] == ds]
        higher = score_of(block[0].get("score")).higher_is_better

        def low(r):
            return r["mean"] if math.isnan(r["ci_low"]) else r["ci_low"]

        def high(r):
            return r["mean"] if math.isnan(r["ci_high"]) else r["ci_high"]

        def better(o, r, higher=higher):  # o's interval lies wholly on the better side of r's
            return low(o) > high(r) if higher else high(o) < low(r)

        block.sort(key=lambda r: (math.isnan(r["mean"]), -r["mean"] if higher else r["mean"], r["arch"]))
        for r in block:
            r["rank"] = 1 + sum(1 for o in block if o is not r and better(o, r))
        ranks = [r["rank"] for r in block]
        for r in block:
            r["tie"] = ranks.count(r["rank"]) > 1
        out += block
    return out


def score_groups(rows: list[dict]) -> list[tuple[tuple[str, ...], list[dict]]]:
    """Ranked score rows grouped by the scores they show, ``(primary, *others)``: accuracy (class
    targets) first, then the others by name; rows keep their order within a group."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in rows:
        name = r.get("score") or "accuracy"
        others = tuple(k[:-5] for k in r if k.endswith("_mean") and k != "mean")
        groups.setdefault((name, *others), []).append(r)
    return sorted(groups.items(), key=lambda kv: (kv[0][0] != "accuracy", kv[0]))


# Similarity -----------------------------------------------------------------------------

# What the intervals of similarity rows stored without a ``ci_kind`` were (every metric had the bootstrap).
LEGACY_KINDS = {"mknn": "per-sample-percentile"}


def _extras(rows: list[dict]) -> dict:
    """Means over seed pairs of the per-pair interval over samples and permutation baseline (NaN when
    absent), and the interval kinds behind them (``ci_kind``; rows written before kinds were stored
    had bootstrap percentile intervals, of per-sample scores for mknn: :data:`LEGACY_KINDS`)."""
    kinds = sorted({r.get("ci_kind") or LEGACY_KINDS.get(str(r.get("metric")), "percentile") for r in rows
                    if not is_missing(r.get("ci_low"))})
    return {"boot_low": nanmean(r.get("ci_low") for r in rows), "boot_high": nanmean(r.get("ci_high") for r in rows),
            "null_mean": nanmean(r.get("null_mean") for r in rows),
            "null_high": nanmean(r.get("null_high") for r in rows), "ci_kind": ", ".join(kinds) or None}


def _pair_units(s: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    """The two runs a similarity row depends on, each grouped by its architecture."""
    return (s["arch_a"], str(s.get("run_a", s.get("seed_a")))), (s["arch_b"], str(s.get("run_b", s.get("seed_b"))))


def _over_seeds(rs: list[dict], value_range: tuple[float, float] | None = None) -> dict:
    """Mean and seed-level interval of the rows' values (missing values skipped, counted in ``missing``)."""
    present = [s for s in rs if not is_missing(s.get("value"))]
    values = [float(s["value"]) for s in present]
    st = unit_mean_ci(values, [_pair_units(s) for s in present])
    _, sd, _, _ = mean_ci(values)
    lo, hi = clip_interval(st["ci_low"], st["ci_high"], value_range)
    return {"mean": st["mean"], "std": sd, "se": st["se"], "df": st["df"], "ci_low": lo,
            "ci_high": hi, "pairs": len(present), "seeds": st["units"], "missing": len(rs) - len(present)}


def clip_interval(low: float, high: float, value_range: tuple[float, float] | None) -> tuple[float, float]:
    """A seed-level t-interval clipped to the values the quantity can take (``value_range``, e.g. a
    metric's declared range): a symmetric interval around a mean near a bound would otherwise claim
    impossible values (a CKA of 1.0007, an agreement of 100.3 %). NaN stays NaN."""
    if value_range is None:
        return low, high
    lo_bound, hi_bound = value_range
    if not is_missing(low):
        low = min(max(low, lo_bound), hi_bound)
    if not is_missing(high):
        high = max(min(high, hi_bound), lo_bound)
    return low, high


def stability_rows(similarity: list[dict], metric: str,
                   value_range: tuple[float, float] | None = None) -> list[dict]:
    """Cross-seed similarity: same architecture, different seeds, same layer, averaged over seed pairs
    (interval over seeds: the delete-one-seed jackknife, clipped to ``value_range``)."""
    groups = defaultdict(list)
    for s in similarity:
        if s["metric"] == metric and s["arch_a"] == s["arch_b"] and s["layer_a"] == s["layer_b"] \
                and s.get("seed_a") != s.get("seed_b"):
            groups[(s["dataset"], s["arch_a"], s["layer_index_a"], s["layer_a"])].append(s)
    rows = []
    for (ds, arch, li, layer), rs in sorted(groups.items()):
        rows.append({"dataset": ds, "metric": metric, "arch": arch, "layer_index": li, "layer": layer,
                     **_over_seeds(rs, value_range), **_extras(rs)})
    return rows


def layer_pair_rows(similarity: list[dict], metric: str, same_arch: bool,
                    value_range: tuple[float, float] | None = None) -> list[dict]:
    """Layer x layer similarity averaged over run pairs, per (dataset, arch_a, arch_b), with a
    seed-level interval (delete-one-seed jackknife: the runs of each architecture are the units).

    ``same_arch``: pairs of seeds of one architecture (both orientations pooled, so
    the matrix is symmetric); otherwise pairs of different architectures, oriented
    with ``arch_a < arch_b``.
    """
    groups: defaultdict[tuple, list[dict]] = defaultdict(list)
    for s in similarity:
        if s["metric"] != metric or (s["arch_a"] == s["arch_b"]) != same_arch:
            continue
        if same_arch and s.get("seed_a") == s.get("seed_b"):
            continue
        a = (s["arch_a"], s["layer_index_a"], s["layer_a"])
        b = (s["arch_b"], s["layer_index_b"], s["layer_b"])
        # The keys are built apart: mypy reads a starred tuple inside [] as 3.11-only syntax.
        if same_arch:
            key = (s["dataset"], *a, *b)
            groups[key].append(s)
            if a != b:
                key = (s["dataset"], *b, *a)
                groups[key].append(s)
            continue
        if a[0] > b[0]:
            a, b = b, a
        key = (s["dataset"], *a, *b)
        groups[key].append(s)
    rows = []
    for (ds, aa, ia, la, ab, ib, lb), rs in sorted(groups.items()):
        rows.append({"dataset": ds, "metric": metric, "arch_a": aa, "layer_index_a": ia, "layer_a": la,
                     "arch_b": ab, "layer_index_b": ib, "layer_b": lb, **_over_seeds(rs, value_range), **_extras(rs)})
    return rows


def calibrated_rows(similarity: list[dict]) -> list[dict]:
    """Similarity rows with every value replaced by its null-calibrated value.

    The stored ``calibrated`` column when present, else ``(value - null_mean) / (1 - null_mean)``
    from the stored null level (tables written before the column existed); NaN without a null
    level. The interval over samples and the null's 95th percentile go through the same map
    (monotone for a fixed null level), and the null mean becomes 0.
    """
    def cal(x, m):
        return NAN if is_missing(x) or is_missing(m) or m >= 1 else (float(x) - m) / (1.0 - m)
    out = []
    for s in similarity:
        m = s.get("null_mean")
        stored = s.get("calibrated")
        value = cal(s.get("value"), m) if stored is None or is_missing(stored) else float(stored)
        out.append({**s, "value": value, "ci_low": cal(s.get("ci_low"), m), "ci_high": cal(s.get("ci_high"), m),
                    "null_high": cal(s.get("null_high"), m), "null_mean": NAN if is_missing(m) else 0.0})
    return out


def cross_rows(similarity: list[dict], metric: str, value_range: tuple[float, float] | None = None) -> list[dict]:
    """Cross-architecture similarity per (arch_a layer, arch_b layer), averaged over seed pairs."""
    return layer_pair_rows(similarity, metric, same_arch=False, value_range=value_range)


def has_extras(rows: list[dict]) -> dict:
    """Which optional similarity columns have any value: ``{"boot": bool, "null": bool}``."""
    return {"boot": any(not is_missing(r.get("boot_low")) for r in rows),
            "null": any(not is_missing(r.get("null_mean")) for r in rows)}


def layer_matrices(rows: list[dict], metric: str = "cka") -> list[dict]:
    """One layer x layer matrix per (dataset, arch_a, arch_b).

    Each: ``{"dataset", "arch_a", "arch_b", "rows": [layer_a...], "cols": [layer_b...],
    "values": (R, C) nested lists of float (NaN where missing), "cells": {(la, lb): row}}``.
    """
    out = []
    for ds, aa, ab in sorted({(r["dataset"], r["arch_a"], r["arch_b"]) for r in rows}):
        cells = [r for r in rows if (r["dataset"], r["arch_a"], r["arch_b"]) == (ds, aa, ab)]
        la = [n for _, n in sorted({(r["layer_index_a"], r["layer_a"]) for r in cells})]
        lb = [n for _, n in sorted({(r["layer_index_b"], r["layer_b"]) for r in cells})]
        by = {(r["layer_a"], r["layer_b"]): r for r in cells}
        values = [[by[(x, y)]["mean"] if (x, y) in by else NAN for y in lb] for x in la]
        out.append({"dataset": ds, "arch_a": aa, "arch_b": ab, "rows": la, "cols": lb, "values": values,
                    "cells": by, "metric": metric})
    return out


# Provenance -----------------------------------------------------------------------------

def _distinct(values, missing: str = "not recorded") -> str:
    got = sorted({str(v) for v in values if not is_missing(v)})
    return ", ".join(got) if got else missing


def provenance_rows(runs: list[dict]) -> list[dict]:
    """Per (dataset, architecture): the code (git commits, ``+dirty`` where tracked files had changed;
    "not recorded" for runs stored before wsbench recorded it), wsbench version, torch version and
    threads, device and hardware of its finished runs. No paths: a published page names no machine's
    folders."""
    groups = defaultdict(list)
    for r in runs:
        if r.get("status") == "finished":
            groups[(r["dataset"], r["arch"])].append(r)
    rows = []
    for (ds, arch), rs in sorted(groups.items()):
        commits = [None if is_missing(r.get("git_commit")) else
                   r["git_commit"][:12] + ("+dirty" if r.get("git_dirty") else "") for r in rs]
        rows.append({"dataset": ds, "arch": arch, "runs": len(rs), "commit": _distinct(commits),
                     "wsbench": _distinct(r.get("wsbench_version") for r in rs),
                     "torch": _distinct(r.get("torch_version") for r in rs),
                     "threads": _distinct(r.get("threads") for r in rs),
                     "device": _distinct(r.get("device") for r in rs),
                     "hardware": _distinct(r.get("hardware") for r in rs)})
    return rows


def chance_levels(predictions: list[dict]) -> dict[str, float]:
    """``{dataset: 1 / number of classes}``, the classes being the labels seen in the predictions."""
    labels: dict[str, set] = {}
    for p in predictions:
        if p.get("label") is not None:  # scalar targets have no class, hence no chance level
            labels.setdefault(p["dataset"], set()).add(p["label"])
    return {ds: 1.0 / len(ls) for ds, ls in sorted(labels.items()) if ls}


# Sample analysis ------------------------------------------------------------------------

def scalar_datasets(runs: list[dict]) -> set[str]:
    """The datasets whose runs predict a scalar target (runs stored before targets were recorded: class)."""
    return {r["dataset"] for r in runs if (r.get("target") or "class") == "scalar"}


def _datasets_with_common_samples(finished: dict, by_run: Mapping) -> Iterator[tuple[str, list, list]]:
    """Per dataset (sorted): its finished runs with predictions, by architecture, seed and id, and the
    sample ids every one of them predicted; datasets with neither are left out."""
    for ds in sorted({r["dataset"] for r in finished.values()}):
        rs = sorted((r for r in finished.values() if r["dataset"] == ds and r["run_id"] in by_run),
                    key=lambda r: (r["arch"], r["seed"], r["run_id"]))
        common = sorted(set.intersection(*(set(by_run[r["run_id"]]) for r in rs))) if rs else []
        if common:
            yield ds, rs, common


def sample_analysis(runs: list[dict], predictions: list[dict]) -> tuple[list, list, list]:
    """Which test samples split weight-space models from image models (class targets; datasets with a
    scalar target are :func:`scalar_sample_analysis`'s).

    Per dataset and per weight-space (``view == "weights"``) architecture W, over
    the finished runs and the sample ids every one of them predicted:
    ``weights-only`` samples are right in every seed of W and wrong in every seed
    of every data-view architecture (``images``, or ``function`` for a zoo of
    networks; the keys say ``image``); ``images-only`` the reverse. Each weight-space
    architecture is judged on its own, so a baseline at chance does not hide what
    a metanetwork gets right. Returns ``(summary, samples, agreement)``: one
    summary row per (dataset, W) (counts; a single row with ``weight_arch`` None
    when a dataset lacks one of the two views); one row per split sample (W, label,
    the failing side's most common prediction, each architecture's fraction of
    seeds right); and per pair of architectures the rate at which two runs predict
    the same class, averaged over run pairs (distinct seeds when the architecture
    is the same).
    """
    scalar = scalar_datasets(runs)
    finished = {r["run_id"]: r for r in runs if r.get("status") == "finished" and r["dataset"] not in scalar}
    by_run: defaultdict[str, dict[int, tuple[int, int]]] = defaultdict(dict)  # run_id -> {sample_id: (label, pred)}
    for p in predictions:
        if p["run_id"] in finished and p.get("label") is not None and p.get("pred") is not None:
            by_run[p["run_id"]][int(p["sample_id"])] = (int(p["label"]), int(p["pred"]))
    summary, samples, agreement = [], [], []
    for ds, rs, common in _datasets_with_common_samples(finished, by_run):
        ids = np.array(common, dtype=np.int64)
        labels = np.array([by_run[rs[0]["run_id"]][i][0] for i in common])
        preds = np.array([[by_run[r["run_id"]][i][1] for i in common] for r in rs])  # (runs, n)
        right = preds == labels[None, :]
        views = np.array([r.get("view") for r in rs])
        archs = sorted({r["arch"] for r in rs})
        arch_of = np.array([r["arch"] for r in rs])
        im = np.isin(views, DATA_VIEWS)
        weight_archs = sorted(set(arch_of[views == WEIGHTS]))
        i_right, i_wrong = right[im].all(0), (~right[im]).all(0)
        frac = {a: right[arch_of == a].mean(0) for a in archs}
        for wa in (weight_archs if im.any() else []) or [None]:
            w = arch_of == wa
            both = bool(w.any() and im.any())
            w_right, w_wrong = right[w].all(0), (~right[w]).all(0)
            groups = {"weights-only": w_right & i_wrong if both else np.zeros(len(ids), bool),
                      "images-only": i_right & w_wrong if both else np.zeros(len(ids), bool)}
            judged = w | im
            summary.append({
                "dataset": ds, "weight_arch": wa, "samples": len(ids),
                "image_archs": ", ".join(sorted(set(arch_of[im]))),
                "weight_runs": int(w.sum()), "image_runs": int(im.sum()),
                "weights_only": int(groups["weights-only"].sum()), "images_only": int(groups["images-only"].sum()),
                "all_right": int(right[judged].all(0).sum()) if judged.any() else 0,
                "all_wrong": int((~right[judged]).all(0).sum()) if judged.any() else 0,
                "weight_models_all_right": int(w_right.sum()) if w.any() else None,
                "image_models_all_right": int(i_right.sum()) if im.any() else None,
            })
            for group, mask in groups.items():
                failing = im if group == "weights-only" else w
                for k in np.flatnonzero(mask):
                    wrong = Counter(preds[failing, k].tolist()).most_common(1)
                    samples.append({"dataset": ds, "weight_arch": wa, "group": group, "sample_id": int(ids[k]),
                                    "label": int(labels[k]), "wrong_pred": int(wrong[0][0]) if wrong else None,
                                    "right_fraction": {a: float(frac[a][k]) for a in archs}})
        for i, a in enumerate(archs):
            for b in archs[i:]:
                ra, rb = np.flatnonzero(arch_of == a), np.flatnonzero(arch_of == b)
                rates = [float((preds[x] == preds[y]).mean()) for x in ra for y in rb if (a != b or x < y)]
                if not rates:
                    continue
                units = [((a, rs[x]["run_id"]), (b, rs[y]["run_id"])) for x in ra for y in rb if (a != b or x < y)]
                st = unit_mean_ci(rates, units)  # runs are the units: run pairs share runs
                _, sd, _, _ = mean_ci(rates)
                lo, hi = clip_interval(st["ci_low"], st["ci_high"], (0.0, 1.0))  # a rate of agreement
                agreement.append({"dataset": ds, "arch_a": a, "arch_b": b, "agreement": st["mean"], "std": sd,
                                  "ci_low": lo, "ci_high": hi, "pairs": len(rates),
                                  "samples": len(ids)})
    return summary, samples, agreement


def _by_run_scalar(runs: dict, predictions: list[dict]) -> defaultdict[str, dict[int, tuple[float, float]]]:
    """``run_id -> {sample_id: (target, prediction)}`` of the finished runs in ``runs``."""
    out: defaultdict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for p in predictions:
        if p["run_id"] in runs and not is_missing(p.get("target")) and not is_missing(p.get("prediction")):
            out[p["run_id"]][int(p["sample_id"])] = (float(p["target"]), float(p["prediction"]))
    return out


def tau_agreement(preds: np.ndarray, run_ids: list[str], archs: list[str], dataset: str,
                  n: int) -> list[dict]:
    """Per pair of architectures, Kendall's tau-b between two runs' predictions over the same networks,
    averaged over run pairs (distinct seeds within an architecture), with the seed-level interval of
    :func:`wsbench.reporting.stats.unit_mean_ci` clipped to [-1, 1]. ``preds``: ``(runs, n)``;
    ``archs[i]``/``run_ids[i]``: run ``i``'s architecture and id. Pairs whose tau is undefined (a
    constant prediction) are left out and counted in ``missing``."""
    from wsbench.scores import kendall_tau

    arch_of = np.array(archs)
    out = []
    names = sorted(set(archs))
    for i, a in enumerate(names):
        for b in names[i:]:
            ra, rb = np.flatnonzero(arch_of == a), np.flatnonzero(arch_of == b)
            pairs = [(x, y) for x in ra for y in rb if (a != b or x < y)]
            if not pairs:
                continue
            taus = [kendall_tau(preds[x], preds[y]) for x, y in pairs]
            kept = [(t, p) for t, p in zip(taus, pairs) if not math.isnan(t)]
            values = [t for t, _ in kept]
            units = [((a, run_ids[x]), (b, run_ids[y])) for _, (x, y) in kept]
            st = unit_mean_ci(values, units)  # runs are the units: run pairs share runs
            _, sd, _, _ = mean_ci(values)
            lo, hi = clip_interval(st["ci_low"], st["ci_high"], (-1.0, 1.0))
            out.append({"dataset": dataset, "arch_a": a, "arch_b": b, "agreement": st["mean"], "std": sd,
                        "ci_low": lo, "ci_high": hi, "pairs": len(values), "samples": n,
                        "measure": "kendall_tau", "missing": len(pairs) - len(values)})
    return out


def scalar_sample_analysis(runs: list[dict], predictions: list[dict],
                           examples: int = MAX_EXAMPLES) -> tuple[list, list, list]:
    """Which networks split weight-view models from function-view models, for datasets whose target is
    a scalar (a network's test accuracy, say).

    Per dataset and per weight-view architecture W, against the data-view architectures F (``function``
    for a zoo of networks; ``images`` for an INR dataset), over the finished runs and the networks every
    one of them predicted. An architecture's error on a network is its absolute prediction error
    ``|prediction - target|`` averaged over its seeds (one value per network and architecture).

    - ``weights-better``: W's error is below W's median error **and** every F's error is above that
      F's own 90th percentile;
    - ``function-better`` (``images-better`` on an INR dataset) the reverse: every F's error is below
      its median and W's error is above W's 90th percentile.

    Medians and percentiles are over the dataset's networks (numpy's linear interpolation); each
    architecture is measured against its own spread, so an architecture that is worse everywhere does
    not decide the groups. ``expected_*`` is the count the rule gives when the conditions are
    independent: the number of networks times the product of each condition's rate.

    Returns ``(summary, examples, agreement)``: one summary row per (dataset, W) (counts and expected
    counts; a single row with ``weight_arch`` None when a dataset lacks one side); up to ``examples``
    networks per (dataset, W, group), clearest first (the largest gap between the failing side's
    smallest error and the better side's error), each with its target and every compared
    architecture's mean prediction (``mean_prediction``); and the prediction agreement of
    :func:`tau_agreement`.
    """
    scalar = scalar_datasets(runs)
    finished = {r["run_id"]: r for r in runs if r.get("status") == "finished" and r["dataset"] in scalar}
    by_run = _by_run_scalar(finished, predictions)
    summary, chosen, agreement = [], [], []
    for ds, rs, common in _datasets_with_common_samples(finished, by_run):
        ids = np.array(common, dtype=np.int64)
        targets = np.array([by_run[rs[0]["run_id"]][i][0] for i in common])
        preds = np.array([[by_run[r["run_id"]][i][1] for i in common] for r in rs])  # (runs, n)
        arch_of = np.array([r["arch"] for r in rs])
        views = {r["arch"]: r.get("view") for r in rs}
        archs = sorted(views)
        mean_pred = {a: preds[arch_of == a].mean(0) for a in archs}
        error = {a: np.abs(preds[arch_of == a] - targets[None, :]).mean(0) for a in archs}  # mean abs error
        f_archs = [a for a in archs if views[a] in DATA_VIEWS]
        data_view = FUNCTION if any(views[a] == FUNCTION for a in f_archs) else IMAGES
        w_archs = [a for a in archs if views[a] == WEIGHTS]
        n = len(ids)
        for wa in (w_archs if f_archs else []) or [None]:
            groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # group -> (mask, expected count)
            if wa is not None:
                w_low = error[wa] < np.median(error[wa])
                w_high = error[wa] > np.quantile(error[wa], 0.9)
                f_low = [error[f] < np.median(error[f]) for f in f_archs]
                f_high = [error[f] > np.quantile(error[f], 0.9) for f in f_archs]
                groups["weights-better"] = (w_low & np.logical_and.reduce(f_high),
                                            n * w_low.mean() * float(np.prod([m.mean() for m in f_high])))
                groups[f"{data_view}-better"] = (w_high & np.logical_and.reduce(f_low),
                                                 n * w_high.mean() * float(np.prod([m.mean() for m in f_low])))
            counts = {g: int(m.sum()) for g, (m, _) in groups.items()}
            expect = {g: float(e) for g, (_, e) in groups.items()}
            summary.append({
                "dataset": ds, "weight_arch": wa, "data_view": data_view, "networks": n,
                "data_archs": ", ".join(f_archs), "weight_runs": int((arch_of == wa).sum()),
                "data_runs": int(np.isin(arch_of, f_archs).sum()),
                "weights_better": counts.get("weights-better", 0),
                "expected_weights_better": expect.get("weights-better", NAN),
                "data_better": counts.get(f"{data_view}-better", 0),
                "expected_data_better": expect.get(f"{data_view}-better", NAN),
                "weight_mean_abs_error": float(error[wa].mean()) if wa is not None else NAN,
            })
            for group, (mask, _) in groups.items() if wa is not None else ():
                f_err = np.stack([error[f] for f in f_archs])  # (F, n)
                gap = f_err.min(0) - error[wa] if group == "weights-better" else error[wa] - f_err.max(0)
                order = sorted(np.flatnonzero(mask), key=lambda k: (-gap[k], ids[k]))
                for k in order[:examples]:
                    chosen.append({"dataset": ds, "weight_arch": wa, "group": group, "sample_id": int(ids[k]),
                                   "target": float(targets[k]), "weight_error": float(error[wa][k]),
                                   "mean_prediction": {a: float(mean_pred[a][k]) for a in [wa, *f_archs]}})
        agreement += tau_agreement(preds, [r["run_id"] for r in rs], list(arch_of), ds, n)
    return summary, chosen, agreement


def sample_groups(board: Board) -> list[tuple[tuple[str, str, str], list[dict]]]:
    """The split samples grouped by (dataset, weight-space architecture, group), in a stable order."""
    groups: dict = defaultdict(list)
    for s in board.sample_list:
        groups[(s["dataset"], s["weight_arch"], s["group"])].append(s)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2]))


def variant_labels(runs: list[dict]) -> dict[str, str]:
    """``run_id -> label``: the architecture's name, or, when the runs hold an architecture with
    different configs or limits, the name plus what differs ("mlp (epochs=2)"), so that different
    settings are never pooled as if they were seeds. ``leaderboard compare`` labels the runs of both
    result sets together, so a row matches the same settings on both sides.

    CPU runs also differ by torch's thread count (``threads``): CPU kernels split their reductions
    by thread, so the same run id trained under 1 and 2 threads gives other numbers. The thread count
    is a variant label rather than part of the run id: the id stays what the user asked for, so a
    grid resumed with another ``--workers`` keeps the cells it stored (and never trains one twice),
    while the leaderboard never pools seeds trained under different thread counts. GPU runs are
    labelled by config alone."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["arch"])].append(r)
    labels = {}
    for (_, arch), rs in groups.items():
        def settings(r):
            try:
                config = json.loads(r.get("config") or "{}")
            except ValueError:
                config = {}
            # Nested settings (the zoo's inr_recipe) flattened, so a label names only the keys that differ.
            flat = {f"{k}.{sub}": v for k, d in config.items() if isinstance(d, dict) for sub, v in d.items()}
            out = {**{k: v for k, v in config.items() if not isinstance(v, dict)}, **flat, "limit": r.get("limit")}
            if str(r.get("device") or "").startswith("cpu"):
                out["threads"] = r.get("threads")
            return out
        variants = {json.dumps(settings(r), sort_keys=True, default=str) for r in rs}
        if len(variants) == 1:
            labels.update({r["run_id"]: arch for r in rs})
            continue
        parsed = [json.loads(v) for v in variants]
        differ = sorted(k for k in set().union(*parsed) if len({json.dumps(p.get(k)) for p in parsed}) > 1)
        for r in rs:
            st = settings(r)
            labels[r["run_id"]] = f"{arch} (" + ", ".join(f"{k}={json.dumps(st.get(k))}" for k in differ) + ")"
    return labels


def build(runs: list[dict], similarity: list[dict], metric: str = "cka",
          predictions: list[dict] | None = None, value_range: tuple[float, float] | None = None,
          labels: dict[str, str] | None = None, calibrated: bool = False,
          not_applicable: list[dict] | None = None) -> Board:
    """The Board of a results set: rows of the runs, similarity and (optionally) predictions tables.

    ``value_range``: the metric's declared range (``MetricSpec.range``), to which the similarity
    intervals are clipped (not the calibrated values'); ``labels``: variant labels by run id (default
    :func:`variant_labels` of ``runs``; ``leaderboard compare`` passes those of both result sets);
    ``calibrated``: rank and draw the null-calibrated similarity (:func:`calibrated_rows`);
    ``not_applicable``: rows ``{dataset, arch, reason}`` the pages list under the scores.
    """
    labels = {**variant_labels(runs), **(labels or {})}
    if any(labels[r["run_id"]] != r["arch"] for r in runs):
        runs = [{**r, "arch": labels[r["run_id"]]} for r in runs]
        similarity = [{**s, "arch_a": labels.get(s["run_a"], s["arch_a"]),
                       "arch_b": labels.get(s["run_b"], s["arch_b"])} for s in similarity]
        predictions = [{**p, "arch": labels.get(p["run_id"], p.get("arch"))} for p in predictions or []]
    summary, samples, agreement = sample_analysis(runs, predictions or [])
    scalar_summary, scalar_examples, scalar_agreement = scalar_sample_analysis(runs, predictions or [])
    if calibrated:
        value_range = None  # calibrated values have no fixed range
        similarity = calibrated_rows([s for s in similarity if s["metric"] == metric])
    return Board(
        metric=metric, calibrated=calibrated,
        accuracy=accuracy_rows(runs),
        stability=stability_rows(similarity, metric, value_range),
        within=layer_pair_rows(similarity, metric, same_arch=True, value_range=value_range),
        cross=cross_rows(similarity, metric, value_range),
        samples=summary, sample_list=samples, agreement=agreement + scalar_agreement,
        scalar_samples=scalar_summary, scalar_examples=scalar_examples,
        failures=[r for r in runs if r.get("status") not in ("finished", None)],
        provenance=provenance_rows(runs), chance=chance_levels(predictions or []),
        not_applicable=sorted(not_applicable or [], key=lambda r: (r["dataset"], r["arch"])),
    )


# Comparing two result sets --------------------------------------------------------------

@dataclass
class Comparison:
    """Two Boards side by side: rows of ``a``, ``b`` and ``b - a`` with a Welch interval."""

    name_a: str
    name_b: str
    accuracy: list = field(default_factory=list)
    stability: list = field(default_factory=list)


def _side_by_side(rows_a, rows_b, key, n_field):
    index_a = {key(r): r for r in rows_a}
    index_b = {key(r): r for r in rows_b}
    out = []
    for k in sorted(set(index_a) | set(index_b), key=lambda k: tuple(str(x) for x in k)):
        a, b = index_a.get(k), index_b.get(k)
        row = dict(zip(("dataset", "arch", "layer"), k))
        for side, r in (("a", a), ("b", b)):
            row.update({f"{side}_mean": r["mean"] if r else NAN, f"{side}_low": r["ci_low"] if r else NAN,
                        f"{side}_high": r["ci_high"] if r else NAN, f"{side}_n": r[n_field] if r else 0})
        if a and b:  # each side's standard error and df: Welch for accuracy, seed-level for similarity
            d, lo, hi = diff_ci_se(a["mean"], a.get("se", NAN), a.get("df", NAN), b["mean"], b.get("se", NAN),
                                   b.get("df", NAN))
        else:
            d, lo, hi = NAN, NAN, NAN
        row.update({"diff": d, "diff_low": lo, "diff_high": hi,
                    "separated": bool(not math.isnan(lo) and (lo > 0 or hi < 0))})
        out.append(row)
    return out


def compare(a: Board, b: Board, name_a: str = "A", name_b: str = "B") -> Comparison:
    """The primary test score per (dataset, arch) and stability per (dataset, arch, layer) of ``b``
    against ``a``.

    ``diff`` is b - a with a 95 % interval from each side's standard error and degrees of freedom
    (Welch's for scores; the seed-level jackknife for stability); ``separated`` when it excludes 0.
    Score rows say which score they compare (``score``; a lower MSE is the better one).
    """
    scores = {(r["dataset"], r["arch"]): r.get("score") or "accuracy" for r in [*b.accuracy, *a.accuracy]}
    rows = _side_by_side(a.accuracy, b.accuracy, lambda r: (r["dataset"], r["arch"]), "seeds")
    return Comparison(
        name_a, name_b,
        accuracy=[{**r, "score": scores[(r["dataset"], r["arch"])]} for r in rows],
        stability=_side_by_side(a.stability, b.stability, lambda r: (r["dataset"], r["arch"], r["layer"]), "pairs"),
    )


def compare_sets(runs_a: list[dict], similarity_a: list[dict], runs_b: list[dict], similarity_b: list[dict],
                 name_a: str = "A", name_b: str = "B", metric: str = "cka",
                 value_range: tuple[float, float] | None = None) -> Comparison:
    """:func:`compare` of two result sets, their runs labelled together (:func:`variant_labels` of
    both): a row matches the same (dataset, architecture, settings) on both sides, and settings that
    differ are separate, labelled rows, never one row."""
    labels = variant_labels([*runs_a, *runs_b])
    a = build(runs_a, similarity_a, metric, value_range=value_range, labels=labels)
    b = build(runs_b, similarity_b, metric, value_range=value_range, labels=labels)
    return compare(a, b, name_a, name_b)
