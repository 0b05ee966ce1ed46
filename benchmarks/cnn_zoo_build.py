"""CNN zoo training speed: one step of K members by each batching method, against one CNN at a time,
and the epochs of the Small-CNN-Zoo-sized zoo that fit a time budget.

    python benchmarks/cnn_zoo_build.py [--dataset cnn-cifar10gs] [--k 6000] [--budget-s 720]

Reads the dataset's official files through its plugin (``WSBENCH_DATA`` or ``--data-dir``) and its
default recipe for the device. Times one training step (batches, dropout, forward, backward, update;
:func:`wsbench.cnnzoo.train_step`) of ``--k`` members with each method of
:func:`wsbench.cnnzoo.batched_logits` (``grouped``, ``taps``; each eager and with the activation and
dropout fused by ``torch.compile``; ``taps+compile+bf16`` also in the recipe's mixed precision,
``dtype=bfloat16``) and of one member alone (the one-at-a-time loop: ``k`` times
that, the baseline measured in the same run). Then, from the fastest variant's step time, the
number of epochs of a zoo of ``--n`` CNNs that fits ``--budget-s`` (at most the paper's 86), printed
as the ``--recipe`` of ``wsbench zoo build`` on the last line and written with the timings to
``--out``. The zoo itself is built by the CLI, whose log times it (scripts/device-cnn-zoo.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from wsbench import cnnzoo as cz
from wsbench.plugins import registry


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def step_time(k: int, data: cz.Data, spec: cz.CnnSpec, method: str, dev: torch.device, reps: int = 3,
              compiled: bool = False, compute: torch.dtype | None = None) -> float:
    """Median seconds of one training step of ``k`` members (after one warm-up step, which compiles);
    ``compute``: the forward's dtype (bf16: the recipe's ``dtype=bfloat16``)."""
    members = cz.prepare_members(cz.sample_configs(k, 123), data, spec, 32)
    active = torch.ones(k, dtype=torch.bool, device=dev)
    unit = cz.unit_fn(compiled)
    order = None
    times = []
    for step in range(reps + 1):
        sync(dev)
        t = time.perf_counter()
        order = members.step(data, spec, step, order, 32, method, unit, active, compute)
        sync(dev)
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="cnn-cifar10gs")
    ap.add_argument("--data-dir", default=os.environ.get("WSBENCH_DATA", "data"))
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget-s", type=float, default=720.0, help="seconds of training the zoo may take")
    ap.add_argument("--k", type=int, default=6000, help="members per step in the timing")
    ap.add_argument("--methods", default="grouped,taps,taps+compile,grouped+compile,taps+compile+bf16",
                    help="variants: a method, then +compile and/or +bf16 (the recipe's dtype=bfloat16)")
    ap.add_argument("--out", default="benchmarks/results/cnn_zoo_step.json")
    args = ap.parse_args()
    for variant in args.methods.split(","):
        method, *flags = variant.split("+")
        if method not in cz.METHODS or not set(flags) <= {"compile", "bf16"}:
            ap.error(f"--methods {variant!r}: a method of {', '.join(cz.METHODS)}, then +compile and/or +bf16")
    dev = torch.device(args.device)
    ds = registry().datasets[args.dataset]
    images = ds.load(Path(args.data_dir))
    base = dict(ds.zoo_recipes["cuda" if dev.type == "cuda" else "cpu"])
    spec = cz.CnnSpec(image_size=int(base["image_size"] or images.train_images.shape[-1]))
    rows = cz.select_rows(len(images.train_labels), base["train_subset"], int(base["zoo_seed"]), 1)
    empty = torch.empty(0)
    data = cz.Data(cz.prepare_images(images.train_images[rows], spec.image_size).to(dev),
                   torch.as_tensor(np.asarray(images.train_labels)[rows], device=dev).long(), empty, empty, empty)
    result: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "dataset": args.dataset,
                    "image_size": spec.image_size, "train_pool": len(rows), "batch_size": 32}
    timing = {}
    for variant in args.methods.split(","):
        method, *flags = variant.split("+")
        try:
            timing[variant] = step_time(args.k, data, spec, method, dev, compiled="compile" in flags,
                                        compute=torch.bfloat16 if "bf16" in flags else None)
        except Exception as exc:  # a variant that cannot run here (no compiler) is reported, not fatal
            print(f"{variant}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", flush=True)
            continue
        print(f"{variant}: {args.k} members, {timing[variant] * 1e3:.1f} ms a step", flush=True)
    alone = step_time(1, data, spec, "grouped", dev, reps=20)
    best = min(timing, key=lambda m: timing[m])
    speedup = alone * args.k / timing[best]
    print(f"one CNN alone: {alone * 1e3:.2f} ms a step; {best} is {speedup:.1f}x the one-at-a-time loop", flush=True)
    result["step_seconds"] = {**timing, "alone": alone, "k": args.k}
    result["speedup_vs_one_at_a_time"] = {v: alone * args.k / t for v, t in timing.items()}
    # epochs that fit the budget: per chunk, its longest member's steps at the measured step time
    configs = cz.sample_configs(args.n, int(base["zoo_seed"]))
    per_epoch = sum(
        int(cz.member_steps(configs["train_fraction"][r], len(rows), 32, 1).max()) * timing[best] * len(r) / args.k
        for r in cz.chunk_rows(configs, int(base["chunk_size"])))
    epochs = int(max(1, min(86, args.budget_s // per_epoch)))
    method, *flags = best.split("+")
    recipe = {"epochs": epochs, "method": method, "compile": "compile" in flags,
              "dtype": "bfloat16" if "bf16" in flags else "float32"}
    result.update(projected_seconds_per_epoch=per_epoch, budget_s=args.budget_s, recipe=recipe)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"projected {per_epoch:.1f} s an epoch of {args.n} CNNs: {epochs} epochs fit {args.budget_s:.0f} s",
          flush=True)
    print("RECIPE " + " ".join(f"{k}={str(v).lower()}" for k, v in recipe.items()), flush=True)


if __name__ == "__main__":
    main()
