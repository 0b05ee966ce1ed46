"""scripts/cnn_zoo_findings.py: the cnn-zoo study's findings, on a tiny CPU study's export and on made-up
tables whose verdicts and counts are known."""
import importlib.util
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_cnn_study import TINY, cli

from wsbench.reporting.board import Board
from wsbench.reporting.stats import hypergeom_sf

_path = Path(__file__).resolve().parents[1] / "scripts" / "cnn_zoo_findings.py"
_spec = importlib.util.spec_from_file_location("cnn_zoo_findings", _path)
assert _spec is not None and _spec.loader is not None
findings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(findings)

STUDIES = Path(__file__).resolve().parents[1] / "harness" / "wsbench" / "studies"
ALL_ARCHS = 'architectures = ["gmn", "weight-stats", "flat-mlp", "nfn-np", "fn-mlp"]'
TEST_ARCHS = 'architectures = ["gmn", "weight-stats", "fn-mlp"]'
CI = re.compile(r"(-?\d+\.\d+|nan) \[(-?\d+\.\d+|nan), (-?\d+\.\d+|nan)\]")
VERDICTS = {"holds", "does not hold", "inconclusive"}


def _rows(page: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading``, as lists of cells."""
    lines: list[str] = []
    for ln in page.split(heading, 1)[1].splitlines():
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            break
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_findings_of_a_tiny_cnn_zoo_study(tmp_path, fake_mnist, capsys):
    res, lb = tmp_path / "results", tmp_path / "lb"
    # The cnn-zoo study file with the three architectures the findings name and 5 permutations per pair
    # instead of 100 (the permutation null is not what the findings read), so that the test stays short.
    study = (STUDIES / "cnn-zoo.toml").read_text()
    for old, new in ((ALL_ARCHS, TEST_ARCHS), ("permutations = 100", "permutations = 5")):
        assert old in study
        study = study.replace(old, new)
    (tmp_path / "cnn-zoo.toml").write_text(study)
    code, _, err = cli(capsys, "study", "run", tmp_path / "cnn-zoo.toml", "--dataset", "cnn-mnist", "--seeds", "3",
                       "--epochs", "1", "--resamples", "10", "--data-dir", fake_mnist, "--results", res,
                       "--export", f"{lb}/", "--device", "cpu", *TINY)
    assert code == 0, err
    findings.main([str(lb), "--write-readme"])
    page = capsys.readouterr().out

    scores = _rows(page, "## Scores")
    assert {r[1] for r in scores} == {"gmn", "weight-stats", "fn-mlp"}
    assert all(r[3] == "3" for r in scores)  # seeds
    (target,) = _rows(page, "**The issue's target")
    assert target[0] == "cnn-mnist" and target[-1] in {"met", "not met"} and target[5] == "—"  # 0.93 only on CIFAR
    assert "| NFN-HNP | 0.934 ± 0.001 |" in page and "not comparable" in page
    a = _rows(page, "## (a)")
    assert [r[1] for r in a] == ["cka", "mknn"] and all(r[-1] in VERDICTS for r in a)
    b = _rows(page, "## (b)")
    assert [r[2] for r in b] == ["gmn vs fn-mlp", "weight-stats vs fn-mlp"] * 2
    assert all(r[-1] in VERDICTS for r in b)
    c = _rows(page, "## (c)")
    assert [r[1] for r in c] == ["gmn", "fn-mlp"] and all(r[-1] in VERDICTS for r in c)

    # Every interval printed contains its point estimate (and there are many).
    finite = [tuple(map(float, m)) for m in CI.findall(page) if "nan" not in m]
    assert len(finite) > 20
    assert all(lo - 1e-12 <= x <= hi + 1e-12 for x, lo, hi in finite)

    # (a) from the Parquet table by hand: per gmn seed pair the mean over same layers, then the mean over pairs.
    sim = pq.read_table(lb / "tables" / "similarity.parquet").to_pylist()
    pairs = {}
    for r in sim:
        if r["metric"] == "cka" and r["arch_a"] == r["arch_b"] == "gmn" and r["layer_a"] == r["layer_b"] \
                and r["seed_a"] != r["seed_b"]:
            pairs.setdefault(frozenset((r["run_a"], r["run_b"])), []).append(r["value"])
    assert len(pairs) == 3
    assert a[0][2].startswith(f"{np.mean([np.mean(v) for v in pairs.values()]):.3f} [")
    # (c)'s leaderboard-rule column is the exported scalar sample summary's gmn row.
    summary = (lb / "tables" / "scalar_sample_summary.csv").read_text().splitlines()
    (gmn_row,) = [ln for ln in summary if ',"gmn",' in ln]
    assert c[0][8].split(" / ")[0] == gmn_row.split(",")[7]

    readme = (lb / "README.md").read_text()
    for part in ("How our zoo differs", "fewer epochs on a subset pool", "mean of the RGB channels", "## Provenance",
                 "## (a)", "## (c)", "zoo_size=40", "3 finished seeds per (dataset, architecture)"):
        assert part in readme, part
    assert str(tmp_path) not in readme and "/tmp" not in readme  # no machine-local path


def _within(arch, level, seeds=5, layers=("l1", "l2"), metric="cka", spread=0.01):
    rows, k = [], 0
    for x in range(seeds):
        for y in range(x + 1, seeds):
            for layer in layers:
                rows.append({"dataset": "d", "metric": metric, "arch_a": arch, "arch_b": arch, "seed_a": x,
                             "seed_b": y, "run_a": f"{arch}{x}", "run_b": f"{arch}{y}", "layer_a": layer,
                             "layer_b": layer, "value": level + spread * ((k % 3) - 1)})
            k += 1
    return rows


@pytest.mark.parametrize("gmn, fn, verdict", [(0.5, 0.9, "holds"), (0.95, 0.6, "does not hold"),
                                              (0.80, 0.80, "inconclusive")])
def test_claim_a_verdict_follows_the_difference_interval(gmn, fn, verdict):
    sim = [r for m in findings.METRICS for arch, level in (("gmn", gmn), ("fn-mlp", fn))
           for r in _within(arch, level, metric=m)]
    runs = [{"dataset": "d", "arch": a, "status": "finished"} for a in ("gmn", "fn-mlp")]
    lines = findings.claim_a(sim, runs, ["d"])
    assert len(lines) == 2 + len(findings.METRICS)
    assert all(line.endswith(f"| {verdict} |") for line in lines[2:])


def _board(cross_means, gmn_within, fn_within):
    cross = [{"dataset": "d", "arch_a": "fn-mlp", "layer_a": f"fc{i}", "arch_b": "gmn", "layer_b": "mp1", "mean": m,
              "se": 0.01, "df": 4} for i, m in enumerate(cross_means)]
    stab = [{"dataset": "d", "arch": a, "layer": layer, "mean": m, "ci_low": m - 0.02, "ci_high": m + 0.02}
            for a, layer, m in (("gmn", "mp1", gmn_within), ("fn-mlp", "fc0", fn_within))]
    return Board(cross=cross, stability=stab)


@pytest.mark.parametrize("cross, gmn, fn, verdict", [((0.30, 0.20), 0.90, 0.95, "holds"),
                                                    ((0.90, 0.20), 0.60, 0.95, "does not hold"),
                                                    ((0.88, 0.20), 0.90, 0.95, "inconclusive")])
def test_claim_b_compares_the_best_pair_with_the_less_stable_architecture(cross, gmn, fn, verdict):
    runs = [{"dataset": "d", "arch": a, "status": "finished", "view": v} for a, v in (("gmn", "weights"),
                                                                                     ("fn-mlp", "function"))]
    board = _board(cross, gmn, fn)
    lines = findings.claim_b({m: board for m in findings.METRICS}, runs, ["d"])
    row = lines[2].split(" | ")
    assert row[3] == "mp1 / fc0"  # the GMN's layer first, though the cross row has fn-mlp as arch_a
    assert lines[2].endswith(f"| {verdict} |")


def test_hypergeometric_tail_by_hand_and_by_enumeration():
    # 4 networks, 2 marked, 2 drawn: P(overlap >= 1) = 1 - C(2,0) C(2,2) / C(4,2) = 5/6.
    assert hypergeom_sf(1, 4, 2, 2) == pytest.approx(5 / 6)
    assert hypergeom_sf(0, 4, 2, 2) == 1.0 and hypergeom_sf(3, 4, 2, 2) == 0.0
    n, marked, drawn = 7, 3, 4
    overlaps = [len(set(s) & set(range(marked))) for s in itertools.combinations(range(n), drawn)]
    for k in range(6):
        assert hypergeom_sf(k, n, marked, drawn) == pytest.approx(np.mean([o >= k for o in overlaps]))


def test_split_counts_and_chance_on_a_hand_computed_case():
    # 10 networks. Seed errors 0..9: "well" is below the median 4.5 (networks 0-4), "badly" above the 90th
    # percentile 8.1 (network 9). GMN seed 2 swaps networks 4 and 9: well {0,1,2,3,9}, badly {4}.
    g = np.array([np.arange(10.0), [0, 1, 2, 3, 9, 5, 6, 7, 8, 4]])
    f = np.array([np.arange(10.0)[::-1]])  # fn-mlp: well {5..9}, badly {0}
    c = findings.split_counts(g, f)
    # GMN well in both seeds {0,1,2,3} and fn-mlp badly {0}: one network, expected 4 x 1 / 10, P = 4/10.
    assert (c["weights_better"], c["weights_better_sides"]) == (1, (4, 1))
    assert c["expected_weights_better"] == pytest.approx(0.4) and c["p_weights_better"] == pytest.approx(0.4)
    # fn-mlp well {5..9}, GMN badly in both seeds: none (9 in one seed, 4 in the other).
    assert (c["function_better"], c["function_better_sides"], c["expected_function_better"]) == (0, (5, 0), 0.0)
    assert findings.chance_verdict(1, 0.4, 0.4) == "inconclusive"
    assert findings.chance_verdict(0, 0.0, 1.0) == "does not hold"
    assert findings.chance_verdict(6, 0.5, 1e-4) == "holds"


def _score_runs(taus: dict) -> list[dict]:
    return [{"run_id": f"{a}{s}", "dataset": "cnn-cifar10gs", "arch": a, "seed": s, "status": "finished",
             "view": "weights", "target": "scalar", "score": "kendall_tau", "test_score": t,
             "test_scores": json.dumps({"kendall_tau": t, "r2": 0.5, "mse": 0.01})}
            for a, ts in taus.items() for s, t in enumerate(ts)]


@pytest.mark.parametrize("gmn, met", [((0.950, 0.951, 0.949), True),     # above, apart, >= 0.93
                                      ((0.920, 0.921, 0.919), False),    # apart but below 0.93
                                      ((0.901, 0.950, 0.880), False)])   # intervals overlap
def test_gmn_target_needs_separate_intervals_and_093_on_cifar10gs(gmn, met):
    runs = _score_runs({"gmn": gmn, "weight-stats": (0.900, 0.901, 0.899)})
    (row,) = findings.target_rows(runs, ["cnn-cifar10gs"])
    assert row["met"] is met
    d, lo, hi = row["diff"]
    assert lo <= d <= hi and d == pytest.approx(np.mean(gmn) - 0.9)
    assert findings.targets(runs, ["cnn-cifar10gs"])[2].endswith("| met |" if met else "| not met |")
    assert not math.isnan(findings.metric_range("cka")[0])


def test_gpu_reference_recomputes_intervals_and_the_target_from_the_run_rows(tmp_path):
    """--gpu-reference: mean and 95 % t-interval per architecture from the JSON's per-run rows (not
    from any stored summary), and the target: met only when gmn's interval is above weight-stats'
    and its tau reaches 0.93."""
    taus = {"gmn": [0.94, 0.95, 0.96], "weight-stats": [0.80, 0.81, 0.82], "fn-mlp": [0.97, 0.97, 0.97]}
    runs = [{"arch": a, "seed": s, "status": "finished", "test_kendall_tau": t, "test_r2": 0.5}
            for a, ts in taus.items() for s, t in enumerate(ts)]
    runs.append({"arch": "gmn", "seed": 3, "status": "failed", "test_kendall_tau": 0.0, "test_r2": 0.0})
    ref = {"what": "a made-up run.", "device": "a GPU", "runs": runs,
           "zoo": {"count": 30000, "recipe": {"epochs": 5, "train_subset": 10000},
                   "test_acc": {"median": 0.2, "p5": 0.1, "p95": 0.3, "max": 0.4}}}
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(ref))
    text = "\n".join(findings.gpu_reference(path))
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 0.01
    assert f"| gmn | 3 | 0.950 [{0.95 - half:.3f}, {0.95 + half:.3f}]" in text  # the failed run is left out
    assert "intervals apart" in text and "**met**" in text
    ref["runs"] = [r for r in runs if r["arch"] != "gmn"] + [
        {"arch": "gmn", "seed": s, "status": "finished", "test_kendall_tau": t, "test_r2": 0.5}
        for s, t in enumerate([0.90, 0.91, 0.92])]
    path.write_text(json.dumps(ref))
    text = "\n".join(findings.gpu_reference(path))
    # 0.91 [0.885, 0.935] above 0.81 [0.785, 0.835], but below 0.93
    assert "intervals apart" in text and "0.93: no" in text and "**not met**" in text
