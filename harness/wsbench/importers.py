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
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from wsbench import __version__
from wsbench.errors import WsbenchError
from wsbench.specs import SirenSpec
from wsbench.tables import atomic_write, save_npy
from wsbench.task import SPLITS
from wsbench.zoo import ARRAYS, ZOO_FORMAT, Zoo, ZooDamaged, open_zoo, seal

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
    return sorted(entries, key=lambda e: cast(int, e.sample_id))  # every entry here has its index


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
    zoo_name = name or f"{layout}-{root.name}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", zoo_name):
        raise WsbenchError(f"--name {zoo_name!r} is not a plain name; use letters, digits, '.', '_' and '-' (it names "
                           "a folder inside the zoo cache)")
    entries = scan_nfn(root) if layout == "nfn" else scan_dwsnets(root, splits_file)
    rows: list[np.ndarray] = []
    label_list: list[int] = []
    spec: SirenSpec | None = None
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
        label_list.append(label)
        if progress is not None:
            progress(k + 1, len(entries))
    assert spec is not None  # the scans raise when they find no INR
    weights = np.stack(rows)
    labels = np.asarray(label_list, dtype=np.int64)
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
    zoo_name = name or f"{layout}-{root.name}"
    path = Path(cache_dir) / "zoos" / f"imported-{zoo_name}-{key[:16]}"
    if (path / "manifest.json").exists():
        try:
            return open_zoo(path)
        except ZooDamaged:
            shutil.rmtree(path)  # importing again is the repair
    manifest = {
        "format": ZOO_FORMAT, "key": key, "dataset": zoo_name, "count": len(ids),
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
        sealed = seal(manifest, tmp, (*ARRAYS, "labels.npy"))
        (tmp / "manifest.json").write_text(json.dumps(sealed, indent=2, sort_keys=True))
    atomic_write(path, write)
    return open_zoo(path)


# ---------------------------------------------------------------------------------------------
# The Small CNN Zoo release (Unterthiner et al. 2020; google-research dnn_predict_accuracy)
#
# One folder per dataset: ``weights.npy`` (rows, 4970) float32, one row per checkpoint (epochs 0, 1,
# 2, 3, 20, 40, 60, 80, 86 of each CNN); ``metrics.csv`` or ``metrics.csv.gz``, one row per weights
# row, with ``config.*`` hyperparameter columns, ``modeldir``, ``step``, ``test_accuracy``,
# ``test_loss``, ``train_accuracy``, ``train_loss``; ``layout.csv`` mapping columns to layers. Rows
# are Keras ``get_weights()`` order: conv kernels ``(kh, kw, in, out)``, biases, the dense kernel
# ``(in, out)``. We read layout.csv when it has ``varname``/``start_idx``/``end_idx``/``shape``
# columns and otherwise assume that order. Those column names, the kernels' TF order and the final
# checkpoint's ``step`` of 86 are also how the NFN authors' loader reads the release (Zhou et al. 2023,
# github.com/AllanYangZhou/nfn, experiments/data_utils.py), which keeps only ``step == 86`` rows;
# we have not opened a downloaded copy ourselves.

CNN_CONFIG_MAP = {"optimizer": "config.optimizer", "lr": "config.learning_rate", "l2": "config.l2reg",
                  "dropout": "config.dropout", "init": "config.w_init", "init_std": "config.init_std",
                  "train_fraction": "config.train_fraction", "activation": "config.activation"}
CNN_NUMERIC = {"lr", "l2", "dropout", "init_std", "train_fraction"}


def read_metrics_csv(path: Path) -> list[dict]:
    """Rows of a (gzipped) CSV as dicts of strings (the csv module: no code runs)."""
    import csv
    import gzip

    if path.suffix == ".gz":
        with gzip.open(path, "rt", newline="") as g:
            return list(csv.DictReader(g))
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in re.findall(r"\d+", text))


def tf_layout(root: Path, spec) -> list[tuple[int, tuple[int, ...]]]:
    """``(start column, TF shape)`` of each tensor in our layer order (W then b per layer)."""
    layout = root / "layout.csv"
    if layout.exists():
        rows = read_metrics_csv(layout)
        if rows and {"start_idx", "shape"} <= set(rows[0]):
            return [(int(r["start_idx"]), _shape(r["shape"])) for r in rows]
    out: list[tuple[int, tuple[int, ...]]] = []
    k = 0
    for w, b in spec.layer_shapes:
        tf: tuple[int, ...] = (w[2], w[3], w[1], w[0]) if len(w) == 4 else (w[1], w[0])
        out.append((k, tf))
        k += math.prod(tf)
        out.append((k, b))
        k += b[0]
    return out


def tf_to_flat(rows: np.ndarray, spec, layout: list[tuple[int, tuple[int, ...]]]) -> np.ndarray:
    """``(N, P)`` TF-layout rows -> wsbench's flat layout (conv ``(out, in, kh, kw)``, dense ``(out, in)``)."""
    parts = []
    for start, shape in layout:
        t = rows[:, start:start + math.prod(shape)].reshape(len(rows), *shape)
        if len(shape) == 4:
            t = t.transpose(0, 4, 3, 1, 2)  # (kh, kw, in, out) -> (out, in, kh, kw)
        elif len(shape) == 2:
            t = t.transpose(0, 2, 1)  # (in, out) -> (out, in)
        parts.append(t.reshape(len(rows), -1))
    out = np.concatenate(parts, axis=1).astype(np.float32)
    if out.shape[1] != spec.num_params:
        raise WsbenchError(f"layout gives {out.shape[1]} parameters, the spec {spec.num_params}")
    return out


def import_small_cnn_zoo(root: Path | str, cache: Path | str, name: str, final_only: bool = True,
                         image_size: int = 28):
    """Import one dataset folder of the Small CNN Zoo into ``<cache>/zoos/imported-<name>-<key16>/``,
    a folder :func:`wsbench.cnnzoo.open_cnn_zoo` reads. Weights load with ``allow_pickle=False`` and
    the CSVs with the csv module. ``final_only``: keep each CNN's last checkpoint (largest ``step``
    per ``modeldir``). The function view is absent (``n_probe`` 0): the release has no outputs."""
    from wsbench import cnnzoo

    root = Path(root)
    weights_file = root / "weights.npy"
    metrics_file = next((p for p in (root / "metrics.csv", root / "metrics.csv.gz") if p.exists()), None)
    if not weights_file.exists() or metrics_file is None:
        raise WsbenchError(f"{root} is not a Small CNN Zoo folder: it needs weights.npy and metrics.csv(.gz)")
    try:
        raw = np.load(weights_file, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise WsbenchError(f"{weights_file} is not a plain .npy array ({exc})") from None
    metrics = read_metrics_csv(metrics_file)
    if len(metrics) != raw.shape[0]:
        raise WsbenchError(f"{metrics_file.name} has {len(metrics)} rows, weights.npy {raw.shape[0]}")
    keep = list(range(len(metrics)))
    if final_only and metrics and "modeldir" in metrics[0] and "step" in metrics[0]:
        last: dict[str, int] = {}
        for i, r in enumerate(metrics):
            j = last.get(r["modeldir"])
            if j is None or float(r["step"]) > float(metrics[j]["step"]):
                last[r["modeldir"]] = i
        keep = sorted(last.values())
    spec = cnnzoo.CnnSpec(image_size=image_size)
    weights = tf_to_flat(np.asarray(raw[keep]), spec, tf_layout(root, spec))
    rows = [metrics[i] for i in keep]

    def col(key: str, numeric: bool = True) -> np.ndarray:
        vals = [r.get(key, "") for r in rows]
        if numeric:
            return np.array([float(v) if v not in ("", None) else np.nan for v in vals], dtype=np.float32)
        return np.array([str(v) for v in vals])

    n = len(rows)
    key = hashlib.sha256(weights.tobytes()).hexdigest()
    path = Path(cache) / "zoos" / f"imported-{name}-{key[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    save_npy(path / "weights.npy", weights)
    save_npy(path / "ids.npy", np.arange(n, dtype=np.int64))
    for ours, theirs in (("test_acc", "test_accuracy"), ("train_acc", "train_accuracy"), ("test_loss", "test_loss")):
        save_npy(path / f"{ours}.npy", col(theirs))
    columns = []
    for ours, theirs in CNN_CONFIG_MAP.items():
        if rows and theirs in rows[0]:
            save_npy(path / f"config_{ours}.npy", col(theirs, ours in CNN_NUMERIC))
            columns.append(ours)
    manifest = {"format": ZOO_FORMAT, "kind": "cnn", "imported": "small-cnn-zoo", "key": key, "dataset": name,
                "count": n, "num_params": spec.num_params, "spec": spec.to_dict(), "n_probe": 0,
                "function": "missing: the release has no network outputs", "config_columns": columns,
                "source": {"root": str(root), "layout": "small-cnn-zoo", "rows": int(raw.shape[0]),
                           "final_only": final_only},
                "layout": "per layer W row-major (conv (out, in, kh, kw), dense (out, in)) then b (out,)",
                "wsbench_version": __version__}
    manifest = seal(manifest, path, cnnzoo.zoo_arrays(manifest))
    atomic_write(path / "manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True)))
    return cnnzoo.open_cnn_zoo(path)
