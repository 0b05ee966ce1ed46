"""The scores of a task: how a run's test predictions are judged, by the dataset's target kind.

A dataset declares its target (:data:`wsbench.specs.TARGETS`): ``class`` (an integer label; the
model outputs logits) or ``scalar`` (a real number such as a CNN's test accuracy; the model outputs
one value). Each kind has scores, the first being the primary one that leaderboards rank by:

- ``class``: ``accuracy``, the fraction of samples whose arg-max logit is the label.
- ``scalar``: ``kendall_tau`` (Kendall's tau-b between predictions and targets: the rank agreement
  the accuracy-prediction literature reports, Unterthiner et al. 2020), ``r2`` (the coefficient of
  determination, 1 - SSE / SST, which can be negative) and ``mse`` (mean squared error in the
  target's own units; lower is better).

Every score says whether higher is better and the values it can take, so a leaderboard ranks and
clips intervals the right way round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Score:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]  # fn(predictions, targets) -> float
    label: str  # what tables and figures call it
    higher_is_better: bool = True
    range: tuple[float, float] | None = None  # the values it can take (intervals are clipped to it)
    percent: bool = False  # shown as a percentage


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of equal entries (``preds`` are predicted classes)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if len(labels) else math.nan


def kendall_tau(x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> float:
    """Kendall's tau-b of two equally long vectors, exact, with ties in either.

    tau_b = (C - D) / sqrt((n0 - n1)(n0 - n2)), n0 = n(n-1)/2 pairs, n1 and n2 the pairs tied in x
    and in y, C - D the sum over pairs of sign(dx) sign(dy). Computed over all pairs in blocks of
    ``chunk`` rows (O(n^2) work, O(n chunk) memory: 10,000 values take a fraction of a second).
    NaN for fewer than two values or a constant vector.
    """
    import torch  # here, so that importing this module (the CLI does) does not load torch

    a = torch.as_tensor(np.asarray(x, dtype=np.float64))
    b = torch.as_tensor(np.asarray(y, dtype=np.float64))
    n = len(a)
    if n != len(b):
        raise ValueError(f"kendall_tau: {n} values against {len(b)}")
    if n < 2:
        return math.nan
    s = tied_x = tied_y = 0.0
    for i in range(0, n, chunk):
        da = torch.sign(a[i:i + chunk, None] - a[None, :])
        db = torch.sign(b[i:i + chunk, None] - b[None, :])
        s += float((da * db).sum())
        tied_x += float((da == 0).sum())
        tied_y += float((db == 0).sum())
    # Every unordered pair is counted twice and the diagonal (i == j) once as a tie in each.
    n0 = n * (n - 1) / 2
    n1, n2 = (tied_x - n) / 2, (tied_y - n) / 2
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    return s / 2 / denom if denom > 0 else math.nan


def r2(preds: np.ndarray, targets: np.ndarray) -> float:
    """Coefficient of determination 1 - sum((y - p)^2) / sum((y - mean y)^2); NaN for constant targets."""
    p, y = np.asarray(preds, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    sst = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return 1.0 - float(((y - p) ** 2).sum()) / sst if sst > 0 else math.nan


def mse(preds: np.ndarray, targets: np.ndarray) -> float:
    p, y = np.asarray(preds, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    return float(((y - p) ** 2).mean()) if len(y) else math.nan


SCORES = {
    "accuracy": Score("accuracy", accuracy, "test accuracy", True, (0.0, 1.0), percent=True),
    "kendall_tau": Score("kendall_tau", kendall_tau, "Kendall's tau", True, (-1.0, 1.0)),
    "r2": Score("r2", r2, "R²", True, (-math.inf, 1.0)),
    "mse": Score("mse", mse, "MSE", False, (0.0, math.inf)),
}
# Per target kind, its scores; the first is the primary one (ranking, model selection).
TARGET_SCORES = {"class": ("accuracy",), "scalar": ("kendall_tau", "r2", "mse")}


def primary(target: str) -> Score:
    return SCORES[TARGET_SCORES[target][0]]


def score_all(target: str, preds: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Every score of ``target`` kind: ``{name: value}``, the primary first."""
    return {name: SCORES[name].fn(preds, targets) for name in TARGET_SCORES[target]}


def fmt(name: str, value: float | None) -> str:
    """``value`` of score ``name`` as tables print it (accuracy in %, others to 3 decimals)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    sc = SCORES.get(name)
    return f"{100 * value:.2f}%" if sc is not None and sc.percent else f"{value:.3f}"


def row_text(row: dict) -> str:
    """A stored run's test score in words, e.g. ``test accuracy 92.10%`` or ``test kendall_tau 0.912``."""
    name = row.get("score") or "accuracy"
    value = row.get("test_score")
    if value is None:
        value = row.get("test_acc")
    label = SCORES[name].label if name in SCORES else name
    label = label if label.startswith("test ") else f"test {label}"
    return f"{label} {fmt(name, value)}" if value is not None else ""
