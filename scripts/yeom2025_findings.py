"""The numbers behind the claims of leaderboards/yeom2025/README.md, from the exported tables alone.

    python scripts/yeom2025_findings.py [leaderboards/yeom2025]

Prints Markdown tables, each for the raw similarity and for the null-calibrated similarity
(value - null mean) / (1 - null mean) (the tables' permutation null; after Gröger et al., ICML 2026):
  (a) cross-seed similarity per architecture: for each pair of seeds, the mean over the
      architecture's layers of the same-layer similarity; the mean over the 10 seed pairs with a
      95 % interval over the 5 seeds (delete-one-seed jackknife, t on 4 df: pairs that share a seed
      are not independent), and the difference GMN - image model with a Satterthwaite interval;
  (b) GMN vs image models: the most similar layer pair (largest mean over the 25 seed pairs), and a
      selection-aware 95 % interval for that largest mean: every layer pair's seed-level interval at
      the Bonferroni level 1 - 0.05 / K for the K layer pairs searched, so all K hold at once with
      probability >= 95 %, and then the population maximum lies in [max of the lows, max of the highs]
      whichever pair attains it; beside the image models' own pair and the accuracies;
  (c) samples every GMN seed gets right and every image-model seed gets wrong, beside the count
      expected if GMN and image-model correctness were independent across samples.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from wsbench.reporting import export
from wsbench.reporting.board import accuracy_rows, build, calibrated_rows
from wsbench.reporting.findings import best_pair, cross_seed, cross_seed_stats, seed_pairs
from wsbench.reporting.findings import fmt_ci as _fmt
from wsbench.reporting.stats import diff_ci_se

__all__ = ["best_pair", "claim_a", "claim_b", "claim_c", "cross_seed", "cross_seed_stats", "seed_pairs"]

METRICS = ("cka", "cka-biased", "mknn")
GMN, IMAGE = "gmn", ("cnn", "mlp")


def claim_a(sim, datasets) -> list[str]:
    out = ["| dataset | metric | gmn | cnn | mlp | gmn - cnn | gmn - mlp | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        for metric in METRICS:
            stats = {a: cross_seed_stats(sim, ds, metric, a) for a in (GMN, *IMAGE)}
            diffs = {}
            for a in IMAGE:
                sa, sg = stats[a], stats[GMN]
                diffs[a] = diff_ci_se(sa["mean"], sa["se"], sa["df"], sg["mean"], sg["se"], sg["df"])
            below = all(d[2] < 0 for d in diffs.values())
            above = all(d[1] > 0 for d in diffs.values())
            verdict = "holds" if below else "does not hold" if above else "inconclusive"
            cells = [_fmt(stats[a]["mean"], stats[a]["ci_low"], stats[a]["ci_high"]) for a in (GMN, *IMAGE)]
            cells += [_fmt(*diffs[a]) for a in IMAGE]
            out.append(f"| {ds} | {metric} | " + " | ".join(cells) + f" | {verdict} |")
    return out


def claim_b(board_by_metric, runs, datasets) -> list[str]:
    acc = {(r["dataset"], r["arch"]): r for r in accuracy_rows(runs)}
    out = ["| dataset | metric | pair | most similar layers | largest mean (25 seed pairs), selection-aware 95 % CI "
           "| test acc % |", "|---|---|---|---|---|---|"]
    for ds in datasets:
        for metric in METRICS:
            rows = board_by_metric[metric].cross
            for a, b in (("cnn", "gmn"), ("gmn", "mlp"), ("cnn", "mlp")):
                cand = [r for r in rows if (r["dataset"], r["arch_a"], r["arch_b"]) == (ds, a, b)]
                best, lo, hi = best_pair(cand)
                accs = " vs ".join(f"{100 * acc[(ds, x)]['mean']:.1f}" for x in (a, b))
                out.append(f"| {ds} | {metric} | {a} vs {b} | {best['layer_a']} / {best['layer_b']} | "
                           f"{_fmt(best['mean'], lo, hi)} | {accs} |")
    return out


def claim_c(predictions, runs, datasets) -> list[str]:
    finished = {r["run_id"]: r for r in runs if r["status"] == "finished"}
    out = [("| dataset | test samples | gmn: all 5 seeds right | images: all 10 runs wrong | "
            "gmn right & images wrong (observed) | expected if independent |"), "|---|---|---|---|---|---|"]
    for ds in datasets:
        right: defaultdict[str, dict[int, bool]] = defaultdict(dict)  # run_id -> {sample_id: correct}
        for p in predictions:
            r = finished.get(p["run_id"])
            if r is not None and r["dataset"] == ds:
                right[p["run_id"]][int(p["sample_id"])] = int(p["pred"]) == int(p["label"])
        ids = sorted(set.intersection(*(set(v) for v in right.values())))
        mat = {rid: np.array([v[i] for i in ids]) for rid, v in right.items()}
        g = np.all([m for rid, m in mat.items() if finished[rid]["arch"] == GMN], 0)
        i_wrong = np.all([~m for rid, m in mat.items() if finished[rid]["arch"] in IMAGE], 0)
        n = len(ids)
        out.append(f"| {ds} | {n} | {int(g.sum())} | {int(i_wrong.sum())} | {int((g & i_wrong).sum())} | "
                   f"{g.sum() * i_wrong.sum() / n:.1f} |")
    return out


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "leaderboards/yeom2025")
    tables = export.load(folder)
    datasets = sorted({r["dataset"] for r in tables.runs})
    for calibrated in (False, True):
        sim = calibrated_rows(tables.similarity) if calibrated else tables.similarity
        what = "null-calibrated similarity, (value - null mean) / (1 - null mean)" if calibrated else "similarity"
        boards = {m: build(tables.runs, tables.similarity, metric=m, calibrated=calibrated) for m in METRICS}
        print(f"## (a) cross-seed {what}: mean over layers per seed pair, mean over the 10 seed pairs "
              "(95 % CI over the 5 seeds)\n")
        print("\n".join(claim_a(sim, datasets)), "\n")
        print(f"## (b) GMN vs image models, {what}: the most similar layer pair (mean over 25 seed pairs; "
              "95 % CI for the largest mean, selection-aware)\n")
        print("\n".join(claim_b(boards, tables.runs, datasets)), "\n")
    print("## (c) samples GMNs always get right and image models always get wrong\n")
    print("\n".join(claim_c(tables.predictions, tables.runs, datasets)))


if __name__ == "__main__":
    main()
