"""Statistics of the leaderboards: exact Student-t quantiles, means with 95 % t-intervals, intervals
of differences, means over pairs of seeds with the seed as the unit, and the hypergeometric tail of
an overlap (how many networks two models split by chance). Pure functions of numbers.

Seed-level intervals (:func:`unit_mean_ci`): a similarity is measured on a *pair* of runs, and the
pairs of 5 seeds share seeds (10 pairs within an architecture, 25 across two), so a t-interval that
counts the pairs as independent is too narrow. The mean over pairs is a U-statistic in the seeds;
its variance comes from the delete-one-seed jackknife (Arvesen 1969, "Jackknifing U-statistics",
Ann. Math. Statist. 40), one group of seeds per architecture, with a t quantile on the
Satterthwaite degrees of freedom (S - 1 for one architecture's S seeds). The interval is over
seeds with the probe samples held fixed; the per-pair bootstrap over samples is reported beside it.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from statistics import NormalDist

import numpy as np

NAN = float("nan")
LEVEL = 0.95


# Student-t quantiles ----------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (DLMF 8.17.22), by the
    modified Lentz method; converges quickly for ``x < (a + 1) / (a + b + 2)``."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail ``P(T > t)`` of Student's t with ``df > 0`` degrees of freedom (fractional allowed)."""
    if t < 0:
        return 1.0 - t_sf(-t, df)
    if math.isinf(df):
        return 1.0 - NormalDist().cdf(t)
    return 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom (any real df; ``inf``
    gives the normal quantile). Solved by bisection on the upper tail to ~1e-13, so it is exact for
    every df a leaderboard meets, with no normal fallback. NaN for df <= 0 or NaN."""
    if not (0.0 < p < 1.0) or math.isnan(df) or df <= 0:
        return NAN
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if math.isinf(df) or df > 1e12:
        return NormalDist().inv_cdf(p)
    tail = 1.0 - p
    lo, hi = 0.0, max(2.0, NormalDist().inv_cdf(p))
    while t_sf(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def t95(df: float) -> float:
    """Two-sided 95 % t critical value ``t_{0.975, df}``, exact for every (fractional) df."""
    return t_quantile(0.5 + LEVEL / 2, df)


# Means and differences --------------------------------------------------------------------------

def mean_ci(values: Iterable[float]) -> tuple[float, float, float, float]:
    """``(mean, std, ci_low, ci_high)``: sample std and a 95 % t-interval of the mean of independent values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return NAN, NAN, NAN, NAN
    m = float(v.mean())
    if len(v) < 2:
        return m, NAN, NAN, NAN
    s = float(v.std(ddof=1))
    h = t95(len(v) - 1) * s / math.sqrt(len(v))
    return m, s, m - h, m + h


def diff_ci_se(a_mean: float, a_se: float, a_df: float, b_mean: float, b_se: float,
               b_df: float) -> tuple[float, float, float]:
    """``(b - a, low, high)``: 95 % interval of the difference of two independent estimates, each with
    its standard error and degrees of freedom; Satterthwaite's df (Welch's when ``se = s / sqrt(n)``
    and ``df = n - 1``). NaN bounds when either has no standard error."""
    d = b_mean - a_mean
    if any(is_missing(x) for x in (a_se, b_se, a_df, b_df)) or a_df <= 0 or b_df <= 0:
        return d, NAN, NAN
    va, vb = a_se ** 2, b_se ** 2
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / ((va ** 2 / a_df) + (vb ** 2 / b_df))
    h = t95(df) * se
    return d, d - h, d + h


def diff_ci(a_mean: float, a_std: float, a_n: int, b_mean: float, b_std: float, b_n: int) -> tuple[float, float, float]:
    """``(b - a, low, high)``: Welch 95 % interval of the difference of two means (NaN with < 2 each)."""
    if a_n < 2 or b_n < 2 or is_missing(a_std) or is_missing(b_std):
        return b_mean - a_mean, NAN, NAN
    return diff_ci_se(a_mean, a_std / math.sqrt(a_n), a_n - 1, b_mean, b_std / math.sqrt(b_n), b_n - 1)


def unit_mean_ci(values: Sequence[float], units: Sequence[Iterable[tuple[Hashable, Hashable]]],
                 level: float = LEVEL) -> dict:
    """The mean of ``values`` with an interval in which the *unit* (a seed, i.e. a run) is what varies.

    ``units[i]`` names the units value ``i`` depends on, each as ``(group, id)``: the two runs of a
    run pair, grouped by architecture (``{("gmn", run_0), ("gmn", run_3)}`` within one architecture,
    ``{("cnn", run_1), ("gmn", run_2)}`` across two). The standard error is the grouped delete-one-unit
    jackknife: ``sum_g (S_g - 1) / S_g * sum_{u in g} (mean_without_u - mean over g's deletions)^2``,
    and the interval uses a t quantile on Satterthwaite's df from the groups' ``S_g - 1``. Values that
    share a unit are therefore not counted as independent. NaN bounds when deleting a unit leaves no
    value (e.g. one run pair) or a group has one unit.

    Returns ``{"mean", "se", "ci_low", "ci_high", "df", "units"}`` (``units``: how many units).
    """
    v = np.asarray(values, dtype=np.float64)
    sets = [frozenset(u) for u in units]
    out = {"mean": float(v.mean()) if len(v) else NAN, "se": NAN, "ci_low": NAN, "ci_high": NAN, "df": NAN,
           "units": len(set().union(*sets)) if sets else 0}
    if len(v) < 2:
        return out
    groups: dict = defaultdict(list)
    for u in sorted(set().union(*sets), key=lambda u: tuple(str(x) for x in u)):
        groups[u[0]].append(u)
    var_parts, dfs = [], []
    for members in groups.values():
        s = len(members)
        if s < 2:
            return out
        loo = []
        for u in members:
            keep = np.array([u not in su for su in sets])
            if not keep.any():
                return out
            loo.append(float(v[keep].mean()))
        a = np.asarray(loo)
        var_parts.append((s - 1) / s * float(((a - a.mean()) ** 2).sum()))
        dfs.append(s - 1)
    var = sum(var_parts)
    den = sum(p * p / d for p, d in zip(var_parts, dfs))
    df = var * var / den if den > 0 else float(min(dfs))
    se = math.sqrt(var)
    h = t_quantile(0.5 + level / 2, df) * se
    out.update(se=se, df=df, ci_low=out["mean"] - h, ci_high=out["mean"] + h)
    return out


def hypergeom_sf(k: int, n: int, marked: int, drawn: int) -> float:
    """``P(X >= k)`` for ``X`` the overlap of two sets of sizes ``marked`` and ``drawn`` among ``n``
    items when one set is placed at random (hypergeometric; mean ``marked * drawn / n``): the chance
    that at least ``k`` items fall in both, e.g. networks that one model predicts well and the other
    badly, were the two independent of which network is which. Summed in log space (``lgamma``)."""
    if not (0 <= marked <= n and 0 <= drawn <= n):
        raise ValueError(f"hypergeom_sf: sets of {marked} and {drawn} among {n}")
    lo, hi = max(0, marked + drawn - n), min(marked, drawn)
    if k <= lo:
        return 1.0
    if k > hi:
        return 0.0

    def lcomb(a: int, b: int) -> float:
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)

    total = lcomb(n, drawn)
    return min(1.0, sum(math.exp(lcomb(marked, x) + lcomb(n - marked, drawn - x) - total) for x in range(k, hi + 1)))


def nanmean(values: Iterable[float | None]) -> float:
    """Mean of the values that are present (None and NaN skipped); NaN when none is."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else NAN


def is_missing(x: object) -> bool:
    """Whether a table cell holds no number: None or NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))
