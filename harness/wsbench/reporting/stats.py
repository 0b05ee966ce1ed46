"""Statistics of the leaderboards: means with 95 % Student-t intervals, Welch intervals of
differences, and means that skip missing values. Pure functions of numbers."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

# Two-sided 95 % Student-t critical values by degrees of freedom (1..30); 1.96 beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]
NAN = float("nan")


def t95(df: float) -> float:
    """Two-sided 95 % t critical value; fractional df (Welch) round down, to stay conservative."""
    df = math.floor(df)
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def mean_ci(values: Iterable[float]) -> tuple[float, float, float, float]:
    """``(mean, std, ci_low, ci_high)``: sample std and a 95 % t-interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return NAN, NAN, NAN, NAN
    m = float(v.mean())
    if len(v) < 2:
        return m, NAN, NAN, NAN
    s = float(v.std(ddof=1))
    h = t95(len(v) - 1) * s / math.sqrt(len(v))
    return m, s, m - h, m + h


def diff_ci(a_mean: float, a_std: float, a_n: int, b_mean: float, b_std: float, b_n: int) -> tuple[float, float, float]:
    """``(b - a, low, high)``: Welch 95 % interval of the difference of two means (NaN with < 2 each)."""
    d = b_mean - a_mean
    if a_n < 2 or b_n < 2 or is_missing(a_std) or is_missing(b_std):
        return d, NAN, NAN
    va, vb = a_std ** 2 / a_n, b_std ** 2 / b_n
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / ((va ** 2 / (a_n - 1)) + (vb ** 2 / (b_n - 1)))
    h = t95(df) * se
    return d, d - h, d + h


def nanmean(values: Iterable[float | None]) -> float:
    """Mean of the values that are present (None and NaN skipped); NaN when none is."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else NAN


def is_missing(x: object) -> bool:
    """Whether a table cell holds no number: None or NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))
