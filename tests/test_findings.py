"""scripts/yeom2025_findings.py: the verdicts and counts of the published findings, on made-up tables."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_path = Path(__file__).resolve().parents[1] / "scripts" / "yeom2025_findings.py"
_spec = importlib.util.spec_from_file_location("yeom2025_findings", _path)
assert _spec is not None and _spec.loader is not None
findings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(findings)


def _within(arch, level, layers=("l1", "l2"), seeds=5, spread=0.01, metric="cka"):
    """Same-layer rows for every seed pair of ``arch``; pair k's values centre on ``level``."""
    rows, k = [], 0
    for a in range(seeds):
        for b in range(a + 1, seeds):
            for j, layer in enumerate(layers):
                rows.append({"dataset": "d", "metric": metric, "arch_a": arch, "arch_b": arch, "seed_a": a, "seed_b": b,
                             "run_a": f"{arch}{a}", "run_b": f"{arch}{b}", "layer_a": layer, "layer_b": layer,
                             "value": level + spread * ((k % 3) - 1) + 0.001 * j})
            k += 1
    # A cross-layer row of the same pair must not count.
    rows.append({**rows[0], "layer_b": layers[-1], "value": -5.0})
    return rows


def test_cross_seed_averages_layers_per_seed_pair():
    vals = findings.cross_seed(_within("gmn", 0.5), "d", "cka", "gmn")
    assert len(vals) == 10
    assert np.mean(vals) == pytest.approx(0.5 + 0.0005, abs=0.01)


@pytest.mark.parametrize("gmn, verdict", [(0.5, "holds"), (0.99, "does not hold"), (0.85, "inconclusive")])
def test_claim_a_verdict_follows_the_intervals(gmn, verdict):
    sim = [r for arch, level in (("gmn", gmn), ("cnn", 0.9), ("mlp", 0.8)) for m in findings.METRICS
           for r in _within(arch, level, metric=m)]
    lines = findings.claim_a(sim, ["d"])
    assert len(lines) == 2 + len(findings.METRICS)
    assert all(line.endswith(f"| {verdict} |") for line in lines[2:])


def test_claim_c_counts_and_independence_expectation():
    # 4 samples, labels 0..3. GMN (2 seeds) right on 0, 1, 2; images (cnn, mlp) wrong on 1, 3.
    labels = [0, 1, 2, 3]
    preds = {"g0": [0, 1, 2, 9], "g1": [0, 1, 2, 9], "c0": [0, 9, 2, 9], "m0": [0, 9, 2, 9]}
    arch = {"g0": "gmn", "g1": "gmn", "c0": "cnn", "m0": "mlp"}
    runs = [{"run_id": r, "arch": a, "dataset": "d", "status": "finished"} for r, a in arch.items()]
    runs.append({"run_id": "x", "arch": "cnn", "dataset": "d", "status": "failed"})
    rows = [{"run_id": r, "sample_id": i, "label": labels[i], "pred": p} for r, ps in preds.items()
            for i, p in enumerate(ps)]
    rows += [{"run_id": "x", "sample_id": i, "label": labels[i], "pred": labels[i]} for i in range(4)]
    (line,) = findings.claim_c(rows, runs, ["d"])[2:]
    # GMN all right: 3; images all wrong: 2; both: sample 1; expected 3 * 2 / 4 = 1.5.
    assert line == "| d | 4 | 3 | 2 | 1 | 1.5 |"


def test_cross_seed_interval_is_over_seeds_not_seed_pairs():
    from wsbench.reporting.stats import unit_mean_ci
    sim = _within("gmn", 0.5, spread=0.05)
    st = findings.cross_seed_stats(sim, "d", "cka", "gmn")
    pairs = findings.seed_pairs(sim, "d", "cka", "gmn")
    ref = unit_mean_ci([np.mean(v) for v in pairs.values()], [(("gmn", a), ("gmn", b)) for a, b in pairs])
    assert st["units"] == 5 and st["df"] == pytest.approx(4) and st["ci_low"] == pytest.approx(ref["ci_low"])


def test_best_pair_interval_allows_for_the_choice_among_layer_pairs():
    from wsbench.reporting.stats import t_quantile
    cells = [{"mean": 0.70, "se": 0.01, "df": 4, "layer_a": "a", "layer_b": "x"},
             {"mean": 0.69, "se": 0.01, "df": 4, "layer_a": "b", "layer_b": "y"},
             {"mean": 0.20, "se": 0.01, "df": 4, "layer_a": "c", "layer_b": "z"}]
    best, lo, hi = findings.best_pair(cells)
    h = t_quantile(1 - 0.05 / 6, 4) * 0.01  # Bonferroni over the 3 pairs searched
    assert best["layer_a"] == "a" and lo == pytest.approx(0.70 - h) and hi == pytest.approx(0.70 + h)
    assert hi - lo > 2 * t_quantile(0.975, 4) * 0.01  # wider than the unselected interval
