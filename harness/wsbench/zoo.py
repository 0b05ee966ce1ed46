"""The INR zoo cache: fitted in chunks, stored as a memory-mappable array plus a manifest.

Layout of one zoo, ``<cache>/zoos/<dataset>-<key16>/``:
  weights.npy   (N, P) float32, rows in the order of ``ids.npy``
  psnr.npy      (N,) float32
  ids.npy       (N,) int64 sample ids
  done.json     finished chunk indices while building (a killed build redoes only unfinished chunks)
  psnr.partial.npy  per-INR PSNR of the finished chunks, while building
  manifest.json written last: its presence means the zoo is complete
A build holds an exclusive lock on ``.lock`` in the folder, so concurrent builds of one zoo
(grid workers) run it once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsbench import __version__
from wsbench.errors import WsbenchError
from wsbench.inr import fit_from, init_siren
from wsbench.siren import DEFAULT_RECIPE, check_recipe, to_internal
from wsbench.specs import SirenSpec
from wsbench.tables import save_npy, write_text

ZOO_FORMAT = 1
# INRs per GPU fit call (several chunks at once); memory ~ 12 bytes x parameters x this.
GPU_BATCH = 32768


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


@contextlib.contextmanager
def _building(path: Path):
    """Hold an exclusive lock on the zoo folder: a second process building the same zoo waits, then reuses it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): builds of one zoo must not overlap
        yield
        return
    with open(path / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _chunk_init(k: int, lo: int, hi: int, spec: SirenSpec, seed: int, init: str = "independent") -> torch.Tensor:
    """Initial weights of chunk ``k`` (rows ``lo:hi``), internal layout, from its own seeded generator
    (``init="shared"``: every row the one draw of the zoo's seed)."""
    if init == "shared":
        return to_internal(init_siren(1, spec, torch.Generator().manual_seed(seed))).expand(hi - lo, -1).clone()
    gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
    return to_internal(init_siren(hi - lo, spec, gen))


def build_zoo(root: Path, dataset: str, images: np.ndarray, ids: np.ndarray, spec: SirenSpec,
              recipe: dict | None = None, seed: int = 0, device: str | torch.device = "cpu",
              extra_manifest: dict | None = None,
              progress: Callable[[int, int, float], None] | None = None) -> Zoo:
    """Fit (or resume, or reuse) the zoo of ``images`` ``(N, C, H, W)`` uint8 with sample ``ids``.

    ``progress(done_inrs, total_inrs, running_mean_psnr)`` is called during and after every
    chunk (``running_mean_psnr`` is over finished chunks; NaN before the first).
    Chunk ``k`` always gets the same initial weights (its own generator), so a resumed or
    a GPU build (which fits several chunks at once) gives the INRs an uninterrupted build gives
    on the same device.
    """
    recipe = {**DEFAULT_RECIPE, **(recipe or {})}
    check_recipe(recipe)  # before a folder exists
    key = zoo_key(dataset, spec, recipe, seed, ids, images)
    path = Path(root) / "zoos" / f"{dataset}-{key[:16]}"
    if (path / "manifest.json").exists():
        return open_zoo(path)
    path.mkdir(parents=True, exist_ok=True)
    with _building(path):
        if (path / "manifest.json").exists():  # built by another process while this one waited
            return open_zoo(path)
        return _build_locked(path, key, dataset, images, ids, spec, recipe, seed, torch.device(device),
                             extra_manifest, progress)


def _build_locked(path, key, dataset, images, ids, spec, recipe, seed, device, extra_manifest, progress) -> Zoo:
    n, p = len(ids), spec.num_params
    chunk = int(recipe["chunk_size"])
    n_chunks = max(1, -(-n // chunk))
    bounds = [(k * chunk, min(n, (k + 1) * chunk)) for k in range(n_chunks)]
    done_file, weights_file, psnr_file = path / "done.json", path / "weights.npy", path / "psnr.partial.npy"
    done = set(json.loads(done_file.read_text())) if done_file.exists() else set()
    quality = None
    if done and weights_file.exists() and psnr_file.exists():
        quality = np.load(psnr_file)
        if quality.shape != (n,):
            quality = None
    if quality is None:  # nothing reusable: start over
        done, quality = set(), np.zeros(n, dtype=np.float32)
    weights = np.lib.format.open_memmap(weights_file, mode="r+" if done else "w+", dtype=np.float32, shape=(n, p))
    if weights.shape != (n, p):
        raise WsbenchError(f"{weights_file} has shape {weights.shape}, expected {(n, p)}; delete {path} and rebuild")
    # On a GPU, fit several chunks per call: small chunks would leave it idle.
    per_call = max(1, GPU_BATCH // chunk) if device.type == "cuda" else 1
    todo = [k for k in range(n_chunks) if k not in done]
    groups: list[list[int]] = []
    for k in todo:
        if groups and groups[-1][-1] == k - 1 and len(groups[-1]) < per_call:
            groups[-1].append(k)
        else:
            groups.append([k])
    started = time.perf_counter()

    def finished_mean() -> float:
        rows = [np.arange(*bounds[j]) for j in sorted(done)]
        return float(quality[np.concatenate(rows)].mean()) if rows else float("nan")

    for group in groups:
        lo, hi = bounds[group[0]][0], bounds[group[-1]][1]
        theta = torch.cat([_chunk_init(k, *bounds[k], spec, seed, recipe["init"]) for k in group])
        on_step = None
        if progress is not None:
            base = sum(b - a for j, (a, b) in enumerate(bounds) if j in done)
            db = finished_mean()

            def on_step(frac, _base=base, _size=hi - lo, _db=db, _last=[-1.0]):  # noqa: B006 - _last: its own state
                if frac - _last[0] >= 0.02 or frac >= 1.0:
                    _last[0] = frac
                    progress(_base + int(_size * frac), n, _db)
        w, q = fit_from(images[lo:hi], theta, spec, recipe, device, on_step=on_step)
        weights[lo:hi] = w
        quality[lo:hi] = q
        weights.flush()
        save_npy(psnr_file, quality)
        done.update(group)
        write_text(done_file, json.dumps(sorted(done)))
        if progress is not None:
            progress(sum(b - a for j, (a, b) in enumerate(bounds) if j in done), n, finished_mean())
    del weights
    save_npy(path / "psnr.npy", quality)
    save_npy(path / "ids.npy", np.asarray(ids, dtype=np.int64))
    manifest = {
        "format": ZOO_FORMAT, "key": key, "dataset": dataset, "count": n, "num_params": p,
        "spec": spec.to_dict(), "recipe": recipe, "seed": seed, "psnr": psnr_summary(quality),
        "wsbench_version": __version__, "fit_seconds": round(time.perf_counter() - started, 3),
        "device": str(device), "torch_version": torch.__version__,
        "layout": "per layer W (out, in) row-major then b (out,)", **(extra_manifest or {}),
    }
    write_text(path / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    psnr_file.unlink(missing_ok=True)
    done_file.unlink(missing_ok=True)
    return open_zoo(path)


def list_zoos(root: Path) -> list[dict]:
    out = []
    for m in sorted((Path(root) / "zoos").glob("*/manifest.json")):
        info = json.loads(m.read_text())
        info["path"] = str(m.parent)
        out.append(info)
    return out
