"""Training throughput of the GMN: the dense batched path against the plain PyG reference path.

    python benchmarks/gmn_throughput.py [--devices cpu,cuda] [--batch-size 256] [--epoch] [--profile]
                                        [--network siren|cnn]

A training step is what the training loop does per batch: forward, the loss, backward, AdamW step.
Random weights stand in for a zoo (the cost does not depend on the values): of the MNIST SIREN spec
(2-32-32-1; cross-entropy over 10 classes), or with ``--network cnn`` of the Small CNN Zoo network
(its conv parameter graph, 59 nodes and 688 edges; MSE on one scalar, as on the CNN zoos, with the
gmn's ``cnn-cifar10gs`` defaults; written to gmn_throughput_cnn.json). ``--epoch`` also times one
full epoch of the training loop (``wsbench.train.train``) over 55,000 training INRs with its 5,000-INR validation pass;
``--profile`` records the dense path's most expensive operators per step (where to optimise next).
Prints and writes JSON to benchmarks/results/gmn_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsbench import SirenSpec, TaskInfo
from wsbench import config as cfg
from wsbench.cnnzoo import CnnSpec
from wsbench.plugins import load_registry
from wsbench.task import Task
from wsbench.train import make_optimizer, train

OUT = Path(__file__).parent / "results" / "gmn_throughput.json"
warmup_s: dict = {}


def _info(spec: Any) -> TaskInfo:
    p = spec.num_params
    if isinstance(spec, SirenSpec):
        return TaskInfo("bench", 10, (1, 28, 28), spec, weight_mean=np.zeros(p, np.float32),
                        weight_std=np.full(p, 0.1, np.float32))
    return TaskInfo("bench", 1, (), None, network=spec, target="scalar", views=("weights",),
                    weight_mean=np.zeros(p, np.float32), weight_std=np.full(p, 0.1, np.float32))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(impl: str, device: torch.device, batch_size: int, config: dict, spec: Any):
    """One GMN training step (forward, loss, backward, AdamW) on a fixed random batch."""
    arch = load_registry().architecture("gmn")
    torch.manual_seed(0)
    model = arch.build(_info(spec), {**config, "impl": impl}).to(device).train()
    opt = make_optimizer(model, config)  # the training loop's AdamW (fused on CUDA)
    x = torch.randn(batch_size, spec.num_params, device=device) * 0.1
    scalar = not isinstance(spec, SirenSpec)
    y = torch.randn(batch_size, device=device) if scalar else torch.randint(0, 10, (batch_size,), device=device)

    def step():
        out = model(x)[0]
        loss = F.mse_loss(out[:, 0], y) if scalar else F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def samples_per_second(impl: str, device: torch.device, batch_size: int, steps: int, config: dict,
                       spec: Any) -> float:
    """Training samples/s of ``steps`` timed steps after 3 warm-up steps."""
    step = training_step(impl, device, batch_size, config, spec)
    t = time.perf_counter()
    for _ in range(3):
        step()
    _sync(device)
    warmup_s[impl] = time.perf_counter() - t  # includes torch.compile's compilation when it is on
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - t)


def profile_steps(device: torch.device, batch_size: int, config: dict, spec: Any, steps: int = 5,
                  top: int = 25) -> list[dict]:
    """The dense path's most expensive operators over ``steps`` training steps (torch.profiler), to
    show where a step's time goes: ``[{"op", "calls_per_step", "self_ms_per_step"}]``, device time on CUDA."""
    from torch.profiler import ProfilerActivity, profile
    step = training_step("dense", device, batch_size, config, spec)
    for _ in range(3):
        step()
    _sync(device)
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda ev: getattr(ev, key), reverse=True)[:top]
    return [{"op": ev.key[:120], "calls_per_step": round(ev.count / steps, 1),
             "self_ms_per_step": round(getattr(ev, key) / 1e3 / steps, 3)} for ev in rows]


def epoch_seconds(device: torch.device, config: dict, spec: SirenSpec, n_train: int = 55_000,
                  n_val: int = 5_000) -> dict:
    """Wall time of training-loop epochs over ``n_train`` INRs (each with its validation pass)."""
    n = n_train + n_val + 100
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((n, spec.num_params)) * 0.1).astype(np.float32)
    splits = {"train": np.arange(n_train), "val": n_train + np.arange(n_val), "test": n_train + n_val + np.arange(100)}
    task = Task(info=_info(spec), ids=np.arange(n), labels=rng.integers(0, 10, n),
                images=np.zeros((n, 1, 1, 1), np.uint8), weights=weights, psnr=np.zeros(n, np.float32), splits=splits)
    stamps = []
    arch = load_registry().architecture("gmn")
    conf = {**config, "epochs": 3}
    t0 = time.perf_counter()
    train(task, arch, conf, 0, device, on_epoch=lambda e, total, h: stamps.append(time.perf_counter()))
    times = np.diff([t0, *stamps])
    # The first epoch includes start-up (allocator, kernels' first launches); report the later ones.
    return {"n_train": n_train, "n_val": n_val, "batch_size": int(conf["batch_size"]),
            "epoch_seconds": [round(float(v), 3) for v in times],
            "epoch_seconds_steady": round(float(times[1:].mean()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the gmn default for mnist")
    ap.add_argument("--gpu-steps", type=int, default=50)
    ap.add_argument("--cpu-steps", type=int, default=3)
    ap.add_argument("--cpu-batch-size", type=int, default=32)
    ap.add_argument("--epoch", action="store_true", help="also time full training-loop epochs (GPU only)")
    ap.add_argument("--profile", action="store_true", help="also record the dense path's top operators per step")
    ap.add_argument("--set", action="append", default=[], help="gmn config override key=value")
    ap.add_argument("--network", choices=("siren", "cnn"), default="siren", help="the zoo's networks (see above)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/gmn_throughput[_cnn].json")
    args = ap.parse_args()
    cnn = args.network == "cnn"
    spec: Any = CnnSpec(image_size=32) if cnn else SirenSpec(2, (32, 32), 1)
    args.out = args.out or (OUT.with_name("gmn_throughput_cnn.json") if cnn else OUT)
    if cnn and args.epoch:
        ap.error("--epoch times the INR training loop; leave it out with --network cnn")
    arch = load_registry().architecture("gmn")
    config = cfg.resolve(arch, "cnn-cifar10gs" if cnn else "mnist", cfg.parse_overrides(args.set))
    bs = args.batch_size or int(config["batch_size"])
    spec_name = "cnn 16-16-16 (4,970 weights)" if cnn else "2-32-32-1"
    result: dict[str, Any] = {"spec": spec_name, "config": config, "torch": torch.__version__,
                              "host": platform.node(), "cpu_threads": torch.get_num_threads(), "results": {}}
    for name in args.devices.split(","):
        device = torch.device(name)
        if device.type == "cuda":
            result["gpu"] = torch.cuda.get_device_name(device)
        steps = args.gpu_steps if device.type == "cuda" else args.cpu_steps
        batch = bs if device.type == "cuda" else args.cpu_batch_size
        row = {"batch_size": batch, "steps": steps}
        for impl in ("dense", "pyg"):
            row[f"{impl}_samples_per_s"] = round(samples_per_second(impl, device, batch, steps, config, spec), 1)
            print(f"{name} {impl}: {row[f'{impl}_samples_per_s']:,.0f} training samples/s (batch {batch})", flush=True)
        row["warmup_3_steps_s"] = {k: round(v, 2) for k, v in warmup_s.items()}
        row["speedup_dense_over_pyg"] = round(row["dense_samples_per_s"] / row["pyg_samples_per_s"], 2)
        row["dense_epoch_55k_s_estimate"] = round(55_000 / row["dense_samples_per_s"], 2)
        print(f"{name}: dense is {row['speedup_dense_over_pyg']:.2f}x the PyG path", flush=True)
        if args.epoch and device.type == "cuda":
            row["training_loop_epochs"] = epoch_seconds(device, config, spec)
            print(f"{name}: training-loop epoch over 55,000 INRs (+5,000 val): "
                  f"{row['training_loop_epochs']['epoch_seconds_steady']:.2f} s", flush=True)
        if args.profile:
            row["dense_profile"] = profile_steps(device, batch, config, spec)
            for r in row["dense_profile"][:10]:
                print(f"  {r['self_ms_per_step']:8.3f} ms/step  {r['calls_per_step']:7.1f} calls  {r['op']}",
                      flush=True)
        result["results"][name] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
