"""Helpers of the findings scripts (``scripts/*_findings.py``): the numbers behind a study's claims,
from its exported tables alone. Pure functions of table rows.

  seed_pairs / cross_seed / cross_seed_stats   cross-seed same-layer similarity of one architecture,
                                               with the seed-level interval of :func:`unit_mean_ci`
  best_pair                                    the most similar layer pair, with a selection-aware
                                               (Bonferroni) interval for the largest mean
  verdict                                      "holds" / "does not hold" / "inconclusive" from an interval
  fmt_ci                                       ``mean [low, high]`` as the findings pages print it
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from wsbench.reporting.board import clip_interval
from wsbench.reporting.stats import is_missing, t_quantile, unit_mean_ci

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"


def fmt_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``mean [low, high]`` with ``digits`` decimals (``nan`` where a bound is missing)."""
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def seed_pairs(sim: list[dict], ds: str, metric: str, arch: str) -> dict[tuple[str, str], list[float]]:
    """Per seed pair (its two run ids, sorted): the same-layer values of ``arch`` on ``ds``."""
    pairs = defaultdict(list)
    for r in sim:
        if (r["dataset"], r["metric"], r["arch_a"], r["arch_b"]) == (ds, metric, arch, arch) \
                and r["seed_a"] != r["seed_b"] and r["layer_a"] == r["layer_b"] and not is_missing(r["value"]):
            pairs[tuple(sorted((r["run_a"], r["run_b"])))].append(float(r["value"]))
    return pairs


def cross_seed(sim: list[dict], ds: str, metric: str, arch: str) -> list[float]:
    """Per seed pair: the mean over layers of the same-layer similarity."""
    return [float(np.mean(v)) for v in seed_pairs(sim, ds, metric, arch).values()]


def cross_seed_stats(sim: list[dict], ds: str, metric: str, arch: str,
                     value_range: tuple[float, float] | None = None) -> dict:
    """Mean over seed pairs of :func:`cross_seed`, with its seed-level interval (runs are the units):
    the dict of :func:`wsbench.reporting.stats.unit_mean_ci`, the interval clipped to ``value_range``
    (the metric's declared range) when given."""
    pairs = seed_pairs(sim, ds, metric, arch)
    values = [float(np.mean(v)) for v in pairs.values()]
    out = unit_mean_ci(values, [((arch, a), (arch, b)) for a, b in pairs])
    out["ci_low"], out["ci_high"] = clip_interval(out["ci_low"], out["ci_high"], value_range)
    return out


def best_pair(cells: list[dict], level: float = 0.95,
              value_range: tuple[float, float] | None = None) -> tuple[dict, float, float]:
    """The layer pair with the largest mean, and a selection-aware interval for the largest mean.

    ``cells``: layer-pair rows with ``mean``, ``se`` and ``df`` (seed-level, as
    :func:`wsbench.reporting.board.layer_pair_rows` gives them). Each of the K cells gets its interval
    at the Bonferroni level ``1 - (1 - level) / K``; with probability >= ``level`` all K cover their
    population means at once, and then the population maximum lies in
    ``[max_k low_k, max_k high_k]``, whichever pair attains it, clipped to ``value_range`` when given.
    NaN bounds when a cell has no interval.
    """
    best = max(cells, key=lambda r: r["mean"])
    k = len(cells)
    lows, highs = [], []
    for r in cells:
        h = t_quantile(1 - (1 - level) / (2 * k), r["df"]) * r["se"]
        if not math.isfinite(h):
            return best, float("nan"), float("nan")
        lows.append(r["mean"] - h)
        highs.append(r["mean"] + h)
    low, high = clip_interval(max(lows), max(highs), value_range)
    return best, low, high


def verdict(low: float, high: float) -> str:
    """From an interval of a difference whose sign the claim predicts to be negative: ``holds`` when
    it lies wholly below 0, ``does not hold`` wholly above 0, else (or without an interval)
    ``inconclusive``."""
    if is_missing(low) or is_missing(high):
        return UNSURE
    return HOLDS if high < 0 else FAILS if low > 0 else UNSURE
