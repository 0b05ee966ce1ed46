"""Similarity between stored runs: every pair of runs of a dataset times every pair of layers.

A job is one (dataset, metric) over the runs that share one set of test sample ids
(runs with different ids are compared on their common ids, group against group).
Each job computes, for every wanted pair of representations:

- the value, through the metric's ``batched`` path when it has one (float64,
  chunked to a memory budget, on the GPU when asked), else ``fn`` pair by pair;
- a 95 % interval over samples -> ``ci_low``, ``ci_high``, of the kind the metric's
  ``interval`` names, stored in ``ci_kind`` (:data:`wsbench.specs.CI_KINDS`): ``"half-sample"``
  (the default, valid for any metric), half-samples without replacement and their percentile
  interval, rescaled to n and corrected for an O(1/n) bias; ``"expected-at-n"``, the same
  without the correction, covering the metric's expected value at n; ``"percentile"`` and
  ``"per-sample-percentile"``, a paired bootstrap, for metrics that declare they handle copies
  of a sample. Resamples and half-samples are the same for
  every pair (seeded by ``seed`` and n);
- a permutation baseline: ``permutations`` shuffles of the sample correspondence
  -> ``null_mean`` and ``null_high`` (95th percentile), and the null-calibrated value
  ``calibrated`` = (value - null_mean) / (1 - null_mean) (or the metric's ``calibrate``);
- one policy for degenerate representations, whatever the metric: a constant or
  non-finite representation is named in a warning and left out; each of its rows has
  NaN values and its ``reason``; no other pair changes. A value the metric cannot give
  (NaN) has no interval or null either, and a ``reason`` too;
- sanity checks, stored on every row: ``check_self`` (largest |self-similarity - 1|
  of the row's two representations; undefined on either side fails, symmetrically),
  ``check_invariance`` (largest change of the value under the invariances the metric
  claims, on up to two pairs of the job), ``check_interval`` (the value lies inside its
  own interval), ``checks_passed`` and ``checks`` (JSON with every check of the job).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from wsbench.errors import WsbenchError
from wsbench.specs import BOOTSTRAP_KINDS, BatchRequest, BatchResult, MetricSpec
from wsbench.store import Store
from wsbench.tables import SCHEMA_VERSION, SIMILARITY_SCHEMA

CHECK_TOLERANCE = 1e-6  # self-similarity, invariance and batched-vs-fn deviations above this fail
CHECK_SAMPLES = 512  # invariance checks run fn on this many samples (evenly spaced)
CI_LEVEL = 0.95
NULL_QUANTILE = 0.95
INTERVALS_VERSION = "2"  # stored in each file's metadata; files from another version are recomputed


def pair_key(run_a: str, run_b: str, metric: MetricSpec) -> str:
    return hashlib.sha256(f"{run_a}|{run_b}|{metric.name}|{metric.estimator}".encode()).hexdigest()[:20]


def run_pairs(runs: list[dict]) -> list[tuple[dict, dict]]:
    """Unordered pairs of distinct runs (same architecture across seeds, and across architectures)."""
    ordered = sorted(runs, key=lambda r: (r["arch"], r["seed"], r["run_id"]))
    return list(itertools.combinations(ordered, 2))


def _aligned(ids_a, reps_a, ids_b, reps_b):
    """Restrict both runs to their common sample ids, in the same order."""
    common, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    return common, {k: v[ia] for k, v in reps_a.items()}, {k: v[ib] for k, v in reps_b.items()}


def compare_runs(metric: MetricSpec, reps_a: dict, reps_b: dict, device="cpu") -> list[dict]:
    """Layer x layer values of one metric, float64, pair by pair (no intervals)."""
    rows = []
    mats_a = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in reps_a.items()}
    mats_b = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in reps_b.items()}
    for (ia, (la, xa)), (ib, (lb, xb)) in itertools.product(enumerate(mats_a.items()), enumerate(mats_b.items())):
        rows.append({"layer_a": la, "layer_index_a": ia, "layer_b": lb, "layer_index_b": ib,
                     "value": float(metric.fn(xa, xb)), "n": int(xa.shape[0]),
                     "d_a": int(xa.shape[1]), "d_b": int(xb.shape[1])})
    return rows


# Resamples, permutations, intervals ----------------------------------------------------------

def bootstrap_weights(n: int, resamples: int, seed: int) -> torch.Tensor:
    """``(n, B)`` float64 sample counts of B bootstrap resamples; each column sums to n.

    A function of ``(n, resamples, seed)`` only, so every pair of a grid, and every
    rerun, sees the same resamples (a paired bootstrap).
    """
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, n, (resamples, n), generator=gen)
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(resamples, n,
                                                                                           dtype=torch.float64))
    return counts.T.contiguous()


def subsamples(n: int, count: int, seed: int) -> torch.Tensor:
    """``(B, n // 2)`` int64: B half-samples drawn without replacement (each row sorted), a function of
    ``(n, count, seed)`` only, so every pair of a grid sees the same half-samples."""
    gen = torch.Generator().manual_seed(int(seed) + 15485863)  # neither the bootstrap's nor the shuffles' stream
    return torch.argsort(torch.rand(count, n, generator=gen), dim=1)[:, : n // 2].sort(1).values


def permutations(n: int, count: int, seed: int) -> torch.Tensor:
    """``(P, n)`` int64 shuffles of the sample order, a function of ``(n, count, seed)``."""
    gen = torch.Generator().manual_seed(int(seed) + 7919)  # not the bootstrap's stream
    return torch.argsort(torch.rand(count, n, generator=gen), dim=1)


def percentile_interval(boot: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``boot`` (B, Q): the central ``level`` percentile interval, NaN-aware."""
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():  # an all-NaN column (a constant representation) gives NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(boot, tail, axis=0), np.nanpercentile(boot, 100 - tail, axis=0)


def half_sample_interval(values: np.ndarray, draws: np.ndarray, n: int, level: float = CI_LEVEL,
                         corrected: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per column: an interval from half-sample draws ``draws`` (B, Q) of estimates ``values`` (Q,).

    With ``m = n // 2`` samples drawn without replacement, ``s (draw - median)``, ``s = sqrt(m / (n - m))``,
    has the spread of the estimate at n (the finite-population correction of sampling m of n: the
    delete-d jackknife with d = n / 2, Shao and Wu 1989, Ann. Statist. 17), and ``median - value``
    is ``(n - m) / m`` times an O(1/n) bias ``c / n`` of the estimator (``c / m - c / n``; 1 at
    m = n / 2). The interval is the draws' percentile interval around the value, rescaled by ``s``:
    ``[value - b + s (q_lo - median), value - b + s (q_hi - median)]``, with the bias estimate
    ``b = (median - value) m / (n - m)`` when ``corrected`` ("half-sample": covers the population
    value of an estimator biased by O(1/n), for any measure, since no sample appears twice) and
    ``b = 0`` otherwise ("expected-at-n": covers the estimator's expected value at n). The
    percentile orientation (not the reflected, basic one) holds its level better near a bound such
    as CKA's 1 (benchmarks/coverage.py).
    """
    m = n // 2
    s = math.sqrt(m / (n - m)) if n - m > 0 else float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(draws, axis=0)
    lo, hi = percentile_interval(draws, level)
    shift = values - ((centre - values) * m / (n - m) if corrected else 0.0)
    return shift + s * (lo - centre), shift + s * (hi - centre)


def null_levels(null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``null`` (P, Q): mean and 95th percentile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(null, axis=0), np.nanpercentile(null, 100 * NULL_QUANTILE, axis=0)


def null_calibrated(value: np.ndarray, null_mean: np.ndarray) -> np.ndarray:
    """``(value - null_mean) / (1 - null_mean)``: where the value lies between the permutation null (0)
    and perfect similarity (1). The idea of reporting similarity against its permutation null, which
    removes much of the agreement that width and depth alone produce, is Gröger, Wen and Brbić's
    ("Revisiting the Platonic Representation Hypothesis: An Aristotelian View", ICML 2026). NaN where
    the null level is missing or not below 1."""
    value, null_mean = np.asarray(value, dtype=np.float64), np.asarray(null_mean, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (value - null_mean) / (1.0 - null_mean)
    return np.where(null_mean < 1.0, out, np.nan)


# Degenerate representations -------------------------------------------------------------------

def degenerate(x) -> str | None:
    """Why ``x (n, d)`` has no similarity to speak of, or None: non-finite entries, or every sample the same."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.numel() == 0 or t.shape[0] < 2:
        return "fewer than 2 samples or no features"
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        return f"non-finite values ({bad} of {t.numel()} entries NaN or infinite)"
    if bool((t == t[:1]).all()):
        return "constant (every sample has the same vector)"
    return None


# Computing a grid -----------------------------------------------------------------------------

def _fn(metric: MetricSpec, x: torch.Tensor, y: torch.Tensor) -> float:
    """``metric.fn(x, y)`` as a float; NaN (not an abort) when it raises."""
    try:
        return float(metric.fn(x, y))
    except Exception:
        return float("nan")


def slow_batched(metric: MetricSpec, reps: Sequence[torch.Tensor], request: BatchRequest) -> BatchResult:
    """The path for a metric with only ``fn(x, y)``: pair by pair, resample by resample.

    Bootstrap counts (``request.weights``) repeat each sample's row by its count; a pair whose ``fn``
    raises gets NaN.
    """
    pairs = request.pairs.tolist()
    values = torch.tensor([_fn(metric, reps[r], reps[s]) for r, s in pairs], dtype=torch.float64)
    steps = 1 + (request.weights.shape[1] if request.weights is not None else 0) \
        + (len(request.perms) if request.perms is not None else 0)
    done = 1
    boot = null = None
    if request.weights is not None:
        rows = []
        n = reps[0].shape[0]
        for w in request.weights.T:
            idx = torch.repeat_interleave(torch.arange(n, device=w.device), w.long()).to(reps[0].device)
            rows.append(torch.tensor([_fn(metric, reps[r][idx], reps[s][idx]) for r, s in pairs],
                                     dtype=torch.float64))
            done += 1
            if request.progress:
                request.progress(done / steps)
        boot = torch.stack(rows)
    if request.perms is not None:
        rows = []
        for perm in request.perms:
            perm = perm.to(reps[0].device)
            rows.append(torch.tensor([_fn(metric, reps[r], reps[s][perm]) for r, s in pairs], dtype=torch.float64))
            done += 1
            if request.progress:
                request.progress(done / steps)
        null = torch.stack(rows)
    return BatchResult(values=values, boot=boot, null=null)


def subsample_draws(metric: MetricSpec, reps: Sequence[torch.Tensor], pairs: torch.Tensor, idx: torch.Tensor,
                    path: str, max_bytes: int, progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """``(B, Q)``: the metric on every half-sample ``idx[b]`` (its rows only, so no sample twice), through
    ``batched`` (values only) on the ``"grid"`` path, else ``fn`` pair by pair."""
    rows = []
    plist = pairs.tolist()
    for b, keep in enumerate(idx):
        keep = keep.to(reps[0].device)
        sub = [r[keep] for r in reps]
        if path == "grid":
            assert metric.batched is not None  # the "grid" path is the batched one
            vals = metric.batched(sub, BatchRequest(pairs=pairs, max_bytes=max_bytes)).values
            rows.append(torch.as_tensor(vals, dtype=torch.float64).cpu())
        else:
            rows.append(torch.tensor([_fn(metric, sub[r], sub[s]) for r, s in plist], dtype=torch.float64))
        if progress:
            progress((b + 1) / len(idx))
    return torch.stack(rows)


def default_budget(device: torch.device) -> int:
    """Bytes for temporaries: a third of the GPU's memory, or 2 GiB on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory // 3)
    return 2 << 30


def ci_kind(metric: MetricSpec) -> str:
    """The kind of interval ``metric`` gets (a key of :data:`wsbench.specs.CI_KINDS`)."""
    return metric.interval


def evaluate(metric: MetricSpec, reps: Sequence, pairs: Sequence[tuple[int, int]], resamples: int = 1000,
             permutations_: int = 100, seed: int = 0, device: str | torch.device = "cpu",
             max_bytes: int | None = None, progress: Callable[[float], None] | None = None,
             use_batched: bool = True, names: Sequence[str] | None = None) -> dict:
    """Values, 95 % intervals, null levels and calibrated values of ``metric`` for ``pairs`` of ``reps``.

    ``reps``: M arrays ``(n, d_i)`` over the same samples. The interval is ``metric.interval``
    (:data:`wsbench.specs.CI_KINDS`). A degenerate representation (:func:`degenerate`) is
    left out of the computation, named in a warning (by ``names[i]`` when given), and every pair
    holding it gets NaN with a ``reason``; no other pair changes. Returns numpy arrays (Q,):
    ``value``, ``ci_low``, ``ci_high``, ``null_mean``, ``null_high``, ``calibrated`` (NaN when not
    asked or undefined), ``in_interval`` (1.0 / 0.0, NaN without an interval) and ``reason`` (a list,
    None where the value is a number), plus ``ci_kind`` (None without resamples), ``degenerate``
    ({index: why}), ``path`` ("grid" or "fn") and ``seconds``.
    """
    if resamples < 0 or permutations_ < 0:
        raise WsbenchError(f"resamples ({resamples}) and permutations ({permutations_}) must be >= 0")
    device = torch.device(device)
    mats = [(r if isinstance(r, torch.Tensor) else torch.from_numpy(np.array(r, dtype=np.float64)))
            .to(device, torch.float64) for r in reps]
    n = mats[0].shape[0]
    if any(m.shape[0] != n for m in mats):
        raise WsbenchError("representations of one grid must share their samples (same n); align them first")
    label = (lambda i: names[i]) if names is not None else (lambda i: f"representation {i}")
    bad = {i: why for i, m in enumerate(mats) if (why := degenerate(m)) is not None}
    for i, why in bad.items():
        warnings.warn(f"{metric.name}: {label(i)} is {why}; its pairs are NaN", stacklevel=2)
    pairs_arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    q = len(pairs_arr)
    ok = np.array([int(r) not in bad and int(s) not in bad for r, s in pairs_arr], dtype=bool)
    # Only the usable representations reach the metric, renumbered.
    used = sorted({int(i) for i in pairs_arr[ok].reshape(-1)})
    pos = {i: k for k, i in enumerate(used)}
    sub_mats = [mats[i] for i in used]
    sub_pairs = np.array([[pos[int(r)], pos[int(s)]] for r, s in pairs_arr[ok]], dtype=np.int64).reshape(-1, 2)
    kind = ci_kind(metric) if resamples else None
    started = time.perf_counter()
    path = "grid" if (use_batched and metric.batched is not None) else "fn"
    cols = {k: np.full(q, np.nan) for k in ("value", "ci_low", "ci_high", "null_mean", "null_high")}
    boot_all = None
    if len(sub_pairs):
        res, path, boot = _evaluate_usable(metric, sub_mats, sub_pairs, resamples, permutations_, seed, device,
                                           max_bytes, progress, path)
        vals = res.values.double().cpu().numpy()
        cols["value"][ok] = vals
        if boot is not None:
            b = boot.double().cpu().numpy()
            lo, hi = (percentile_interval(b) if kind in BOOTSTRAP_KINDS
                      else half_sample_interval(vals, b, n, corrected=kind == "half-sample"))
            cols["ci_low"][ok], cols["ci_high"][ok] = lo, hi
            boot_all = np.full((b.shape[0], q), np.nan)
            boot_all[:, ok] = b
        if res.null is not None:
            cols["null_mean"][ok], cols["null_high"][ok] = null_levels(res.null.double().cpu().numpy())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    value = cols["value"]
    undefined = ~np.isfinite(value)
    for k in ("ci_low", "ci_high", "null_mean", "null_high"):  # no interval or null around a missing value
        cols[k][undefined] = np.nan
    calibrate = metric.calibrate or null_calibrated
    calibrated = np.asarray(calibrate(value, cols["null_mean"]), dtype=np.float64)
    has_ci = np.isfinite(cols["ci_low"]) & np.isfinite(cols["ci_high"])
    tol = CHECK_TOLERANCE * np.maximum(1.0, np.abs(np.nan_to_num(value)))
    with np.errstate(invalid="ignore"):
        inside = (value >= cols["ci_low"] - tol) & (value <= cols["ci_high"] + tol)
    reason: list[str | None] = []
    for (r, s), good, v in zip(pairs_arr, ok, value):
        if not good:
            parts = [f"{label(int(i))} is {bad[int(i)]}" for i in dict.fromkeys((int(r), int(s))) if int(i) in bad]
            reason.append("; ".join(parts))
        elif not np.isfinite(v):
            reason.append(f"{metric.name} is undefined here (it returned {v})")
        else:
            reason.append(None)
    out = {**cols, "calibrated": calibrated, "in_interval": np.where(has_ci, inside.astype(float), np.nan),
           "reason": reason, "ci_kind": kind, "degenerate": bad, "path": path,
           "seconds": time.perf_counter() - started, "n": n}
    if boot_all is not None:
        out["boot"] = boot_all
    return out


def _evaluate_usable(metric, mats, pairs, resamples, permutations_, seed, device, max_bytes, progress, path):
    """The metric's values, resample draws and null on representations that are not degenerate."""
    n = mats[0].shape[0]
    bootstrap = metric.interval in BOOTSTRAP_KINDS
    split = 0.3 if (resamples and not bootstrap) else 1.0  # progress share of the first stage

    def first(frac):
        if progress:
            progress(split * frac)

    request = BatchRequest(
        pairs=torch.as_tensor(pairs, device=device),
        weights=bootstrap_weights(n, resamples, seed).to(device) if (resamples and bootstrap) else None,
        perms=permutations(n, permutations_, seed).to(device) if permutations_ else None,
        max_bytes=int(max_bytes or default_budget(device)), progress=first)
    res = None
    if path == "grid":
        try:
            res = metric.batched(mats, request)
        except Exception as exc:  # one bad batch must not lose every pair: fall back to fn, pair by pair
            warnings.warn(f"{metric.name}: the batched path failed ({type(exc).__name__}: {exc}); "
                          "computing pair by pair with fn", stacklevel=3)
            path = "fn"
    if res is None:
        res = slow_batched(metric, mats, request)
    boot = res.boot if bootstrap else None
    if resamples and not bootstrap:
        def second(frac):
            if progress:
                progress(split + (1 - split) * frac)
        boot = subsample_draws(metric, mats, request.pairs, subsamples(n, resamples, seed), path,
                               request.max_bytes, second)
    return res, path, boot


# Sanity checks --------------------------------------------------------------------------------

def _random_orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


TRANSFORMS = {
    "orthogonal": lambda x, gen: x @ _random_orthogonal(x.shape[1], gen).to(x),
    "isotropic-scaling": lambda x, gen: 3.7 * x,
    "translation": lambda x, gen: x + 10.0 * torch.randn(1, x.shape[1], generator=gen, dtype=torch.float64).to(x),
}


def _cpu64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64)
    return torch.from_numpy(np.array(x, dtype=np.float64))


def invariance_checks(metric: MetricSpec, reps: Sequence, pairs: Sequence[tuple[int, int]],
                      batched_values: np.ndarray | None = None, seed: int = 0,
                      samples: int = CHECK_SAMPLES) -> dict:
    """Largest change of ``fn`` under each claimed invariance, on ``pairs`` of ``reps``.

    Each transform is applied to the first representation of a pair, on up to ``samples``
    evenly spaced samples. With ``batched_values`` (one per pair), also the largest
    |batched - fn| at full n (stored as ``grid_vs_fn``): the batched path must agree with the reference.
    """
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    out: dict = {}
    for name in metric.invariances:
        if name not in TRANSFORMS:
            out[name] = None  # a claim wsbench has no check for: recorded, not judged
            continue
        worst = 0.0
        for r, s in pairs:
            x, y = (_cpu64(reps[i]) for i in (r, s))
            if x.shape[0] > samples:
                keep = torch.linspace(0, x.shape[0] - 1, samples).round().long()
                x, y = x[keep], y[keep]
            base = _fn(metric, x, y)
            moved = _fn(metric, TRANSFORMS[name](x, gen), y)
            dev = abs(moved - base) if not (math.isnan(base) and math.isnan(moved)) else 0.0
            worst = max(worst, dev) if not math.isnan(dev) else float("nan")
        out[name] = worst
    if batched_values is not None:
        worst = 0.0
        for (r, s), v in zip(pairs, batched_values):
            ref = _fn(metric, _cpu64(reps[r]), _cpu64(reps[s]))
            if not (math.isnan(ref) and math.isnan(v)):
                worst = max(worst, abs(ref - float(v))) if not math.isnan(ref - v) else float("nan")
        out["grid_vs_fn"] = worst
    return out


def _passes(x) -> bool:
    return x is None or (not math.isnan(x) and x <= CHECK_TOLERANCE)


# Jobs over the store --------------------------------------------------------------------------

def _stored_matches(path, resamples: int, permutations_: int, seed: int, metric: MetricSpec) -> bool:
    """Whether the file at ``path`` holds this job's rows: same resamples, permutations, seed, interval
    kind and :data:`INTERVALS_VERSION` (files written before intervals were versioned are recomputed)."""
    if not path.exists():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return False
    want = {b"resamples": str(resamples).encode(), b"permutations": str(permutations_).encode(),
            b"stats_seed": str(seed).encode(), b"intervals": INTERVALS_VERSION.encode(),
            b"ci_kind": str(ci_kind(metric) if resamples else None).encode()}
    return all(meta.get(k) == v for k, v in want.items())


def _blocks(runs: list[dict], reps_of) -> list[tuple[list[dict], np.ndarray]]:
    """Groups of runs sharing their sample ids: ``(runs, ids)``."""
    groups: dict = {}
    for r in runs:
        ids, _ = reps_of(r)
        groups.setdefault(hashlib.sha1(np.ascontiguousarray(ids).tobytes()).hexdigest(), []).append(r)
    return [(g, reps_of(g[0])[0]) for g in groups.values()]


def compute(store: Store, metrics: Iterable[MetricSpec], datasets: Iterable[str] | None = None,
            device: str = "cpu", recompute: bool = False,
            progress: Callable[[float, float], None] | None = None, resamples: int = 1000,
            permutations: int = 100, seed: int = 0, max_bytes: int | None = None) -> dict:
    """Compute and store every missing (run pair, metric) with intervals, null levels and checks.

    A stored pair counts as done when its file was written with the same ``resamples``,
    ``permutations`` and ``seed``. A run whose representations cannot be read is reported (a
    :class:`~wsbench.errors.DamagedFileWarning`, an error under ``--strict``) and left out; the other
    pairs are computed. Returns counts, seconds, the job summaries and ``skipped_runs``.
    """
    metrics = list(metrics)
    runs = store.finished_runs()
    wanted = set(datasets) if datasets else {r["dataset"] for r in runs}
    cache: dict = {}
    unreadable: set[str] = set()  # runs whose representations could not be read: left out, with a warning

    def reps_of(r):
        if r["run_id"] not in cache:
            cache[r["run_id"]] = store.representations(r["dataset"], r["arch"], r["run_id"])
        return cache[r["run_id"]]

    def readable(r) -> bool:
        """Whether a run's representations can be read; a damaged file is reported once and its run
        left out, so every other pair is still computed."""
        if r["run_id"] in unreadable:
            return False
        path = store.path("representations", r["run_id"], dataset=r["dataset"], arch=r["arch"])
        if r["run_id"] not in cache:
            if not store.usable(path, "representations"):
                unreadable.add(r["run_id"])
                return False
            try:
                reps_of(r)
            except Exception as exc:  # sound footer, damaged data
                store.report(path, "representations", f"its data is damaged ({type(exc).__name__}: {exc})")
                unreadable.add(r["run_id"])
                return False
        return True

    jobs = []
    for ds in sorted(wanted):
        ds_runs = [r for r in runs if r["dataset"] == ds]
        for m in metrics:
            missing = [(a, b) for a, b in run_pairs(ds_runs)
                       if recompute or not _stored_matches(
                           store.path("similarity", pair_key(a["run_id"], b["run_id"], m), dataset=ds, metric=m.name),
                           resamples, permutations, seed, m)]
            if missing:
                jobs.append((ds, m, missing))
    started = time.perf_counter()
    summaries: list[dict] = []
    written = 0
    total = float(len(jobs))
    for j, (ds, m, missing) in enumerate(jobs):
        involved = {r["run_id"]: r for ab in missing for r in ab}
        involved = {k: r for k, r in involved.items() if readable(r)}
        missing = [(a, b) for a, b in missing if a["run_id"] in involved and b["run_id"] in involved]
        if not missing:
            cache.clear()
            continue
        blocks = _blocks(sorted(involved.values(), key=lambda r: (r["arch"], r["seed"], r["run_id"])), reps_of)
        todo = []  # (runs of the grid, ids, run pairs wanted in it)
        for (ga, ids_a), (gb, ids_b) in itertools.combinations_with_replacement(blocks, 2):
            ida, idb = {r["run_id"] for r in ga}, {r["run_id"] for r in gb}
            pairs = [(a, b) for a, b in missing if (a["run_id"] in ida and b["run_id"] in idb)
                     or (a["run_id"] in idb and b["run_id"] in ida)]
            if ga is gb:
                pairs = [(a, b) for a, b in pairs if a["run_id"] in ida and b["run_id"] in ida]
            if pairs:
                grid_runs = ga if ga is gb else ga + gb
                todo.append((grid_runs, np.intersect1d(ids_a, ids_b), pairs))
        for t, (grid_runs, ids, pairs) in enumerate(todo):
            def tick(frac, _t=t, _j=j, _n=len(todo)):
                if progress is not None:
                    progress(_j + (_t + frac) / _n, total)
            written += _run_job(store, ds, m, grid_runs, ids, pairs, reps_of, device, resamples, permutations,
                                seed, max_bytes, tick, summaries)
        cache.clear()
        if progress is not None:
            progress(j + 1, total)
    return {"pairs": written, "seconds": time.perf_counter() - started, "jobs": summaries,
            "skipped_runs": sorted(unreadable)}


def _run_job(store, ds, m, grid_runs, ids, pairs, reps_of, device, resamples, permutations_, seed, max_bytes,
             tick, summaries) -> int:
    reps: list = []
    index: dict = {}
    dims: dict = {}
    names: list = []
    for r in grid_runs:
        rid, layers = reps_of(r)
        pos = np.searchsorted(rid, ids)  # ids are sorted; the common ids sit at these rows
        for li, (name, mat) in enumerate(layers.items()):
            index[(r["run_id"], li)] = len(reps)
            dims[len(reps)] = (name, mat.shape[1])
            names.append(f"{ds}/{r['arch']} run {r['run_id']} layer {name}")
            reps.append(mat[pos])
    layer_pairs, owners = [], []
    for a, b in pairs:
        na, nb = len(reps_of(a)[1]), len(reps_of(b)[1])
        for la in range(na):
            for lb in range(nb):
                layer_pairs.append((index[(a["run_id"], la)], index[(b["run_id"], lb)]))
                owners.append((a, b, la, lb))
    diag = [(i, i) for i in range(len(reps))]
    res = evaluate(m, reps, layer_pairs + diag, resamples, permutations_, seed, device, max_bytes, tick,
                   names=names)
    q = len(layer_pairs)
    bad = res["degenerate"]
    self_dev = np.abs(res["value"][q:] - 1.0)  # NaN for a degenerate representation, which is not judged
    judged = np.array([i not in bad for i in range(len(reps))], dtype=bool)
    usable = [k for k, (r, s) in enumerate(layer_pairs) if r not in bad and s not in bad]
    checked_idx = [usable[0], usable[-1]] if len(usable) > 1 else usable
    checked = [layer_pairs[k] for k in checked_idx]
    inv = invariance_checks(m, reps, checked, res["value"][checked_idx] if res["path"] == "grid" else None, seed)
    inv_claimed = [v for k, v in inv.items() if k != "grid_vs_fn" and v is not None]
    inv_worst = None if not inv_claimed else (float("nan") if any(math.isnan(v) for v in inv_claimed)
                                              else max(inv_claimed))
    in_interval = res["in_interval"][:q]
    judged_dev = self_dev[judged]
    detail = {"self_max": float(np.nanmax(judged_dev)) if np.isfinite(judged_dev).any() else None,
              "self_undefined": int(np.isnan(judged_dev).sum()), **inv, "tolerance": CHECK_TOLERANCE,
              "invariance_pairs": len(checked), "invariance_samples": min(CHECK_SAMPLES, len(ids)),
              "ci_kind": res["ci_kind"], "outside_interval": int((in_interval == 0).sum()),
              "degenerate": {names[i]: why for i, why in sorted(bad.items())},
              "path": res["path"], "seconds": round(res["seconds"], 3)}
    job_ok = all(_passes(v) for k, v in inv.items())
    summaries.append({"dataset": ds, "metric": m.name, "runs": len(grid_runs), "representations": len(reps),
                      "pairs": q, "n": len(ids), **detail,
                      "passed": bool(job_ok and np.all(judged_dev <= CHECK_TOLERANCE)
                                     and not (in_interval == 0).any())})
    checks_json = json.dumps(detail, sort_keys=True)
    rows_by_pair: dict = {}
    fin = lambda x: None if x is None or not np.isfinite(x) else float(x)  # noqa: E731
    for k, (a, b, la, lb) in enumerate(owners):
        ra, rb = layer_pairs[k]
        na_, da = dims[ra]
        nb_, db = dims[rb]
        if ra in bad or rb in bad:  # nothing was computed: nothing to check
            cs, inside, passed = None, None, False
        else:
            # Symmetric in the two sides: undefined (NaN) on either side fails, whichever side it is.
            pair_dev = (float(self_dev[ra]), float(self_dev[rb]))
            cs = float("nan") if any(math.isnan(x) for x in pair_dev) else max(pair_dev)
            inside = None if math.isnan(in_interval[k]) else bool(in_interval[k])
            passed = bool(job_ok and not math.isnan(cs) and cs <= CHECK_TOLERANCE and inside is not False
                          and math.isfinite(res["value"][k]))
        rows_by_pair.setdefault((a["run_id"], b["run_id"]), (a, b, []))[2].append({
            "run_a": a["run_id"], "run_b": b["run_id"], "arch_a": a["arch"], "arch_b": b["arch"],
            "seed_a": int(a["seed"]), "seed_b": int(b["seed"]), "layer_a": na_, "layer_b": nb_,
            "layer_index_a": la, "layer_index_b": lb, "value": float(res["value"][k]), "n": len(ids),
            "d_a": int(da), "d_b": int(db), "estimator": m.estimator, "higher_is_better": m.higher_is_better,
            "ci_low": fin(res["ci_low"][k]), "ci_high": fin(res["ci_high"][k]),
            "null_mean": fin(res["null_mean"][k]), "null_high": fin(res["null_high"][k]),
            "resamples": int(resamples), "permutations": int(permutations_),
            "check_self": None if cs is None or math.isnan(cs) else cs, "check_invariance": fin(inv_worst),
            "checks_passed": passed, "checks": checks_json,
            "ci_kind": res["ci_kind"] if fin(res["ci_low"][k]) is not None else None,
            "calibrated": fin(res["calibrated"][k]), "check_interval": inside, "reason": res["reason"][k],
            "schema_version": SCHEMA_VERSION})
    meta = {"resamples": str(resamples), "permutations": str(permutations_), "stats_seed": str(seed),
            "intervals": INTERVALS_VERSION, "ci_kind": str(res["ci_kind"])}
    for (ra, rb), (_, _, rows) in rows_by_pair.items():
        table = pa.Table.from_pylist(rows, schema=SIMILARITY_SCHEMA.with_metadata(meta))
        store.write("similarity", pair_key(ra, rb, m), table, dataset=ds, metric=m.name)
    return len(rows_by_pair)
