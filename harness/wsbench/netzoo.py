"""Zoos of trained networks as tasks: a CNN zoo (:mod:`wsbench.cnnzoo`) turned into a :class:`NetworkZoo`.

A dataset plugin whose samples are CNNs trained on its images calls :func:`cnn_networks` from its
``networks`` hook: the zoo is built (or read from the cache) with the request's recipe, and its CNNs
are split by a seeded permutation into train, validation and test networks (by default 70 / 10 /
20 %); ``--limit N`` keeps the first N networks of each split of the same zoo, so a limited run
shares the cached zoo of an unlimited one. The target is each CNN's test accuracy on the dataset's
official test images; the views are ``weights`` (the flat layout of :class:`wsbench.cnnzoo.CnnSpec`)
and ``function`` (each CNN's softmax outputs on the zoo's fixed probe images, ``(probes, 10)``).
Network ids are the zoo's row ids.

A zoo of mixed architectures (``mixed=True``; :mod:`wsbench.cnnzoo`'s mixed zoos) has a
:class:`~wsbench.specs.MixedNetworks` layout: its distinct networks in order of (depth, width), and a
``weights`` row is the index of the row's network among them, then its parameters zero-padded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wsbench.errors import WsbenchError
from wsbench.specs import ImageData, MixedNetworks, NetworkZoo, Param, ZooRequest

SPLIT_FRACTIONS = {"val": 0.1, "test": 0.2}  # of the zoo's networks; the rest trains

# The type and range of every CNN zoo recipe key (``DatasetSpec.zoo_params``): a bad ``--recipe`` value
# fails before any work, naming the key and what it takes.
CNN_ZOO_PARAMS: dict[str, Param] = {
    "zoo_size": Param(int, ge=3, help="CNNs in the zoo"),
    "zoo_seed": Param(int, ge=0, help="seeds the configurations and the split"),
    "epochs": Param(int, ge=1, help="training epochs of every CNN"),
    "batch_size": Param(int, ge=1),
    "chunk_size": Param(int, ge=1, help="CNNs trained at once"),
    "train_subset": Param(int, ge=32, none=True, help="training images in the pool (null: all)"),
    "test_subset": Param(int, ge=1, none=True, help="test images the accuracy is measured on (null: all)"),
    "train_eval": Param(int, ge=1, none=True, help="images of its own subset a CNN's train accuracy uses"),
    "n_probe": Param(int, ge=1, help="probe images of the function view"),
    "dtype": Param(str, choices=("float32", "float64", "bfloat16"),
                   help="bfloat16: mixed precision (bf16 forward, float32 master weights and updates)"),
    "method": Param(str, choices=("grouped", "bmm", "taps"), help="how the members' convolutions are batched"),
    "compile": Param(bool, help="fuse each layer's activation and dropout with torch.compile"),
    "checkpoint_epochs": Param(list, item=int, help="also keep every CNN's weights after these epochs"),
    "image_size": Param(int, ge=7, none=True, help="resize images to this size (null: native)"),
}


def cnn_zoo_recipes(cpu_size: int = 1000, gpu_size: int = 30000) -> dict[str, dict]:
    """The default recipes of a CNN-zoo dataset (``DatasetSpec.zoo_recipes``): on a CPU a small zoo
    (``cpu_size`` CNNs trained briefly on an image subset, :data:`wsbench.cnnzoo.CPU_RECIPE`), on a
    GPU one of Small-CNN-Zoo size (:data:`wsbench.cnnzoo.GPU_RECIPE`); ``zoo_size`` and ``zoo_seed``
    (which seeds the configurations and the split) join the trainer's keys."""
    from wsbench.cnnzoo import CPU_RECIPE, GPU_RECIPE

    return {"cpu": {**CPU_RECIPE, "zoo_size": cpu_size, "zoo_seed": 0},
            "cuda": {**GPU_RECIPE, "zoo_size": gpu_size, "zoo_seed": 0}}


def split_rows(n: int, seed: int, limit: int | None = None, fractions: dict | None = None) -> dict[str, np.ndarray]:
    """Row indices of every split of a zoo of ``n`` networks: a permutation seeded by ``seed``; test
    first, then validation, the rest training; ``limit`` keeps the first ``limit`` of each."""
    fr = fractions or SPLIT_FRACTIONS
    perm = np.random.default_rng([seed, 11]).permutation(n)
    n_test, n_val = round(fr["test"] * n), round(fr["val"] * n)
    if n - n_test - n_val < 1 or n_val < 1 or n_test < 1:
        raise WsbenchError(f"a zoo of {n} networks is too small to split into train, val and test; raise zoo_size")
    out = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    if limit is not None:
        out = {k: v[:limit] for k, v in out.items()}
    return {k: np.sort(v).astype(np.int64) for k, v in out.items()}


def cnn_networks(request: ZooRequest, dataset: str, data: ImageData, target: str = "test_acc",
                 mixed: bool = False) -> NetworkZoo:
    """Build or open the CNN zoo of ``dataset`` trained on ``data`` with ``request.recipe``
    (``zoo_size``, ``zoo_seed`` and the trainer's keys, :data:`wsbench.cnnzoo.CPU_RECIPE`); with
    ``mixed``, a zoo of mixed depths and widths."""
    from wsbench.cnnzoo import TARGETS, build_cnn_zoo

    if target not in TARGETS:
        raise WsbenchError(f"unknown CNN zoo target {target!r}; known: {', '.join(TARGETS)}")
    recipe = dict(request.recipe)
    n, seed = int(recipe.pop("zoo_size", 0)), int(recipe.pop("zoo_seed", 0))
    if n < 3:
        raise WsbenchError(f"dataset {dataset!r}: recipe zoo_size={n}; give at least 3 networks (--recipe zoo_size=N)")

    def progress(done: int, total: int) -> None:
        if request.progress is not None:
            request.progress(done, total, float("nan"))

    zoo = build_cnn_zoo(request.cache_dir, dataset, data.train_images, data.train_labels, data.test_images,
                        data.test_labels, n=n, seed=seed, recipe=recipe, device=request.device, progress=progress,
                        repair=request.repair, extra_manifest={"source_checksums": dict(data.checksums)},
                        mixed=mixed)
    return as_network_zoo(zoo, seed, request.limit, target)


def as_network_zoo(zoo, seed: int, limit: int | None, target: str = "test_acc") -> NetworkZoo:
    """A :class:`wsbench.cnnzoo.CnnZoo` as a task's :class:`NetworkZoo`: split by ``seed``, ``limit``
    networks per split, its test accuracies the target (networks whose target is unknown are left out)."""
    y = np.asarray(zoo.targets[target], np.float64)
    known = np.flatnonzero(np.isfinite(y))
    splits = {k: known[v] for k, v in split_rows(len(known), seed, limit).items()}
    views = {"weights": zoo.weights}
    network = zoo.spec
    if zoo.mixed:
        network, index = mixed_layout(zoo)
        views["weights"] = np.concatenate([index[:, None].astype(np.float32), zoo.weights], axis=1)
    if zoo.function is not None:
        views["function"] = zoo.function
    return NetworkZoo(ids=np.asarray(zoo.ids, dtype=np.int64), targets=y, splits=splits, views=views,
                      network=network, key=zoo.manifest["key"], manifest=zoo.manifest)


def mixed_layout(zoo) -> tuple[MixedNetworks, np.ndarray]:
    """A mixed CNN zoo's :class:`MixedNetworks` (its distinct networks by depth, then width) and each
    row's index among them ``(N,)`` int64."""
    arch = np.stack([np.asarray(zoo.configs[k]) for k in ("depth", "width", "padding")], axis=1)
    _, first, index = np.unique(arch, axis=0, return_index=True, return_inverse=True)
    layouts = tuple(zoo.member_spec(int(row)) for row in first)
    return MixedNetworks(layouts), index.reshape(-1).astype(np.int64)


def imported_cnn_networks(request: ZooRequest) -> NetworkZoo:
    """The zoo named by ``--recipe zoo=FOLDER`` (``wsbench zoo import``'s output under the cache's
    ``zoos/``; a unique prefix is enough), split by ``zoo_seed``."""
    from wsbench.cnnzoo import open_cnn_zoo

    name = str(request.recipe.get("zoo") or "")
    root = Path(request.cache_dir) / "zoos"
    found = sorted(p for p in root.glob("imported-*") if p.is_dir()) if root.is_dir() else []
    if not name:
        raise WsbenchError("dataset cnn-imported: name the imported zoo with --recipe zoo=FOLDER; imported zoos: "
                           f"{', '.join(p.name for p in found) or '(none; run wsbench zoo import ROOT first)'}")
    match = [p for p in found if p.name == name] or [p for p in found if p.name.startswith(name)]
    if len(match) != 1:
        raise WsbenchError(f"--recipe zoo={name}: {'no' if not match else 'more than one'} imported zoo matches; "
                           f"imported zoos: {', '.join(p.name for p in found) or '(none)'}")
    return as_network_zoo(open_cnn_zoo(match[0]), int(request.recipe.get("zoo_seed", 0)), request.limit)
