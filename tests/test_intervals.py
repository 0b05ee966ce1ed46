"""Intervals that mean what they say: exact t quantiles, seed-level intervals, the kinds of interval over
samples (the RBF bootstrap centred on its estimate, half-samples for any metric, a value outside its own
interval failing its checks), null-calibrated values, one policy for degenerate layers, and the debiased
linear CKA against float64 references at any scale."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from test_similarity import N, fake_run, toy_store

from wsbench import BatchRequest, MetricSpec, hsic_gram_unbiased
from wsbench import similarity as sim
from wsbench.plugins import load_registry
from wsbench.reporting.board import build, calibrated_rows
from wsbench.reporting.stats import diff_ci, t95, t_quantile, unit_mean_ci
from wsbench.specs import CI_KINDS
from wsbench.store import Store
from wsbench_plugins import cka

NAMES = ["cka", "cka-biased", "cka-rbf", "mknn", "procrustes", "svcca"]


@pytest.fixture(scope="module")
def reg():
    return load_registry()


def related(seed, n, dims, noise=0.7):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return [z @ torch.randn(3, d, generator=g, dtype=torch.float64)
            + noise * torch.randn(n, d, generator=g, dtype=torch.float64) + 2.0 for d in dims]


def linear_rsa(x: torch.Tensor, y: torch.Tensor) -> float:
    """A third party's linear RSA: Pearson correlation of the upper triangles of the two distance matrices."""
    iu = torch.triu_indices(len(x), len(x), 1)
    a, b = torch.cdist(x, x)[iu[0], iu[1]], torch.cdist(y, y)[iu[0], iu[1]]
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / torch.sqrt((a @ a) * (b @ b)))


# Student-t quantiles, exact for every df ------------------------------------------------------------

@pytest.mark.parametrize("df, p, ref", [
    (1, 0.975, 12.7062047361747), (2, 0.975, 4.30265272974946), (4, 0.975, 2.77644510519779),
    (10, 0.975, 2.22813885198627), (30, 0.975, 2.04227245630124), (31, 0.975, 2.03951344639641),
    (60, 0.975, 2.00029782201426), (120, 0.975, 1.97993040508242), (1000, 0.975, 1.96233908082641),
    (4, 0.995, 4.60409487134999), (9, 0.95, 1.83311293265624), (math.inf, 0.975, 1.95996398454005)])
def test_t_quantiles_match_the_table_to_twelve_digits(df, p, ref):
    assert t_quantile(p, df) == pytest.approx(ref, abs=1e-11)
    assert t_quantile(1 - p, df) == pytest.approx(-ref, abs=1e-11)


def test_t95_has_no_normal_fallback_and_takes_fractional_df():
    assert t95(31) > 2.03 and t95(200) > 1.97  # the old table fell back to 1.96 beyond 30 df
    assert t95(4) < t95(3.5) < t95(3)
    assert math.isnan(t95(0)) and math.isnan(t95(float("nan")))


def test_welch_difference_uses_satterthwaite_df_exactly():
    d, _, hi = diff_ci(0.5, 0.1, 5, 0.7, 0.2, 5)
    va, vb = 0.01 / 5, 0.04 / 5
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    assert d == pytest.approx(0.2) and hi - d == pytest.approx(t_quantile(0.975, df) * math.sqrt(va + vb))


# Seed-level intervals ---------------------------------------------------------------------------------

def test_unit_mean_ci_is_the_grouped_delete_one_seed_jackknife():
    # Two architectures crossed: run pair (a_i, b_j) has value 0.1 i + 0.01 j.
    vals, units = [], []
    for i in range(4):
        for j in range(3):
            vals.append(0.1 * i + 0.01 * j)
            units.append({("a", i), ("b", j)})
    st = unit_mean_ci(vals, units)
    loo_a = [np.mean([v for v, u in zip(vals, units) if ("a", i) not in u]) for i in range(4)]
    loo_b = [np.mean([v for v, u in zip(vals, units) if ("b", j) not in u]) for j in range(3)]
    va = 3 / 4 * np.sum((np.array(loo_a) - np.mean(loo_a)) ** 2)
    vb = 2 / 3 * np.sum((np.array(loo_b) - np.mean(loo_b)) ** 2)
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    assert st["se"] == pytest.approx(math.sqrt(va + vb)) and st["df"] == pytest.approx(df)
    assert st["ci_high"] - st["mean"] == pytest.approx(t_quantile(0.975, df) * math.sqrt(va + vb))
    assert st["units"] == 7


def test_pairs_that_share_a_seed_are_not_counted_as_independent():
    # 5 seeds, each with its own offset: a pair's value is the sum of its two seeds' offsets.
    g = np.random.default_rng(0)
    cover_pairs = cover_seeds = 0
    for _ in range(400):
        off = g.normal(size=5)
        pairs = [(a, b) for a in range(5) for b in range(a + 1, 5)]
        vals = [off[a] + off[b] for a, b in pairs]
        st = unit_mean_ci(vals, [{("m", a), ("m", b)} for a, b in pairs])
        cover_seeds += st["ci_low"] <= 0 <= st["ci_high"]
        h = t95(len(vals) - 1) * np.std(vals, ddof=1) / math.sqrt(len(vals))
        cover_pairs += abs(np.mean(vals)) <= h
    assert cover_seeds / 400 > 0.92  # the seed-level interval holds its level
    assert cover_pairs / 400 < 0.80  # treating the 10 pairs as independent does not


def test_one_run_pair_has_no_interval():
    st = unit_mean_ci([0.9], [{("m", 0), ("m", 1)}])
    assert st["mean"] == 0.9 and math.isnan(st["ci_low"])


# Kinds of interval over samples ---------------------------------------------------------------------

def test_every_shipped_metric_declares_a_known_interval_kind(reg):
    kinds = {name: reg.metric(name).interval for name in NAMES}
    assert kinds == {"cka": "percentile", "cka-biased": "half-sample", "cka-rbf": "percentile",
                     "mknn": "per-sample-percentile", "procrustes": "expected-at-n", "svcca": "expected-at-n"}
    assert set(kinds.values()) <= set(CI_KINDS)
    assert MetricSpec(name="x", fn=linear_rsa).interval == "half-sample"  # fn-only: valid for any metric
    with pytest.raises(ValueError, match="interval must be one of"):
        MetricSpec(name="x", fn=linear_rsa, interval="bca")


def test_rbf_bootstrap_is_centred_on_its_estimate(reg):
    m = reg.metric("cka-rbf")
    for seed, n in ((0, 100), (1, 300)):
        x, y = related(seed, n, [8, 12])
        res = sim.evaluate(m, [x, y], [(0, 1)], resamples=200, permutations_=0, seed=seed)
        v, lo, hi = res["value"][0], res["ci_low"][0], res["ci_high"][0]
        assert lo < v < hi and abs(np.median(res["boot"][:, 0]) - v) < 0.25 * (hi - lo)
        assert res["ci_kind"] == "percentile"


def test_double_centring_keeps_the_full_sample_value_of_a_kernel():
    from wsbench.kernels import CentredKernels, KernelStack, centred, pad_stack
    from wsbench_plugins.metrics import RbfStack
    xs = [r - r.mean(0) for r in related(3, 40, [4, 6])]
    stack = RbfStack(pad_stack(xs), [4, 6], torch.tensor([0.1, 0.05], dtype=torch.float64))
    c = centred(stack)
    assert isinstance(c, CentredKernels)
    k = stack.block(slice(0, 40), slice(0, 40))
    kc = c.block(slice(0, 40), slice(0, 40))
    h = torch.eye(40, dtype=torch.float64) - 1.0 / 40
    assert torch.allclose(kc, h @ k @ h, atol=1e-13)
    assert torch.allclose(c.diag(), torch.diagonal(kc, dim1=1, dim2=2).T, atol=1e-13)
    w = sim.bootstrap_weights(40, 3, 0)
    assert torch.allclose(c.matmul(w, 1 << 20), kc @ w, atol=1e-12)
    for r in range(2):
        for s in range(2):
            assert hsic_gram_unbiased(kc[r], kc[s]) == pytest.approx(float(hsic_gram_unbiased(k[r], k[s])), abs=1e-14)
    linear = KernelStack(pad_stack([cka.prepare_linear(x) for x in xs]), [4, 6])
    assert centred(linear) is linear  # centred features: nothing to do


def test_half_sample_interval_corrects_an_order_one_over_n_bias():
    # Estimates biased by +c/n: the value at n is truth + c/n, at n/2 truth + 2c/n.
    n, truth, c = 200, 0.5, 4.0
    draws = truth + 2 * c / n + 0.01 * np.random.default_rng(0).normal(size=(500, 1))
    value = np.array([truth + c / n])
    lo, hi = sim.half_sample_interval(value, draws, n)
    assert lo[0] < truth < hi[0] and hi[0] < value[0]  # corrected: the biased value itself lies above
    lo, hi = sim.half_sample_interval(value, draws, n, corrected=False)
    assert lo[0] < value[0] < hi[0]


def test_half_samples_are_seeded_and_without_replacement():
    idx = sim.subsamples(11, 7, 3)
    assert idx.shape == (7, 5) and torch.equal(idx, sim.subsamples(11, 7, 3))
    assert all(len(set(row.tolist())) == 5 for row in idx)


def test_fn_only_linear_rsa_has_every_value_inside_its_interval(tmp_path):
    st = toy_store(tmp_path / "r", dims=(6, 4, 5))
    rsa = MetricSpec(name="linear-rsa", fn=linear_rsa, estimator="pearson(upper-triangle euclidean distances)")
    counts = sim.compute(st, [rsa], resamples=60, permutations=10)
    rows = st.read("similarity").to_pylist()
    assert len(rows) == 6 * 9 and counts["jobs"][0]["outside_interval"] == 0
    for r in rows:
        assert r["ci_kind"] == "half-sample" and r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["check_interval"] is True and r["checks_passed"]
    # The same measure resampled with replacement: copies sit at distance 0 in both spaces and inflate it.
    # On unrelated layers the values then fall below their own intervals, and the checks say so.
    dup = MetricSpec(name="linear-rsa-dup", fn=linear_rsa, interval="percentile")
    g = torch.Generator().manual_seed(0)
    reps = [torch.randn(60, 5, generator=g, dtype=torch.float64) for _ in range(6)]
    pairs = [(r, s) for r in range(6) for s in range(r + 1, 6)]
    res = sim.evaluate(dup, reps, pairs, resamples=60, permutations_=0)
    below = res["value"] < res["ci_low"]
    assert below.mean() > 0.6 and np.array_equal(res["in_interval"] == 0, below)
    res = sim.evaluate(MetricSpec(name="linear-rsa", fn=linear_rsa), reps, pairs, resamples=60, permutations_=0)
    assert np.all(res["in_interval"] == 1)


# Null calibration -------------------------------------------------------------------------------------

def test_rows_carry_their_null_calibrated_value(reg, tmp_path):
    st = Store(tmp_path / "r")
    shared = np.random.default_rng(1).normal(size=(200, 3))
    for seed in (0, 1):
        fake_run(st, "toy", "a", seed, np.arange(N), shared)
    sim.compute(st, [reg.metric("cka-biased")], resamples=20, permutations=30)
    for r in st.read("similarity").to_pylist():
        assert r["calibrated"] == pytest.approx((r["value"] - r["null_mean"]) / (1 - r["null_mean"]))
        assert r["null_mean"] > 0.01  # the biased estimator's null is well above 0 at n = 48
    own = MetricSpec(name="half", fn=cka.cka_debiased, calibrate=lambda v, m: v - m)
    res = sim.evaluate(own, related(2, 30, [3, 4]), [(0, 1)], resamples=0, permutations_=20)
    assert res["calibrated"][0] == pytest.approx(res["value"][0] - res["null_mean"][0])


def test_tables_without_the_new_columns_still_give_calibrated_boards():
    old = [{"dataset": "d", "metric": "cka", "run_a": f"m-{a}", "run_b": f"m-{b}", "arch_a": "m", "arch_b": "m",
            "seed_a": a, "seed_b": b, "layer_a": "l", "layer_b": "l", "layer_index_a": 0, "layer_index_b": 0,
            "value": 0.5 + 0.01 * (a + b), "ci_low": 0.45, "ci_high": 0.55, "null_mean": 0.2, "null_high": 0.3}
           for a in range(3) for b in range(a + 1, 3)]
    (row,) = calibrated_rows(old[:1])
    assert row["value"] == pytest.approx((0.51 - 0.2) / 0.8) and row["null_mean"] == 0.0
    assert row["ci_low"] == pytest.approx(0.25 / 0.8)
    raw, cal = build([], old), build([], old, calibrated=True)
    assert cal.calibrated and cal.stability[0]["mean"] == pytest.approx((raw.stability[0]["mean"] - 0.2) / 0.8)
    assert raw.stability[0]["ci_kind"] == "percentile" and raw.stability[0]["seeds"] == 3


# One policy for degenerate layers ---------------------------------------------------------------------

def _bad_layers(n):
    g = torch.Generator().manual_seed(5)
    return {"constant": torch.full((n, 3), 2.5, dtype=torch.float64),
            "zeros": torch.zeros(n, 4, dtype=torch.float64),
            "nan": torch.where(torch.rand(n, 3, generator=g) < 0.05, torch.tensor(float("nan")),
                               torch.randn(n, 3, generator=g, dtype=torch.float64)),
            "inf": torch.randn(n, 2, generator=g, dtype=torch.float64).index_fill_(0, torch.tensor([3]), math.inf)}


@pytest.mark.parametrize("name", [*NAMES, "fn-only-rsa"])
def test_degenerate_layers_get_nan_rows_with_a_reason_and_lose_no_other_pair(reg, name):
    n = 40
    m = MetricSpec(name=name, fn=linear_rsa) if name == "fn-only-rsa" else reg.metric(name)
    good = related(4, n, [5, 7])
    bad = _bad_layers(n)
    reps = [*good, *bad.values()]
    names = ["good0", "good1", *bad]
    pairs = [(r, s) for r in range(len(reps)) for s in range(len(reps))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = sim.evaluate(m, reps, pairs, resamples=20, permutations_=5, seed=2, names=names)
    said = " ".join(str(w.message) for w in caught)
    assert all(b in said for b in bad)
    ref = sim.evaluate(m, good, [(0, 0), (0, 1), (1, 0), (1, 1)], resamples=20, permutations_=5, seed=2)
    for k, (r, s) in enumerate(pairs):
        if r < 2 and s < 2:
            j = 2 * r + s
            for key in ("value", "ci_low", "ci_high", "null_mean", "calibrated"):
                assert res[key][k] == pytest.approx(ref[key][j], abs=1e-12), key  # no other pair changes
            assert res["reason"][k] is None
        else:
            assert all(math.isnan(res[key][k]) for key in ("value", "ci_low", "ci_high", "null_mean", "calibrated"))
            reason = res["reason"][k]
            assert all(names[i] in reason for i in (r, s) if i >= 2) and ("constant" in reason or "non-finite"
                                                                         in reason)
    assert set(res["degenerate"]) == {2, 3, 4, 5}


def test_degenerate_rows_are_stored_nan_with_symmetric_checks(reg, tmp_path):
    st = Store(tmp_path / "r")
    shared = np.random.default_rng(0).normal(size=(200, 3))
    ids = np.arange(N)
    fake_run(st, "toy", "a", 0, ids, shared)
    fake_run(st, "toy", "a", 1, ids, shared)
    # A third run whose second layer is constant: its pairs are NaN, everyone else's are not.
    from wsbench.tables import representation_table, run_rows
    g = np.random.default_rng(3)
    layers = {"l0": g.normal(size=(N, 6)).astype(np.float32), "l1": np.ones((N, 4), np.float32)}
    st.write("representations", "c-0", representation_table("c-0", ids, layers), dataset="toy", arch="c")
    st.write("runs", "c-0", run_rows([{"run_id": "c-0", "seed": 0, "status": "finished", "test_acc": 0.5}]),
             dataset="toy", arch="c")
    for name in ("cka", "mknn", "procrustes", "svcca"):
        with pytest.warns(UserWarning, match="c-0 layer l1 is constant"):
            counts = sim.compute(st, [reg.metric(name)], resamples=20, permutations=5)
        rows = [r for r in st.read("similarity").to_pylist() if r["metric"] == name]
        assert len(rows) == 3 * 4
        for r in rows:
            hit = (r["run_a"], r["layer_a"]) == ("c-0", "l1") or (r["run_b"], r["layer_b"]) == ("c-0", "l1")
            if hit:
                assert math.isnan(r["value"]) and r["ci_low"] is None and r["calibrated"] is None
                assert "constant" in r["reason"] and not r["checks_passed"] and r["check_self"] is None
            else:
                assert math.isfinite(r["value"]) and r["reason"] is None and r["checks_passed"], (name, r)
        (job,) = counts["jobs"]
        assert job["passed"] and list(job["degenerate"]) == ["toy/c run c-0 layer l1"]
        assert json.loads(rows[0]["checks"])["degenerate"] == {"toy/c run c-0 layer l1":
                                                               "constant (every sample has the same vector)"}


def test_a_failing_batched_path_falls_back_to_fn_pair_by_pair(reg):
    base = reg.metric("cka")

    def broken(reps, request):
        raise RuntimeError("linalg failed")
    m = MetricSpec(name="cka", fn=base.fn, batched=broken, interval="percentile")
    reps = related(6, 30, [3, 4])
    with pytest.warns(UserWarning, match="batched path failed"):
        res = sim.evaluate(m, reps, [(0, 1)], resamples=5, permutations_=3)
    assert res["path"] == "fn" and res["value"][0] == pytest.approx(base.fn(*reps))


# The default, debiased linear CKA: exact at any scale -------------------------------------------------

def _reference(x, y):
    """Debiased linear CKA from n x n Gram matrices in float64 (Song et al. 2012's unbiased HSIC)."""
    x, y = x - x.mean(0), y - y.mean(0)
    k, l = x @ x.T, y @ y.T
    return float(hsic_gram_unbiased(k, l) / torch.sqrt(hsic_gram_unbiased(k, k) * hsic_gram_unbiased(l, l)))


@pytest.mark.parametrize("case", ["random", "rank-deficient", "d>n", "offset", "ill-conditioned"])
def test_debiased_cka_matches_the_float64_reference(case):
    g = torch.Generator().manual_seed(11)
    n = 60

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)
    x, y = r(n, 10), r(n, 10) + 0.5 * r(n, 10)
    if case == "rank-deficient":
        x = r(n, 2) @ r(2, 10)
    elif case == "d>n":
        x, y = r(n, 150), r(n, 3) @ r(3, 90)
    elif case == "offset":
        x, y = x + 1e4, y - 3e3
    elif case == "ill-conditioned":
        x = x * torch.logspace(-6, 6, 10, dtype=torch.float64)
    ref = _reference(x, y)
    batched = cka.linear_batched(True)([x, y], BatchRequest(pairs=torch.tensor([[0, 1]]))).values[0]
    assert cka.cka_debiased(x, y) == pytest.approx(ref, abs=1e-12)
    assert float(batched) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e300, 1e-300])
def test_linear_cka_is_unchanged_by_extreme_scales(scale):
    x, y = related(8, 50, [6, 9])
    base = cka.cka_debiased(x, y)
    assert cka.cka_debiased(scale * x, y) == pytest.approx(base, abs=1e-12)
    assert cka.cka_debiased(scale * x, scale * y) == pytest.approx(base, abs=1e-12)
    assert cka.cka_biased(scale * x, y) == pytest.approx(cka.cka_biased(x, y), abs=1e-12)
    res = cka.linear_batched(True)([scale * x, y], BatchRequest(pairs=torch.tensor([[0, 1]])))
    assert float(res.values[0]) == pytest.approx(base, abs=1e-12)


@pytest.mark.parametrize("name", ["cka-rbf", "procrustes", "svcca"])
def test_other_measures_are_unchanged_by_extreme_scales(reg, name):
    x, y = related(9, 50, [6, 9])
    fn = reg.metric(name).fn
    assert fn(1e150 * x, y) == pytest.approx(fn(x, y), abs=1e-9)
    assert fn(1e-150 * x, y) == pytest.approx(fn(x, y), abs=1e-9)


# Stored files and the command line --------------------------------------------------------------------

def test_files_written_before_interval_kinds_are_recomputed(reg, tmp_path):
    import pyarrow.parquet as pq
    st = Store(tmp_path / "r")
    shared = np.random.default_rng(0).normal(size=(200, 3))
    for seed in (0, 1):
        fake_run(st, "toy", "a", seed, np.arange(N), shared)
    metric = reg.metric("cka")
    assert sim.compute(st, [metric], resamples=10, permutations=5)["pairs"] == 1
    path = next((st.root / "similarity").rglob("*.parquet"))
    table = pq.read_table(path)
    meta = {k: v for k, v in table.schema.metadata.items() if k not in (b"intervals", b"ci_kind")}
    pq.write_table(table.replace_schema_metadata(meta), path)  # as an older wsbench wrote it
    assert sim.compute(st, [metric], resamples=10, permutations=5)["pairs"] == 1
    assert sim.compute(st, [metric], resamples=10, permutations=5)["pairs"] == 0


def test_cli_leaderboard_calibrated_reads_an_old_export(tmp_path):
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    from wsbench.cli import app
    committed = Path(__file__).resolve().parents[1] / "leaderboards" / "yeom2025"
    if not (committed / "tables" / "similarity.parquet").exists():
        pytest.skip("no committed yeom2025 tables")
    copy = tmp_path / "y"
    for name in ("tables/runs.parquet", "tables/similarity.parquet", "manifest.json"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(committed / name, copy / name)
    res = CliRunner().invoke(app, ["leaderboard", "--out", str(copy), "--format", "md", "--calibrated",
                                   "--no-images"])
    assert res.exit_code == 0, res.output
    assert "cross-seed cka (calibrated) (mean)" in res.output and "(value − null mean) / (1 − null mean)" in res.output
    help_text = CliRunner().invoke(app, ["similarity", "--help"], env={"COLUMNS": "200"}).output
    assert all(kind in help_text for kind in CI_KINDS)
