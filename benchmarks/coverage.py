"""Benchmark: do the similarity intervals cover what they say, and does the permutation test hold its size?

A simulation with known population values. Each scenario draws ``n`` samples of two Gaussian
representations ``x (n, 8)`` and ``y (n, 12)``:

- ``independent``: ``x`` and ``y`` independent (every measure's population value is 0; mknn's
  expected value at n is exactly ``k / (n - 1)``, the overlap of two random k-sets of n - 1);
- ``latent``: ``x = z A + e``, ``y = z B + f`` with a shared 3-dim latent ``z`` and unit noise;
- ``latent-low-noise``: the same with noise 0.1 (SVCCA then keeps only the latent's directions).

Population values: linear CKA (both estimators) ``||S_xy||_F^2 / (||S_x||_F ||S_y||_F)``, Procrustes
``||S_xy||_* / sqrt(tr S_x tr S_y)`` and SVCCA (the 99 %-variance subspaces of ``S_x``, ``S_y``, then
the mean canonical correlation) in closed form from the population covariances; RBF CKA (its
bandwidth the median distance) as the mean of the estimator at n = 2,000 over 16 draws (its O(1/n)
bias and its standard error there, about 0.0015, are far below the intervals' widths at n <= 500);
mknn, whose value depends on n by design (k neighbours among n), as its expectation at that n over
400 draws.

For every shipped metric, scenario and n, ``--replicates`` independent data sets each get the
harness's interval (``wsbench.similarity.evaluate``, the metric's own ``ci_kind``) and null level.
*Coverage* is the fraction of intervals that contain what their kind says they cover
(``wsbench.specs.CI_KINDS``): the population value for ``percentile`` and ``half-sample``, the
metric's expected value at n (the mean of ``fn`` over 300 fresh draws) for ``expected-at-n`` and
``per-sample-percentile``; the coverage of the population value is reported beside it for every
metric. *Null size* (independent data) is the fraction of values above their own null's 95th
percentile. With 200 replicates a coverage of 95 % is estimated to within about +-3 % (two
standard errors). Where the population value is 0 (independent data) the CKA intervals cover in
99-100 % of data sets: HSIC is then a degenerate U-statistic, whose resampling distribution is wider
than its sampling distribution, so they err on the safe side there.

Prints the table and writes ``benchmarks/results/coverage.json``. About 9 minutes on one CPU core
with the defaults (``--resamples 250``; the harness's default is 1,000); ``--quick`` runs a
small version.

  python benchmarks/coverage.py [--replicates 200] [--resamples 250] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsbench import similarity as sim
from wsbench.plugins import load_registry

# The built-in metrics through the registry (benchmarks never import a plugin module); the two
# settings below are the mknn and svcca plugins' own.
MKNN_K = 10
SVCCA_KEEP = 0.99
_REGISTRY = load_registry()
cka_rbf = _REGISTRY.metric("cka-rbf").fn
mknn = _REGISTRY.metric("mknn").fn

METRICS = ("cka", "cka-biased", "cka-rbf", "mknn", "procrustes", "svcca")
SIZES = (100, 250, 500)
# Replicates evaluated together in one call (fewer calls; the kernel engines compute all M^2 pairs,
# so they take few at a time).
CHUNK = {"cka": 4, "cka-biased": 4, "cka-rbf": 1, "procrustes": 10, "svcca": 4}
DEFAULT_CHUNK = 20


@dataclass(frozen=True)
class Scenario:
    name: str
    latent: int  # dimensions of the shared latent (0: independent)
    noise: float  # standard deviation of the private noise
    dx: int = 8
    dy: int = 12
    seed: int = 0  # of the mixing matrices

    def mixing(self) -> tuple[np.ndarray, np.ndarray]:
        g = np.random.default_rng(1000 + self.seed)
        return g.normal(size=(self.latent, self.dx)), g.normal(size=(self.latent, self.dy))

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(S_x, S_y, S_xy)``: the population covariances."""
        a, b = self.mixing()
        return (a.T @ a + self.noise ** 2 * np.eye(self.dx), b.T @ b + self.noise ** 2 * np.eye(self.dy), a.T @ b)

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = (torch.from_numpy(m) for m in self.mixing())
        z = torch.randn(n, self.latent, generator=gen, dtype=torch.float64)
        x = z @ a + self.noise * torch.randn(n, self.dx, generator=gen, dtype=torch.float64)
        y = z @ b + self.noise * torch.randn(n, self.dy, generator=gen, dtype=torch.float64)
        return x + 3.0, y - 1.0  # an offset, so centring matters


SCENARIOS = {s.name: s for s in (Scenario("independent", 0, 1.0), Scenario("latent", 3, 1.0),
                                 Scenario("latent-low-noise", 3, 0.1))}


# Population values ------------------------------------------------------------------------------

def _kept(s: np.ndarray) -> np.ndarray:
    """Eigenvectors of the covariance ``s`` holding SVCCA_KEEP of its variance (the estimator's rule)."""
    lam, vec = np.linalg.eigh(s)
    lam, vec = lam[::-1], vec[:, ::-1]
    k = int(np.searchsorted(np.cumsum(lam) / lam.sum(), SVCCA_KEEP)) + 1
    return vec[:, :k]


def population(metric: str, sc: Scenario, n: int, cache: dict, rbf_n: int = 2000, rbf_draws: int = 16) -> float:
    """The population value (see the module docstring); RBF CKA's from ``rbf_draws`` draws at ``rbf_n``."""
    sx, sy, sxy = sc.covariances()
    if metric in ("cka", "cka-biased"):
        return float(np.sum(sxy ** 2) / (np.linalg.norm(sx) * np.linalg.norm(sy)))
    if metric == "procrustes":
        return float(np.linalg.svd(sxy, compute_uv=False).sum() / math.sqrt(np.trace(sx) * np.trace(sy)))
    if metric == "svcca":
        ux, uy = _kept(sx), _kept(sy)
        cxx, cyy, cxy = ux.T @ sx @ ux, uy.T @ sy @ uy, ux.T @ sxy @ uy

        def isqrt(c):
            lam, vec = np.linalg.eigh(c)
            return vec @ np.diag(lam ** -0.5) @ vec.T
        rho = np.clip(np.linalg.svd(isqrt(cxx) @ cxy @ isqrt(cyy), compute_uv=False), 0, 1)
        return float(rho.mean())
    if metric == "cka-rbf":
        if sc.latent == 0:
            return 0.0  # independent: HSIC is 0 for every kernel
        if ("rbf", sc.name) not in cache:
            gen = torch.Generator().manual_seed(77)
            cache[("rbf", sc.name)] = float(np.mean([cka_rbf(*sc.draw(rbf_n, gen)) for _ in range(rbf_draws)]))
        return cache[("rbf", sc.name)]
    if metric == "mknn":
        k = max(1, min(MKNN_K, n - 1))
        if sc.latent == 0:
            return k / (n - 1)
        if ("mknn", sc.name, n) not in cache:
            gen = torch.Generator().manual_seed(78)
            cache[("mknn", sc.name, n)] = float(np.mean([mknn(*sc.draw(n, gen)) for _ in range(400)]))
        return cache[("mknn", sc.name, n)]
    raise ValueError(f"no population value for {metric!r}")


def expected(metric, sc: Scenario, n: int, cache: dict, draws: int = 300) -> float:
    """The metric's expected value at n: the mean of ``fn`` over ``draws`` fresh data sets."""
    key = ("expected", metric.name, sc.name, n)
    if key not in cache:
        gen = torch.Generator().manual_seed(79 + n)
        cache[key] = float(np.nanmean([metric.fn(*sc.draw(n, gen)) for _ in range(draws)]))
    return cache[key]


# What each kind of interval claims to cover (wsbench.specs.CI_KINDS).
TARGET = {"percentile": "population", "half-sample": "population", "expected-at-n": "expected at n",
          "per-sample-percentile": "expected at n"}


# One cell: a metric, a scenario, a sample size ---------------------------------------------------

def run_cell(metric, sc: Scenario, n: int, replicates: int, resamples: int, permutations: int, seed: int,
             pop: float, expect: float | None = None) -> dict:
    """Coverage (of what the interval's kind claims: ``pop`` or ``expect``), coverage of the population
    value, null size, interval width and more over ``replicates`` data sets."""
    gen = torch.Generator().manual_seed(seed)
    data = [sc.draw(n, gen) for _ in range(replicates)]
    chunk = CHUNK.get(metric.name, DEFAULT_CHUNK)
    cols: dict = {k: [] for k in ("value", "ci_low", "ci_high", "null_high", "in_interval")}
    kinds = set()
    for c0 in range(0, replicates, chunk):
        part = data[c0:c0 + chunk]
        reps = [t for xy in part for t in xy]
        pairs = [(2 * i, 2 * i + 1) for i in range(len(part))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sim.evaluate(metric, reps, pairs, resamples=resamples, permutations_=permutations,
                               seed=seed + c0)
        kinds.add(res["ci_kind"])
        for k in cols:
            cols[k] += list(np.asarray(res[k], dtype=float))
    v, lo, hi = (np.asarray(cols[k]) for k in ("value", "ci_low", "ci_high"))
    kind = metric.interval
    target = pop if TARGET[kind] == "population" or expect is None else expect
    covered = (lo <= target) & (target <= hi)
    out = {"metric": metric.name, "ci_kind": ", ".join(sorted(map(str, kinds))), "scenario": sc.name, "n": n,
           "target": TARGET[kind], "target_value": target, "population": pop, "expected_at_n": expect,
           "replicates": replicates, "covered": int(covered.sum()), "coverage": float(covered.mean()),
           "below": float((hi < target).mean()), "above": float((lo > target).mean()),
           "coverage_of_population": float(((lo <= pop) & (pop <= hi)).mean()),
           "value_mean": float(np.mean(v)), "width_mean": float(np.mean(hi - lo)),
           "value_inside_own_interval": float(np.nanmean(cols["in_interval"]))}
    if permutations:
        out["null_size"] = float(np.mean(v > np.asarray(cols["null_high"])))
    return out


def table(rows: list[dict]) -> str:
    head = (f"{'metric':<11} {'interval':<21} {'scenario':<17} {'n':>4} {'covers':<13} {'target':>7} "
            f"{'mean value':>10} {'coverage':>8} {'miss low/high':>13} {'cov. of pop.':>12} {'width':>6} "
            f"{'null size':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        size = f"{r['null_size']:.3f}" if "null_size" in r else "–"
        lines.append(f"{r['metric']:<11} {r['ci_kind']:<21} {r['scenario']:<17} {r['n']:>4} {r['target']:<13} "
                     f"{r['target_value']:>7.4f} {r['value_mean']:>10.4f} {r['coverage']:>8.3f} "
                     f"{r['below']:>6.3f}/{r['above']:<6.3f} {r['coverage_of_population']:>12.3f} "
                     f"{r['width_mean']:>6.3f} {size:>9}")
    return "\n".join(lines)


def simulate(metrics=METRICS, scenarios=tuple(SCENARIOS), sizes=SIZES, replicates: int = 200,
             resamples: int = 250, permutations: int = 100, seed: int = 0, progress=None) -> list[dict]:
    """Every (metric, scenario, n) cell; the permutation null only where the data are independent."""
    reg = load_registry()
    cache: dict = {}
    rows = []
    for name in metrics:
        m = reg.metric(name)
        for si, scen in enumerate(scenarios):
            sc = SCENARIOS[scen]
            for n in sizes:
                t0 = time.perf_counter()
                pop = population(name, sc, n, cache)
                expect = expected(m, sc, n, cache)
                row = run_cell(m, sc, n, replicates, resamples, permutations if sc.latent == 0 else 0,
                               seed + 7919 * si + n, pop, expect)
                row["seconds"] = round(time.perf_counter() - t0, 2)
                rows.append(row)
                if progress:
                    progress(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=250)
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--metric", action="append", help="only these metrics (repeatable)")
    ap.add_argument("--quick", action="store_true", help="40 replicates, n = 100 only")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "coverage.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = (100,) if args.quick else SIZES
    replicates = 40 if args.quick else args.replicates
    started = time.perf_counter()
    rows = simulate(tuple(args.metric or METRICS), sizes=sizes, replicates=replicates, resamples=args.resamples,
                    permutations=args.permutations,
                    progress=lambda r: print(f"  {r['metric']} {r['scenario']} n={r['n']}: coverage "
                                             f"{r['coverage']:.3f} ({r['seconds']} s)", file=sys.stderr))
    print(table(rows))
    for name in dict.fromkeys(r["metric"] for r in rows):
        mine = [r for r in rows if r["metric"] == name]
        inside = sum(0.93 <= r["coverage"] <= 0.97 for r in mine)
        print(f"{name}: {mine[0]['ci_kind']} intervals cover {mine[0]['target']} in "
              f"{min(r['coverage'] for r in mine):.3f}-{max(r['coverage'] for r in mine):.3f} of data sets; "
              f"{inside} of {len(mine)} cells in [0.93, 0.97]")
    out = {"what": "coverage of each shipped metric's 95 % interval of its population value, and the size of the "
                   "permutation test (independent data), over simulated data sets (benchmarks/coverage.py)",
           "replicates": replicates, "resamples": args.resamples, "permutations": args.permutations,
           "torch": torch.__version__, "python": platform.python_version(), "threads": 1,
           "seconds": round(time.perf_counter() - started, 1), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{len(rows)} cells in {out['seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
