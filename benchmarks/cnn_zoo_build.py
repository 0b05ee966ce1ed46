"""CNN zoo build throughput: the batched trainer against a one-CNN-at-a-time loop, and a full zoo.

    python benchmarks/cnn_zoo_build.py --data IMAGES.npz [--n 30000] [--device cuda] [--budget-s 330]

``IMAGES.npz`` holds uint8 ``train_x (N, C, H, W)``, ``train_y``, ``test_x``, ``test_y`` (the GPU run
used CIFAR-10 turned gray here, as the mean of the channels rounded to uint8, since the device
receives at most 64 MiB a call). Steps: (1) time one training step of K members with grouped
convolutions and with bmm on patches, and of one member alone (the one-at-a-time loop: K times
that); (2) pick the epochs that fit ``--budget-s`` at the faster method's measured step time;
(3) build the zoo (:func:`wsbench.cnnzoo.build_cnn_zoo`), timing it; (4) the per-layer statistics
features of Unterthiner et al. (per weight and bias tensor: mean, variance, quantiles 0/25/50/75/100
%) with test accuracy and configs to ``--stats-out``; (5) a statistics-baseline Kendall tau: a small
MLP on those features, 80/20 split. Results go to ``--out`` as JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsbench import cnnzoo as cz


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def step_time(k: int, data: cz.Data, spec: cz.CnnSpec, method: str, dev: torch.device, reps: int = 3) -> float:
    """Seconds of one training step (batches, dropout masks, forward, backward, update) of ``k`` members."""
    cfg = cz.sample_configs(k, 123)
    seeds = torch.as_tensor(cfg["seed"], device=dev)
    n = data.train_x.shape[0]
    sizes = torch.as_tensor(cz.member_sizes(cfg["train_fraction"], n, 32), device=dev)
    subsets = cz.member_subsets(seeds, sizes, n)
    theta = cz.init_members(cfg, spec).to(dev)
    relu = torch.as_tensor(cfg["activation"] == "relu", device=dev)
    rate = torch.as_tensor(cfg["dropout"], device=dev)
    scale = (1 / (1 - rate)).float()
    opt = torch.zeros(k, dtype=torch.int64, device=dev)
    lr = torch.full((k,), 0.01, device=dev)
    state = cz.OptState(torch.zeros_like(theta), torch.zeros_like(theta), torch.zeros(k, dtype=torch.int64, device=dev))
    shapes = [(32, c, s, s) for c, s in zip(spec.channels, spec.feature_sizes)]
    order = None
    times = []
    for step in range(reps + 1):
        sync(dev)
        t = time.perf_counter()
        ids, order = cz.step_batches(seeds, sizes, subsets, step, 32, order)
        st = torch.full((k,), step, device=dev)
        keep = [cz.dropout_keep(seeds, st, i, s, rate) for i, s in enumerate(shapes)]
        th = theta.detach().requires_grad_(True)
        logits = cz.batched_logits(th, data.train_x[ids], spec, relu, keep, scale, method)
        loss = F.cross_entropy(logits.transpose(1, 2), data.train_y[ids], reduction="none").mean(1)
        (g,) = torch.autograd.grad(loss.sum(), th)
        cz.optimizer_step(theta, g, state, opt, lr, torch.ones(k, dtype=torch.bool, device=dev))
        sync(dev)
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def stats_features(weights: np.ndarray, spec: cz.CnnSpec, dev: torch.device) -> tuple[np.ndarray, list[str]]:
    """``(N, 7 x tensors)`` float32: per weight and bias tensor mean, variance, quantiles 0/25/50/75/100 %."""
    w = torch.as_tensor(np.asarray(weights), device=dev)
    feats, names = [], []
    for li, (wt, bt) in enumerate(cz.unflatten(w, spec)):
        for kind, t in (("W", wt.reshape(len(w), -1)), ("b", bt)):
            q = torch.quantile(t, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], device=dev), dim=1).T
            feats.append(torch.cat([t.mean(1, keepdim=True), t.var(1, keepdim=True), q], dim=1))
            names += [f"l{li}.{kind}.{s}" for s in ("mean", "var", "q0", "q25", "q50", "q75", "q100")]
    return torch.cat(feats, 1).float().cpu().numpy(), names


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> float:
    """Kendall's tau-b of two ``(n,)`` vectors (all pairs, in row blocks)."""
    n = a.shape[0]
    conc = ties_a = ties_b = 0.0
    for lo in range(0, n, 2048):
        da = torch.sign(a[lo:lo + 2048, None] - a[None])
        db = torch.sign(b[lo:lo + 2048, None] - b[None])
        conc += float((da * db).sum())
        ties_a += float((da == 0).sum())
        ties_b += float((db == 0).sum())
    pairs = n * n
    return conc / float(np.sqrt((pairs - ties_a) * (pairs - ties_b)))


def stats_tau(x: np.ndarray, y: np.ndarray, dev: torch.device, seed: int = 0) -> dict:
    """A 2-hidden-layer MLP on standardised features, 80/20 split, MSE; Kendall tau on the 20 %."""
    g = torch.Generator().manual_seed(seed)
    ok = np.isfinite(x).all(1) & np.isfinite(y)
    xt = torch.as_tensor(x[ok], device=dev)
    yt = torch.as_tensor(y[ok], device=dev)
    perm = torch.randperm(len(xt), generator=g).to(dev)
    cut = int(0.8 * len(xt))
    tr, te = perm[:cut], perm[cut:]
    xt = torch.nan_to_num(xt)
    # quantile features are heavy-tailed: a signed log, then standardise on the training part
    xt = torch.sign(xt) * torch.log1p(xt.abs() * 100)
    mu, sd = xt[tr].mean(0), xt[tr].std(0) + 1e-6
    xt = (xt - mu) / sd
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 1)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    for _ in range(150):
        for idx in tr[torch.randperm(len(tr), device=dev)].split(256):
            loss = F.mse_loss(model(xt[idx]).squeeze(1), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(xt[te]).squeeze(1)
    r2 = 1 - float(((pred - yt[te]) ** 2).mean() / yt[te].var())
    return {"kendall_tau": kendall_tau(pred, yt[te]), "r2": r2, "n_train": cut, "n_test": len(te),
            "model": "MLP 56-256-256-1, Adam 1e-3, 150 epochs, signed-log + standardised features"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--dataset", default="cifar10gs")
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget-s", type=float, default=330.0)
    ap.add_argument("--k", type=int, default=6000, help="members per step in the timing and per chunk")
    ap.add_argument("--root", default="/tmp/wsbench-cnnzoo")
    ap.add_argument("--out", default="benchmarks/results/cnn_zoo_build.json")
    ap.add_argument("--stats-out", default="benchmarks/results/cnn_zoo_stats_cifar10gs.npz")
    ap.add_argument("--recipe", default="gpu", choices=["gpu", "cpu"])
    args = ap.parse_args()
    dev = torch.device(args.device)
    arrays = np.load(args.data, allow_pickle=False)
    train_x, train_y, test_x, test_y = (arrays[k] for k in ("train_x", "train_y", "test_x", "test_y"))
    base: dict = dict(cz.GPU_RECIPE if args.recipe == "gpu" else cz.CPU_RECIPE)
    spec = cz.CnnSpec(image_size=int(base["image_size"] or train_x.shape[-1]))
    rows = cz.select_rows(len(train_y), base["train_subset"], 0, 1)
    data = cz.Data(cz.prepare_images(train_x[rows], spec.image_size).to(dev),
                   torch.as_tensor(train_y[rows], device=dev).long(), torch.empty(0), torch.empty(0), torch.empty(0))
    result: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "dataset": args.dataset,
                    "image_size": spec.image_size}
    timing = {}
    for method in ("grouped", "bmm"):
        timing[method] = step_time(args.k, data, spec, method, dev)
        print(f"{method}: {args.k} members, {timing[method] * 1e3:.1f} ms a step", flush=True)
    alone = step_time(1, data, spec, "grouped", dev, reps=20)
    method = min(timing, key=lambda m: timing[m])
    speedup = alone * args.k / timing[method]
    print(f"one CNN alone: {alone * 1e3:.2f} ms a step; batched speedup {speedup:.1f}x", flush=True)
    result["step_seconds"] = {**timing, "alone": alone, "k": args.k}
    result["speedup_vs_one_at_a_time"] = speedup
    # epochs that fit the budget: per chunk, its longest member's steps at the measured step time
    configs = cz.sample_configs(args.n, 0)
    chunk = int(base["chunk_size"])
    per_epoch = sum(
        int(cz.member_steps(configs["train_fraction"][r], len(rows), 32, 1).max()) * timing[method] * len(r) / args.k
        for r in cz.chunk_rows(configs, chunk))
    epochs = int(max(1, min(86, (args.budget_s * 0.85) // per_epoch)))
    recipe = {**base, "epochs": epochs, "method": method}
    print(f"projected {per_epoch:.1f} s an epoch: {epochs} epochs", flush=True)
    result["recipe"] = recipe
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        el = time.perf_counter() - started
        print(f"{done}/{total} CNNs, {el:.0f} s, {done / el:.1f} CNNs/s", flush=True)

    zoo = cz.build_cnn_zoo(args.root, args.dataset, train_x, train_y, test_x, test_y, n=args.n, seed=0,
                           recipe=recipe, device=dev, progress=progress)
    build_s = time.perf_counter() - started
    acc = np.asarray(zoo.targets["test_acc"])
    result["build"] = {"n": args.n, "seconds": build_s, "minutes": build_s / 60, "path": str(zoo.path),
                       "test_acc": zoo.manifest["test_acc"],
                       "test_acc_above_0.2": float((acc > 0.2).mean()),
                       "train_acc_median": float(np.nanmedian(zoo.targets["train_acc"]))}
    print(json.dumps(result["build"], indent=1), flush=True)
    feats, names = stats_features(zoo.weights, spec, dev)
    cols: dict = {f"config_{k}": v for k, v in zoo.configs.items()}
    Path(args.stats_out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.stats_out, features=feats, feature_names=np.array(names), test_acc=acc.astype(np.float32),
                        train_acc=np.asarray(zoo.targets["train_acc"], np.float32),
                        test_loss=np.asarray(zoo.targets["test_loss"], np.float32), **cols)
    result["stats_npz"] = Path(args.stats_out).name
    result["stats_baseline"] = stats_tau(feats, acc.astype(np.float32), dev)
    print(json.dumps(result["stats_baseline"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
