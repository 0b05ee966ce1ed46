"""Benchmark: the full study's similarity grid, with bootstrap intervals and a permutation null.

Synthetic representations stand in for the study's (no data needed): R runs x L layers
of (n, d) float32, built from a shared latent so similarities spread over (0, 1).
Measured, each after a warm-up, with the device synchronised:

- the value-only grid (all M^2 pairs), float64;
- the grid with ``--resamples`` bootstrap resamples (the target: <= 60 s for
  75 representations, n = 10,000, d = 256, 1,000 resamples on an H100);
- the permutation null with ``--permutations`` shuffles;
- accuracy: grid values against a direct n x n Gram-matrix float64 implementation;
  bootstrap replicates against the same Gram formulas with explicit count weights;
  a float32 feature-space pass, for scale;
- the ``pytorch-cka`` package on the same representations (benchmark only, not a
  dependency): its ``cka_from_features`` per run pair over the whole grid.

Prints a summary and writes JSON (default ``benchmarks/results/similarity.json``).
``--quick`` runs a small CPU-sized version.

  python benchmarks/similarity.py [--device cuda] [--pytorch-cka-wheel .whl/pytorch_cka-*.whl]
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import platform
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

from wsbench import BatchRequest, hsic_gram_unbiased, prepare_linear
from wsbench import similarity as sim
from wsbench.kernels import cka_from_hsic, combine
from wsbench.plugins import load_registry


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def synthetic(runs: int, layers: int, n: int, d: int, latent: int, seed: int, device) -> list[torch.Tensor]:
    """``runs * layers`` float32 ``(n, d)`` representations sharing a latent; deeper = noisier mixes."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n, latent, generator=gen)
    reps = []
    for _ in range(runs):
        h = z
        for layer in range(layers):
            mix = torch.randn(h.shape[1], d, generator=gen) / math.sqrt(h.shape[1])
            h = torch.tanh(h @ mix + (0.3 + 0.2 * layer) * torch.randn(n, d, generator=gen))
            reps.append(h.to(device))
    return reps


def gram_cka_reference(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> float:
    """Debiased linear CKA from n x n Gram matrices, float64; ``w`` count weights (copies excluded)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    k, l = x @ x.T, y @ y.T
    if w is None:
        h = hsic_gram_unbiased
    else:
        n = x.shape[0]

        def h(a, b):
            da, db = torch.diagonal(a), torch.diagonal(b)
            q = w @ (a * b) @ w - (w * w * da * db).sum()
            u, v = a @ w - w * da, b @ w - w * db
            return (q + (w * u).sum() * (w * v).sum() / ((n - 1) * (n - 2)) - 2 * (w * u * v).sum() / (n - 2)) \
                / (n * (n - 3))
    return float(h(k, l) / torch.sqrt(h(k, k) * h(l, l)))


def load_pytorch_cka(wheel: str | None):
    """Import ``cka`` from pytorch-cka (installed, or unpacked from ``wheel``); stub its plotting imports."""
    if wheel:
        paths = glob.glob(wheel)
        if not paths:
            return None, f"no wheel matches {wheel}"
        target = Path("/tmp/pytorch-cka-unpacked")
        with zipfile.ZipFile(paths[0]) as zf:
            zf.extractall(target)
        sys.path.insert(0, str(target))
    # Its package __init__ imports its plotting module (matplotlib) and cka.py imports tqdm (bars):
    # cka_from_features uses neither, so stand-ins let it import where they are missing.
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        viz = types.ModuleType("cka.viz")
        for name in ("plot_cka_comparison", "plot_cka_heatmap", "plot_cka_layer_trend", "plot_cka_trend",
                     "plot_cka_trend_with_range", "save_figure"):
            setattr(viz, name, None)
        sys.modules["cka.viz"] = viz
    try:
        import tqdm  # noqa: F401
    except ImportError:
        stub = types.ModuleType("tqdm")
        stub.tqdm = lambda it=None, **k: it
        sys.modules["tqdm"] = stub
    try:
        import cka as pcka
        from cka import cka_from_features
        version = getattr(pcka, "__version__", "?")
        return cka_from_features, version
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-pairs", type=int, default=12, help="pairs checked against the n x n Gram form")
    ap.add_argument("--pytorch-cka-wheel", default=None)
    ap.add_argument("--skip-pytorch-cka", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes for a CPU smoke run")
    ap.add_argument("--other", nargs="*", default=["cka-biased", "mknn", "cka-rbf", "procrustes", "svcca"],
                    help="other measures to time on the same grid")
    ap.add_argument("--other-resamples", type=int, default=3)
    ap.add_argument("--time-guard", type=float, default=150.0, help="skip the other measures after this many s")
    ap.add_argument("--out", default="benchmarks/results/similarity.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.layers, args.n, args.d = 4, 3, 400, 64
        args.resamples, args.permutations, args.reference_pairs = min(args.resamples, 100), min(args.permutations,
                                                                                               20), 4
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 costs ~1e-4 in CKA: never for the float32 pass either
    metric = load_registry().metric("cka")
    reps = synthetic(args.runs, args.layers, args.n, args.d, 32, args.seed, device)
    m = len(reps)
    pairs = torch.tensor([(r, s) for r in range(m) for s in range(m)], device=device)
    budget = sim.default_budget(device)
    res: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                 or "cpu", "torch": torch.__version__, "representations": m, "pairs": m * m, "n": args.n,
                 "d": args.d, "resamples": args.resamples, "permutations": args.permutations,
                 "budget_bytes": budget, "dtype": "float64"}
    print(f"{m} representations ({args.runs} runs x {args.layers} layers), {m * m} pairs, n {args.n}, d {args.d} "
          f"on {res['device']}")
    started = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every section, so a later failure keeps what was measured
        if device.type == "cuda":
            res["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        out.write_text(json.dumps(res, indent=2) + "\n")

    def grid(resamples, perms):
        req = BatchRequest(pairs=pairs, max_bytes=budget,
                          weights=sim.bootstrap_weights(args.n, resamples, args.seed).to(device) if resamples else None,
                          perms=sim.permutations(args.n, perms, args.seed).to(device) if perms else None)
        return metric.batched(reps, req)

    grid(8, 2)  # warm-up: kernels, allocator
    values, t_values = timed(lambda: grid(0, 0), device)
    res["seconds_values"] = t_values
    print(f"values only:                {t_values:8.3f} s")
    boot, t_boot = timed(lambda: grid(args.resamples, 0), device)
    res["seconds_values_bootstrap"] = t_boot
    print(f"values + {args.resamples} resamples:    {t_boot:8.3f} s  (target <= 60 s at full size)")
    null, t_null = timed(lambda: grid(0, args.permutations), device)
    res["seconds_values_permutations"] = t_null
    print(f"values + {args.permutations} permutations:   {t_null:8.3f} s")
    lo, hi = sim.percentile_interval(boot.boot.cpu().numpy())
    nm, nh = sim.null_levels(null.null.cpu().numpy())
    v = values.values.cpu().numpy()
    off = [i for i, (r, s) in enumerate(pairs.tolist()) if r // args.layers != s // args.layers]
    res["value_range"] = [float(v[off].min()), float(v[off].max())]
    res["ci_width_median"] = float(np.median((hi - lo)[off]))
    res["values_inside_ci"] = float(np.mean((lo[off] <= v[off]) & (v[off] <= hi[off])))
    res["null_mean_abs_max"] = float(np.abs(nm[off]).max())
    res["null_high_median"] = float(np.median(nh[off]))
    print(f"cross-run values {res['value_range'][0]:.3f}..{res['value_range'][1]:.3f}; median CI width "
          f"{res['ci_width_median']:.4f}; point inside its CI for {100 * res['values_inside_ci']:.1f} %; "
          f"null mean |max| {res['null_mean_abs_max']:.4f}, null 95th pct median {res['null_high_median']:.4f}")

    # Accuracy against the direct n x n Gram form (float64), on evenly spread pairs.
    pick = np.linspace(0, len(off) - 1, args.reference_pairs).round().astype(int)
    errs, berrs = [], []
    w = sim.bootstrap_weights(args.n, 3, args.seed).to(device)
    for i in pick:
        q = off[i]
        r, s = pairs[q].tolist()
        errs.append(abs(gram_cka_reference(reps[r], reps[s]) - v[q]))
    for i in pick[:3]:
        q = off[i]
        r, s = pairs[q].tolist()
        for b in range(3):
            berrs.append(abs(gram_cka_reference(reps[r], reps[s], w[:, b].double()) - float(boot.boot[b, q])))
    res["max_abs_err_values_vs_gram_float64"] = max(errs)
    res["max_abs_err_bootstrap_vs_gram_float64"] = max(berrs)
    print(f"max |grid - n x n Gram float64|: values {max(errs):.2e}, bootstrap replicates {max(berrs):.2e}")
    save()

    # For scale: the same values from a float32 feature-space pass (TF32 off), and its error.
    def f32():
        xs = [prepare_linear(x).float() for x in reps]
        a = torch.cat(xs, 1)
        k = torch.stack([x.pow(2).sum(1) for x in xs], 1).double()
        g = (a.T @ a).double()
        qq = g.view(m, args.d, m, args.d).pow(2).sum((1, 3)).unsqueeze(0)
        nn_ = args.n
        s_ = -k.sum(0).unsqueeze(0)
        t3 = (k.T @ k).unsqueeze(0)
        h = combine(qq, s_, t3, t3, nn_, True)
        return cka_from_hsic(h)[0].reshape(-1)
    f32()
    v32, t32 = timed(f32, device)
    res["seconds_values_float32"] = t32
    res["max_abs_err_float32_feature_pass"] = float((v32.cpu() - values.values.cpu()).abs().max())
    print(f"float32 feature pass:       {t32:8.3f} s, max |err| {res['max_abs_err_float32_feature_pass']:.2e}")
    save()

    # pytorch-cka on the same representations, run pair by run pair (its API compares two stacks).
    if not args.skip_pytorch_cka:
        fn, version = load_pytorch_cka(args.pytorch_cka_wheel)
        res["pytorch_cka_version"] = version
        if fn is None:
            print(f"pytorch-cka unavailable: {version}")
        else:
            stacks = [torch.stack(reps[i * args.layers:(i + 1) * args.layers]) for i in range(args.runs)]

            def theirs():
                out = torch.empty(m, m, device=device)
                for i in range(args.runs):
                    for j in range(args.runs):
                        out[i * args.layers:(i + 1) * args.layers, j * args.layers:(j + 1) * args.layers] = \
                            fn(stacks[i], stacks[j])
                return out
            fn(stacks[0], stacks[1])
            try:
                ref, t_ref = timed(theirs, device)
                res["pytorch_cka_seconds_values"] = t_ref
                ours = values.values.view(m, m).cpu()
                ref = ref.cpu().double()
                unclamped = (ours > 0) & (ours < 1)  # it clamps to [0, 1]
                res["pytorch_cka_max_abs_diff"] = float((ref - ours)[unclamped].abs().max())
                res["speedup_values"] = t_ref / t_values
                res["pytorch_cka_seconds_bootstrap_extrapolated"] = t_ref * (1 + args.resamples)
                res["speedup_bootstrap_extrapolated"] = t_ref * (1 + args.resamples) / t_boot
                print(f"pytorch-cka {version} (float32, per run pair): {t_ref:8.3f} s for the value grid "
                      f"-> ours {res['speedup_values']:.1f}x faster; max |diff| {res['pytorch_cka_max_abs_diff']:.2e}")
                print(f"  with {args.resamples} resamples it would rerun the grid per resample: "
                      f"~{res['pytorch_cka_seconds_bootstrap_extrapolated']:.0f} s -> ours "
                      f"{res['speedup_bootstrap_extrapolated']:.0f}x faster")
            except Exception as exc:  # out of memory, most likely: record it and go on
                res["pytorch_cka_error"] = f"{type(exc).__name__}: {exc}"[:300]
                print(res["pytorch_cka_error"])
            save()

    # The other measures on the same grid: values, and a few resamples to price one resample.
    reg = load_registry()
    res["other_metrics"] = {}
    for name in args.other:
        if time.perf_counter() - started > args.time_guard:
            res["other_metrics"][name] = "skipped: time guard"
            continue
        other = reg.metric(name)
        try:
            def run(resamples, other=other):
                req = BatchRequest(pairs=pairs, max_bytes=budget, weights=sim.bootstrap_weights(
                    args.n, resamples, args.seed).to(device) if resamples else None)
                return other.batched(reps, req)
            _, tv = timed(lambda: run(0), device)
            res["other_metrics"][name] = {"seconds_values": tv}
            save()
            if tv > 20 or time.perf_counter() - started > args.time_guard:
                print(f"{name:12s} values {tv:8.3f} s; resamples not timed (time guard)")
                continue
            nb = args.other_resamples
            _, tb = timed(lambda nb=nb: run(nb), device)
            per = (tb - tv) / nb
            res["other_metrics"][name].update({f"seconds_values_{nb}_resamples": tb, "seconds_per_resample": per})
            print(f"{name:12s} values {tv:8.3f} s; +{nb} resamples {tb:8.3f} s (~{per:.3f} s per resample)")
        except Exception as exc:
            res["other_metrics"][name] = f"{type(exc).__name__}: {exc}"[:300]
            print(name, res["other_metrics"][name])
        save()
    res["seconds_total"] = time.perf_counter() - started
    save()
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
