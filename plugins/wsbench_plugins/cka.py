"""Linear CKA (Kornblith et al. 2019), debiased (``cka``, the default) and biased (``cka-biased``).

Per pair (``fn``) both are computed in feature space, float64, from mean-centred
``(n, d)`` inputs: ``K = X X^T`` and ``L = Y Y^T`` are never formed. The debiased
form uses the unbiased HSIC estimator of Song et al. (2012) as in Nguyen et al.
(2021), which is near 0 for independent data where the biased estimator is not.

The ``batched`` path computes every pair of M representations at once, with a
paired bootstrap and a permutation null, through the harness's kernel engine
(``wsbench.kernel_batched``; its module docstring gives the formulas). Intervals:
``cka`` resamples with the bootstrap (the engine keeps copies of a sample apart, so
the debiased estimate stays unbiased in a resample); ``cka-biased`` is biased by O(1/n)
and gets the harness's half-sample interval, which corrects for that.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from wsbench import (
    BatchRequest,
    BatchResult,
    KernelStack,
    MetricSpec,
    hookimpl,
    kernel_batched,
    pad_stack,
    prepare_linear,
)


def hsic_biased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``tr(K H L H)`` up to a constant factor, for centred ``x (n, d1)``, ``y (n, d2)``."""
    return (y.T @ x).pow(2).sum()


def hsic_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Song et al.'s unbiased HSIC for linear kernels, from features (needs n >= 4).

    HSIC = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),
    K~ = K with its diagonal zeroed.
    """
    n = x.shape[0]
    dk, dl = x.pow(2).sum(1), y.pow(2).sum(1)  # diag(K), diag(L)
    tr = (y.T @ x).pow(2).sum() - (dk * dl).sum()
    k1 = x @ x.sum(0) - dk  # K~ 1
    l1 = y @ y.sum(0) - dl  # L~ 1
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)) / (n * (n - 3))


def _cka(hsic, x, y) -> float:
    # Centred and scaled to unit Frobenius norm (CKA ignores scale) before any product is formed, so
    # inputs of 1e+150 do not overflow and inputs of 1e-150 do not underflow.
    x, y = prepare_linear(x), prepare_linear(y)
    xy, xx, yy = hsic(x, y), hsic(x, x), hsic(y, y)
    denom = torch.sqrt(xx * yy)
    if not torch.isfinite(denom) or denom <= 0:
        return float("nan")  # a constant representation has no similarity to speak of
    return float(xy / denom)


def cka_debiased(x: torch.Tensor, y: torch.Tensor) -> float:
    return _cka(hsic_unbiased, x, y)


def cka_biased(x: torch.Tensor, y: torch.Tensor) -> float:
    return _cka(hsic_biased, x, y)


def linear_batched(debiased: bool) -> Callable[..., BatchResult]:
    """The batched path of linear CKA: the feature form of the kernel engine."""
    def batched(reps: Sequence[torch.Tensor], request: BatchRequest) -> BatchResult:
        xs = [prepare_linear(r) for r in reps]
        stack = KernelStack(pad_stack(xs), [x.shape[1] for x in xs])
        return kernel_batched(stack, request, debiased, xs=xs)
    return batched


INVARIANCES = ("orthogonal", "isotropic-scaling", "translation")


@hookimpl
def register_metrics(register):
    register(MetricSpec(
        name="cka", fn=cka_debiased, estimator="linear-kernel/debiased-hsic(song2012)/feature-space/float64",
        description="Linear CKA with the debiased HSIC estimator (default)", higher_is_better=True,
        symmetric=True, invariances=INVARIANCES, batched=linear_batched(True),
        # The kernel engine keeps copies of a sample apart, so the bootstrap stays centred on the estimate.
        range=(-1.0, 1.0), interval="percentile"))
    register(MetricSpec(
        name="cka-biased", fn=cka_biased, estimator="linear-kernel/biased-hsic/feature-space/float64",
        description="Linear CKA with the biased HSIC estimator (Kornblith et al. 2019)", higher_is_better=True,
        symmetric=True, invariances=INVARIANCES, batched=linear_batched(False),
        # Biased by O(1/n) (more with wide layers): half-samples give an interval corrected for it.
        range=(0.0, 1.0), interval="half-sample"))
