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

Integrity: the manifest records every array's size and SHA-256 (``files``) and a checksum of its
own content (``manifest_sha256``). Opening a zoo (:func:`verify_zoo`) checks the manifest, each
array's size and ``.npy`` header on every open (a few stat calls), and hashes each array once per
process and file state (path, size, mtime, inode): a 55,000 x 1,185 float32 zoo (260 MB) hashes
in under a second, next to minutes of training, and a worker that opens the zoo again pays
nothing. A zoo that fails (truncated, zero bytes, edited, manifest unreadable) is a
:class:`ZooDamaged` error naming the folder and the command that rebuilds it; ``inrs build``
(``build_zoo(repair=True)``) rebuilds it. Zoos built before checksums are checked by size and
header only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsbench import __version__
from wsbench.errors import WsbenchError, WsbenchWarning
from wsbench.inr import fit_from, init_siren
from wsbench.siren import DEFAULT_RECIPE, check_recipe, to_internal
from wsbench.specs import SirenSpec
from wsbench.tables import save_npy, sweep_temporaries, write_text

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


ARRAYS = ("weights.npy", "psnr.npy", "ids.npy")  # a fitted zoo's arrays; an imported one adds labels.npy
_HASH_CHUNK = 16 << 20
# (path, size, mtime_ns, inode) -> sha256 of the files hashed by this process: each state is hashed once.
_verified: dict[tuple[str, int, int, int], str] = {}


class ZooDamaged(WsbenchError):
    """A cached zoo failed its integrity check; the message names the folder and the fix."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest_checksum(manifest: dict) -> str:
    """SHA-256 of a manifest's content without its own ``manifest_sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal(manifest: dict, folder: Path, arrays: Iterable[str]) -> dict:
    """``manifest`` with the size and SHA-256 of each of ``arrays`` in ``folder`` and its own checksum."""
    files: dict[str, dict] = {}
    for name in arrays:
        p = Path(folder) / name
        files[name] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        st = p.stat()
        _verified[(str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)] = files[name]["sha256"]
    out = {**manifest, "files": files}
    out["manifest_sha256"] = manifest_checksum(out)
    return out


def rebuild_hint(path: Path, manifest: dict | None = None) -> str:
    """The command that rebuilds the zoo in ``path`` (from its manifest when it is readable)."""
    m = manifest or {}
    recipe = m.get("recipe") or {}
    if m.get("kind") == "cnn":  # a CNN zoo (wsbench.cnnzoo): built by `wsbench zoo build`, or imported
        if m.get("imported"):
            root = (m.get("source") or {}).get("root", "ROOT")
            return f"delete {path} and import it again (wsbench.importers.import_small_cnn_zoo from {root})"
        return f"rebuild it with `wsbench zoo build --dataset {m.get('dataset') or path.name.rsplit('-', 1)[0]}`"
    if path.name.startswith("imported-") or recipe.get("imported"):
        src = m.get("source") or {}
        root, layout = src.get("root", "ROOT"), src.get("layout", recipe.get("imported") or "dwsnets|nfn")
        return f"delete {path} and re-import it with `wsbench inrs import {root} --layout {layout}`"
    dataset = m.get("dataset") or path.name.rsplit("-", 1)[0]
    limit = f" --limit {m['limit']}" if m.get("limit") else ""
    note = "" if m else " (with the --limit and --recipe options it was built with)"
    return f"rebuild it with `wsbench inrs build --dataset {dataset}{limit}`{note}"


def _npy_problem(p: Path, size: int, shape: tuple | None, dtype: str | None) -> str | None:
    """What is wrong with the ``.npy`` file ``p`` of ``size`` bytes: an unreadable header, a size that
    does not match it, or another shape or dtype than expected (None: not checked)."""
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            got_shape, _, got_dtype = read(f)
            offset = f.tell()
    except Exception as exc:  # zero bytes, garbage, a cut header
        return f"{p.name} is not a readable .npy file ({type(exc).__name__}: {exc})"
    want = offset + int(np.prod(got_shape, dtype=np.int64)) * got_dtype.itemsize
    if size != want:
        return f"{p.name} has {size:,} bytes where its header promises {want:,} (truncated or overwritten)"
    if shape is not None and tuple(got_shape) != tuple(shape):
        return f"{p.name} has shape {tuple(got_shape)}, the manifest says {tuple(shape)}"
    if dtype is not None and got_dtype != np.dtype(dtype):
        return f"{p.name} holds {got_dtype}, expected {dtype}"
    return None


def zoo_problem(path: Path, full: bool = True) -> tuple[str | None, dict | None]:
    """``(problem, manifest)``: why the zoo in ``path`` cannot be used (None when it can) and its
    manifest when readable. ``full``: also compare each array's SHA-256 (once per process and file
    state); otherwise sizes, headers and the manifest's own checksum only."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        return "manifest.json is missing (the build did not finish)", None
    except (OSError, ValueError) as exc:
        return f"manifest.json is unreadable ({type(exc).__name__}: {exc})", None
    if not isinstance(manifest, dict) or "key" not in manifest or "count" not in manifest:
        return "manifest.json is not a zoo manifest", None
    if "manifest_sha256" in manifest and manifest["manifest_sha256"] != manifest_checksum(manifest):
        return "manifest.json was edited after the build (its checksum does not match)", manifest
    if not path.name.endswith(str(manifest["key"])[:16]):
        return f"manifest.json belongs to zoo {str(manifest['key'])[:16]}, not to this folder", manifest
    files = manifest.get("files") or {}
    n, p = int(manifest["count"]), manifest.get("num_params")
    expect = {"weights.npy": ((n, p) if p is not None else None, "float32"), "psnr.npy": ((n,), None),
              "ids.npy": ((n,), "int64"), "labels.npy": ((n,), "int64")}
    for name in files or ARRAYS:
        f = path / name
        try:
            st = f.stat()
        except FileNotFoundError:
            return f"{name} is missing", manifest
        if files and st.st_size != files[name]["bytes"]:
            return (f"{name} has {st.st_size:,} bytes, the manifest records {files[name]['bytes']:,} "
                    "(truncated or replaced)"), manifest
        problem = _npy_problem(f, st.st_size, *expect.get(name, (None, None)))
        if problem:
            return problem, manifest
        if full and files:
            key = (str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
            if _verified.get(key) != files[name]["sha256"]:
                digest = file_sha256(f)
                if digest != files[name]["sha256"]:
                    return f"{name} does not match its checksum (its content changed after the build)", manifest
                _verified[key] = digest
    return None, manifest


def verify_zoo(path: Path, full: bool = True) -> dict:
    """The manifest of the zoo in ``path`` once it passes :func:`zoo_problem`; else :class:`ZooDamaged`."""
    path = Path(path)
    problem, manifest = zoo_problem(path, full)
    if problem is not None:
        kind = "CNN" if (manifest or {}).get("kind") == "cnn" else "INR"
        raise ZooDamaged(f"{kind} zoo {path} is damaged: {problem}; {rebuild_hint(path, manifest)} "
                         "(other zoos are not affected)")
    assert manifest is not None
    return manifest


def open_zoo(path: Path) -> Zoo:
    """The zoo in ``path``, verified first (:func:`verify_zoo`)."""
    path = Path(path)
    manifest = verify_zoo(path)
    return Zoo(path=path, weights=np.load(path / "weights.npy", mmap_mode="r"),
               psnr=np.load(path / "psnr.npy"), ids=np.load(path / "ids.npy"), manifest=manifest)


def _discard(path: Path) -> None:
    """Remove a damaged zoo's files (the manifest first: the folder stops being a zoo at once)."""
    for name in ("manifest.json", *ARRAYS, "labels.npy", "done.json", "psnr.partial.npy", "splits.json"):
        (path / name).unlink(missing_ok=True)


def psnr_summary(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "p5": float(np.percentile(v, 5)), "median": float(np.median(v)), "max": float(v.max())}


@contextlib.contextmanager
def build_lock(path: Path):
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
              progress: Callable[[int, int, float], None] | None = None, repair: bool = False) -> Zoo:
    """Fit (or resume, or reuse) the zoo of ``images`` ``(N, C, H, W)`` uint8 with sample ``ids``.

    ``progress(done_inrs, total_inrs, running_mean_psnr)`` is called during and after every
    chunk (``running_mean_psnr`` is over finished chunks; NaN before the first).
    Chunk ``k`` always gets the same initial weights (its own generator), so a resumed or
    a GPU build (which fits several chunks at once) gives the INRs an uninterrupted build gives
    on the same device.

    A stored zoo that fails its check (:func:`verify_zoo`) is a :class:`ZooDamaged` error, or with
    ``repair`` is removed and fitted again.
    """
    recipe = {**DEFAULT_RECIPE, **(recipe or {})}
    check_recipe(recipe)  # before a folder exists
    key = zoo_key(dataset, spec, recipe, seed, ids, images)
    path = Path(root) / "zoos" / f"{dataset}-{key[:16]}"
    if (path / "manifest.json").exists():
        try:
            return open_zoo(path)
        except ZooDamaged:
            if not repair:
                raise
    path.mkdir(parents=True, exist_ok=True)
    with build_lock(path):
        sweep_temporaries([path])  # what a killed build's atomic writes left behind
        if (path / "manifest.json").exists():  # built by another process while this one waited, or damaged
            try:
                return open_zoo(path)
            except ZooDamaged as exc:
                if not repair:
                    raise
                warnings.warn(f"{exc}: fitting it again", WsbenchWarning, stacklevel=2)
                _discard(path)
        return _build_locked(path, key, dataset, images, ids, spec, recipe, seed, torch.device(device),
                             extra_manifest, progress)


def _build_locked(path, key, dataset, images, ids, spec, recipe, seed, device, extra_manifest, progress) -> Zoo:
    n, p = len(ids), spec.num_params
    chunk = int(recipe["chunk_size"])
    n_chunks = max(1, -(-n // chunk))
    bounds = [(k * chunk, min(n, (k + 1) * chunk)) for k in range(n_chunks)]
    done_file, weights_file, psnr_file = path / "done.json", path / "weights.npy", path / "psnr.partial.npy"
    try:  # a resume state damaged by the kill counts as none
        done = set(json.loads(done_file.read_text())) if done_file.exists() else set()
    except (OSError, ValueError, TypeError):
        done = set()
    quality = None
    if done and weights_file.exists() and psnr_file.exists():
        try:
            quality = np.load(psnr_file)
        except (OSError, ValueError, EOFError):
            quality = None
        if quality is not None and quality.shape != (n,):
            quality = None
    if quality is None:  # nothing reusable: start over
        done, quality = set(), np.zeros(n, dtype=np.float32)
    weights = None
    if done:
        try:
            weights = np.lib.format.open_memmap(weights_file, mode="r+")
        except (ValueError, OSError, EOFError):
            weights = None  # truncated or garbled by the kill: start over
        if weights is not None and (weights.shape != (n, p) or weights.dtype != np.float32):
            weights = None
        if weights is None:
            done, quality = set(), np.zeros(n, dtype=np.float32)
    if weights is None:
        weights = np.lib.format.open_memmap(weights_file, mode="w+", dtype=np.float32, shape=(n, p))
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
    manifest = seal(manifest, path, ARRAYS)  # the arrays' sizes and checksums, and the manifest's own
    write_text(path / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    psnr_file.unlink(missing_ok=True)
    done_file.unlink(missing_ok=True)
    return open_zoo(path)


def list_zoos(root: Path, full: bool = False) -> list[dict]:
    """Every cached zoo's manifest (with ``path``), sorted by folder. A zoo that fails its check
    (:func:`zoo_problem`; ``full`` hashes the arrays too) is listed with ``broken`` (the problem) and
    ``fix`` instead of failing the listing."""
    out = []
    for m in sorted((Path(root) / "zoos").glob("*/manifest.json")):
        problem, manifest = zoo_problem(m.parent, full)
        info = dict(manifest or {})
        if problem is not None:
            info.setdefault("dataset", m.parent.name.rsplit("-", 1)[0])
            info.setdefault("key", m.parent.name.rsplit("-", 1)[-1])
            info.update(broken=problem, fix=rebuild_hint(m.parent, manifest))
        info["path"] = str(m.parent)
        out.append(info)
    return out
