"""The INR zoo cache: fitted in chunks, stored as a memory-mappable array plus a manifest.

Layout of one zoo, ``<cache>/zoos/<dataset>-<key16>/``:
  weights.npy   (N, P) float32, rows in the order of ``ids.npy``
  psnr.npy      (N,) float32
  ids.npy       (N,) int64 sample ids
  done.json     finished chunk indices (a killed build resumes after the last one)
  manifest.json written last: its presence means the zoo is complete
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wsbench import __version__
from wsbench.inr import DEFAULT_RECIPE, SirenSpec, fit_batch

ZOO_FORMAT = 1


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def zoo_key(dataset: str, spec: SirenSpec, recipe: dict, seed: int, ids: np.ndarray, images: np.ndarray) -> str:
    """Hash of everything the zoo depends on: rebuilt only when one of them changes."""
    h = hashlib.sha256()
    # chunk_size is part of the key: each chunk draws its init from its own seeded generator.
    meta = {"format": ZOO_FORMAT, "dataset": dataset, "spec": spec.to_dict(), "recipe": recipe, "seed": seed}
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


@dataclass
class Zoo:
    path: Path
    weights: np.ndarray  # (N, P) float32, memory-mapped
    psnr: np.ndarray
    ids: np.ndarray
    manifest: dict


def open_zoo(path: Path) -> Zoo:
    manifest = json.loads((path / "manifest.json").read_text())
    return Zoo(path=path, weights=np.load(path / "weights.npy", mmap_mode="r"),
               psnr=np.load(path / "psnr.npy"), ids=np.load(path / "ids.npy"), manifest=manifest)


def psnr_summary(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "p5": float(np.percentile(v, 5)), "median": float(np.median(v)), "max": float(v.max())}


def build_zoo(root: Path, dataset: str, images: np.ndarray, ids: np.ndarray, spec: SirenSpec,
              recipe: dict | None = None, seed: int = 0, device: str | torch.device = "cpu",
              extra_manifest: dict | None = None,
              progress: Callable[[int, int, float], None] | None = None) -> Zoo:
    """Fit (or resume, or reuse) the zoo of ``images`` ``(N, C, H, W)`` uint8 with sample ``ids``.

    ``progress(done_inrs, total_inrs, running_mean_psnr)`` is called during and after every
    chunk (``running_mean_psnr`` is over finished chunks; NaN before the first).
    """
    recipe = {**DEFAULT_RECIPE, **(recipe or {})}
    key = zoo_key(dataset, spec, recipe, seed, ids, images)
    path = Path(root) / "zoos" / f"{dataset}-{key[:16]}"
    if (path / "manifest.json").exists():
        return open_zoo(path)
    path.mkdir(parents=True, exist_ok=True)
    n, p = len(ids), spec.num_params
    chunk = int(recipe["chunk_size"])
    n_chunks = max(1, -(-n // chunk))
    done_file = path / "done.json"
    done = set(json.loads(done_file.read_text())) if done_file.exists() else set()
    mode = "r+" if done and (path / "weights.npy").exists() else "w+"
    weights = np.lib.format.open_memmap(path / "weights.npy", mode=mode, dtype=np.float32, shape=(n, p))
    psnr_file = path / "psnr.partial.npy"
    quality = np.load(psnr_file) if done and psnr_file.exists() else np.zeros(n, dtype=np.float32)
    device = torch.device(device)
    started = time.perf_counter()
    for k in range(n_chunks):
        if k in done:
            continue
        lo, hi = k * chunk, min(n, (k + 1) * chunk)
        # One generator per chunk, seeded from (seed, chunk): resuming reproduces the same INRs.
        gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
        on_step = None
        if progress is not None:
            steps = int(recipe["steps"])
            base = sum(min(n, (j + 1) * chunk) - j * chunk for j in done)
            so_far = float(np.concatenate([quality[j * chunk:(j + 1) * chunk] for j in done]).mean()) if done \
                else float("nan")

            def on_step(step, _size=hi - lo, _base=base, _db=so_far):
                if step % 10 == 0:
                    progress(_base + int(_size * step / steps), n, _db)
        w, q = fit_batch(images[lo:hi], spec, recipe, gen, device, on_step=on_step)
        weights[lo:hi] = w
        quality[lo:hi] = q
        weights.flush()
        np.save(psnr_file.with_suffix(".tmp.npy"), quality)
        os.replace(psnr_file.with_suffix(".tmp.npy"), psnr_file)
        done.add(k)
        atomic_write_text(done_file, json.dumps(sorted(done)))
        if progress is not None:
            mask = np.concatenate([np.arange(j * chunk, min(n, (j + 1) * chunk)) for j in sorted(done)])
            progress(len(mask), n, float(quality[mask].mean()))
    del weights
    np.save(path / "psnr.npy", quality)
    np.save(path / "ids.npy", np.asarray(ids, dtype=np.int64))
    manifest = {
        "format": ZOO_FORMAT, "key": key, "dataset": dataset, "count": n, "num_params": p,
        "spec": spec.to_dict(), "recipe": recipe, "seed": seed, "psnr": psnr_summary(quality),
        "wsbench_version": __version__, "fit_seconds": round(time.perf_counter() - started, 3),
        "device": str(device), **(extra_manifest or {}),
    }
    atomic_write_text(path / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    psnr_file.unlink(missing_ok=True)
    return open_zoo(path)


def list_zoos(root: Path) -> list[dict]:
    out = []
    for m in sorted((Path(root) / "zoos").glob("*/manifest.json")):
        info = json.loads(m.read_text())
        info["path"] = str(m.parent)
        out.append(info)
    return out
