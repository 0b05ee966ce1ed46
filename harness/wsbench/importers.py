"""Importers for INR zoos that people already have: the DWSNets and NFN layouts.

Both store one SIREN per ``.pth`` file as a state dict of ``*.weight`` ``(out, in)`` and
``*.bias`` ``(out,)`` tensors in layer order (DWSNets: ``seq.{0,1,2}.{weight,bias}``).
Files are read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain
values only: nothing in a file can run code.

DWSNets layout (Navon et al. 2023), under the root::

  mnist_png_{training|testing}_{label}_{index}/checkpoints/*.pth   label and split in the path
  or any **/*.pth with a ``splits.json`` {split: {"path": [...], "label": [...]}} beside them,
  the labels either there or in each state dict (``label``), as the Fashion-MNIST zoo has them.

NFN layout (Zhou et al. 2023)::

  randinit_smaller_{label}s/net{index}.pth     index = official image (train first, then test)
  split by index: train < 45,000 <= val < 50,000 <= test

The result is a zoo folder like a fitted one (``weights.npy`` in wsbench's flat layout,
``ids.npy``, ``labels.npy``, ``splits.json``, ``manifest.json``), keyed by a hash of its
content, under ``<cache>/zoos/``; PSNR is unknown (NaN) since the images are not read.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsbench import __version__
from wsbench.errors import WsbenchError
from wsbench.specs import SirenSpec
from wsbench.tables import atomic_write
from wsbench.task import SPLITS
from wsbench.zoo import ZOO_FORMAT, Zoo, open_zoo

LAYOUTS = ("dwsnets", "nfn")
NFN_SPLIT_POINTS = (45_000, 50_000)
_DWS_DIR = re.compile(r"_(train|test)[a-z]*_(\d+)_(\d+)$")
_NFN_DIR = re.compile(r"^(?P<prefix>.+)_(?P<label>\d+)s$")
_NFN_FILE = re.compile(r"^net(\d+)\.pth$")


@dataclass
class Entry:
    """One INR file: where it is, and what its layout says about it (None when it says nothing)."""

    path: Path
    label: int | None = None
    split: str | None = None
    sample_id: int | None = None


def load_state(path: Path) -> dict:
    """A state dict read without running code; a one-line error names a file that is not one."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WsbenchError(f"{path} could not be loaded as a plain state dict ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}); it is not a weights-only .pth file") from None
    if not isinstance(sd, dict):
        raise WsbenchError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return sd


def params_of(sd: dict, path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(W (out, in), b (out,)), ...]`` from a state dict's ``*.weight``/``*.bias`` entries, in order."""
    ws = [v for k, v in sd.items() if k.endswith("weight") and torch.is_tensor(v)]
    bs = [v for k, v in sd.items() if k.endswith("bias") and torch.is_tensor(v)]
    if not ws or len(ws) != len(bs):
        raise WsbenchError(f"{path}: expected matching '*.weight' and '*.bias' tensors, found {len(ws)} weights "
                           f"and {len(bs)} biases (keys: {', '.join(list(sd)[:8])})")
    for k, (w, b) in enumerate(zip(ws, bs)):
        if w.ndim != 2 or b.shape != (w.shape[0],) or (k and w.shape[1] != ws[k - 1].shape[0]):
            raise WsbenchError(f"{path}: layer {k} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, which do "
                               "not chain into an MLP")
    return list(zip(ws, bs))


def label_of(sd: dict) -> int | None:
    v = sd.get("label")
    if torch.is_tensor(v) and v.numel() == 1:
        return int(v.item())
    return int(v) if isinstance(v, (int, np.integer)) else None


def scan_dwsnets(root: Path, splits_file: Path | None = None) -> list[Entry]:
    """DWSNets files with what the layout says; ``splits.json`` (given or found in ``root``) wins."""
    files = sorted(p for p in root.rglob("*.pth") if p.is_file())
    if not files:
        raise WsbenchError(f"no .pth files under {root}; point --root at the folder holding the DWSNets INRs")
    splits_file = splits_file or next(iter(sorted(root.glob("*splits*.json"))), None)
    entries = []
    if splits_file is not None:
        try:
            table = json.loads(Path(splits_file).read_text())
        except (OSError, ValueError) as exc:
            raise WsbenchError(f"{splits_file} is not a readable JSON splits file ({exc})") from None
        # Paths in a splits file are often absolute paths on another machine: match them by their tail.
        by_tail = {p.relative_to(root).as_posix(): p for p in files}
        for split, rec in table.items():
            name = {"training": "train", "validation": "val", "testing": "test"}.get(split, split)
            if name not in SPLITS or not isinstance(rec, dict):
                continue
            labels = rec.get("label") or [None] * len(rec.get("path", []))
            for raw, label in zip(rec.get("path", []), labels):
                parts = Path(raw).parts
                hit = next((by_tail[t] for t in ("/".join(parts[i:]) for i in range(len(parts))) if t in by_tail),
                           None)
                if hit is None:
                    raise WsbenchError(f"{splits_file} lists {raw}, which is not under {root}")
                entries.append(Entry(hit, None if label is None else int(label), name, _dws_id(hit)))
        return entries
    for p in files:
        m = _DWS_DIR.search(p.parent.parent.name) or _DWS_DIR.search(p.parent.name)
        if m:
            entries.append(Entry(p, int(m.group(2)), "train" if m.group(1) == "train" else "test", _dws_id(p)))
        else:
            entries.append(Entry(p))
    return entries


def _dws_id(p: Path) -> int | None:
    """Official sample id from ``mnist_png_{split}_{label}_{index}``: train ``index``, test 60,000 + ``index``."""
    m = _DWS_DIR.search(p.parent.parent.name) or _DWS_DIR.search(p.parent.name)
    if not m:
        return None
    return int(m.group(3)) + (0 if m.group(1) == "train" else 60_000)


def scan_nfn(root: Path, prefix: str = "randinit_smaller", split_points: tuple[int, int] | None = None) -> list[Entry]:
    """NFN files ``{prefix}_{label}s/net{index}.pth``; split by index at ``split_points`` (45k, 50k)."""
    split_points = split_points or NFN_SPLIT_POINTS
    entries = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        m = _NFN_DIR.match(d.name)
        if not d.is_dir() or not m or m.group("prefix") != prefix:  # skips e.g. randinit_smaller_aug0_3s
            continue
        for p in sorted(d.iterdir()):
            f = _NFN_FILE.match(p.name)
            if f:
                idx = int(f.group(1))
                split = "train" if idx < split_points[0] else "val" if idx < split_points[1] else "test"
                entries.append(Entry(p, int(m.group("label")), split, idx))
    if not entries:
        raise WsbenchError(f"no {prefix}_<label>s/net<index>.pth files under {root}; point --root at the NFN "
                           "SIREN folder")
    ids = [e.sample_id for e in entries]
    if len(set(ids)) != len(ids):
        raise WsbenchError(f"{root}: the same net<index>.pth appears under two labels; the zoo is inconsistent")
    return sorted(entries, key=lambda e: e.sample_id)


def import_zoo(root: Path, layout: str, cache_dir: Path, name: str | None = None, w0: float = 30.0,
               splits_file: Path | None = None, num_val: int = 5000, split_seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> Zoo:
    """Read a zoo in ``layout`` under ``root`` into ``<cache_dir>/zoos/``; returns it (reused if present).

    INRs without a split (a DWSNets tree without one in its paths) are test; a zoo with no
    validation split gets ``num_val`` of its training INRs, seeded by ``split_seed``.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise WsbenchError(f"unknown zoo layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise WsbenchError(f"{root} is not a folder; pass the folder that holds the {layout} INRs")
    entries = scan_nfn(root) if layout == "nfn" else scan_dwsnets(root, splits_file)
    rows, labels, spec = [], [], None
    for k, e in enumerate(entries):
        sd = load_state(e.path)
        params = params_of(sd, e.path)
        dims = [params[0][0].shape[1], *[w.shape[0] for w, _ in params]]
        this = SirenSpec(in_dim=dims[0], hidden=tuple(dims[1:-1]), out_dim=dims[-1], w0=float(w0))
        if spec is None:
            spec = this
        elif this != spec:
            raise WsbenchError(f"{e.path} is a {'-'.join(map(str, this.dims))} MLP but the zoo's first INR is "
                               f"{'-'.join(map(str, spec.dims))}; a zoo needs one architecture")
        rows.append(torch.cat([t for w, b in params for t in (w.reshape(-1), b)]).float().numpy())
        label = e.label if e.label is not None else label_of(sd)
        if label is None:
            raise WsbenchError(f"{e.path}: no label in its path, the splits file or its state dict")
        labels.append(label)
        if progress is not None:
            progress(k + 1, len(entries))
    weights = np.stack(rows)
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.array([e.sample_id if e.sample_id is not None else -1 for e in entries], dtype=np.int64)
    if (ids < 0).any() or len(set(ids.tolist())) != len(ids):
        ids = np.arange(len(entries), dtype=np.int64)  # no usable ids in the layout: file order
    split = np.array([e.split or "test" for e in entries])
    if not (split == "val").any() and (split == "train").sum() > num_val > 0:
        train_rows = np.flatnonzero(split == "train")
        split[np.random.default_rng(split_seed).permutation(train_rows)[:num_val]] = "val"
    splits = {s: ids[split == s].tolist() for s in SPLITS}
    h = hashlib.sha256(json.dumps({"format": ZOO_FORMAT, "layout": layout, "spec": spec.to_dict()},
                                  sort_keys=True).encode())
    for a in (weights, labels, ids, np.array([SPLITS.index(s) for s in split], dtype=np.int8)):
        h.update(np.ascontiguousarray(a).tobytes())
    key = h.hexdigest()
    label = name or f"{layout}-{root.name}"
    path = Path(cache_dir) / "zoos" / f"imported-{label}-{key[:16]}"
    if (path / "manifest.json").exists():
        return open_zoo(path)
    manifest = {
        "format": ZOO_FORMAT, "key": key, "dataset": label, "count": len(ids),
        "num_params": int(weights.shape[1]), "spec": spec.to_dict(),
        "recipe": {"imported": layout, "steps": None}, "seed": None,
        "psnr": None, "wsbench_version": __version__, "source": {"layout": layout, "root": str(root.resolve())},
        "splits": {s: len(v) for s, v in splits.items()}, "split_seed": split_seed,
        "labels": {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))},
        "layout": "per layer W (out, in) row-major then b (out,)",
    }

    def write(tmp: Path) -> None:  # the whole folder appears at once
        tmp.mkdir()
        np.save(tmp / "weights.npy", weights)
        np.save(tmp / "psnr.npy", np.full(len(ids), np.nan, dtype=np.float32))
        np.save(tmp / "ids.npy", ids)
        np.save(tmp / "labels.npy", labels)
        (tmp / "splits.json").write_text(json.dumps(splits))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    atomic_write(path, write)
    return open_zoo(path)
