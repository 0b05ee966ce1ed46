"""Similarity between stored runs: every pair of runs of a dataset times every pair of layers.

A job is one (dataset, metric) over the runs that share one set of test sample ids
(runs with different ids are compared on their common ids, group against group).
Each job computes, for every wanted pair of representations:

- the value, through the metric's ``batched`` path when it has one (float64,
  chunked to a memory budget, on the GPU when asked), else ``fn`` pair by pair;
- a paired bootstrap over samples: the same ``resamples`` count vectors for every
  pair (seeded by ``seed`` and n), 95 % percentile interval -> ``ci_low``, ``ci_high``;
- a permutation baseline: ``permutations`` shuffles of the sample correspondence
  -> ``null_mean`` and ``null_high`` (95th percentile);
- sanity checks, stored on every row: ``check_self`` (largest |self-similarity - 1|
  of the row's two representations), ``check_invariance`` (largest change of the
  value under the invariances the metric claims, on up to two pairs of the job),
  ``checks_passed`` and ``checks`` (JSON with every check of the job).
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
from wsbench.specs import BatchRequest, BatchResult, MetricSpec
from wsbench.store import Store
from wsbench.tables import SCHEMA_VERSION, SIMILARITY_SCHEMA

CHECK_TOLERANCE = 1e-6  # self-similarity, invariance and batched-vs-fn deviations above this fail
CHECK_SAMPLES = 512  # invariance checks run fn on this many samples (evenly spaced)
CI_LEVEL = 0.95
NULL_QUANTILE = 0.95


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


def null_levels(null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``null`` (P, Q): mean and 95th percentile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(null, axis=0), np.nanpercentile(null, 100 * NULL_QUANTILE, axis=0)


# Computing a grid -----------------------------------------------------------------------------

def slow_batched(metric: MetricSpec, reps: Sequence[torch.Tensor], request: BatchRequest) -> BatchResult:
    """The path for a metric with only ``fn(x, y)``: pair by pair, resample by resample."""
    pairs = request.pairs.tolist()
    values = torch.tensor([metric.fn(reps[r], reps[s]) for r, s in pairs], dtype=torch.float64)
    steps = 1 + (request.weights.shape[1] if request.weights is not None else 0) \
        + (len(request.perms) if request.perms is not None else 0)
    done = 1
    boot = null = None
    if request.weights is not None:
        rows = []
        n = reps[0].shape[0]
        for w in request.weights.T:
            idx = torch.repeat_interleave(torch.arange(n, device=w.device), w.long()).to(reps[0].device)
            rows.append(torch.tensor([metric.fn(reps[r][idx], reps[s][idx]) for r, s in pairs], dtype=torch.float64))
            done += 1
            if request.progress:
                request.progress(done / steps)
        boot = torch.stack(rows)
    if request.perms is not None:
        rows = []
        for perm in request.perms:
            perm = perm.to(reps[0].device)
            rows.append(torch.tensor([metric.fn(reps[r], reps[s][perm]) for r, s in pairs], dtype=torch.float64))
            done += 1
            if request.progress:
                request.progress(done / steps)
        null = torch.stack(rows)
    return BatchResult(values=values, boot=boot, null=null)


def default_budget(device: torch.device) -> int:
    """Bytes for temporaries: a third of the GPU's memory, or 2 GiB on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory // 3)
    return 2 << 30


def evaluate(metric: MetricSpec, reps: Sequence, pairs: Sequence[tuple[int, int]], resamples: int = 1000,
             permutations_: int = 100, seed: int = 0, device: str | torch.device = "cpu",
             max_bytes: int | None = None, progress: Callable[[float], None] | None = None,
             use_batched: bool = True) -> dict:
    """Values, bootstrap intervals and null levels of ``metric`` for ``pairs`` of ``reps``.

    ``reps``: M arrays ``(n, d_i)`` over the same samples. Returns numpy arrays (Q,):
    ``value``, ``ci_low``, ``ci_high``, ``null_mean``, ``null_high`` (NaN when not asked),
    plus ``path`` ("grid" or "fn") and ``seconds``.
    """
    if resamples < 0 or permutations_ < 0:
        raise WsbenchError(f"resamples ({resamples}) and permutations ({permutations_}) must be >= 0")
    device = torch.device(device)
    mats = [(r if isinstance(r, torch.Tensor) else torch.from_numpy(np.array(r, dtype=np.float64)))
            .to(device, torch.float64) for r in reps]
    n = mats[0].shape[0]
    if any(m.shape[0] != n for m in mats):
        raise WsbenchError("representations of one grid must share their samples (same n); align them first")
    request = BatchRequest(
        pairs=torch.as_tensor(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), device=device),
        weights=bootstrap_weights(n, resamples, seed).to(device) if resamples else None,
        perms=permutations(n, permutations_, seed).to(device) if permutations_ else None,
        max_bytes=int(max_bytes or default_budget(device)), progress=progress)
    started = time.perf_counter()
    # "grid" is the name the stored checks give the batched path.
    batched = metric.batched if use_batched else None
    path = "grid" if batched is not None else "fn"
    res = batched(mats, request) if batched is not None else slow_batched(metric, mats, request)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    q = len(request.pairs)
    out = {"value": res.values.double().cpu().numpy(), "path": path, "seconds": time.perf_counter() - started,
           "n": n}
    nan = np.full(q, np.nan)
    if res.boot is not None:
        out["ci_low"], out["ci_high"] = percentile_interval(res.boot.double().cpu().numpy())
        out["boot"] = res.boot
    else:
        out["ci_low"], out["ci_high"] = nan, nan.copy()
    if res.null is not None:
        out["null_mean"], out["null_high"] = null_levels(res.null.double().cpu().numpy())
    else:
        out["null_mean"], out["null_high"] = nan.copy(), nan.copy()
    return out


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
            base = metric.fn(x, y)
            moved = metric.fn(TRANSFORMS[name](x, gen), y)
            dev = abs(moved - base) if not (math.isnan(base) and math.isnan(moved)) else 0.0
            worst = max(worst, dev) if not math.isnan(dev) else float("nan")
        out[name] = worst
    if batched_values is not None:
        worst = 0.0
        for (r, s), v in zip(pairs, batched_values):
            ref = metric.fn(_cpu64(reps[r]), _cpu64(reps[s]))
            if not (math.isnan(ref) and math.isnan(v)):
                worst = max(worst, abs(ref - float(v))) if not math.isnan(ref - v) else float("nan")
        out["grid_vs_fn"] = worst
    return out


def _passes(x) -> bool:
    return x is None or (not math.isnan(x) and x <= CHECK_TOLERANCE)


# Jobs over the store --------------------------------------------------------------------------

def _stored_matches(path, resamples: int, permutations_: int, seed: int) -> bool:
    if not path.exists():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return False
    want = {b"resamples": str(resamples).encode(), b"permutations": str(permutations_).encode(),
            b"stats_seed": str(seed).encode()}
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
                           resamples, permutations, seed)]
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
    reps: list[np.ndarray] = []
    index: dict[tuple[str, int], int] = {}
    dims: dict[int, tuple[str, int]] = {}
    for r in grid_runs:
        rid, layers = reps_of(r)
        pos = np.searchsorted(rid, ids)  # ids are sorted; the common ids sit at these rows
        for li, (name, mat) in enumerate(layers.items()):
            index[(r["run_id"], li)] = len(reps)
            dims[len(reps)] = (name, mat.shape[1])
            reps.append(mat[pos])
    layer_pairs, owners = [], []
    for a, b in pairs:
        na, nb = len(reps_of(a)[1]), len(reps_of(b)[1])
        for la in range(na):
            for lb in range(nb):
                layer_pairs.append((index[(a["run_id"], la)], index[(b["run_id"], lb)]))
                owners.append((a, b, la, lb))
    diag = [(i, i) for i in range(len(reps))]
    res = evaluate(m, reps, layer_pairs + diag, resamples, permutations_, seed, device, max_bytes, tick)
    q = len(layer_pairs)
    self_dev = np.abs(res["value"][q:] - 1.0)
    checked = [layer_pairs[0], layer_pairs[-1]] if q > 1 else layer_pairs
    inv = invariance_checks(m, reps, checked, res["value"][[0, q - 1]] if res["path"] == "grid" else None, seed)
    inv_claimed = [v for k, v in inv.items() if k != "grid_vs_fn" and v is not None]
    inv_worst = None if not inv_claimed else (float("nan") if any(math.isnan(v) for v in inv_claimed)
                                              else max(inv_claimed))
    detail = {"self_max": float(np.nanmax(self_dev)) if np.isfinite(self_dev).any() else None,
              "self_undefined": int(np.isnan(self_dev).sum()), **inv, "tolerance": CHECK_TOLERANCE,
              "invariance_pairs": len(checked), "invariance_samples": min(CHECK_SAMPLES, len(ids)),
              "path": res["path"], "seconds": round(res["seconds"], 3)}
    job_ok = all(_passes(v) for k, v in inv.items())
    summaries.append({"dataset": ds, "metric": m.name, "runs": len(grid_runs), "representations": len(reps),
                      "pairs": q, "n": len(ids), **detail,
                      "passed": bool(job_ok and np.all(self_dev <= CHECK_TOLERANCE))})
    checks_json = json.dumps(detail, sort_keys=True)
    rows_by_pair: dict = {}
    for k, (a, b, la, lb) in enumerate(owners):
        ra, rb = layer_pairs[k]
        cs = float(max(self_dev[ra], self_dev[rb]))
        na_, da = dims[ra]
        nb_, db = dims[rb]
        fin = lambda x: None if x is None or not np.isfinite(x) else float(x)  # noqa: E731
        rows_by_pair.setdefault((a["run_id"], b["run_id"]), (a, b, []))[2].append({
            "run_a": a["run_id"], "run_b": b["run_id"], "arch_a": a["arch"], "arch_b": b["arch"],
            "seed_a": int(a["seed"]), "seed_b": int(b["seed"]), "layer_a": na_, "layer_b": nb_,
            "layer_index_a": la, "layer_index_b": lb, "value": float(res["value"][k]), "n": len(ids),
            "d_a": int(da), "d_b": int(db), "estimator": m.estimator, "higher_is_better": m.higher_is_better,
            "ci_low": fin(res["ci_low"][k]), "ci_high": fin(res["ci_high"][k]),
            "null_mean": fin(res["null_mean"][k]), "null_high": fin(res["null_high"][k]),
            "resamples": int(resamples), "permutations": int(permutations_),
            "check_self": None if math.isnan(cs) else cs, "check_invariance": fin(inv_worst),
            "checks_passed": bool(job_ok and cs <= CHECK_TOLERANCE), "checks": checks_json,
            "schema_version": SCHEMA_VERSION})
    meta = {"resamples": str(resamples), "permutations": str(permutations_), "stats_seed": str(seed)}
    for (ra, rb), (_, _, rows) in rows_by_pair.items():
        table = pa.Table.from_pylist(rows, schema=SIMILARITY_SCHEMA.with_metadata(meta))
        store.write("similarity", pair_key(ra, rb, m), table, dataset=ds, metric=m.name)
    return len(rows_by_pair)
