"""Same seed and config, same numbers on the same device: trains each architecture twice and compares.

    python benchmarks/determinism.py [--dataset shapes] [--archs cnn,mlp,gmn] [--device auto] [--set key=value]

Each architecture is trained twice from the same seed on the same task (a fresh model each time);
the two runs must agree exactly in per-epoch training loss, validation accuracy and test
predictions. Prints one line per architecture and writes benchmarks/results/determinism.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wsbench import config as cfg
from wsbench.plugins import load_registry
from wsbench.task import make_task
from wsbench.train import resolve_device, train

OUT = Path(__file__).parent / "results" / "determinism.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="shapes")
    ap.add_argument("--archs", default="cnn,mlp,gmn")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (every arch)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    reg = load_registry()
    device = resolve_device(args.device)
    task = make_task(reg.dataset(args.dataset), args.data_dir, args.cache_dir, args.limit, device=str(device))
    result = {"dataset": args.dataset, "seed": args.seed, "limit": args.limit, "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "archs": {}}
    for name in args.archs.split(","):
        arch = reg.architecture(name)
        config = cfg.resolve(arch, args.dataset, cfg.parse_overrides(args.set))
        runs, secs = [], []
        for _ in range(2):
            t = time.perf_counter()
            runs.append(train(task, arch, config, args.seed, device))
            secs.append(round(time.perf_counter() - t, 1))
        a, b = runs
        same = {"history": a.history == b.history, "test_preds": bool(np.array_equal(a.preds, b.preds)),
                "confidence": bool(np.array_equal(a.confidence, b.confidence))}
        result["archs"][name] = {"identical": all(same.values()), **same, "test_acc": [a.test_acc, b.test_acc],
                                 "seconds": secs}
        print(f"{name}: {'identical' if all(same.values()) else 'DIFFERENT'} ({same}); test acc "
              f"{a.test_acc:.4f} / {b.test_acc:.4f}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
