"""The numbers behind leaderboards/cnn-zoo/README.md, from the exported tables alone.

    python scripts/cnn_zoo_findings.py [leaderboards/cnn-zoo]                  # the findings, as Markdown
    python scripts/cnn_zoo_findings.py leaderboards/cnn-zoo --write-readme     # and the folder's README.md

The cnn-zoo study (``harness/wsbench/studies/cnn-zoo.toml``) predicts each small CNN's test accuracy
from its weights (gmn, weight-stats, flat-mlp, nfn-np) or from its outputs on fixed probe images
(fn-mlp, the function view). Per dataset, this prints:

  scores  Kendall's tau (primary) and R² per architecture, mean over seeds with the 95 % t-interval,
          the leaderboard's rank (ties where intervals overlap); the issue's target: the GMN's tau above
          weight-stats' with non-overlapping intervals, and >= 0.93 on cnn-cifar10gs; beside a fixed
          table of taus published on the public Small CNN Zoo (another zoo and protocol);
  (a)     is the GMN less stable across seeds than fn-mlp? Cross-seed same-layer similarity per
          architecture (cka, mknn): per seed pair the mean over layers, the mean over seed pairs with
          its seed-level interval (delete-one-seed jackknife, t on seeds - 1 df), and the difference
          gmn - fn-mlp with a Satterthwaite interval; holds when that interval is below 0;
  (b)     is the similarity between GMN and fn-mlp layers low? The most similar layer pair (largest
          mean over seed pairs) with a selection-aware interval (Bonferroni over the K layer pairs
          searched), beside each architecture's own cross-seed similarity at those layers; holds when
          the pair's interval lies below the less stable of the two, does not hold when above it;
  (c)     are there CNNs only the weight view gets right? CNNs whose accuracy every GMN seed predicts
          well (absolute error below that seed's median over the CNNs) and every fn-mlp seed badly
          (above that seed's 90th percentile), beside the count expected by chance, and the reverse.
          Chance: the two sides' sets placed independently of which CNN is which (a random relabelling
          of the CNNs on one side), so the overlap is hypergeometric with mean (gmn set x fn-mlp set) / n;
          holds when more are found than chance gives (one-sided p < 0.05). The leaderboard's own rule
          (errors averaged over seeds, ``wsbench.reporting.board.scalar_sample_analysis``) is beside it.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from wsbench import plugins
from wsbench.reporting import export
from wsbench.reporting.board import accuracy_rows, build, provenance_rows, scalar_datasets, scalar_sample_analysis
from wsbench.reporting.findings import FAILS, HOLDS, UNSURE, best_pair, cross_seed_stats, fmt_ci, verdict
from wsbench.reporting.stats import diff_ci_se, hypergeom_sf, is_missing, mean_ci

GMN, FN, STATS = "gmn", "fn-mlp", "weight-stats"
ORDER = (GMN, STATS, "flat-mlp", "nfn-np", FN)  # the study's architectures, weight view first
METRICS = ("cka", "mknn")
TARGET_DATASET, TARGET_TAU = "cnn-cifar10gs", 0.93
ALPHA = 0.05

# Kendall's tau published on the PUBLIC Small CNN Zoo (Unterthiner et al. 2020, arXiv 2002.11448): another
# zoo (86 training epochs, the public splits) and protocol; shown for scale, never compared with ours.
# Source of every row: Zhou et al. 2023, "Permutation Equivariant Neural Functionals" (NeurIPS 2023),
# its table of test Kendall's tau for predicting generalization on the Small CNN Zoo (mean ± std; StatNN
# is Unterthiner et al.'s statistics predictor as run there). Checked against two independent summaries
# of that table; left out because they could not be checked: the Small CNN Zoo paper's own per-dataset
# table (its versions report different numbers), NG-GNN/NG-T (Kofinas et al. 2024), and the GMN of
# Lim et al. 2024, which was evaluated on its own zoo of diverse CIFAR-10 networks, not on this one.
PUBLISHED = (
    # (model, CIFAR-10-GS, SVHN-GS)
    ("NFN-HNP", "0.934 ± 0.001", "0.931 ± 0.005"),
    ("NFN-NP", "0.922 ± 0.001", "0.856 ± 0.001"),
    ("StatNN", "0.915 ± 0.002", "0.843 ± 0.000"),
)
PUBLISHED_SOURCE = "Zhou et al. 2023, Permutation Equivariant Neural Functionals (NeurIPS), Small CNN Zoo table"


def metric_range(metric: str) -> tuple[float, float] | None:
    """The declared range of an installed similarity metric (intervals are clipped to it), else None."""
    spec = plugins.registry().metrics.get(metric)
    return tuple(spec.range) if spec is not None and spec.range is not None else None


def _archs(runs: list[dict], ds: str) -> list[str]:
    """The architectures with finished runs on ``ds``, the study's order first."""
    got = {r["arch"] for r in runs if r["dataset"] == ds and r.get("status") == "finished"}
    return [a for a in ORDER if a in got] + sorted(got - set(ORDER))


def _weight_archs(runs: list[dict], ds: str) -> list[str]:
    views = {r["arch"]: r.get("view") for r in runs if r["dataset"] == ds}
    return [a for a in _archs(runs, ds) if views.get(a) == "weights"]


def _sep(table: list[str]) -> str:
    return "|" + "---|" * table[0].count(" | ") + "---|"


# Scores ------------------------------------------------------------------------------------------

def scores(runs: list[dict], datasets: list[str]) -> list[str]:
    """Kendall's tau and R² per architecture, ranked by tau (``=``: tied with another by its interval)."""
    out = ["| dataset | architecture | view | seeds | Kendall's tau [95 % CI] | R² [95 % CI] | rank |"]
    out.append(_sep(out))
    for r in accuracy_rows(runs):
        if r["dataset"] not in datasets:
            continue
        rank = f"{r['rank']}{'=' if r['tie'] else ''}"
        r2 = fmt_ci(r.get("r2_mean", math.nan), r.get("r2_ci_low", math.nan), r.get("r2_ci_high", math.nan))
        out.append(f"| {r['dataset']} | {r['arch']} | {r['view']} | {r['seeds']} | "
                   f"{fmt_ci(r['mean'], r['ci_low'], r['ci_high'])} | {r2} | {rank} |")
    return out


def target_rows(runs: list[dict], datasets: list[str]) -> list[dict]:
    """Per dataset, the issue's target for the GMN: its tau interval wholly above weight-stats' (and a
    mean tau >= 0.93 on cnn-cifar10gs). ``met`` is None when either architecture has no interval."""
    acc = {(r["dataset"], r["arch"]): r for r in accuracy_rows(runs)}
    rows = []
    for ds in datasets:
        g, s = acc.get((ds, GMN)), acc.get((ds, STATS))
        if g is None or s is None:
            continue
        d, lo, hi = diff_ci_se(s["mean"], s["se"], s["df"], g["mean"], g["se"], g["df"])
        known = not any(is_missing(x) for x in (g["ci_low"], s["ci_high"]))
        separate = known and g["ci_low"] > s["ci_high"]
        level = g["mean"] >= TARGET_TAU if ds == TARGET_DATASET else None
        rows.append({"dataset": ds, "gmn": g, "stats": s, "diff": (d, lo, hi), "separate": separate,
                     "level": level, "met": (separate and level is not False) if known else None})
    return rows


def targets(runs: list[dict], datasets: list[str]) -> list[str]:
    out = [f"| dataset | gmn tau | weight-stats tau | gmn - weight-stats | intervals apart | tau >= {TARGET_TAU} "
           "| target |"]
    out.append(_sep(out))
    for t in target_rows(runs, datasets):
        g, s = t["gmn"], t["stats"]
        level = "—" if t["level"] is None else "yes" if t["level"] else "no"
        met = "unknown (no interval)" if t["met"] is None else "met" if t["met"] else "not met"
        out.append(f"| {t['dataset']} | {fmt_ci(g['mean'], g['ci_low'], g['ci_high'])} | "
                   f"{fmt_ci(s['mean'], s['ci_low'], s['ci_high'])} | {fmt_ci(*t['diff'])} | "
                   f"{'yes' if t['separate'] else 'no'} | {level} | {met} |")
    return out


def published() -> list[str]:
    out = ["| model (public Small CNN Zoo) | CIFAR-10-GS | SVHN-GS | source |", "|---|---|---|---|"]
    out += [f"| {m} | {c} | {s} | {PUBLISHED_SOURCE} |" for m, c, s in PUBLISHED]
    return out


# (a) cross-seed stability --------------------------------------------------------------------------

def claim_a(sim: list[dict], runs: list[dict], datasets: list[str]) -> list[str]:
    """Cross-seed similarity per architecture and the difference gmn - fn-mlp, with its verdict."""
    archs = [a for a in ORDER if any(a in _archs(runs, ds) for ds in datasets)]
    out = ["| dataset | metric | " + " | ".join(archs) + f" | {GMN} - {FN} | verdict |"]
    out.append(_sep(out))
    for ds in datasets:
        for metric in METRICS:
            st = {a: cross_seed_stats(sim, ds, metric, a, metric_range(metric)) for a in archs}
            if not any(s["units"] for s in st.values()):
                continue
            g, f = st.get(GMN), st.get(FN)
            if g is None or f is None:
                d = (math.nan, math.nan, math.nan)
            else:
                d = diff_ci_se(f["mean"], f["se"], f["df"], g["mean"], g["se"], g["df"])
            cells = [fmt_ci(st[a]["mean"], st[a]["ci_low"], st[a]["ci_high"]) for a in archs]
            out.append(f"| {ds} | {metric} | " + " | ".join(cells) + f" | {fmt_ci(*d)} | {verdict(d[1], d[2])} |")
    return out


# (b) GMN vs fn-mlp layers ---------------------------------------------------------------------------

def low_verdict(cross: tuple[float, float], within: tuple[float, float]) -> str:
    """``holds`` when the cross-architecture interval lies wholly below the within-architecture one,
    ``does not hold`` wholly above it, else ``inconclusive``."""
    return verdict(cross[0] - within[1], cross[1] - within[0])


def claim_b(boards: dict, runs: list[dict], datasets: list[str]) -> list[str]:
    """Per weight-view architecture W (the GMN first) against fn-mlp: the most similar layer pair with a
    selection-aware interval, beside W's and fn-mlp's cross-seed similarity at those layers."""
    out = ["| dataset | metric | pair | most similar layers | largest mean, selection-aware 95 % CI | "
           "W across seeds at its layer | fn-mlp across seeds at its layer | verdict |"]
    out.append(_sep(out))
    for ds in datasets:
        for metric in METRICS:
            board = boards[metric]
            stab = {(r["arch"], r["layer"]): r for r in board.stability if r["dataset"] == ds}
            for w in _weight_archs(runs, ds):
                cand = [r for r in board.cross if r["dataset"] == ds and {r["arch_a"], r["arch_b"]} == {w, FN}
                        and not is_missing(r["mean"])]
                if not cand:
                    continue
                best, lo, hi = best_pair(cand, value_range=metric_range(metric))
                lw, lf = best["layer_a"], best["layer_b"]
                if best["arch_a"] != w:  # cross rows are oriented by name: fn-mlp may be either side
                    lw, lf = lf, lw
                refs = [stab.get((w, lw)), stab.get((FN, lf))]
                cells = [fmt_ci(r["mean"], r["ci_low"], r["ci_high"]) if r else "—" for r in refs]
                present = [r for r in refs if r is not None]
                weaker = min(present, key=lambda r: r["mean"]) if len(present) == 2 else None
                v = low_verdict((lo, hi), (weaker["ci_low"], weaker["ci_high"])) if weaker else UNSURE
                out.append(f"| {ds} | {metric} | {w} vs {FN} | {lw} / {lf} | {fmt_ci(best['mean'], lo, hi)} | "
                           f"{cells[0]} | {cells[1]} | {v} |")
    return out


# (c) CNNs one view predicts far better ------------------------------------------------------------

def split_counts(err_w: np.ndarray, err_f: np.ndarray) -> dict:
    """The networks one side predicts far better than the other, seed by seed.

    ``err_w``: ``(S_w, n)`` absolute errors of the weight-view seeds on the same n networks, ``err_f``
    ``(S_f, n)`` the function-view seeds'. A seed predicts a network *well* when its error is below
    that seed's median error over the n networks, *badly* when above its 90th percentile (each seed
    measured against its own spread). ``weights_better``: every weight seed well and every function
    seed badly; ``function_better`` the reverse. ``expected_*`` is the overlap expected were the two
    sides' sets placed independently of which network is which (``|A| |B| / n``), ``p_*`` the
    one-sided hypergeometric chance of at least the observed overlap (:func:`hypergeom_sf`).
    """
    err_w, err_f = np.atleast_2d(err_w), np.atleast_2d(err_f)
    n = err_w.shape[1]

    def well(e):
        return np.all(e < np.median(e, axis=1, keepdims=True), axis=0)

    def badly(e):
        return np.all(e > np.quantile(e, 0.9, axis=1, keepdims=True), axis=0)

    out: dict = {"networks": n}
    for name, a, b in (("weights_better", well(err_w), badly(err_f)), ("function_better", well(err_f), badly(err_w))):
        k = int((a & b).sum())
        out.update({name: k, f"{name}_sides": (int(a.sum()), int(b.sum())),
                    f"expected_{name}": float(a.sum()) * float(b.sum()) / n if n else math.nan,
                    f"p_{name}": hypergeom_sf(k, n, int(a.sum()), int(b.sum())) if n else math.nan})
    return out


def chance_verdict(observed: int, expected: float, p: float) -> str:
    """``holds``: such networks exist beyond chance (observed > 0, p < 0.05); ``does not hold``: no more
    than chance gives; ``inconclusive``: more, but not beyond chance."""
    if observed > 0 and p < ALPHA:
        return HOLDS
    return FAILS if observed <= expected else UNSURE


def errors(runs: list[dict], predictions: list[dict], ds: str, arch: str) -> tuple[list[str], dict]:
    """``(run ids, {run_id: {network id: absolute error}})`` of ``arch``'s finished runs on ``ds``."""
    ids = sorted(r["run_id"] for r in runs if (r["dataset"], r["arch"]) == (ds, arch) and r.get("status") == "finished")
    err: defaultdict[str, dict[int, float]] = defaultdict(dict)
    keep = set(ids)
    for p in predictions:
        if p["run_id"] in keep and not is_missing(p.get("target")) and not is_missing(p.get("prediction")):
            err[p["run_id"]][int(p["sample_id"])] = abs(float(p["prediction"]) - float(p["target"]))
    return [i for i in ids if err.get(i)], err


def claim_c(runs: list[dict], predictions: list[dict], datasets: list[str], weight: str = GMN) -> list[str]:
    """Per dataset, both directions: the CNNs the better side's every seed predicts well and the other
    side's every seed badly (:func:`split_counts`), beside chance and the leaderboard's rule."""
    board_rule = {(r["dataset"], r["weight_arch"]): r for r in scalar_sample_analysis(runs, predictions)[0]}
    out = ["| dataset | better side | networks | better side: every seed well | other side: every seed badly | "
           "observed | expected by chance | P(>= observed) | leaderboard rule (seed-mean errors): observed / "
           "expected | verdict |"]
    out.append(_sep(out))
    for ds in datasets:
        w_ids, w_err = errors(runs, predictions, ds, weight)
        f_ids, f_err = errors(runs, predictions, ds, FN)
        if not w_ids or not f_ids:
            continue
        common = sorted(set.intersection(*(set(e) for e in (*w_err.values(), *f_err.values()))))
        if not common:
            continue
        c = split_counts(np.array([[w_err[i][k] for k in common] for i in w_ids]),
                         np.array([[f_err[i][k] for k in common] for i in f_ids]))
        rule = board_rule.get((ds, weight))
        for name, better, key in (("weights_better", weight, "weights_better"), ("function_better", FN, "data_better")):
            well, badly = c[f"{name}_sides"]
            board = f"{rule[key]} / {rule['expected_' + key]:.1f}" if rule else "—"
            k, e, p = c[name], c[f"expected_{name}"], c[f"p_{name}"]
            out.append(f"| {ds} | {better} | {c['networks']} | {well} | {badly} | {k} | {e:.1f} | {p:.3g} | {board} | "
                       f"{chance_verdict(k, e, p)} |")
    return out


# The whole page ------------------------------------------------------------------------------------

def render_findings(tables: export.Tables) -> str:
    """Every table of the findings, as Markdown."""
    runs, sim = tables.runs, tables.similarity
    datasets = sorted(scalar_datasets(runs))
    boards = {m: build(runs, sim, metric=m, value_range=metric_range(m)) for m in METRICS}
    parts = [
        "## Scores\n",
        "Kendall's tau (primary) and R² on each zoo's test CNNs: mean over seeds with the 95 % t-interval; "
        "the rank counts the architectures whose tau interval lies wholly above (`=`: tied with another).\n",
        *scores(runs, datasets), "",
        f"**The issue's target for the GMN:** tau above weight-stats' with non-overlapping intervals, and "
        f">= {TARGET_TAU} on {TARGET_DATASET}. The difference has a Welch interval over seeds.\n",
        *targets(runs, datasets), "",
        "**Published on the public Small CNN Zoo: another zoo and protocol, not comparable with the "
        "numbers above** (shown for scale):\n",
        *published(), "",
        "## (a) Is the GMN less stable across seeds than fn-mlp?\n",
        "Same-layer similarity between two seeds of one architecture, averaged over its layers; the mean "
        "over seed pairs with a 95 % interval over seeds (delete-one-seed jackknife, t on seeds - 1 df); "
        f"the difference {GMN} - {FN} with a Satterthwaite interval. Holds when that interval is below 0.\n",
        *claim_a(sim, runs, datasets), "",
        f"## (b) Is the similarity between GMN and {FN} layers low?\n",
        f"Per weight-view architecture W against {FN}: the layer pair with the largest mean over seed pairs, "
        "its interval selection-aware (every layer pair's seed-level interval at the Bonferroni level "
        "1 - 0.05/K for the K pairs searched; the largest mean lies between the largest lower and the largest "
        "upper bound), beside each architecture's own cross-seed similarity at those layers. Holds when the "
        "pair's interval lies wholly below the less stable architecture's, does not hold when wholly above.\n",
        *claim_b(boards, runs, datasets), "",
        "## (c) Are there CNNs only the weight view gets right?\n",
        f"A seed predicts a CNN's accuracy *well* when its absolute error is below that seed's median over "
        f"the test CNNs, *badly* when above its 90th percentile. Counted: CNNs every {GMN} seed predicts well "
        f"and every {FN} seed badly, and the reverse. Expected by chance: the two sets placed independently of "
        "which CNN is which, (size of one x size of the other) / CNNs, with the one-sided hypergeometric "
        "P(overlap >= observed). Holds when CNNs are found beyond chance (P < 0.05). The leaderboard's rule "
        "(errors averaged over seeds, `tables/scalar_sample_summary.csv`) is beside it.\n",
        *claim_c(runs, tables.predictions, datasets), "",
    ]
    return "\n".join(parts)


def _distinct(values) -> str:
    got = sorted({str(v) for v in values if v is not None and v != "not recorded"})
    return ", ".join(got) or "not recorded"


def run_facts(tables: export.Tables) -> list[str]:
    """What this export holds: datasets, architectures, seeds per cell, similarity metrics."""
    fin = [r for r in tables.runs if r.get("status") == "finished"]
    per_cell = Counter((r["dataset"], r["arch"]) for r in fin)
    archs = sorted({r["arch"] for r in fin}, key=lambda a: (a not in ORDER, ORDER.index(a) if a in ORDER else 0, a))
    datasets = ", ".join(sorted({r["dataset"] for r in fin})) or "none"
    metrics = ", ".join(sorted({s["metric"] for s in tables.similarity})) or "none"
    return [f"This export: datasets {datasets}; architectures {', '.join(archs) or 'none'}; "
            f"{_distinct(set(per_cell.values()))} finished seeds per (dataset, architecture); similarity metrics "
            f"{metrics}."]


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    q = np.quantile(values, [0.05, 0.5, 0.95])
    return f"{q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}]"


def zoo_rows(runs: list[dict], predictions: list[dict] | None = None) -> list[str]:
    """Per dataset: the zoo recipe the runs were trained on (from each run's config), their split sizes,
    and the test CNNs' accuracies (median [5th, 95th percentile], from the predictions' targets)."""
    targets: defaultdict[str, dict[int, float]] = defaultdict(dict)
    for p in predictions or []:
        if not is_missing(p.get("target")):
            targets[p["dataset"]][int(p["sample_id"])] = float(p["target"])
    out = ["| dataset | zoo recipe (from the runs' config) | CNNs train / val / test | test CNNs' accuracy: "
           "median [5th, 95th percentile] |", "|---|---|---|---|"]
    for ds in sorted(scalar_datasets(runs)):
        rs = [r for r in runs if r["dataset"] == ds and r.get("status") == "finished"]
        recipes: Counter[str] = Counter()
        for r in rs:
            try:
                recipe = json.loads(r.get("config") or "{}").get("zoo_recipe") or {}
            except ValueError:
                recipe = {}
            recipes[", ".join(f"{k}={v}" for k, v in sorted(recipe.items()))] += 1
        sizes = _distinct(f"{r.get('n_train')} / {r.get('n_val')} / {r.get('n_test')}" for r in rs)
        out.append(f"| {ds} | {'; '.join(recipes) or 'not recorded'} | {sizes} | "
                   f"{_spread(list(targets[ds].values()))} |")
    return out


def provenance(tables: export.Tables) -> list[str]:
    runs = tables.runs
    out = ["| dataset | runs finished / stored | code (git commit) | wsbench | torch | device | hardware |",
           "|---|---|---|---|---|---|---|"]
    rows = provenance_rows(runs)
    for ds in sorted({r["dataset"] for r in runs}):
        mine = [r for r in rows if r["dataset"] == ds]
        stored = sum(1 for r in runs if r["dataset"] == ds)
        finished = sum(r["runs"] for r in mine)
        cells = [_distinct(x for r in mine for x in r[k].split(", ")) for k in ("commit", "wsbench", "torch", "device",
                                                                                 "hardware")]
        out.append(f"| {ds} | {finished} / {stored} | " + " | ".join(cells) + " |")
    m = tables.manifest
    out += ["", f"Exported {m.get('exported_at', 'at an unrecorded time')} by wsbench "
                f"{m.get('wsbench_version', '(version not recorded)')} from the results root "
                f"`{Path(str(m.get('source') or tables.source)).name}`; {m.get('runs', len(runs))} runs, "
                f"{m.get('similarity_rows', len(tables.similarity))} similarity rows, "
                f"{m.get('prediction_rows', len(tables.predictions))} prediction rows."]
    return out


README_HEAD = """# Accuracy prediction on CNN zoos, re-run by wsbench: findings

*Generated by `python scripts/cnn_zoo_findings.py leaderboards/cnn-zoo --write-readme` from the tables in
this folder; rerun it after a new export. Every number below is recomputed from `tables/` alone.*

The task of the Small CNN Zoo (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from
Weights"): predict a trained CNN's test accuracy from its weights. The `cnn-zoo` study
(`harness/wsbench/studies/cnn-zoo.toml`) builds one zoo per dataset (cnn-mnist, cnn-fmnist,
cnn-cifar10gs), trains four weight-view models (`gmn` on each CNN's parameter graph, `weight-stats`,
the statistics predictor, `flat-mlp`, `nfn-np`) and one function-view model (`fn-mlp`, an MLP on each
CNN's softmax outputs on fixed probe images) at 5 seeds each, and compares their layers with CKA and
mutual kNN. It asks the questions of the INR study (`leaderboards/yeom2025/README.md`) of this task:
(a) is the GMN less stable across seeds than the function-view model, (b) are GMN and function-view
layers dissimilar, (c) are there CNNs only the weight view gets right.

- The full leaderboard: [leaderboard.md](leaderboard.md); with heatmaps: [index.html](index.html).
- Its tables: `tables/` (runs, similarity and predictions as Parquet; the derived tables as CSV).
- Re-render from the tables alone: `wsbench leaderboard --results leaderboards/cnn-zoo`.
- Recompute this page: `python scripts/cnn_zoo_findings.py leaderboards/cnn-zoo --write-readme`.

## How it was run

```
wsbench study run cnn-zoo        # all three datasets x 5 architectures x 5 seeds, similarity, export
```

{run_facts}

## How our zoo differs from the public Small CNN Zoo

The taus here are **not comparable** with those published on the public Small CNN Zoo.

- **Same network, our own training.** Every CNN is the zoo's network (three 3x3 stride-2 convolutions of
  16 filters, global average pooling, a dense layer; 4,970 parameters), but trained here by
  `wsbench.cnnzoo`, with **far fewer epochs on a subset pool** of the training images (`epochs` and
  `train_subset` in each dataset's recipe, in the table below; the public zoo's CNNs trained 86 epochs).
  Their test accuracies (spread in the table below) come from this short training, so neither their
  range nor how hard they are to rank matches the public zoo's.
- **Configurations sampled per our reading of the paper.** Optimizer, learning rate, L2, dropout,
  initialiser and its scale, training fraction and activation are drawn from the ranges of
  `wsbench.cnnzoo.RANGES` as we read the paper's appendix and the release's metrics; the set of
  initialisers is our choice of the Keras ones, and biases start at zero.
- **CIFAR-10-GS is gray as the mean of the RGB channels**, as the zoo's code does. SVHN-GS is not built.
- **Our splits**: 70 / 10 / 20 % of the CNNs into train, validation and test by a seeded permutation
  (the public zoo's splits differ). The function view (softmax outputs on `n_probe` fixed test images)
  exists only here: the public release stores no network outputs.
"""


def gpu_reference(path: Path) -> list[str]:
    """The Small-CNN-Zoo-sized CIFAR-10-GS runs of ``path`` (``benchmarks/results/cnn_zoo_gpu_h200.json``,
    written from a GPU grid by scripts/device-cnn-zoo.sh): per architecture the mean test tau and R² over
    seeds with 95 % t-intervals, recomputed from its per-run rows, and the issue's target on them."""
    ref = json.loads(path.read_text())
    zoo, by = ref["zoo"], defaultdict(list)
    for r in ref["runs"]:
        if r.get("status", "finished") == "finished":
            by[r["arch"]].append(r)
    acc = zoo["test_acc"]
    out = [f"## At Small CNN Zoo size, on one GPU (`{path.name}`; not in this folder's tables)", "",
           f"One {zoo['count']:,}-CNN cnn-cifar10gs zoo built by the dataset's GPU recipe ({zoo['recipe']['epochs']} "
           f"epochs of a {zoo['recipe']['train_subset']:,}-image pool, native 32x32, the full test set) on "
           f"{ref['device']}: test accuracies median {acc['median']:.3f}, 5th to 95th percentile {acc['p5']:.3f} "
           f"to {acc['p95']:.3f}, max {acc['max']:.3f}. {ref['what']}", "",
           "| arch | seeds | tau (95 % CI) | R² (95 % CI) |", "|---|---|---|---|"]
    cis = {}
    for arch in sorted(by, key=lambda a: -float(np.mean([r["test_kendall_tau"] for r in by[a]]))):
        tau = mean_ci([r["test_kendall_tau"] for r in by[arch]])
        r2 = mean_ci([r["test_r2"] for r in by[arch]])
        cis[arch] = tau
        out.append(f"| {arch} | {len(by[arch])} | {fmt_ci(tau[0], tau[2], tau[3])} | {fmt_ci(r2[0], r2[2], r2[3])} |")
    if GMN in cis and STATS in cis:
        g, s = cis[GMN], cis[STATS]
        apart, level = g[2] > s[3], g[0] >= TARGET_TAU
        out += ["", f"The target on this zoo: gmn tau {g[0]:.3f} against weight-stats {s[0]:.3f}, intervals "
                    f"{'apart' if apart else 'overlapping'}; tau >= {TARGET_TAU}: {'yes' if level else 'no'}: "
                    f"**{'met' if apart and level else 'not met'}**. The published taus above were measured on "
                    "the public zoo, whose CNNs trained 86 epochs on the full training set: not comparable."]
    return out


def render_readme(tables: export.Tables, reference: Path | None = None) -> str:
    return "\n".join([
        README_HEAD.format(run_facts="\n".join(run_facts(tables))),
        *zoo_rows(tables.runs, tables.predictions), "",
        "## Provenance\n",
        *provenance(tables), "",
        render_findings(tables),
        *(["", *gpu_reference(reference)] if reference else []),
    ]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default="leaderboards/cnn-zoo", help="an exported cnn-zoo leaderboard")
    ap.add_argument("--write-readme", action="store_true", help="also write FOLDER/README.md around the tables")
    ap.add_argument("--gpu-reference", type=Path, default=None,
                    help="also report the GPU-sized runs of this JSON (benchmarks/results/cnn_zoo_gpu_h200.json)")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    tables = export.load(folder)
    if not scalar_datasets(tables.runs):
        raise SystemExit(f"{folder} holds no dataset with a scalar target (a CNN zoo's test accuracy); "
                         "export a cnn-zoo study there first: wsbench study run cnn-zoo")
    if args.gpu_reference is not None and not args.gpu_reference.is_file():
        raise SystemExit(f"--gpu-reference {args.gpu_reference}: no such file; give the JSON that "
                         "scripts/device-cnn-zoo.sh's runs were summarised into, or leave the option out")
    print(render_findings(tables))
    if args.gpu_reference is not None:
        print("\n".join(gpu_reference(args.gpu_reference)))
    if args.write_readme:
        (folder / "README.md").write_text(render_readme(tables, args.gpu_reference))
        print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
