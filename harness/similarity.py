"""Similarity between stored runs: every pair of runs of a dataset times every pair of layers."""
from __future__ import annotations

import hashlib
import itertools
import time
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import torch

from wsbench.specs import MetricSpec
from wsbench.store import Store


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
    """Layer x layer values of one metric, float64 throughout."""
    rows = []
    mats_a = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in reps_a.items()}
    mats_b = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in reps_b.items()}
    for (ia, (la, xa)), (ib, (lb, xb)) in itertools.product(enumerate(mats_a.items()), enumerate(mats_b.items())):
        rows.append({"layer_a": la, "layer_index_a": ia, "layer_b": lb, "layer_index_b": ib,
                     "value": float(metric.fn(xa, xb)), "n": int(xa.shape[0]),
                     "d_a": int(xa.shape[1]), "d_b": int(xb.shape[1])})
    return rows


def compute(store: Store, metrics: Iterable[MetricSpec], datasets: Iterable[str] | None = None,
            device: str = "cpu", recompute: bool = False,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """Compute and store every missing (run pair, metric); returns counts."""
    runs = store.finished_runs()
    wanted = set(datasets) if datasets else {r["dataset"] for r in runs}
    jobs = []
    for ds in sorted(wanted):
        for a, b in run_pairs([r for r in runs if r["dataset"] == ds]):
            for m in metrics:
                if recompute or not store.path("similarity", pair_key(a["run_id"], b["run_id"], m),
                                               dataset=ds, metric=m.name).exists():
                    jobs.append((ds, a, b, m))
    cache: dict = {}

    def reps(r):
        if r["run_id"] not in cache:
            cache.clear() if len(cache) > 32 else None
            cache[r["run_id"]] = store.representations(r["dataset"], r["arch"], r["run_id"])
        return cache[r["run_id"]]

    started = time.perf_counter()
    for k, (ds, a, b, m) in enumerate(jobs):
        ids_a, ra = reps(a)
        ids_b, rb = reps(b)
        _, ra, rb = _aligned(ids_a, ra, ids_b, rb)
        rows = compare_runs(m, ra, rb, device=device)
        for row in rows:
            row.update({"run_a": a["run_id"], "run_b": b["run_id"], "arch_a": a["arch"], "arch_b": b["arch"],
                        "seed_a": int(a["seed"]), "seed_b": int(b["seed"]), "estimator": m.estimator,
                        "higher_is_better": m.higher_is_better})
        store.write("similarity", pair_key(a["run_id"], b["run_id"], m), pa.Table.from_pylist(rows),
                    dataset=ds, metric=m.name)
        if progress is not None:
            progress(k + 1, len(jobs))
    return {"pairs": len(jobs), "seconds": time.perf_counter() - started}
