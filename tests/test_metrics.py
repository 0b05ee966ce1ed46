"""Similarity measures: closed forms, claimed invariances and symmetry (hypothesis), and the
batched paths against the per-pair references and a direct n x n Gram implementation."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsbench import BatchRequest, KernelStack, hsic_gram_unbiased, kernel_batched, pad_stack, prepare_linear
from wsbench.plugins import load_registry
from wsbench.similarity import TRANSFORMS, bootstrap_weights, permutations
from wsbench_plugins import cka
from wsbench_plugins.metrics import knn_indices, median_distance

NAMES = ["cka", "cka-biased", "cka-rbf", "mknn", "procrustes", "svcca"]
PROPS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def metrics():
    reg = load_registry()
    return {name: reg.metric(name) for name in NAMES}


def related(seed: int, n: int, dims, latent: int = 3, noise: float = 0.5):
    """Representations sharing a latent, float64, with an offset (so centring matters)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent, generator=g, dtype=torch.float64)
    return [z @ torch.randn(latent, d, generator=g, dtype=torch.float64)
            + noise * torch.randn(n, d, generator=g, dtype=torch.float64) + 2.0 for d in dims]


def gram_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> float:
    """The direct form: n x n Gram matrices, float64, H K H for the biased estimator."""
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    if debiased:
        h = hsic_gram_unbiased
    else:
        c = torch.eye(n, dtype=torch.float64) - 1.0 / n

        def h(a, b):
            return torch.trace(c @ a @ c @ b)
    return float(h(k, l) / torch.sqrt(h(k, k) * h(l, l)))


# Closed forms and known values ----------------------------------------------------------------

def test_debiased_cka_of_independent_gaussians_is_near_zero_where_biased_is_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1024, generator=g, dtype=torch.float64)
    y = torch.randn(256, 1024, generator=g, dtype=torch.float64)
    assert abs(cka.cka_debiased(x, y)) < 0.03
    assert cka.cka_biased(x, y) == pytest.approx(0.8, abs=0.05)


@pytest.mark.parametrize("debiased", [True, False])
def test_linear_cka_matches_direct_gram_form_on_random_data(debiased):
    reps = related(1, 60, [5, 40, 90])  # d < n, d ~ n and d > n
    fn = cka.cka_debiased if debiased else cka.cka_biased
    res = cka.linear_batched(debiased)(reps, BatchRequest(pairs=torch.tensor([[0, 1], [0, 2], [1, 2], [2, 2]])))
    for (r, s), v in zip([(0, 1), (0, 2), (1, 2), (2, 2)], res.values.tolist()):
        ref = gram_cka(reps[r], reps[s], debiased)
        assert abs(fn(reps[r], reps[s]) - ref) < 1e-10
        assert abs(v - ref) < 1e-10


def test_linear_cka_matches_direct_gram_form_on_real_representations():
    from wsbench_plugins.shapes import generate
    images, _ = generate(200, seed=3)
    pixels = torch.as_tensor(np.asarray(images, dtype=np.float64).reshape(200, -1))
    g = torch.Generator().manual_seed(0)
    hidden = torch.relu(pixels @ torch.randn(pixels.shape[1], 64, generator=g, dtype=torch.float64))
    reps = [pixels, hidden, hidden @ torch.randn(64, 10, generator=g, dtype=torch.float64)]
    res = cka.linear_batched(True)(reps, BatchRequest(pairs=torch.tensor([[0, 1], [0, 2], [1, 2]])))
    for (r, s), v in zip([(0, 1), (0, 2), (1, 2)], res.values.tolist()):
        assert abs(v - gram_cka(reps[r], reps[s], True)) < 1e-10


def test_rbf_bandwidth_is_the_median_distance():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    # Distances 1, 3, 7, 2, 6, 4: the lower median is 3.
    assert median_distance(x) == 3.0


def test_knn_excludes_self_and_uses_cosine():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [-1.0, 0.05]], dtype=torch.float64)
    nbr = knn_indices(x, 1)
    assert nbr[:, 0].tolist() == [1, 0, 1, 2]


def test_mknn_is_one_for_identical_and_chance_for_shuffled(metrics):
    x = related(4, 400, [16])[0]
    fn = metrics["mknn"].fn
    assert fn(x, x) == 1.0
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    assert fn(x, x[perm]) < 0.05  # chance is about k / (n - 1) = 0.025


def test_procrustes_closed_form():
    x = related(5, 50, [6])[0]
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    from wsbench_plugins.metrics import procrustes
    assert procrustes(x, 2.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-12)
    # Orthogonal columns carrying disjoint halves of the samples share nothing.
    a = torch.zeros(40, 1, dtype=torch.float64)
    b = torch.zeros(40, 1, dtype=torch.float64)
    a[::2], b[1::2] = 1.0, 1.0
    a, b = a - a.mean(), b - b.mean()
    assert procrustes(a, b) == pytest.approx(1.0, abs=1e-12)  # b = -a after centring: |<a, b>| = 1


def test_svcca_is_one_under_invertible_maps_of_the_kept_subspace():
    from wsbench_plugins.metrics import svcca
    z = torch.randn(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = z @ torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert svcca(x, z) == pytest.approx(1.0, abs=1e-9)


def test_constant_representation_gives_nan_not_a_number(metrics):
    x = related(6, 30, [4])[0]
    const = torch.ones(30, 3, dtype=torch.float64)
    for name in ("cka", "cka-biased", "cka-rbf", "procrustes", "svcca"):
        assert math.isnan(metrics[name].fn(x, const)), name


# Properties: symmetry, self-similarity, claimed invariances -----------------------------------

@st.composite
def pair(draw):
    n = draw(st.integers(12, 48))
    d1, d2 = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    noise = draw(st.sampled_from([0.1, 0.5, 2.0]))
    x, y = related(seed, n, [d1, d2], noise=noise)
    return x, y, seed


@pytest.mark.parametrize("name", NAMES)
@PROPS
@given(data=pair())
def test_symmetric_and_self_similarity_one(metrics, name, data):
    x, y, _ = data
    m = metrics[name]
    assert m.symmetric
    assert abs(m.fn(x, y) - m.fn(y, x)) < 1e-9
    assert abs(m.fn(x, x) - 1.0) < 1e-9


@pytest.mark.parametrize("name", NAMES)
@PROPS
@given(data=pair())
def test_claimed_invariances_hold(metrics, name, data):
    x, y, seed = data
    m = metrics[name]
    base = m.fn(x, y)
    gen = torch.Generator().manual_seed(seed)
    for inv in m.invariances:
        assert abs(m.fn(TRANSFORMS[inv](x, gen), y) - base) < 1e-8, inv
        assert abs(m.fn(x, TRANSFORMS[inv](y, gen)) - base) < 1e-8, inv


def test_every_measure_states_its_invariances(metrics):
    known = set(TRANSFORMS)
    for m in metrics.values():
        assert m.estimator and m.higher_is_better and set(m.invariances) <= known
    assert "translation" not in metrics["mknn"].invariances  # cosine neighbours move when data shift


# Batched paths against the references ---------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_batched_path_agrees_with_fn(metrics, name):
    m = metrics[name]
    n = 60
    reps = related(7, n, [3, 12, 12, 70])
    pairs = torch.tensor([(r, s) for r in range(4) for s in range(4)])
    w = bootstrap_weights(n, 3, 0)
    perms = permutations(n, 2, 0)
    # A tight budget exercises the chunked paths.
    res = m.batched(reps, BatchRequest(pairs=pairs, weights=w, perms=perms, max_bytes=200_000))
    ref = torch.tensor([m.fn(reps[r], reps[s]) for r, s in pairs.tolist()], dtype=torch.float64)
    assert torch.allclose(res.values, ref, atol=1e-10, rtol=0)
    null = torch.stack([torch.tensor([m.fn(reps[r], reps[s][p]) for r, s in pairs.tolist()], dtype=torch.float64)
                        for p in perms])
    assert torch.allclose(res.null, null, atol=1e-10, rtol=0)
    assert res.boot.shape == (3, len(pairs))
    if name in ("cka-biased", "procrustes", "svcca"):
        # For these a resample is exactly the measure on the resampled rows.
        rows = [torch.repeat_interleave(torch.arange(n), w[:, b].long()) for b in range(3)]
        boot = torch.stack([torch.tensor([m.fn(reps[r][i], reps[s][i]) for r, s in pairs.tolist()],
                                         dtype=torch.float64) for i in rows])
        assert torch.allclose(res.boot, boot, atol=1e-9, rtol=0)


@pytest.mark.parametrize("form", ["gram", "feature"])
def test_debiased_bootstrap_matches_weighted_gram_form(form):
    n = 50
    reps = related(8, n, [4, 9])
    w = bootstrap_weights(n, 4, 1)
    stack = KernelStack(pad_stack([prepare_linear(r) for r in reps]), [4, 9])
    res = kernel_batched(stack, BatchRequest(pairs=torch.tensor([[0, 1]]), weights=w, max_bytes=100_000),
                         True, q_form=form, xs=[prepare_linear(r) for r in reps])
    x, y = (r - r.mean(0) for r in reps)
    k, l = x @ x.T, y @ y.T

    def h(a, b, wb):
        da, db = torch.diagonal(a), torch.diagonal(b)
        q = wb @ (a * b) @ wb - (wb * wb * da * db).sum()
        u, v = a @ wb - wb * da, b @ wb - wb * db
        return (q + (wb * u).sum() * (wb * v).sum() / ((n - 1) * (n - 2)) - 2 * (wb * u * v).sum() / (n - 2)) \
            / (n * (n - 3))
    for b in range(4):
        wb = w[:, b]
        assert abs(float(h(k, l, wb) / torch.sqrt(h(k, k, wb) * h(l, l, wb))) - float(res.boot[b, 0])) < 1e-12


def test_debiased_bootstrap_is_centred_on_the_estimate_where_naive_resampling_is_not():
    # Copies of a sample in a resample must not count as matched pairs: naive row
    # resampling drags the debiased CKA of independent data from ~0 towards the biased ~0.8.
    g = torch.Generator().manual_seed(0)
    n = 128
    x = torch.randn(n, 512, generator=g, dtype=torch.float64)
    y = torch.randn(n, 512, generator=g, dtype=torch.float64)
    w = bootstrap_weights(n, 40, 0)
    res = cka.linear_batched(True)([x, y], BatchRequest(pairs=torch.tensor([[0, 1]]), weights=w))
    lo, hi = np.percentile(res.boot[:, 0].numpy(), [2.5, 97.5])
    assert lo < float(res.values[0]) < hi and abs(float(res.values[0])) < 0.05
    rows = torch.repeat_interleave(torch.arange(n), w[:, 0].long())
    assert cka.cka_debiased(x[rows], y[rows]) > 0.3
