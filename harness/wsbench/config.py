"""Run configuration: plain values with defaults, overridable with ``--set key=value``.

An override ``ARCH.key=value`` (``--set gmn.probes=0``, or a ``[gmn]`` table in a TOML config
file) applies to that architecture alone, so one grid can set keys only some of its models have.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from wsbench.errors import WsbenchError
from wsbench.specs import ArchitectureSpec

# Training defaults shared by every architecture; an architecture's defaults override them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 128,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 0,
    "label_smoothing": 0.0,
    "grad_clip": 0.0,  # 0 disables clipping
    "augment": "none",  # per view (wsbench.augment): images "crop-flip"; weights "affine", "affine-flip"
    "eval_batch_size": 1024,
    # Training samples whose batch statistics replace BatchNorm's running averages before every
    # evaluation (0: keep the running averages); models without BatchNorm ignore it.
    "bn_recalibrate": 4096,
}


def parse_value(text: str) -> Any:
    """``3`` -> 3, ``1e-3`` -> 0.001, ``true`` -> True, ``[64,64]`` -> [64, 64], else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        return text


def parse_overrides(items: Iterable[str], config_file: Path | None = None) -> dict:
    """``--set key=value`` items (and an optional JSON/TOML config file) -> dict."""
    out: dict = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.exists():
            raise WsbenchError(f"config file {path} does not exist; pass an existing .json or .toml file")
        try:
            if path.suffix == ".toml":
                import tomllib
                loaded = tomllib.loads(path.read_text())
            else:
                loaded = json.loads(path.read_text())
        except Exception as exc:
            raise WsbenchError(f"config file {path} could not be parsed ({exc}); fix its syntax") from None
        if not isinstance(loaded, dict):
            raise WsbenchError(f"config file {path} must hold a table of key = value; got {type(loaded).__name__}")
        out.update(scoped(loaded))
    for item in items:
        if "=" not in item:
            raise WsbenchError(f"--set {item!r} is not key=value; write e.g. --set lr=0.001")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


def scoped(tables: Mapping[str, Any]) -> dict:
    """``{"lr": 1e-3, "gmn": {"probes": 0}}`` -> ``{"lr": 1e-3, "gmn.probes": 0}``: a nested table
    holds the overrides of the architecture it is named after."""
    out: dict = {}
    for key, value in tables.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def scopes(overrides: Mapping[str, Any]) -> set[str]:
    """The architecture names that ``ARCH.key`` overrides refer to."""
    return {k.split(".", 1)[0] for k in overrides if "." in k}


def parse_recipe(items: Iterable[str]) -> dict:
    """``--recipe key=value`` items -> INR fitting recipe overrides, checked against the recipe's keys."""
    from wsbench.inr import DEFAULT_RECIPE, check_recipe
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise WsbenchError(f"--recipe {item!r} is not key=value; write e.g. --recipe lr=0.001")
        key, value = (part.strip() for part in item.split("=", 1))
        if key not in DEFAULT_RECIPE:
            raise WsbenchError(f"unknown INR recipe key {key!r}; known keys: {', '.join(sorted(DEFAULT_RECIPE))}")
        out[key] = parse_value(value)
    try:
        check_recipe({**DEFAULT_RECIPE, **out})
    except (TypeError, ValueError):
        raise WsbenchError(f"--recipe values must be numbers where the recipe has numbers; got {out}") from None
    return dict(sorted(out.items()))


def resolve(arch: ArchitectureSpec, dataset: str, overrides: Mapping[str, Any]) -> dict:
    """Training defaults <- architecture defaults <- per-dataset defaults <- overrides, where
    ``ARCH.key`` overrides apply to architecture ARCH only and win over plain ``key`` ones."""
    config = {**TRAIN_DEFAULTS, **dict(arch.defaults), **dict(arch.dataset_defaults.get(dataset, {}))}
    mine = {k: v for k, v in overrides.items() if "." not in k}
    mine.update({k.split(".", 1)[1]: v for k, v in overrides.items() if k.split(".", 1)[0] == arch.name and "." in k})
    unknown = sorted(set(mine) - set(config))
    if unknown:
        raise WsbenchError(f"unknown config key(s) {', '.join(unknown)} for architecture {arch.name!r}; "
                           f"known keys: {', '.join(sorted(config))}")
    config.update(mine)
    return dict(sorted(config.items()))


def run_id(dataset: str, arch: str, seed: int, config: Mapping[str, Any], limit: int | None) -> str:
    """Stable id of a grid cell: a hash of dataset, architecture, seed, resolved config and data limit."""
    payload = json.dumps({"dataset": dataset, "arch": arch, "seed": int(seed), "config": config,
                          "limit": limit}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
