"""Run configuration: plain values with defaults, overridable with ``--set key=value``.

An override ``ARCH.key=value`` (``--set gmn.probes=0``, or a ``[gmn]`` table in a TOML config
file) applies to that architecture alone, so one grid can set keys only some of its models have.

Every resolved value is typed (:class:`wsbench.specs.Param`): the training keys by
:data:`COMMON_PARAMS`, an architecture's own keys by its ``params`` or, failing that, by the type
of their default. :func:`resolve` checks and converts them once, before any zoo or training work,
so ``epochs=0``, ``batch_size=-4``, ``lr=abc`` or ``epochs=1.5`` fail at once with the key, the
value, the expected type or range and the architecture, instead of training a fake or failing run.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from wsbench.errors import WsbenchError
from wsbench.specs import ArchitectureSpec, Param

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

# Types and ranges of the training keys, and of keys many architectures share (``dropout``); an
# architecture's own ``params`` entry for a key wins. See wsbench.train for what each one does.
COMMON_PARAMS: dict[str, Param] = {
    "epochs": Param(int, ge=1, help="training epochs"),
    "batch_size": Param(int, ge=1, help="training batch size"),
    "eval_batch_size": Param(int, ge=1, help="batch size of evaluation and representation capture"),
    "lr": Param(float, gt=0, help="peak AdamW learning rate"),
    "weight_decay": Param(float, ge=0, help="AdamW weight decay"),
    "warmup_epochs": Param(int, ge=0, help="epochs of linear learning-rate warm-up"),
    "label_smoothing": Param(float, ge=0, lt=1, help="cross-entropy label smoothing"),
    # The loop clips only when the value is truthy: 0 and null both mean off; a negative max-norm
    # would flip the gradients' sign.
    "grad_clip": Param(float, ge=0, none=True, help="gradient norm clip; 0 or null: off"),
    "augment": Param(str, help="training-time augmentation of the model's view (wsbench.augment)"),
    "bn_recalibrate": Param(int, ge=0, help="training samples for BatchNorm statistics before evaluation"),
    "dropout": Param(float, ge=0, lt=1, help="dropout probability"),
}

# Types and ranges of the INR fitting recipe's keys (``--recipe``, ``DatasetSpec.inr_recipe``).
RECIPE_PARAMS: dict[str, Param] = {
    "optimizer": Param(str, choices=("adam",)),
    "lr": Param(float, gt=0),
    "steps": Param(int, ge=1),
    "w0": Param(float, gt=0),
    "decay_frac": Param(float, ge=0, le=1),
    "lr_final": Param(float, ge=0),
    "init": Param(str, choices=("independent", "shared")),
    "psnr_target": Param(float, none=True),
    "chunk_size": Param(int, ge=1),
}

MAX_SEED = 2**63 - 1  # seeds are stored as int64
MAX_SEED_COUNT = 10_000  # ``--seeds N`` beyond this is a typo, not a grid


def check_limit(limit: Any) -> int | None:
    """``--limit``: None (every sample), or a positive whole number of samples per split; else a one-line error."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise WsbenchError(f"--limit {limit!r}: give a positive number of samples per split, or leave it out")
    return limit


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an int in ``0 .. 2**63 - 1`` (stored as int64), else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise WsbenchError(f"{what} {seed!r} is not an integer; seeds are whole numbers from 0 to {MAX_SEED}")
    if not 0 <= seed <= MAX_SEED:
        raise WsbenchError(f"{what} {seed} is out of range; seeds are whole numbers from 0 to {MAX_SEED} "
                           "(they are stored as 64-bit integers)")
    return int(seed)


def infer_param(default: Any) -> Param:
    """The :class:`Param` a default's own type implies (``None``: anything)."""
    if isinstance(default, bool):
        return Param(bool)
    if isinstance(default, int):
        return Param(int)
    if isinstance(default, float):
        return Param(float)
    if isinstance(default, str):
        return Param(str)
    if isinstance(default, (list, tuple)):
        kinds = {infer_param(v).type for v in default}
        item = kinds.pop() if len(kinds) == 1 else None
        if item is int and any(isinstance(v, float) for v in default):
            item = float
        return Param(list, item=item if item in (int, float, bool, str) else None)
    return Param(object)


def describe(p: Param) -> str:
    """What a :class:`Param` accepts, in words: ``an integer >= 1``, ``one of 'sum', 'mean'``."""
    names = {int: "an integer", float: "a finite number" if p.finite else "a number", bool: "true or false",
             str: "a string", list: "a list", object: "any value"}
    text = names.get(p.type, p.type.__name__)
    if p.type is list and p.item in names:
        text += f" of {names[p.item].replace('an ', '').replace('a ', '')}s"
    bounds = [f"{op} {v:g}" for op, v in ((">=", p.ge), (">", p.gt), ("<=", p.le), ("<", p.lt)) if v is not None]
    if bounds:
        text += " " + " and ".join(bounds)
    if p.choices is not None:
        text = "one of " + ", ".join(repr(c) for c in p.choices)
    if p.none:
        text += " (or null)"
    return text


def _convert(value: Any, t: type, finite: bool) -> Any:
    """``value`` as type ``t``; raises ValueError when it is not one."""
    if t is object:
        return value
    if t is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if t is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ValueError
    if t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        out = float(value)
        if finite and not math.isfinite(out):
            raise ValueError
        return out
    if t is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if t is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValueError
    if isinstance(value, t):
        return value
    raise ValueError


def check_value(key: str, value: Any, p: Param, where: str, flag: str = "--set") -> Any:
    """``value`` of config key ``key`` checked against ``p`` and converted; a one-line error
    naming the key, the value, what was expected and ``where`` (e.g. ``architecture 'mlp'``)."""
    def fail() -> WsbenchError:
        return WsbenchError(f"{where}: config key {key!r} = {value!r} is not valid; expected {describe(p)}"
                            + (f" ({p.help})" if p.help else "") + f"; fix it with {flag} {key}=VALUE")
    if value is None:
        if p.none or p.type is object:
            return None
        raise fail()
    try:
        out = _convert(value, p.type, p.finite)
        if p.type is list and p.item is not None:
            out = [_convert(v, p.item, p.finite) for v in out]
    except (ValueError, TypeError, OverflowError):
        raise fail() from None
    if p.choices is not None and out not in tuple(p.choices):
        raise fail()
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if (p.ge is not None and not out >= p.ge) or (p.gt is not None and not out > p.gt) \
                or (p.le is not None and not out <= p.le) or (p.lt is not None and not out < p.lt):
            raise fail()
    return out


def params_of(arch: ArchitectureSpec, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Param]:
    """The Param of every key of ``config``: the architecture's own, else the common one, else the
    type of the key's default."""
    own = dict(arch.params)
    return {k: own.get(k) or COMMON_PARAMS.get(k) or infer_param(defaults.get(k)) for k in config}


def check_config(arch: ArchitectureSpec, config: Mapping[str, Any], defaults: Mapping[str, Any],
                 dataset: str | None = None) -> dict:
    """Every value of ``config`` checked and converted (see :func:`check_value`)."""
    where = f"architecture {arch.name!r}" + (f" on dataset {dataset!r}" if dataset else "")
    params = params_of(arch, config, defaults)
    return {k: check_value(k, v, params[k], where) for k, v in config.items()}


def check_recipe_values(recipe: Mapping[str, Any], where: str = "INR recipe") -> dict:
    """An INR fitting recipe's values checked against :data:`RECIPE_PARAMS` (converted)."""
    out = {}
    for k, v in recipe.items():
        p = RECIPE_PARAMS.get(k)
        out[k] = check_value(k, v, p, where, flag="--recipe") if p else v
    return out


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
    """``--recipe key=value`` items -> zoo recipe overrides. Keys of the INR fitting recipe are
    checked here; other keys are checked against each dataset's own recipe when a run resolves it
    (:meth:`wsbench.runner.Runner.recipe`), still before any work."""
    from wsbench.siren import DEFAULT_RECIPE, check_recipe
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise WsbenchError(f"--recipe {item!r} is not key=value; write e.g. --recipe lr=0.001")
        key, value = (part.strip() for part in item.split("=", 1))
        if not key:
            raise WsbenchError(f"--recipe {item!r} has no key; write e.g. --recipe lr=0.001")
        out[key] = parse_value(value)
    inr = {k: v for k, v in out.items() if k in DEFAULT_RECIPE}
    try:
        check_recipe({**DEFAULT_RECIPE, **inr})
    except (TypeError, ValueError):
        raise WsbenchError(f"--recipe values must be numbers where the recipe has numbers; got {inr}") from None
    return dict(sorted({**out, **check_recipe_values(inr, "--recipe")}.items()))


def resolve(arch: ArchitectureSpec, dataset: str, overrides: Mapping[str, Any]) -> dict:
    """Training defaults <- architecture defaults <- per-dataset defaults <- overrides, where
    ``ARCH.key`` overrides apply to architecture ARCH only and win over plain ``key`` ones."""
    defaults = {**TRAIN_DEFAULTS, **dict(arch.defaults)}
    per_dataset = dict(arch.dataset_defaults.get(dataset, {}))
    stray = sorted(set(per_dataset) - set(defaults))
    if stray:  # a plugin's typo would otherwise be stored in every run's config and do nothing
        raise WsbenchError(f"architecture {arch.name!r}: dataset_defaults[{dataset!r}] sets {', '.join(stray)}, "
                           f"which is not one of its config keys ({', '.join(sorted(defaults))}); fix the plugin")
    config = {**defaults, **per_dataset}
    mine = {k: v for k, v in overrides.items() if "." not in k}
    mine.update({k.split(".", 1)[1]: v for k, v in overrides.items() if k.split(".", 1)[0] == arch.name and "." in k})
    unknown = sorted(set(mine) - set(config))
    if unknown:
        raise WsbenchError(f"unknown config key(s) {', '.join(unknown)} for architecture {arch.name!r}; "
                           f"known keys: {', '.join(sorted(config))}")
    config.update(mine)
    # Typed once, here: every command resolves its configs before any zoo or training work.
    return dict(sorted(check_config(arch, config, defaults, dataset).items()))


def run_id(dataset: str, arch: str, seed: int, config: Mapping[str, Any], limit: int | None) -> str:
    """Stable id of a grid cell: a hash of dataset, architecture, seed, resolved config and data limit."""
    payload = json.dumps({"dataset": dataset, "arch": arch, "seed": int(seed), "config": config,
                          "limit": limit}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
