"""How much of its tau the GMN loses on a zoo of mixed architectures, against the function view.

    python benchmarks/mixed_zoo_gap.py [--dataset cnn-mnist] [--sizes 1000,4000] [--seeds 0,1]
                                       [--results DIR] [--device cpu]

For each zoo size, ``wsbench grid --arch gmn --arch fn-mlp`` on the homogeneous zoo and on its
``-mixed`` twin (same images, same per-CNN hyperparameters, plus a depth of 2-4 conv layers and a
width of 8-32 filters per CNN), the datasets' default recipe for the device with ``zoo_size`` set.
Prints and writes (``benchmarks/results/mixed_zoo_gap_<device>.json``) per size and architecture the
mean test Kendall's tau on both zoos and the gap, and the GMN's gap beyond the function view's: the
part of the drop that is the weight view's, not the harder ranking task's. Runs already in
``--results`` are reused (the grid skips finished cells), so sizes can be added later.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cnn-mnist")
    ap.add_argument("--sizes", default="1000,4000")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--results", type=Path, default=Path("results-mixed-gap"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    mixed = f"{args.dataset}-mixed"
    table: dict = {}
    for n in (int(s) for s in args.sizes.split(",")):
        root = args.results / f"zoo{n}"
        cmd = [sys.executable, "-m", "wsbench", "grid", "--arch", "gmn", "--arch", "fn-mlp", "--dataset", args.dataset,
               "--dataset", mixed, "--seeds", args.seeds, "--recipe", f"zoo_size={n}", "--device", args.device,
               "--results", str(root)]
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        taus: dict = defaultdict(list)
        for r in pads.dataset(root / "runs", format="parquet", partitioning="hive").to_table().to_pylist():
            if r["status"] == "finished":
                taus[(r["dataset"], r["arch"])].append((r["seed"], r["test_score"]))
        row: dict[str, Any] = {}
        means: dict[str, tuple[float, float]] = {}
        for arch in ("gmn", "fn-mlp"):
            homo = [t for _, t in sorted(taus[(args.dataset, arch)])]
            mix = [t for _, t in sorted(taus[(mixed, arch)])]
            means[arch] = (float(np.mean(homo)), float(np.mean(mix)))
            row[arch] = {"homogeneous": homo, "mixed": mix, "gap": means[arch][0] - means[arch][1]}
        (gh, gm), (fh, fm) = means["gmn"], means["fn-mlp"]
        row["gmn_gap_beyond_fn_mlp"] = (gh - gm) - (fh - fm)
        table[str(n)] = row
        print(f"{n} CNNs: gmn {gh:.3f} -> {gm:.3f} (gap {gh - gm:.3f}); fn-mlp {fh:.3f} -> {fm:.3f} "
              f"(gap {fh - fm:.3f}); the GMN's gap beyond fn-mlp's {row['gmn_gap_beyond_fn_mlp']:.3f}", flush=True)
    out = OUT / f"mixed_zoo_gap_{args.device.split(':')[0]}.json"
    out.write_text(json.dumps({"dataset": args.dataset, "seeds": args.seeds, "device": args.device,
                               "recipe": "the dataset's default for the device, zoo_size per row",
                               "kendall_tau_by_zoo_size": table}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
