"""The numbers behind the claims of leaderboards/yeom2025/README.md, from the exported tables alone.

    python scripts/yeom2025_findings.py [leaderboards/yeom2025]

Prints Markdown tables:
  (a) cross-seed similarity per architecture: for each pair of seeds, the mean over the
      architecture's layers of the same-layer similarity; mean and 95 % t-interval over the 10
      seed pairs, and the difference GMN - image model with a Welch interval;
  (b) GMN vs image models: the most similar layer pair (mean over the 25 seed pairs, with its
      interval), beside the image models' own pair and the accuracies;
  (c) samples every GMN seed gets right and every image-model seed gets wrong, beside the count
      expected if GMN and image-model correctness were independent across samples.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from wsbench.reporting import export
from wsbench.reporting.board import accuracy_rows, build
from wsbench.reporting.stats import diff_ci, mean_ci

METRICS = ("cka", "cka-biased", "mknn")
GMN, IMAGE = "gmn", ("cnn", "mlp")


def _fmt(m, lo, hi, digits=3):
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def cross_seed(sim: list[dict], ds: str, metric: str, arch: str) -> list[float]:
    """Per seed pair: the mean over layers of the same-layer similarity."""
    pairs = defaultdict(list)
    for r in sim:
        if (r["dataset"], r["metric"], r["arch_a"], r["arch_b"]) == (ds, metric, arch, arch) \
                and r["seed_a"] != r["seed_b"] and r["layer_a"] == r["layer_b"]:
            pairs[tuple(sorted((r["run_a"], r["run_b"])))].append(r["value"])
    return [float(np.mean(v)) for v in pairs.values()]


def claim_a(sim, datasets) -> list[str]:
    out = ["| dataset | metric | gmn | cnn | mlp | gmn - cnn | gmn - mlp | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        for metric in METRICS:
            vals = {a: cross_seed(sim, ds, metric, a) for a in (GMN, *IMAGE)}
            stats = {a: mean_ci(v) for a, v in vals.items()}
            diffs = {}
            for a in IMAGE:
                (ma, sa, *_), (mg, sg, *_) = stats[a], stats[GMN]
                diffs[a] = diff_ci(ma, sa, len(vals[a]), mg, sg, len(vals[GMN]))
            below = all(d[2] < 0 for d in diffs.values())
            above = all(d[1] > 0 for d in diffs.values())
            verdict = "holds" if below else "does not hold" if above else "inconclusive"
            cells = [_fmt(stats[a][0], stats[a][2], stats[a][3]) for a in (GMN, *IMAGE)]
            cells += [_fmt(*diffs[a]) for a in IMAGE]
            out.append(f"| {ds} | {metric} | " + " | ".join(cells) + f" | {verdict} |")
    return out


def claim_b(board_by_metric, runs, datasets) -> list[str]:
    acc = {(r["dataset"], r["arch"]): r for r in accuracy_rows(runs)}
    out = ["| dataset | metric | pair | most similar layers | similarity (25 seed pairs) | test acc % |",
           "|---|---|---|---|---|---|"]
    for ds in datasets:
        for metric in METRICS:
            rows = board_by_metric[metric].cross
            for a, b in (("cnn", "gmn"), ("gmn", "mlp"), ("cnn", "mlp")):
                cand = [r for r in rows if (r["dataset"], r["arch_a"], r["arch_b"]) == (ds, a, b)]
                best = max(cand, key=lambda r: r["mean"])
                accs = " vs ".join(f"{100 * acc[(ds, x)]['mean']:.1f}" for x in (a, b))
                out.append(f"| {ds} | {metric} | {a} vs {b} | {best['layer_a']} / {best['layer_b']} | "
                           f"{_fmt(best['mean'], best['ci_low'], best['ci_high'])} | {accs} |")
    return out


def claim_c(predictions, runs, datasets) -> list[str]:
    finished = {r["run_id"]: r for r in runs if r["status"] == "finished"}
    out = [("| dataset | test samples | gmn: all 5 seeds right | images: all 10 runs wrong | "
            "gmn right & images wrong (observed) | expected if independent |"), "|---|---|---|---|---|---|"]
    for ds in datasets:
        right = defaultdict(dict)
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
    boards = {m: build(tables.runs, tables.similarity, metric=m) for m in METRICS}
    print("## (a) cross-seed similarity, mean over layers per seed pair (95 % CI over 10 seed pairs)\n")
    print("\n".join(claim_a(tables.similarity, datasets)), "\n")
    print("## (b) GMN vs image models: the most similar layer pair (mean over 25 seed pairs, 95 % CI)\n")
    print("\n".join(claim_b(boards, tables.runs, datasets)), "\n")
    print("## (c) samples GMNs always get right and image models always get wrong\n")
    print("\n".join(claim_c(tables.predictions, tables.runs, datasets)))


if __name__ == "__main__":
    main()
