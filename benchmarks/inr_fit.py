"""Benchmark of the batched SIREN fit: image-steps/s and PSNR on real images, CPU or GPU.

  python benchmarks/inr_fit.py --device cpu  --data-dir ../shared/data
  python benchmarks/inr_fit.py --device cuda --data-dir /tmp/wsdata --sweep --full-zoos mnist,fmnist

Speed: INRs of MNIST size (1x28x28, SIREN 2-32-32-1) and CIFAR size (3x32x32, 2-32-32-3)
fitted together through :func:`wsbench.inr.fit_batch`; image-steps/s = INRs x steps / seconds
(best of ``--repeats``; compilation warmed up first). On CUDA ``image_steps_per_s`` times the
steps with everything resident on the GPU, and ``end_to_end_image_steps_per_s`` the whole
``fit_batch`` call (CPU init, transfers, layout change). Fidelity: PSNR (mean, 5th percentile,
min) of each dataset's default recipe on a seeded random sample of its official training
images. ``--sweep`` (CUDA) times the kernel's variants (warps, matmul precision, hardware
sine) and checks each against the exact one. ``--full-zoos`` builds whole zoos through the
cache (:func:`wsbench.task.make_task`). Results are merged into ``--out`` (JSON) under the
device kind, and printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsbench.inr import fit_batch, init_siren
from wsbench.siren import to_internal
from wsbench.specs import SirenSpec
from wsbench.tables import write_text

SIZES = {"mnist-size": ("mnist", (1, 28, 28)), "cifar-size": ("cifar10", (3, 32, 32))}
VARIANTS = [(w, p, f) for p in ("ieee", "tf32x3", "tf32") for f in (False, True) for w in (2, 4, 8)]


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def hardware(device: str) -> dict:
    info: dict[str, object] = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    else:
        model = ""
        try:
            with open("/proc/cpuinfo") as f:
                model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        info.update(cpu=model or platform.processor(), cores=len(os.sched_getaffinity(0)),
                    torch_threads=torch.get_num_threads())
    return info


def _registry():
    from wsbench.plugins import load_registry
    return load_registry()


def real_images(dataset: str, data_dir: Path | None, n: int, seed: int = 0) -> np.ndarray | None:
    """``n`` official training images of ``dataset`` (seeded random sample), or None without data."""
    if data_dir is None:
        return None
    try:
        data = _registry().dataset(dataset).load(Path(data_dir))
    except Exception as exc:
        print(f"  ({dataset}: no real images: {exc})", file=sys.stderr)
        return None
    idx = np.random.default_rng(seed).choice(len(data.train_images), size=min(n, len(data.train_images)),
                                             replace=False)
    return np.ascontiguousarray(data.train_images[np.sort(idx)])


def speed(device: str, size: str, n: int, steps: int, repeats: int, data_dir) -> dict:
    """Image-steps/s of the batched fit at ``size`` (content does not change the work)."""
    dataset, (c, h, w) = SIZES[size]
    imgs = real_images(dataset, data_dir, n)
    if imgs is None or len(imgs) < n:
        imgs = np.random.default_rng(0).integers(0, 256, (n, c, h, w), dtype=np.uint8)
    spec = SirenSpec(hidden=(32, 32), out_dim=c)
    recipe = {"steps": steps, "lr": 1e-2}
    # Warm-up at full size: compilation, and on the CPU the worker processes (started once, then reused).
    fit_batch(imgs, spec, recipe, torch.Generator().manual_seed(0), device)
    runs = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fit_batch(imgs, spec, recipe, torch.Generator().manual_seed(0), device)
        _sync(device)
        runs.append(n * steps / (time.perf_counter() - t))
    out = {"image_steps_per_s": round(max(runs)), "runs": [round(r) for r in runs], "inrs": n, "steps": steps}
    if torch.device(device).type == "cuda":
        # The steps alone, weights and images resident on the GPU (no init, transfers or layout change).
        from wsbench import inr_cuda
        gpu_imgs = torch.from_numpy(imgs).cuda()
        theta0 = to_internal(init_siren(n, spec, torch.Generator().manual_seed(0))).cuda()
        fit_only = []
        for _ in range(repeats):
            theta = theta0.clone()
            torch.cuda.synchronize()
            t = time.perf_counter()
            inr_cuda.fit_triton(gpu_imgs, theta, spec, recipe)
            torch.cuda.synchronize()
            fit_only.append(n * steps / (time.perf_counter() - t))
        out["end_to_end_image_steps_per_s"] = out.pop("image_steps_per_s")
        out["image_steps_per_s"] = round(max(fit_only))
        out["fit_only_runs"] = [round(r) for r in fit_only]
    return out


def fidelity(device: str, dataset: str, n: int, data_dir) -> dict | None:
    """PSNR of the dataset's default recipe on ``n`` real training images."""
    imgs = real_images(dataset, data_dir, n)
    if imgs is None:
        return None
    spec = _registry().dataset(dataset)
    recipe = dict(spec.inr_recipe)
    inr = SirenSpec(hidden=tuple(spec.inr_hidden), out_dim=imgs.shape[1], w0=float(recipe.get("w0", 30.0)))
    t = time.perf_counter()
    _, q = fit_batch(imgs, inr, recipe, torch.Generator().manual_seed(0), device)
    seconds = time.perf_counter() - t
    return {"inrs": len(imgs), "recipe": recipe, "psnr_mean": round(float(q.mean()), 2),
            "psnr_p5": round(float(np.percentile(q, 5)), 2), "psnr_min": round(float(q.min()), 2),
            "psnr_median": round(float(np.median(q)), 2), "seconds": round(seconds, 2),
            "image_steps_per_s": round(len(imgs) * int(recipe["steps"]) / seconds)}


def _warm_variant(args):
    """Compile one kernel variant for both sizes (run in a worker process; fills Triton's cache)."""
    warps, prec, fast = args
    from wsbench import inr_cuda
    for _, (c, h, w) in SIZES.values():
        spec = SirenSpec(hidden=(32, 32), out_dim=c)
        imgs = torch.zeros(2, c, h, w, dtype=torch.uint8, device="cuda")
        theta = to_internal(init_siren(2, spec, torch.Generator().manual_seed(0))).cuda()
        inr_cuda.fit_triton(imgs, theta, spec, {"steps": 1, "lr": 1e-3}, warps=warps, precision=prec, fast=fast)
    torch.cuda.synchronize()
    return args


def sweep(n: int, steps: int, data_dir, psnr_n: int) -> list[dict]:
    """Every kernel variant: speed at both sizes, deviation from the exact variant, MNIST PSNR."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from wsbench import inr_cuda
    t = time.perf_counter()
    variants, failed = [], []
    with cf.ProcessPoolExecutor(max_workers=min(len(VARIANTS), os.cpu_count() or 1),
                                mp_context=mp.get_context("spawn")) as ex:
        futures = {ex.submit(_warm_variant, v): v for v in VARIANTS}
        for f in cf.as_completed(futures):
            try:
                variants.append(f.result())
            except Exception as exc:
                failed.append({"variant": futures[f], "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    variants = [v for v in VARIANTS if v in variants]
    print(f"  compiled {len(variants)} variants in {time.perf_counter() - t:.1f} s; failed: {failed}")
    mnist = real_images("mnist", data_dir, psnr_n)
    mspec = _registry().dataset("mnist")
    recipe = dict(mspec.inr_recipe)
    out = []
    refs = {}
    for warps, prec, fast in variants:
        row = {"warps": warps, "precision": prec, "fast_sin": fast}
        for size, (_, (c, h, w)) in SIZES.items():
            spec = SirenSpec(hidden=(32, 32), out_dim=c)
            imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, c, h, w), dtype=np.uint8)).cuda()
            theta0 = to_internal(init_siren(n, spec, torch.Generator().manual_seed(0))).cuda()
            best = 0.0
            for _ in range(2):
                theta = theta0.clone()
                torch.cuda.synchronize()
                t = time.perf_counter()
                inr_cuda.fit_triton(imgs, theta, spec, {"steps": steps, "lr": 1e-2}, warps=warps, precision=prec,
                                    fast=fast)
                torch.cuda.synchronize()
                best = max(best, n * steps / (time.perf_counter() - t))
            row[f"{size}_image_steps_per_s"] = round(best)
            small = theta[:256].cpu()
            if (prec, fast) == ("ieee", False) and size not in refs:
                refs[size] = small
            if size in refs:
                row[f"{size}_max_abs_dev_vs_exact"] = float((small - refs[size]).abs().max())
        if mnist is not None:
            imgs = torch.from_numpy(mnist).cuda()
            spec = SirenSpec(hidden=(32, 32), out_dim=1)
            theta = to_internal(init_siren(len(mnist), spec, torch.Generator().manual_seed(0))).cuda()
            mse = inr_cuda.fit_triton(imgs, theta, spec, recipe, warps=warps, precision=prec, fast=fast)
            q = (10 * torch.log10(4 / mse.clamp_min(1e-12))).cpu().numpy()
            row.update(mnist_psnr_mean=round(float(q.mean()), 2), mnist_psnr_p5=round(float(np.percentile(q, 5)), 2))
        print("  ", row)
        out.append(row)
    return out + [{"failed": x} for x in failed]


def torch_closed_form(n: int, steps: int) -> dict:
    """The same closed-form step in PyTorch ops on the GPU (what runs without Triton), for comparison."""
    from wsbench.siren import DEFAULT_RECIPE, PixelGrid, fit_internal, targets_cm
    out = {}
    for size, (_, (c, h, w)) in SIZES.items():
        spec = SirenSpec(hidden=(32, 32), out_dim=c)
        target = targets_cm(np.random.default_rng(0).integers(0, 256, (n, c, h, w), dtype=np.uint8)).cuda()
        theta = to_internal(init_siren(n, spec, torch.Generator().manual_seed(0))).cuda()
        grid = PixelGrid.make(h, w, "cuda")
        recipe = {**DEFAULT_RECIPE, "steps": steps, "lr": 1e-2}
        fit_internal(theta.clone(), target, spec, {**recipe, "steps": 2}, grid)
        torch.cuda.synchronize()
        t = time.perf_counter()
        fit_internal(theta, target, spec, recipe, grid)
        torch.cuda.synchronize()
        out[f"{size}_image_steps_per_s"] = round(n * steps / (time.perf_counter() - t))
    return out


def pick_variant(rows: list[dict]) -> dict:
    """Fastest variant (sum of both sizes' times) whose MNIST PSNR is within 0.5 dB of the exact one's."""
    rows = [r for r in rows if "failed" not in r]
    exact = next((r for r in rows if (r["precision"], r["fast_sin"]) == ("ieee", False)), None)

    def ok(r):
        return (exact is None or "mnist_psnr_mean" not in r
                or (r["mnist_psnr_mean"] >= exact["mnist_psnr_mean"] - 0.5
                    and r["mnist_psnr_p5"] >= exact["mnist_psnr_p5"] - 0.5))
    def cost(r):
        return 1 / r["mnist-size_image_steps_per_s"] + 1 / r["cifar-size_image_steps_per_s"]
    return min((r for r in rows if ok(r)), key=cost)


def kernel_vs_cpu(steps: int = 5) -> dict:
    """Largest weight difference between the CUDA fit and the CPU closed form after a few steps."""
    out = {}
    for size, (_, (c, h, w)) in SIZES.items():
        imgs = np.random.default_rng(2).integers(0, 256, (64, c, h, w), dtype=np.uint8)
        spec = SirenSpec(hidden=(32, 32), out_dim=c)
        rec = {"steps": steps, "lr": 1e-3}
        a = fit_batch(imgs, spec, rec, torch.Generator().manual_seed(0), "cuda")
        b = fit_batch(imgs, spec, rec, torch.Generator().manual_seed(0), "cpu")
        out[size] = {"max_abs_weight_diff": float(np.abs(a[0] - b[0]).max()),
                     "max_abs_psnr_diff_db": float(np.abs(a[1] - b[1]).max())}
    return out


def determinism(device: str) -> bool:
    imgs = np.random.default_rng(1).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    spec = SirenSpec()
    a = fit_batch(imgs, spec, {"steps": 10, "lr": 1e-2}, torch.Generator().manual_seed(0), device)[0]
    b = fit_batch(imgs, spec, {"steps": 10, "lr": 1e-2}, torch.Generator().manual_seed(0), device)[0]
    return bool(np.array_equal(a, b))


def zoo_timing(device: str, dataset: str, n: int) -> dict:
    """Time a whole zoo's fit at ``dataset``'s size and recipe on random pixels (for a GPU without the data)."""
    from wsbench.zoo import build_zoo
    spec = _registry().dataset(dataset)
    c, h, w = SIZES["cifar-size" if dataset == "cifar10" else "mnist-size"][1]
    imgs = np.random.default_rng(0).integers(0, 256, (n, c, h, w), dtype=np.uint8)
    inr = SirenSpec(hidden=tuple(spec.inr_hidden), out_dim=c)
    cache = Path(f"/tmp/wsbench-zoo-timing-{os.getpid()}")
    t = time.perf_counter()
    zoo = build_zoo(cache, f"{dataset}-random", imgs, np.arange(n), inr, dict(spec.inr_recipe), device=device)
    seconds = time.perf_counter() - t
    steps = int(zoo.manifest["recipe"]["steps"])
    import shutil
    shutil.rmtree(cache, ignore_errors=True)
    return {"inrs": n, "steps": steps, "seconds": round(seconds, 2), "image_steps_per_s": round(n * steps / seconds),
            "note": "random pixels: time only, PSNR meaningless"}


def full_zoos(device: str, datasets: list[str], data_dir, cache: Path) -> dict:
    from wsbench.task import make_task
    out = {}
    for name in datasets:
        spec = _registry().dataset(name)
        t = time.perf_counter()
        task = make_task(spec, data_dir, cache, None, device)
        seconds = time.perf_counter() - t
        assert task.zoo is not None  # a built task carries its zoo
        m = task.zoo.manifest
        out[name] = {"inrs": m["count"], "seconds_total": round(seconds, 2), "fit_seconds": m["fit_seconds"],
                     "psnr": {k: round(v, 2) for k, v in m["psnr"].items()}, "recipe": m["recipe"]}
        print(f"  {name}: {out[name]}")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data-dir", type=Path, default=os.environ.get("WSBENCH_DATA"))
    ap.add_argument("--speed-n", type=int, default=None, help="INRs per speed run (default: 512 CPU, 32768 GPU)")
    ap.add_argument("--speed-steps", type=int, default=None, help="steps per speed run (default: 20 CPU, 50 GPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--psnr-n", type=int, default=2000, help="real images per dataset for the PSNR check")
    ap.add_argument("--datasets", default="mnist,fmnist,cifar10")
    ap.add_argument("--sweep", action="store_true", help="CUDA: time and check every kernel variant first")
    ap.add_argument("--full-zoos", default="", help="comma list of datasets whose whole zoo to build")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/wsbench-bench-cache"))
    ap.add_argument("--zoo-timing", default="", help="comma list of datasets: time a full-size zoo on random pixels")
    ap.add_argument("--skip-speed", action="store_true", help="only the PSNR (and zoo) parts")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inr_fit.json")
    args = ap.parse_args(argv)
    device = args.device
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    n = args.speed_n or (32768 if kind == "cuda" else 512)
    steps = args.speed_steps or (50 if kind == "cuda" else 20)
    result: dict[str, Any] = {"hardware": hardware(device), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"device {device}: {result['hardware']}")
    if args.sweep and kind == "cuda":
        from wsbench import inr_cuda
        try:
            rows = sweep(min(n, 16384), 20, args.data_dir, min(args.psnr_n, 8192))
            best = pick_variant(rows)
            inr_cuda.WARPS, inr_cuda.PRECISION, inr_cuda.FAST_SIN = best["warps"], best["precision"], best["fast_sin"]
            result["sweep"] = rows
        except Exception as exc:
            result["sweep_error"] = f"{type(exc).__name__}: {exc}"
            print(f"sweep failed: {result['sweep_error']}")
    if kind == "cuda":
        result["torch_closed_form"] = torch_closed_form(min(n, 16384), 10)
        print(f"closed form in PyTorch ops (no fused kernel): {result['torch_closed_form']}")
    if kind == "cuda":
        from wsbench import inr_cuda
        result["kernel"] = {"warps": inr_cuda.WARPS, "precision": inr_cuda.PRECISION, "fast_sin": inr_cuda.FAST_SIN}
        print(f"kernel variant: {result['kernel']}")
    if not args.skip_speed:
        result["speed"] = {"load_average_before": list(os.getloadavg())}
        for size in SIZES:
            result["speed"][size] = speed(device, size, n, steps, args.repeats, args.data_dir)
            print(f"speed {size}: {result['speed'][size]}")
        result["speed"]["load_average_after"] = list(os.getloadavg())
        result["deterministic"] = determinism(device)
        print(f"same seed, same weights: {result['deterministic']}")
        if kind == "cuda":
            result["cuda_vs_cpu_after_5_steps"] = kernel_vs_cpu()
            print(f"CUDA vs CPU fit after 5 steps: {result['cuda_vs_cpu_after_5_steps']}")
    for name in [d for d in args.datasets.split(",") if d]:
        r = fidelity(device, name, args.psnr_n, args.data_dir)
        if r is not None:
            result.setdefault("psnr", {})[name] = r
            print(f"psnr {name}: {r}")
    if args.full_zoos:
        result["full_zoos"] = full_zoos(device, [d for d in args.full_zoos.split(",") if d], args.data_dir,
                                        args.cache_dir)
    if args.zoo_timing:
        sizes = {"mnist": 70000, "fmnist": 70000, "cifar10": 60000}
        result["zoo_timing"] = {d: zoo_timing(device, d, sizes[d]) for d in args.zoo_timing.split(",") if d}
        print(f"zoo timing: {result['zoo_timing']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(args.out.read_text()) if args.out.exists() else {}
    merged.setdefault(kind, {}).update(result)  # a partial run (--skip-speed) keeps the other parts
    write_text(args.out, json.dumps(merged, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
