"""More similarity measures: RBF CKA, mutual k-NN alignment, orthogonal Procrustes, SVCCA.

Each has a per-pair ``fn`` (the reference) and a ``batched`` fast path for every pair of a
set of representations at once, with bootstrap and permutation null; tests hold the two to agree.

- ``cka-rbf``: CKA with a Gaussian kernel ``exp(-|x_i - x_j|^2 / (2 sigma^2))``, ``sigma`` =
  1.0 x the median Euclidean distance between distinct samples (lower median; over
  4,096 evenly spaced samples when n is larger), debiased HSIC. The bootstrap holds
  each representation's bandwidth at its full-sample value; the kernel engine
  double-centres each Gram matrix over the full sample before it keeps copies of a
  sample apart (an RBF kernel's rows do not have zero means, and without it the
  bootstrap sat above the estimate).
- ``mknn``: mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic
  Representation Hypothesis"): rows L2-normalised, neighbours by cosine similarity
  excluding the sample itself, k = 10; the mean over samples of
  ``|N_x(i) & N_y(i)| / k``. Its bootstrap resamples the per-sample overlaps with the
  neighbour sets of the full sample: resampling rows would make copies of a sample
  each other's nearest neighbours in both spaces and inflate the score.
- ``procrustes``: ``||X^T Y||_*`` for centred, unit-Frobenius-norm X and Y, i.e.
  ``1 - d^2 / 2`` for the orthogonal Procrustes distance d (Williams et al. 2021 use
  its arccos as an angular metric); in [0, 1].
- ``svcca``: SVCCA (Raghu et al. 2017): keep the top singular directions of each centred
  representation explaining 99 % of its variance, then the mean canonical correlation
  between the two reduced representations.

Intervals (``wsbench.specs.CI_KINDS``; their coverage is measured by ``benchmarks/coverage.py``):
``cka-rbf`` declares ``interval="percentile"`` (the kernel engine handles copies of a sample);
``mknn`` ``"per-sample-percentile"`` (its batched path resamples per-sample overlaps, neighbour
sets held fixed, which is narrower than the value's spread); ``procrustes`` and ``svcca``
``"expected-at-n"``: a nuclear norm and canonical correlations of sample moments are biased
upwards by O(1/sqrt(n)) wherever a population singular value or correlation is 0, which no
half-sample correction removes, so their intervals cover the expected value at n. Every ``fn``
centres and divides by the largest entry first, so inputs of 1e+-150 neither overflow nor
underflow.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from wsbench import (
    F64,
    BatchRequest,
    BatchResult,
    KernelStack,
    MetricSpec,
    center,
    hookimpl,
    hsic_gram_unbiased,
    kernel_batched,
    pad_stack,
    row_chunk,
)

MEDIAN_SAMPLES = 4096
RBF_SIGMA_FACTOR = 1.0
MKNN_K = 10
SVCCA_KEEP = 0.99
ROTATION_SCALE = ("orthogonal", "isotropic-scaling")


# RBF CKA ------------------------------------------------------------------------------------

def median_distance(x: torch.Tensor) -> float:
    """Lower median of the Euclidean distances between distinct samples (evenly spaced subset if n is large)."""
    n = x.shape[0]
    if n > MEDIAN_SAMPLES:
        x = x[torch.linspace(0, n - 1, MEDIAN_SAMPLES, dtype=torch.float64).round().long().to(x.device)]
    sq = x.pow(2).sum(1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * x @ x.T).clamp_min(0)
    iu = torch.triu_indices(x.shape[0], x.shape[0], 1, device=x.device)
    return float(d2[iu[0], iu[1]].sqrt().median())


def _rbf_gamma(x: torch.Tensor) -> float:
    sigma = RBF_SIGMA_FACTOR * median_distance(x)
    return 0.0 if sigma <= 0 else 1.0 / (2.0 * sigma * sigma)  # a constant representation: K = 1, CKA NaN


def rbf_gram(x: torch.Tensor, gamma: float) -> torch.Tensor:
    sq = x.pow(2).sum(1)
    return torch.exp(-gamma * (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * x @ x.T).clamp_min(0))


def scaled(x: torch.Tensor) -> torch.Tensor:
    """``x`` centred and divided by its largest entry: for measures that ignore scale, so no product of
    entries of 1e+150 overflows or of 1e-150 underflows."""
    x = center(x)
    peak = x.abs().max() if x.numel() else x.new_zeros(())
    return x / peak if torch.isfinite(peak) and peak > 0 else x


def cka_rbf(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = scaled(x), scaled(y)
    if x.shape[0] < 4:
        return float("nan")
    k, l = rbf_gram(x, _rbf_gamma(x)), rbf_gram(y, _rbf_gamma(y))
    xy, xx, yy = hsic_gram_unbiased(k, l), hsic_gram_unbiased(k, k), hsic_gram_unbiased(l, l)
    den = torch.sqrt(xx * yy)
    return float(xy / den) if torch.isfinite(den) and den > 0 else float("nan")


class RbfStack(KernelStack):
    """Gaussian kernels with one bandwidth per representation, evaluated in blocks."""

    feature_form = False

    def __init__(self, xp: torch.Tensor, dims: Sequence[int], gammas: torch.Tensor):
        super().__init__(xp, dims)
        self.gammas = gammas
        self.sq = xp.pow(2).sum(2)  # (M, n)

    def _kernel(self, g: torch.Tensor, sq_rows: torch.Tensor, sq_cols: torch.Tensor) -> torch.Tensor:
        # In place: a block is the largest tensor here, so one copy of it is the budget.
        g.mul_(-2.0).add_(sq_rows.unsqueeze(2)).add_(sq_cols.unsqueeze(1)).clamp_min_(0)
        return g.mul_(-self.gammas.view(-1, 1, 1)).exp_()

    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        g = torch.bmm(self.xp[:, rows], self.xp[:, cols].transpose(1, 2))
        return self._kernel(g, self.sq[:, rows], self.sq[:, cols])

    def diag(self) -> torch.Tensor:
        return self.xp.new_ones(self.n, self.m)

    def matmul(self, w: torch.Tensor, budget: int) -> torch.Tensor:
        c = row_chunk(self.m, self.n, budget)
        out = w.new_empty(self.m, self.n, w.shape[1])
        for a in range(0, self.n, c):
            rows = slice(a, min(self.n, a + c))
            out[:, rows] = torch.matmul(self.block(rows, slice(0, self.n)), w)
        return out

    def block_idx(self, ri: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        g = torch.bmm(self.xp[:, ri], self.xp[:, ci].transpose(1, 2))
        return self._kernel(g, self.sq[:, ri], self.sq[:, ci])


def rbf_batched(reps: Sequence[torch.Tensor], request: BatchRequest) -> BatchResult:
    xs = [scaled(r) for r in reps]
    gammas = torch.tensor([_rbf_gamma(x) for x in xs], dtype=torch.float64, device=xs[0].device)
    stack = RbfStack(pad_stack(xs), [x.shape[1] for x in xs], gammas)
    return kernel_batched(stack, request, True)


# Mutual k-NN --------------------------------------------------------------------------------

def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64)
    norm = torch.linalg.norm(x, dim=1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def knn_indices(x: torch.Tensor, k: int, budget: int = 1 << 28) -> torch.Tensor:
    """``(n, k)`` indices of each sample's k most cosine-similar other samples."""
    x = _unit_rows(x)
    n = x.shape[0]
    c = int(max(1, min(n, budget // (F64 * n))))
    out = []
    for a in range(0, n, c):
        sim = x[a:a + c] @ x.T
        rows = torch.arange(sim.shape[0], device=x.device)
        sim[rows, rows + a] = -float("inf")  # a sample is not its own neighbour
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def _overlap(na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """``(..., n)`` shared neighbours per sample / k, from index sets ``(..., n, k)``."""
    # any() keeps the (.., n, k, k) comparison boolean; a sum over it would promote it to int64.
    return (na.unsqueeze(-1) == nb.unsqueeze(-2)).any(-1).sum(-1).to(torch.float64) / na.shape[-1]


def _k(n: int) -> int:
    return max(1, min(MKNN_K, n - 1))


def mknn(x: torch.Tensor, y: torch.Tensor) -> float:
    n = x.shape[0]
    if n < 2:
        return float("nan")
    k = _k(n)
    return float(_overlap(knn_indices(x, k), knn_indices(y, k)).mean())


def mknn_batched(reps: Sequence[torch.Tensor], request: BatchRequest) -> BatchResult:
    n = reps[0].shape[0]
    k = _k(n)
    budget = int(request.max_bytes)
    nbr = torch.stack([knn_indices(r, k, budget // 4) for r in reps])  # (M, n, k)
    pr, ps = request.pairs[:, 0], request.pairs[:, 1]
    # Pairs in batches so the gathered (S, n, k) index sets and the (S, n, k, k) comparison fit the budget.
    sb = int(max(1, budget // (2 * n * (25 * k + k * k))))

    def overlaps(na, nb_all, rs, ss):
        return torch.cat([_overlap(na[rs[i:i + sb]], nb_all[ss[i:i + sb]]) for i in range(0, len(rs), sb)])

    per_sample = overlaps(nbr, nbr, pr, ps)  # (Q, n)
    boot = None
    if request.weights is not None:
        boot = (request.weights.to(per_sample).T @ per_sample.T) / n  # (B, Q)
    null = None
    if request.perms is not None:
        rows = []
        for p, perm in enumerate(request.perms):
            perm = perm.to(nbr.device)
            inv = torch.argsort(perm)
            # Neighbours of y[perm] at position i are the positions of y's neighbours of perm[i].
            permuted = inv[nbr[:, perm]]
            rows.append(overlaps(nbr, permuted, pr, ps).mean(1))
            if request.progress:
                request.progress(0.5 + 0.5 * (p + 1) / len(request.perms))
        null = torch.stack(rows)
    return BatchResult(values=per_sample.mean(1), boot=boot, null=null)


# Moment-based measures: Procrustes and SVCCA ------------------------------------------------

def procrustes(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = scaled(x), scaled(y)
    nx, ny = torch.linalg.norm(x), torch.linalg.norm(y)
    if nx <= 0 or ny <= 0:
        return float("nan")
    return float(torch.linalg.svdvals((x / nx).T @ (y / ny)).sum())


def _svcca_basis(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal ``(n, k)`` basis of the top singular directions holding SVCCA_KEEP of the variance."""
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    var = s.pow(2)
    k = int(torch.searchsorted(torch.cumsum(var, 0) / var.sum(), torch.tensor(SVCCA_KEEP, dtype=var.dtype))) + 1
    return u[:, :min(k, len(s))]


def svcca(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = scaled(x), scaled(y)
    if torch.linalg.norm(x) <= 0 or torch.linalg.norm(y) <= 0:
        return float("nan")
    rho = torch.linalg.svdvals(_svcca_basis(x).T @ _svcca_basis(y)).clamp(max=1.0)
    return float(rho.mean())


def _procrustes_from_moments(cself: torch.Tensor, ccross: torch.Tensor, pr, ps) -> torch.Tensor:
    tr = torch.diagonal(cself, dim1=1, dim2=2).sum(1)  # (M,)
    den = torch.sqrt(tr[pr] * tr[ps])
    val = torch.linalg.svdvals(ccross).sum(1) / den
    return torch.where(den > 0, val, torch.full_like(val, float("nan")))


def _svcca_from_moments(cself: torch.Tensor, ccross: torch.Tensor, pr, ps) -> torch.Tensor:
    lam, vec = torch.linalg.eigh(cself)  # ascending
    lam, vec = lam.flip(1).clamp_min(0), vec.flip(2)
    total = lam.sum(1, keepdim=True)
    frac = torch.cumsum(lam, 1) / torch.where(total > 0, total, torch.ones_like(total))
    keep_k = (frac < SVCCA_KEEP).sum(1) + 1  # (M,) components kept
    mask = torch.arange(lam.shape[1], device=lam.device).unsqueeze(0) < keep_k.unsqueeze(1)
    scale = torch.where(mask & (lam > 0), lam.clamp_min(1e-300).rsqrt(), torch.zeros_like(lam))
    white = vec * scale.unsqueeze(1)  # (M, d, d): whitening onto the kept directions
    t = white[pr].transpose(1, 2) @ ccross @ white[ps]
    rho = torch.linalg.svdvals(t).clamp(max=1.0).sum(1)
    val = rho / torch.minimum(keep_k[pr], keep_k[ps]).to(rho.dtype)
    return torch.where(total[pr, 0] * total[ps, 0] > 0, val, torch.full_like(val, float("nan")))


def moment_batched(from_moments: Callable) -> Callable[..., BatchResult]:
    """A batched path for measures that are functions of the centred second moments of each pair.

    Per resample the weighted moments ``X^T diag(w) Y - (X^T w)(Y^T w)^T / n`` of every
    pair come from one ``(D, D)`` product; a permutation replaces the cross moments by
    ``X^T Y[perm]``. Zero padding to one width changes neither measure.
    """
    def batched(reps: Sequence[torch.Tensor], request: BatchRequest) -> BatchResult:
        xs = []
        for r in reps:
            x = scaled(r)
            nrm = torch.linalg.norm(x)
            xs.append(x / nrm if nrm > 0 else x)
        xp = pad_stack(xs)  # (M, n, d)
        m, n, d = xp.shape
        pr, ps = request.pairs[:, 0], request.pairs[:, 1]

        a = xp.permute(1, 0, 2).reshape(n, m * d)  # (n, M d)
        idx = torch.arange(m, device=xp.device)

        def moments(w, perm=None):
            left = a if w is None else a * w.unsqueeze(1)
            right = a if perm is None else a[perm]
            g = (left.T @ right).view(m, d, m, d)
            if w is not None:
                mu = (a.T @ w).view(m, d)  # X^T w, per representation
                g = g - mu.view(m, d, 1, 1) * mu.view(1, 1, m, d) / n
            cross = g[pr, :, ps, :]  # (Q, d, d)
            if perm is not None:
                return None, cross
            return g[idx, :, idx, :], cross

        c0, x0 = moments(None)
        values = from_moments(c0, x0, pr, ps)
        boot = None
        if request.weights is not None:
            w = request.weights.to(xp)
            boot = torch.stack([from_moments(*moments(w[:, b]), pr, ps) for b in range(w.shape[1])])
        null = None
        if request.perms is not None:
            null = torch.stack([from_moments(c0, moments(None, p.to(xp.device))[1], pr, ps)
                                for p in request.perms])
        return BatchResult(values=values, boot=boot, null=null)
    return batched


@hookimpl
def register_metrics(register):
    register(MetricSpec(
        name="cka-rbf", fn=cka_rbf, batched=rbf_batched,
        estimator=f"rbf-kernel(sigma={RBF_SIGMA_FACTOR}x median distance)/debiased-hsic(song2012)/gram/float64",
        description="CKA with a Gaussian kernel, bandwidth 1.0x the median distance, debiased HSIC",
        higher_is_better=True, symmetric=True, invariances=(*ROTATION_SCALE, "translation"),
        # The engine double-centres each Gram matrix and keeps copies of a sample apart.
        range=(-1.0, 1.0), interval="percentile"))
    register(MetricSpec(
        name="mknn", fn=mknn, batched=mknn_batched,
        estimator=f"mutual-knn(k={MKNN_K},cosine)/huh2024/bootstrap=per-sample-overlap",
        description="Mutual k-nearest-neighbour alignment (Huh et al. 2024), k = 10, cosine neighbours",
        higher_is_better=True, symmetric=True, invariances=ROTATION_SCALE,
        # The batched path resamples the per-sample overlaps; the neighbour sets stay those of all n.
        range=(0.0, 1.0), interval="per-sample-percentile"))
    register(MetricSpec(
        name="procrustes", fn=procrustes, batched=moment_batched(_procrustes_from_moments),
        estimator="orthogonal-procrustes/nuclear-norm(X^T Y)/unit-frobenius/float64",
        description="Orthogonal Procrustes similarity ||X^T Y||_* of centred, unit-norm representations",
        higher_is_better=True, symmetric=True, invariances=(*ROTATION_SCALE, "translation"),
        # Biased upwards by O(1/sqrt(n)) wherever X^T Y has singular values of 0: no half-sample correction
        # removes that, so the interval says what it covers, the expected value at this n.
        range=(0.0, 1.0), interval="expected-at-n"))
    register(MetricSpec(
        name="svcca", fn=svcca, batched=moment_batched(_svcca_from_moments),
        estimator=f"svcca(keep={SVCCA_KEEP} variance)/mean-canonical-correlation/float64",
        description="SVCCA (Raghu et al. 2017): SVD to 99 % variance, then mean canonical correlation",
        higher_is_better=True, symmetric=True, invariances=(*ROTATION_SCALE, "translation"),
        # Sample canonical correlations of uncorrelated directions are biased upwards by O(1/sqrt(n)).
        range=(0.0, 1.0), interval="expected-at-n"))
