"""A Task: the same samples seen two ways (images and INR weights), with a fixed split.

Sample ids: official train image ``i`` has id ``i``; official test image ``j`` has
id ``n_train_official + j``. Splits: the official test set is ``test``; a
permutation of the official train set seeded by the dataset's ``split_seed``
gives ``val`` (its first ``num_val``) and ``train`` (the rest). ``limit`` keeps
the first ``limit`` ids of each split. Every architecture sees the same ids.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsbench.config import check_limit
from wsbench.errors import WsbenchError
from wsbench.specs import DatasetSpec, MixedNetworks, NetworkZoo, SirenSpec, TaskInfo, ZooRequest
from wsbench.tables import write_text
from wsbench.zoo import Zoo, build_zoo

SPLITS = ("train", "val", "test")


def default_cache_dir() -> Path:
    if os.environ.get("WSBENCH_CACHE"):
        return Path(os.environ["WSBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wsbench"


def default_data_dir() -> Path:
    if os.environ.get("WSBENCH_DATA"):
        return Path(os.environ["WSBENCH_DATA"])
    return default_cache_dir() / "data"


@dataclass
class Task:
    info: TaskInfo
    ids: np.ndarray  # (N,) int64 sample ids
    labels: np.ndarray  # (N,) the targets: int64 classes, or float64 values for a scalar target
    images: np.ndarray | None  # (N, C, H, W) uint8; None for a zoo of networks without images
    weights: np.ndarray  # (N, P) float32
    psnr: np.ndarray  # (N,) float32 (NaN where not an INR zoo)
    splits: dict  # split name -> row indices into the arrays above
    zoo: Zoo | None = None
    function: np.ndarray | None = None  # (N, *info.function_shape) float32: outputs on the zoo's probe inputs
    zoo_key: str = ""  # the cache key of the zoo the task was built from, stored on its run rows

    def inputs(self, view: str) -> torch.Tensor:
        """The float32 input tensor of a view for every row.

        ``images``: pixels in [0, 1] standardised per channel with training-split
        statistics. ``weights``: the raw network parameters (models normalise them).
        ``function``: the networks' outputs on the probe inputs, as stored.
        """
        if view not in self.info.views:
            raise WsbenchError(f"dataset {self.info.dataset!r} has no {view!r} view; its views: "
                               f"{', '.join(self.info.views)}")
        if view == "images" and self.images is not None:
            x = torch.from_numpy(np.ascontiguousarray(self.images)).float().div_(255.0)
            mean = torch.from_numpy(self.info.image_mean).float().view(1, -1, 1, 1)
            std = torch.from_numpy(self.info.image_std).float().view(1, -1, 1, 1)
            return (x - mean) / std
        if view == "weights":
            return torch.from_numpy(np.array(self.weights, dtype=np.float32))  # a copy: the zoo is read-only
        if view == "function" and self.function is not None:
            return torch.from_numpy(np.array(self.function, dtype=np.float32))
        raise WsbenchError(f"unknown view {view!r}; known views: {', '.join(self.info.views)}")


def split_ids(n_train_official: int, n_test_official: int, num_val: int, split_seed: int,
              limit: int | None = None) -> dict:
    """Sample ids of every split (see module docstring)."""
    if num_val >= n_train_official:
        raise WsbenchError(f"validation size {num_val} must be smaller than the {n_train_official} training images")
    perm = np.random.default_rng(split_seed).permutation(n_train_official)
    out = {"train": np.sort(perm[num_val:]), "val": np.sort(perm[:num_val]),
           "test": n_train_official + np.arange(n_test_official)}
    if limit is not None:
        if limit <= 0:
            raise WsbenchError(f"--limit must be a positive number of samples per split, got {limit}")
        # Take the first ``limit`` of each split in permuted order so a limited train set is a random sample.
        out["train"] = perm[num_val:][:limit]
        out["val"] = perm[:num_val][:limit]
        out["test"] = out["test"][:limit]
    return {k: v.astype(np.int64) for k, v in out.items()}


def make_task(spec: DatasetSpec, data_dir: Path | None = None, cache_dir: Path | None = None,
              limit: int | None = None, device: str = "cpu", progress=None, repair: bool = False,
              recipe: dict | None = None) -> Task:
    """Load images, split them, fit (or reuse) the INR zoo, and assemble the Task; for a dataset of
    trained networks, build or open its zoo with ``recipe`` (:func:`network_task`).

    A cached zoo that fails its integrity check is an error naming the fix, or with ``repair``
    is fitted again (:func:`wsbench.zoo.build_zoo`)."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if spec.networks is not None:
        return network_task(spec, data_dir, cache_dir, limit, device, progress, repair, recipe)
    if spec.load is None:
        raise WsbenchError(f"dataset {spec.name!r} has neither images (load) nor networks")
    try:
        data = spec.load(data_dir)
    except SystemExit as exc:  # a plugin must raise, not end the whole command silently
        raise WsbenchError(f"dataset {spec.name!r} called sys.exit({exc.code!r}) while loading; a dataset plugin "
                           "must raise an exception (WsbenchError for a problem the user can fix) instead") from exc
    n_tr, n_te = len(data.train_images), len(data.test_images)
    ids_by_split = split_ids(n_tr, n_te, spec.num_val, spec.split_seed, limit)
    all_images = data.train_images, data.test_images
    all_labels = data.train_labels, data.test_labels

    def take(arrays, ids):
        train_part, test_part = arrays
        return np.concatenate([train_part[ids[ids < n_tr]], test_part[ids[ids >= n_tr] - n_tr]])

    order = np.concatenate([ids_by_split[s] for s in SPLITS])
    # take() concatenates train-side ids before test-side ids; the test split comes last so order holds.
    images = take(all_images, order)
    labels = take(all_labels, order).astype(np.int64)
    sizes = [len(ids_by_split[s]) for s in SPLITS]
    bounds = np.cumsum([0, *sizes])
    splits = {s: np.arange(bounds[i], bounds[i + 1]) for i, s in enumerate(SPLITS)}

    c, h, w = images.shape[1:]
    inr = SirenSpec(in_dim=2, hidden=tuple(spec.inr_hidden), out_dim=c, w0=float(spec.inr_recipe.get("w0", 30.0)))
    zoo = build_zoo(cache_dir, spec.name, images, order, inr, dict(spec.inr_recipe), seed=0, device=device,
                    extra_manifest={"source_checksums": dict(data.checksums),
                                    "splits": {s: len(ids_by_split[s]) for s in SPLITS},
                                    "split_seed": spec.split_seed, "limit": limit},
                    progress=progress, repair=repair)
    split_file = zoo.path / "splits.json"
    if not split_file.exists():
        write_text(split_file, json.dumps({s: ids_by_split[s].tolist() for s in SPLITS}))
    weights = np.asarray(zoo.weights)
    tr = splits["train"]
    # Per-channel statistics one channel at a time: a float64 copy of CIFAR-10 would be 1 GB.
    chans = [images[tr, k].astype(np.float32) / 255.0 for k in range(c)]
    info = TaskInfo(
        dataset=spec.name, num_classes=len(data.classes), image_shape=(c, h, w), inr=inr,
        image_mean=np.array([x.mean(dtype=np.float64) for x in chans], dtype=np.float32),
        image_std=np.array([x.std(dtype=np.float64) + 1e-6 for x in chans], dtype=np.float32),
        weight_mean=weights[tr].mean(0).astype(np.float32),
        weight_std=(weights[tr].std(0) + 1e-6).astype(np.float32),
    )
    return Task(info=info, ids=order, labels=labels, images=images, weights=weights, psnr=zoo.psnr,
                splits=splits, zoo=zoo, zoo_key=zoo.manifest["key"])


def layout_statistics(network: MixedNetworks, rows: np.ndarray) -> tuple:
    """``TaskInfo.layout_stats``: per layout of ``network``, ``(count, mean (P_k,), std (P_k,))`` of the
    ``weights`` rows ``(n, 1 + max_params)`` that follow it (mean 0 and std 1 where none does)."""
    index = np.rint(rows[:, 0]).astype(np.int64)
    out = []
    for k, spec in enumerate(network.layouts):
        p = int(spec.num_params)
        own = rows[index == k, 1:1 + p].astype(np.float64)
        if len(own):
            out.append((len(own), own.mean(0).astype(np.float32), (own.std(0) + 1e-6).astype(np.float32)))
        else:
            out.append((0, np.zeros(p, np.float32), np.ones(p, np.float32)))
    return tuple(out)


def network_task(spec: DatasetSpec, data_dir: Path, cache_dir: Path, limit: int | None, device: str,
                 progress=None, repair: bool = False, recipe: dict | None = None) -> Task:
    """The Task of a dataset whose samples are trained networks (``DatasetSpec.networks``)."""
    assert spec.networks is not None
    check_limit(limit)
    request = ZooRequest(data_dir=data_dir, cache_dir=cache_dir, limit=limit, device=device, progress=progress,
                         repair=repair, recipe=dict(recipe or {}))
    try:
        zoo = spec.networks(request)
    except SystemExit as exc:
        raise WsbenchError(f"dataset {spec.name!r} called sys.exit({exc.code!r}) while building its zoo; a dataset "
                           "plugin must raise an exception instead") from exc
    if not isinstance(zoo, NetworkZoo):
        raise WsbenchError(f"dataset {spec.name!r}: networks() returned a {type(zoo).__name__}, not a NetworkZoo")
    views = spec.offered_views
    missing = [v for v in views if v not in zoo.views]
    if missing:
        raise WsbenchError(f"dataset {spec.name!r} declares the view {missing[0]!r} but its zoo has only "
                           f"{', '.join(zoo.views)}")
    splits = {s: np.asarray(zoo.splits[s], dtype=np.int64) for s in SPLITS}
    weights = np.asarray(zoo.views["weights"]) if "weights" in zoo.views else np.zeros((len(zoo.ids), 0), np.float32)
    function = np.asarray(zoo.views["function"], dtype=np.float32) if "function" in zoo.views else None
    tr = splits["train"]
    if spec.target == "scalar":
        labels = np.asarray(zoo.targets, dtype=np.float64)
        t_mean, t_std = float(labels[tr].mean()), float(labels[tr].std() + 1e-12)
        num_outputs = 1
    else:
        labels = np.asarray(zoo.targets, dtype=np.int64)
        t_mean, t_std = 0.0, 1.0
        num_outputs = len(zoo.classes) or int(labels.max()) + 1
    info = TaskInfo(
        # A zoo of SIRENs is read like an INR zoo (info.inr), whatever its target.
        dataset=spec.name, num_classes=num_outputs, image_shape=(),
        inr=zoo.network if isinstance(zoo.network, SirenSpec) else None, target=spec.target,
        network=zoo.network, views=tuple(views),
        function_shape=tuple(function.shape[1:]) if function is not None else (),
        weight_mean=weights[tr].mean(0).astype(np.float32),
        weight_std=(weights[tr].std(0) + 1e-6).astype(np.float32),
        target_mean=t_mean, target_std=t_std,
        function_mean=None if function is None else function[tr].reshape(len(tr), -1).mean(0).astype(np.float32),
        function_std=None if function is None else
        (function[tr].reshape(len(tr), -1).std(0) + 1e-6).astype(np.float32),
        layout_stats=layout_statistics(zoo.network, weights[tr]) if isinstance(zoo.network, MixedNetworks) else (),
    )
    return Task(info=info, ids=np.asarray(zoo.ids, dtype=np.int64), labels=labels, images=None, weights=weights,
                psnr=np.full(len(zoo.ids), np.nan, np.float32), splits=splits, function=function,
                zoo_key=zoo.key)
