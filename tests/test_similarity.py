"""The similarity harness: resamples and permutations, the slow (fn-only) path against the batched
path, intervals and null levels, sanity checks, stored rows, resuming, and the CLI."""
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from wsbench import similarity as sim
from wsbench.cli import app
from wsbench.errors import WsbenchError
from wsbench.plugins import load_registry
from wsbench.specs import MetricSpec
from wsbench.store import Store
from wsbench.tables import representation_table, run_rows

N = 48


def fake_run(store: Store, dataset: str, arch: str, seed: int, ids, shared, dims=(6, 4)):
    """A finished run whose layers mix a latent shared by all runs with run-specific noise."""
    g = np.random.default_rng(1000 * seed + len(arch))
    layers = {}
    h = shared[ids]
    for i, d in enumerate(dims):
        h = np.tanh(h @ g.normal(size=(h.shape[1], d)) + 0.4 * g.normal(size=(len(ids), d)))
        layers[f"l{i}"] = h.astype(np.float32)
    run_id = f"{arch}-{seed}-{len(ids)}"
    store.write("representations", run_id, representation_table(run_id, ids, layers), dataset=dataset, arch=arch)
    store.write("runs", run_id, run_rows([{"run_id": run_id, "seed": seed, "status": "finished", "test_acc": 0.5}]),
                dataset=dataset, arch=arch)
    return run_id


def toy_store(root, dims=(6, 4)) -> Store:
    """Two architectures x two seeds of :func:`fake_run` on one latent, on the even sample ids."""
    st = Store(root)
    shared = np.random.default_rng(0).normal(size=(200, 3))
    ids = np.arange(N) * 2
    for arch in ("a", "b"):
        for seed in (0, 1):
            fake_run(st, "toy", arch, seed, ids, shared, dims=dims)
    return st


@pytest.fixture
def store(tmp_path):
    return toy_store(tmp_path / "results")


def fn_only(metric: MetricSpec) -> MetricSpec:
    """The same measure as a third party with only ``fn`` would register it."""
    return MetricSpec(name=metric.name, fn=metric.fn, estimator=metric.estimator, invariances=metric.invariances,
                      interval=metric.interval)


def test_bootstrap_weights_are_seeded_counts_summing_to_n():
    w = sim.bootstrap_weights(30, 5, 3)
    assert w.shape == (30, 5) and w.dtype == torch.float64
    assert torch.all(w.sum(0) == 30) and torch.all(w == w.round()) and torch.all(w >= 0)
    assert torch.equal(w, sim.bootstrap_weights(30, 5, 3))
    assert not torch.equal(w, sim.bootstrap_weights(30, 5, 4))
    p = sim.permutations(30, 4, 3)
    assert torch.equal(p.sort(1).values, torch.arange(30).expand(4, 30))
    assert torch.equal(p, sim.permutations(30, 4, 3))


def test_percentile_interval_and_null_levels_ignore_nan():
    boot = np.vstack([np.arange(101, dtype=float), np.full(101, np.nan)]).T  # (101, 2)
    lo, hi = sim.percentile_interval(boot)
    assert lo[0] == pytest.approx(2.5) and hi[0] == pytest.approx(97.5) and math.isnan(lo[1])
    mean, high = sim.null_levels(boot)
    assert mean[0] == pytest.approx(50.0) and high[0] == pytest.approx(95.0)


@pytest.mark.parametrize("name", ["cka-biased", "procrustes"])
def test_slow_path_of_an_fn_only_metric_matches_the_batched_path(name):
    metric = load_registry().metric(name)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 2, generator=g, dtype=torch.float64)
    reps = [z @ torch.randn(2, d, generator=g, dtype=torch.float64) + torch.randn(40, d, generator=g,
                                                                                 dtype=torch.float64)
            for d in (3, 5, 7)]
    pairs = [(0, 1), (0, 2), (1, 2), (2, 2)]
    fast = sim.evaluate(metric, reps, pairs, resamples=20, permutations_=5, seed=1)
    slow = sim.evaluate(fn_only(metric), reps, pairs, resamples=20, permutations_=5, seed=1)
    assert fast["path"] == "grid" and slow["path"] == "fn"
    for key in ("value", "ci_low", "ci_high", "null_mean", "null_high"):
        np.testing.assert_allclose(fast[key], slow[key], atol=1e-10, rtol=0, err_msg=key)
    assert np.all(fast["ci_low"] <= fast["ci_high"])


def test_evaluate_rejects_misaligned_and_negative_counts():
    metric = load_registry().metric("cka")
    with pytest.raises(WsbenchError, match="same n"):
        sim.evaluate(metric, [np.ones((5, 2)), np.ones((6, 2))], [(0, 1)])
    with pytest.raises(WsbenchError, match="must be >= 0"):
        sim.evaluate(metric, [np.ones((5, 2))], [(0, 0)], resamples=-1)


def test_invariance_checks_catch_a_measure_that_breaks_its_claim():
    def not_scale_invariant(x, y):
        return float((x * y[:, :1]).sum())
    liar = MetricSpec(name="liar", fn=not_scale_invariant, invariances=("isotropic-scaling", "made-up"))
    reps = [np.random.default_rng(0).normal(size=(20, 3)) for _ in range(2)]
    out = sim.invariance_checks(liar, reps, [(0, 1)])
    assert out["isotropic-scaling"] > 1e-3 and out["made-up"] is None


def test_compute_stores_values_intervals_null_levels_and_checks(store):
    reg = load_registry()
    counts = sim.compute(store, [reg.metric("cka"), reg.metric("mknn")], resamples=50, permutations=20)
    assert counts["pairs"] == 2 * 6  # 4 runs -> 6 pairs, two metrics
    rows = store.read("similarity").to_pylist()
    assert len(rows) == 2 * 6 * 4  # 2 x 2 layer pairs per run pair
    for r in rows:
        assert r["resamples"] == 50 and r["permutations"] == 20 and r["n"] == N
        assert r["ci_low"] <= r["value"] <= r["ci_high"] or r["ci_high"] - r["ci_low"] < 1e-12
        assert r["null_mean"] is not None and r["null_high"] >= r["null_mean"]
        assert r["checks_passed"] and r["check_self"] < 1e-9
        checks = json.loads(r["checks"])
        assert checks["path"] == "grid" and checks["grid_vs_fn"] < 1e-9
    cka_rows = [r for r in rows if r["metric"] == "cka"]
    # The shared latent makes these layers clearly related: above the shuffled-correspondence null.
    assert all(r["value"] > r["null_high"] for r in cka_rows)
    assert {r["estimator"] for r in cka_rows} == {reg.metric("cka").estimator}
    for job in counts["jobs"]:
        assert job["passed"] and set(reg.metric(job["metric"]).invariances) <= set(job)


def test_compute_values_match_the_pairwise_reference(store):
    metric = load_registry().metric("cka")
    sim.compute(store, [metric], resamples=0, permutations=0)
    runs = {r["run_id"]: r for r in store.finished_runs()}
    for row in store.read("similarity").to_pylist():
        a, b = runs[row["run_a"]], runs[row["run_b"]]
        xa = store.representations("toy", a["arch"], a["run_id"])[1][row["layer_a"]]
        xb = store.representations("toy", b["arch"], b["run_id"])[1][row["layer_b"]]
        ref = metric.fn(torch.tensor(xa, dtype=torch.float64), torch.tensor(xb, dtype=torch.float64))
        assert abs(row["value"] - ref) < 1e-12
        assert row["ci_low"] is None and row["null_mean"] is None and row["resamples"] == 0


def test_compute_resumes_and_recomputes_when_the_statistics_change(store):
    metric = load_registry().metric("cka")
    first = sim.compute(store, [metric], resamples=10, permutations=5)
    assert first["pairs"] == 6
    assert sim.compute(store, [metric], resamples=10, permutations=5)["pairs"] == 0
    path = next((store.root / "similarity").rglob("*.parquet"))
    assert pq.read_schema(path).metadata[b"resamples"] == b"10"
    assert sim.compute(store, [metric], resamples=12, permutations=5)["pairs"] == 6
    assert sim.compute(store, [metric], resamples=12, permutations=5, seed=1)["pairs"] == 6
    assert len(store.read("similarity").to_pylist()) == 6 * 4  # rewritten in place, not duplicated


def test_runs_with_different_samples_are_compared_on_common_ids(tmp_path):
    st = Store(tmp_path / "r")
    shared = np.random.default_rng(0).normal(size=(200, 3))
    fake_run(st, "toy", "a", 0, np.arange(40), shared)
    fake_run(st, "toy", "a", 1, np.arange(40), shared)
    fake_run(st, "toy", "b", 0, np.arange(20, 70), shared)
    sim.compute(st, [load_registry().metric("cka")], resamples=5, permutations=3)
    rows = st.read("similarity").to_pylist()
    by_pair = {(r["run_a"], r["run_b"]): r["n"] for r in rows}
    assert by_pair[("a-0-40", "a-1-40")] == 40
    assert by_pair[("a-0-40", "b-0-50")] == 20 and by_pair[("a-1-40", "b-0-50")] == 20


def test_cli_similarity_writes_intervals_null_levels_and_the_leaderboard_reads_them(store):
    out = str(store.root)
    res = CliRunner().invoke(app, ["similarity", "--metric", "cka", "--metric", "mknn", "--out", out,
                                   "--resamples", "30", "--permutations", "10", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "passed" in res.output and "30 resamples" in res.output
    rows = store.read("similarity").to_pylist()
    assert {r["metric"] for r in rows} == {"cka", "mknn"}
    assert all(r["ci_low"] is not None and r["null_high"] is not None for r in rows)
    bad = CliRunner().invoke(app, ["similarity", "--out", out, "--resamples", "-3"])
    assert bad.exit_code != 0
    res = CliRunner().invoke(app, ["leaderboard", "--out", out, "--format", "md"])
    assert res.exit_code == 0, res.output
