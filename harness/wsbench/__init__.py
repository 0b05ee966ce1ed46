"""wsbench: a benchmark harness for weight-space learning.

``__all__`` is the plugin API: everything a plugin (built-in or third-party) imports, always as
``from wsbench import NAME``. The contract itself is :mod:`wsbench.specs` (every object a plugin
sees) and the hook docstrings in :mod:`wsbench.hookspecs`. Names load on first use, so the command
line starts without importing torch.
"""
from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

# OpenMP threads (torch's CPU kernels) spin while they wait by default. On a machine whose cores other
# processes share, as a laptop, a CI runner or a SLURM node often is, a spinning thread holds a core the
# others need: the quick study's GMN took 12 s an epoch with 2 threads on 2 busy cores against 5 s with
# waiting threads asleep (1.2 s when the cores are free either way). Set before torch loads OpenMP; an
# OMP_WAIT_POLICY of your own wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = _version("wsbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# Public name -> the module that defines it (no name may be a submodule's: ``wsbench.download`` is one).
_API = {
    # hooks
    "hookimpl": "wsbench.hookspecs",
    # the objects a plugin builds or receives
    "ArchitectureSpec": "wsbench.specs",
    "BatchRequest": "wsbench.specs",
    "BatchResult": "wsbench.specs",
    "DatasetSpec": "wsbench.specs",
    "ImageData": "wsbench.specs",
    "MetricSpec": "wsbench.specs",
    "MixedNetworks": "wsbench.specs",
    "Param": "wsbench.specs",
    "SirenSpec": "wsbench.specs",
    "TaskInfo": "wsbench.specs",
    "VIEWS": "wsbench.specs",
    "TARGETS": "wsbench.specs",
    "ZooRequest": "wsbench.specs",
    "NetworkZoo": "wsbench.specs",
    "WsbenchError": "wsbench.errors",
    # the flat weight layout of an INR
    "flatten": "wsbench.weights",
    "unflatten": "wsbench.weights",
    "tensor_shapes": "wsbench.weights",
    "render": "wsbench.weights",
    # shared model pieces
    "Head": "wsbench.heads",
    "ParamGraph": "wsbench.paramgraph",
    "LAYER_ROLES": "wsbench.paramgraph",
    "canonical_phases": "wsbench.paramgraph",
    "canonical_signs": "wsbench.paramgraph",
    "layer_roles": "wsbench.paramgraph",
    "layer_statistics": "wsbench.paramgraph",
    "role_statistics": "wsbench.paramgraph",
    "compile_fn": "wsbench.compiling",
    # the batched kernel engine of similarity metrics
    "F64": "wsbench.kernels",
    "KernelStack": "wsbench.kernels",
    "center": "wsbench.kernels",
    "hsic_gram_unbiased": "wsbench.kernels",
    "kernel_batched": "wsbench.kernels",
    "pad_stack": "wsbench.kernels",
    "prepare_linear": "wsbench.kernels",
    "row_chunk": "wsbench.kernels",
    # zoos of trained CNNs as datasets
    "CNN_ZOO_PARAMS": "wsbench.netzoo",
    "cnn_networks": "wsbench.netzoo",
    "cnn_zoo_recipes": "wsbench.netzoo",
    "imported_cnn_networks": "wsbench.netzoo",
    # dataset files
    "ensure": "wsbench.download",
    "md5_file": "wsbench.download",
}

# The plugin API (the names of _API, and the version).
__all__ = [
    "CNN_ZOO_PARAMS",
    "F64",
    "LAYER_ROLES",
    "TARGETS",
    "VIEWS",
    "ArchitectureSpec",
    "BatchRequest",
    "BatchResult",
    "DatasetSpec",
    "Head",
    "ImageData",
    "KernelStack",
    "MetricSpec",
    "MixedNetworks",
    "NetworkZoo",
    "Param",
    "ParamGraph",
    "SirenSpec",
    "TaskInfo",
    "WsbenchError",
    "ZooRequest",
    "__version__",
    "canonical_phases",
    "canonical_signs",
    "center",
    "cnn_networks",
    "cnn_zoo_recipes",
    "compile_fn",
    "ensure",
    "flatten",
    "hookimpl",
    "hsic_gram_unbiased",
    "imported_cnn_networks",
    "kernel_batched",
    "layer_roles",
    "layer_statistics",
    "md5_file",
    "pad_stack",
    "prepare_linear",
    "render",
    "role_statistics",
    "row_chunk",
    "tensor_shapes",
    "unflatten",
]

if TYPE_CHECKING:  # what type checkers and editors follow; the same names as _API
    from wsbench.compiling import compile_fn
    from wsbench.download import ensure, md5_file
    from wsbench.errors import WsbenchError
    from wsbench.heads import Head
    from wsbench.hookspecs import hookimpl
    from wsbench.kernels import (
        F64,
        KernelStack,
        center,
        hsic_gram_unbiased,
        kernel_batched,
        pad_stack,
        prepare_linear,
        row_chunk,
    )
    from wsbench.netzoo import CNN_ZOO_PARAMS, cnn_networks, cnn_zoo_recipes, imported_cnn_networks
    from wsbench.paramgraph import (
        LAYER_ROLES,
        ParamGraph,
        canonical_phases,
        canonical_signs,
        layer_roles,
        layer_statistics,
        role_statistics,
    )
    from wsbench.specs import (
        TARGETS,
        VIEWS,
        ArchitectureSpec,
        BatchRequest,
        BatchResult,
        DatasetSpec,
        ImageData,
        MetricSpec,
        MixedNetworks,
        NetworkZoo,
        Param,
        SirenSpec,
        TaskInfo,
        ZooRequest,
    )
    from wsbench.weights import flatten, render, tensor_shapes, unflatten


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'wsbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
