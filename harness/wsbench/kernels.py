"""The batched kernel engine: kernel similarity of M representations at once, with a paired
bootstrap and a permutation null, all float64, chunked to a memory budget.

Built-in metrics compose it (``cka``, ``cka-biased`` and ``cka-rbf``); a plugin author can too:
subclass :class:`KernelStack` for another kernel and hand it to :func:`kernel_batched`.
Everything reduces to a few per-pair sums over samples with bootstrap count weights ``w`` (n,):

  Q   = w^T (K o L) w                 (the only O(n^2)-per-pair term)
  u_i = (K w)_i - w_i K_ii            (row sums of K over *other* original samples)
  S   = sum_i w_i u_i,   T3 = sum_i w_i u_i v_i,   D = sum_i w_i^2 K_ii L_ii

  debiased HSIC = [Q - D + S_K S_L / ((n-1)(n-2)) - 2 T3 / (n-2)] / (n (n-3))
  biased   HSIC = Q - (2/n) sum_i w_i (Kw)_i (Lw)_i + (w^T K w)(w^T L w) / n^2

With w = 1 these are the usual estimators. In a resample, copies of one original
sample are treated like the diagonal (their kernel entries are excluded), so the
debiased estimator stays debiased: resampling rows naively lets copies act as
perfectly matched pairs and pulls the debiased value of independent data from 0
to near the biased one. Excluding those entries is neutral only for kernels whose
rows have zero means over the full sample: a resample keeps about n^2 - 2n of the
n^2 - n off-diagonal entries, and a kernel's constant part then no longer cancels
(an RBF kernel's bootstrap sat 0.08-0.36 above its estimate). So every kernel is
double-centred over the full sample first, ``K <- H K H`` (:class:`CentredKernels`,
applied by :func:`kernel_batched` to any kernel whose row means are not already
zero; a linear kernel of centred features has them). The full-sample debiased HSIC
does not change: it is invariant to ``k(x, x') + f(x) + f(x') + c``. ``Q`` is
computed in one of two forms, whichever costs fewer flops: the Gram form
``(K o L) W`` in row chunks of the upper triangle (n^2 per pair and resample), or
the feature form ``||X^T diag(w) Y||_F^2`` (n d_x d_y per pair and resample). A
permutation null draw ``p`` compares kernel ``r`` with kernel ``s`` of the permuted
samples; self-HSIC is unchanged by it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from wsbench.specs import BatchRequest, BatchResult


def center(x: torch.Tensor) -> torch.Tensor:
    """``x (n, d)`` as float64 with every column's mean removed."""
    x = x.to(torch.float64)
    return x - x.mean(0, keepdim=True)


def hsic_gram_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Song et al.'s unbiased HSIC from two ``(n, n)`` Gram matrices (needs n >= 4)."""
    n = k.shape[0]
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    return ((k * l).sum() + k.sum() * l.sum() / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (k.sum(0) @ l.sum(0))) / (n * (n - 3))


# Batched engine ------------------------------------------------------------------------------

F64 = 8  # bytes


def prepare_linear(x: torch.Tensor) -> torch.Tensor:
    """Centre, then scale to unit Frobenius norm (CKA ignores scale; this keeps sums O(1)).

    The largest entry is divided out first, so the norm neither overflows (entries of 1e+150)
    nor underflows (1e-150).
    """
    x = center(x)
    peak = x.abs().max() if x.numel() else x.new_zeros(())
    if not torch.isfinite(peak) or peak <= 0:
        return x
    x = x / peak
    return x / torch.linalg.norm(x)


def pad_stack(reps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(M, n, d_max)``: representations zero-padded to one width (zero columns change no kernel)."""
    d = max(r.shape[1] for r in reps)
    out = reps[0].new_zeros(len(reps), reps[0].shape[0], d)
    for i, r in enumerate(reps):
        out[i, :, : r.shape[1]] = r
    return out


class KernelStack:
    """M kernels over the same n samples, evaluated in blocks; linear by default.

    ``xp`` (M, n, d) zero-padded features. Subclasses change :meth:`block` and
    :meth:`diag` (an RBF kernel, say); :meth:`matmul` is ``K_r @ W`` for all r.
    """

    feature_form = True  # a linear kernel: Q also has the feature form

    def __init__(self, xp: torch.Tensor, dims: Sequence[int]):
        self.xp, self.dims = xp, list(dims)
        self.m, self.n = xp.shape[0], xp.shape[1]

    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        """``(M, r, c)``: ``K[rows, cols]`` of every kernel."""
        return torch.bmm(self.xp[:, rows], self.xp[:, cols].transpose(1, 2))

    def diag(self) -> torch.Tensor:
        """``(n, M)``: ``K_ii``."""
        return self.xp.pow(2).sum(2).T

    def matmul(self, w: torch.Tensor, budget: int) -> torch.Tensor:
        """``(M, n, B)``: ``K_r @ w`` via the features, O(n d B)."""
        return torch.bmm(self.xp, torch.matmul(self.xp.transpose(1, 2), w))

    def block_idx(self, ri: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        """``(M, r, c)``: ``K[ri][:, ci]`` for index tensors (a permuted kernel's block)."""
        return torch.bmm(self.xp[:, ri], self.xp[:, ci].transpose(1, 2))


class CentredKernels(KernelStack):
    """``H K H`` of every kernel of ``base`` over its n samples: ``K_ij - r_i - r_j + g`` with row means
    ``r`` and grand mean ``g`` (``H = I - 11^T / n``). One pass over ``base`` finds the means; blocks,
    the diagonal and products are then corrected on the fly, so the budget stays that of ``base``."""

    feature_form = False

    def __init__(self, base: KernelStack, budget: int = 2 << 30, row_means: torch.Tensor | None = None):
        super().__init__(base.xp, base.dims)
        self.base = base
        self.r = (row_means if row_means is not None
                  else base.matmul(base.xp.new_ones(base.n, 1), budget)[:, :, 0] / base.n)  # (M, n)
        self.g = self.r.mean(1)  # (M,)

    def _fix(self, k: torch.Tensor, ri, ci) -> torch.Tensor:
        return k.sub_(self.r[:, ri].unsqueeze(2)).sub_(self.r[:, ci].unsqueeze(1)).add_(self.g.view(-1, 1, 1))

    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        return self._fix(self.base.block(rows, cols), rows, cols)

    def block_idx(self, ri: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        return self._fix(self.base.block_idx(ri, ci), ri, ci)

    def diag(self) -> torch.Tensor:
        return self.base.diag() - 2.0 * self.r.T + self.g.unsqueeze(0)

    def matmul(self, w: torch.Tensor, budget: int) -> torch.Tensor:
        kw = self.base.matmul(w, budget)  # (M, n, B)
        sw = w.sum(0)  # (B,)
        rw = self.r @ w  # (M, B): r^T w
        return (kw - self.r.unsqueeze(2) * sw.view(1, 1, -1) - rw.unsqueeze(1)
                + (self.g.view(-1, 1) * sw.view(1, -1)).unsqueeze(1))


def centred(stack: KernelStack, budget: int = 2 << 30, tol: float = 1e-10) -> KernelStack:
    """``stack`` itself when every kernel's row means are already ~0 (relative to its diagonal),
    else :class:`CentredKernels` of it."""
    if isinstance(stack, CentredKernels):
        return stack
    r = stack.matmul(stack.xp.new_ones(stack.n, 1), budget)[:, :, 0] / stack.n  # (M, n)
    scale = stack.diag().abs().amax(0).clamp_min(1e-300)  # (M,)
    if bool((r.abs().amax(1) <= tol * scale).all()):
        return stack
    return CentredKernels(stack, budget, row_means=r)


def row_chunk(m: int, n: int, budget: int) -> int:
    """Rows of an (M, c, n) kernel block that fit a third of the budget."""
    return int(max(16, min(n, budget // (3 * F64 * max(1, m) * n))))


def _gram_passes(stack: KernelStack, budget: int):
    """Yield ``(rows, cols_from, block)`` over the upper-triangle row chunks of every kernel."""
    n = stack.n
    c = row_chunk(stack.m, n, budget)
    for a in range(0, n, c):
        rows = slice(a, min(n, a + c))
        yield rows, stack.block(rows, slice(a, n))


def q_gram(stack: KernelStack, w: torch.Tensor, budget: int, tick: Callable[[float], None] | None = None
           ) -> torch.Tensor:
    """``(B, M, M)``: ``w_b^T (K_r o K_s) w_b`` from upper-triangle row chunks, ``w`` (n, B)."""
    m, n, b = stack.m, stack.n, w.shape[1]
    q = w.new_zeros(b, m, m)
    done = 0.0
    for rows, kb in _gram_passes(stack, budget):
        c, width = kb.shape[1], kb.shape[2]
        w2 = w[rows.start:].clone()
        w2[c:] *= 2  # off-diagonal tiles stand for themselves and their mirror images
        wi = w[rows]
        sb = int(max(1, min(m, budget // (3 * F64 * c * (width + b)))))
        for r in range(m):
            for s0 in range(r, m, sb):
                s1 = min(m, s0 + sb)
                h = kb[r].unsqueeze(0) * kb[s0:s1]  # (S, c, width)
                red = (h.reshape(-1, width) @ w2).view(s1 - s0, c, b)
                q[:, r, s0:s1] += (red * wi.unsqueeze(0)).sum(1).T
        done += c * (2 * n - rows.start - rows.stop) / (n * n)
        if tick:
            tick(min(1.0, done))
    iu = torch.triu_indices(m, m, 1, device=q.device)
    q[:, iu[1], iu[0]] = q[:, iu[0], iu[1]]
    return q


def q_feature(a: torch.Tensor, dims: Sequence[int], w: torch.Tensor | None = None,
              perm: torch.Tensor | None = None, budget: int = 2 << 30) -> torch.Tensor:
    """``(M, M)``: ``||X_r^T diag(w) X_s[perm]||_F^2`` from the concatenated features ``a`` (n, D).

    Row groups of representations keep the ``(D_g, D)`` product under the budget.
    """
    right = a if perm is None else a[perm]
    offs = [0]
    for d in dims:
        offs.append(offs[-1] + d)
    total = offs[-1]
    out = a.new_empty(len(dims), len(dims))
    r = 0
    while r < len(dims):
        r1 = r + 1  # grow the group while its (D_g, D) block and a squared copy fit
        while r1 < len(dims) and 2 * F64 * (offs[r1 + 1] - offs[r]) * total <= budget:
            r1 += 1
        left = a[:, offs[r]:offs[r1]]
        if w is not None:
            left = left * w.unsqueeze(1)
        g = left.T @ right  # (D_g, D)
        sq = g.pow(2)
        # Column blocks summed by a segment sum, then row blocks.
        colsum = torch.stack([sq[:, offs[j]:offs[j + 1]].sum(1) for j in range(len(dims))], 1) \
            if len(set(dims)) > 1 else sq.view(sq.shape[0], len(dims), dims[0]).sum(2)
        for i in range(r, r1):
            out[i] = colsum[offs[i] - offs[r]:offs[i + 1] - offs[r]].sum(0)
        r = r1
    return out


def hsic_terms(stack: KernelStack, w: torch.Tensor, debiased: bool,
               budget: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(S (B, M), T3 (B, M, M), D (B, M, M) or None)``: the per-sample sums for weights ``w`` (n, B)."""
    m, n, b = stack.m, stack.n, w.shape[1]
    k = stack.diag()  # (n, M)
    kw = stack.matmul(w, budget)  # (M, n, B)
    u = kw - w.unsqueeze(0) * k.T.unsqueeze(2) if debiased else kw
    ub = u.permute(2, 0, 1).contiguous()  # (B, M, n): contiguous, or the batched product crawls
    uw = ub * w.T.unsqueeze(1)
    s = uw.sum(2)  # (B, M)
    t3 = torch.bmm(uw, ub.transpose(1, 2))  # (B, M, M)
    dd = None
    if debiased:
        kk = (k.unsqueeze(2) * k.unsqueeze(1)).reshape(n, m * m)  # K_ii L_ii for every pair
        dd = ((w * w).T @ kk).view(b, m, m)  # (B, M, M)
    return s, t3, dd


def combine(q, s, t3, dd, n: int, debiased: bool) -> torch.Tensor:
    """HSIC ``(B, M, M)`` from its terms (see the module docstring)."""
    outer = s.unsqueeze(2) * s.unsqueeze(1)
    if debiased:
        return (q - dd + outer / ((n - 1) * (n - 2)) - 2.0 * t3 / (n - 2)) / (n * (n - 3))
    return q - 2.0 * t3 / n + outer / (n * n)


def cka_from_hsic(h: torch.Tensor) -> torch.Tensor:
    """``(B, M, M)`` CKA from HSIC; NaN where a self-HSIC is not positive (a constant representation)."""
    dg = torch.diagonal(h, dim1=1, dim2=2)
    den = torch.sqrt(dg.clamp_min(0).unsqueeze(2) * dg.clamp_min(0).unsqueeze(1))
    out = h / den
    return torch.where(den > 0, out, torch.full_like(out, float("nan")))


def choose_q_form(stack: KernelStack, b: int) -> str:
    """``"feature"`` when ``n D^2`` beats ``n^2 M^2 / 2`` per resample, else ``"gram"``."""
    if not stack.feature_form:
        return "gram"
    d_total = sum(stack.dims)
    gram = stack.n * stack.n * stack.m * (stack.m + 1) / 2 + stack.n ** 2 * max(stack.dims) * stack.m / b
    feature = 2.0 * stack.n * d_total ** 2
    return "feature" if feature <= gram else "gram"


def q_permuted(stack: KernelStack, perms: torch.Tensor, budget: int,
               tick: Callable[[float], None] | None = None) -> torch.Tensor:
    """``(P, M, M)``: ``sum_ij K_r[i, j] K_s[perm_i, perm_j]`` over upper-triangle row chunks.

    ``K_r o K_s[perm, perm]`` is symmetric, so the upper triangle suffices; each
    unpermuted block is computed once and reused by every permutation.
    """
    n, m = stack.n, stack.m
    q = stack.xp.new_zeros(len(perms), m, m)
    if 3 * F64 * m * n * n <= budget:  # every kernel fits: permute it rather than recompute it
        full = stack.block(slice(0, n), slice(0, n))
        flat = full.reshape(m, -1)
        for p, perm in enumerate(perms):
            q[p] = flat @ full[:, perm][:, :, perm].reshape(m, -1).T
            if tick:
                tick((p + 1) / len(perms))
        return q
    c = row_chunk(2 * m, n, budget)
    done = 0.0
    for a0 in range(0, n, c):
        rows, cols = slice(a0, min(n, a0 + c)), slice(a0, n)
        kb = stack.block(rows, cols)
        kb[:, :, rows.stop - a0:] *= 2  # off-diagonal tiles stand for their mirror images too
        kf = kb.reshape(m, -1)
        for p, perm in enumerate(perms):
            q[p] += kf @ stack.block_idx(perm[rows], perm[cols]).reshape(m, -1).T
        done += (rows.stop - a0) * (2 * n - a0 - rows.stop) / (n * n)
        if tick:
            tick(min(1.0, done))
    return q


def choose_null_form(stack: KernelStack) -> str:
    """``"feature"`` when ``2 n D^2`` beats the Gram form's ``n^2 (d M + M^2)`` per permutation."""
    feature = 2.0 * stack.n * sum(stack.dims) ** 2
    gram = float(stack.n) ** 2 * (max(stack.dims) * stack.m + stack.m * stack.m)
    return "feature" if stack.feature_form and feature <= gram else "gram"


def kernel_batched(stack: KernelStack, request: BatchRequest, debiased: bool,
                   q_form: str | None = None, xs: Sequence[torch.Tensor] | None = None) -> BatchResult:
    """Values, bootstrap and permutation null of kernel CKA for ``request.pairs``.

    Each kernel is double-centred over the full sample first when its row means are not zero
    (see the module docstring). ``xs`` (the unpadded, centred features) enable the feature form of Q
    for linear kernels.
    ``q_form`` forces ``"gram"`` or ``"feature"`` for the bootstrap (tests, benchmarks).
    """
    n, m = stack.n, stack.m
    if n < 4 and debiased:
        nan = torch.full((len(request.pairs),), float("nan"), dtype=torch.float64)
        return BatchResult(values=nan)
    budget = int(request.max_bytes)
    given = stack
    stack = centred(stack, budget)  # a no-op for the linear kernel of centred features
    if stack is not given:
        xs = None  # features that are not centred have no feature form here
    pr, ps = request.pairs[:, 0], request.pairs[:, 1]
    ones = stack.xp.new_ones(n, 1)
    total = 1.0 + (request.weights is not None) * 4.0 + (request.perms is not None) * 2.0
    state = {"done": 0.0}

    def tick(step):
        def f(frac):
            if request.progress:
                request.progress(min(1.0, (state["done"] + step * frac) / total))
        return f

    def finish(step):
        state["done"] += step
        tick(0)(0)

    # Point values (w = 1): the feature form when there are features, else one Gram pass.
    if xs is not None:
        a = torch.cat(list(xs), 1)
        dims = [x.shape[1] for x in xs]
        q0 = q_feature(a, dims, budget=budget).unsqueeze(0)
    else:
        q0 = q_gram(stack, ones, budget)
    h0 = combine(q0, *hsic_terms(stack, ones, debiased, budget), n, debiased)
    c0 = cka_from_hsic(h0)[0]
    finish(1.0)

    boot = None
    if request.weights is not None:
        w = request.weights.to(stack.xp)
        form = q_form or ("feature" if xs is not None and choose_q_form(stack, w.shape[1]) == "feature" else "gram")
        # Resamples in batches so the (M, n, B) per-sample terms fit a third of the budget.
        bc = int(max(1, min(w.shape[1], budget // (8 * F64 * m * n))))
        parts = []
        for b0 in range(0, w.shape[1], bc):
            wb = w[:, b0:b0 + bc]
            if form == "feature":
                q = torch.stack([q_feature(a, dims, wb[:, j], budget=budget) for j in range(wb.shape[1])])
            else:
                q = q_gram(stack, wb, budget, tick(4.0 * wb.shape[1] / w.shape[1]))
            h = combine(q, *hsic_terms(stack, wb, debiased, budget), n, debiased)
            parts.append(cka_from_hsic(h)[:, pr, ps])
        boot = torch.cat(parts)
        finish(4.0)

    null = None
    if request.perms is not None:
        perms = request.perms.to(stack.xp.device)
        if xs is not None and choose_null_form(stack) == "feature":
            per_perm = []
            for p, perm in enumerate(perms):
                per_perm.append(q_feature(a, dims, None, perm, budget))
                tick(2.0)((p + 1) / len(perms))
            qs = torch.stack(per_perm)
        else:
            qs = q_permuted(stack, perms, budget, tick(2.0))
        # A permutation leaves self-HSIC unchanged; the cross terms use the permuted s side.
        k = stack.diag()
        u = stack.matmul(ones, budget)[:, :, 0] - (k.T if debiased else 0)
        s = u.sum(1).unsqueeze(0)
        selfh = torch.diagonal(h0[0])
        den = torch.sqrt(selfh.clamp_min(0).unsqueeze(1) * selfh.clamp_min(0).unsqueeze(0))
        rows = []
        for q, perm in zip(qs, perms):
            t3 = (u @ u[:, perm].T).unsqueeze(0)
            dd = (k.T @ k[perm]).unsqueeze(0) if debiased else None
            h = combine(q.unsqueeze(0), s, t3, dd, n, debiased)[0]
            val = torch.where(den > 0, h / den, torch.full_like(h, float("nan")))
            rows.append(val[pr, ps])
        null = torch.stack(rows)
        finish(2.0)
    return BatchResult(values=c0[pr, ps], boot=boot, null=null)
