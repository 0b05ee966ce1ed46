"""The one plugin manager: registers the built-in plugins, then loads ``wsbench`` entry points one
at a time, and collects the specs they register.

Built-ins (``DEFAULT_PLUGINS``, distribution ``wsbench``) are always registered first, through the
same hooks; an entry point whose module is one of them is skipped (an old editable install may
still list them). Third-party distributions come through the entry-point group.

Environment:
  WSBENCH_PLUGINS   comma-separated distribution names: only their entry points load (the built-ins
                    always do; ``WSBENCH_PLUGINS=wsbench`` loads the built-ins alone)
  WSBENCH_STRICT    "1" turns a broken plugin, or a WSBENCH_PLUGINS name that matches nothing, from a
                    warning into an error
"""
from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Iterable

import pluggy

from wsbench import __version__, hookspecs
from wsbench.errors import WsbenchError, unknown_name
from wsbench.specs import ArchitectureSpec, DatasetSpec, MetricSpec

GROUP = "wsbench"
HOST = "wsbench"  # the distribution of the harness and its built-in plugins
# The built-in plugins, registered before any entry point whatever WSBENCH_PLUGINS says (in the
# alphabetical order their entry points used to load in).
DEFAULT_PLUGINS = (
    "wsbench_plugins.cka",
    "wsbench_plugins.cnn",
    "wsbench_plugins.gmn",
    "wsbench_plugins.images",
    "wsbench_plugins.metrics",
    "wsbench_plugins.mlp",
    "wsbench_plugins.nfn",
    "wsbench_plugins.shapes",
)
HOOKS = {
    "register_architectures": ("architecture", ArchitectureSpec),
    "register_datasets": ("dataset", DatasetSpec),
    "register_metrics": ("metric", MetricSpec),
}


@dataclass
class Registry:
    """Every spec found, by kind and name, and the warnings raised while loading."""

    architectures: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    # plugin name -> (distribution, version, hooks implemented)
    plugins: dict = field(default_factory=dict)

    def table(self, kind: str) -> dict:
        return {"architecture": self.architectures, "dataset": self.datasets, "metric": self.metrics}[kind]

    def get(self, kind: str, name: str):
        table = self.table(kind)
        if name not in table:
            raise unknown_name(kind, name, table)
        return table[name]

    def architecture(self, name: str) -> ArchitectureSpec:
        return self.get("architecture", name)

    def dataset(self, name: str) -> DatasetSpec:
        return self.get("dataset", name)

    def metric(self, name: str) -> MetricSpec:
        return self.get("metric", name)

    def all_specs(self) -> list:
        """Every spec, sorted by (kind, name): pluggy calls hooks last-registered-first."""
        specs = [*self.architectures.values(), *self.datasets.values(), *self.metrics.values()]
        return sorted(specs, key=lambda s: (s.kind, s.name))


def _strict_default() -> bool:
    return os.environ.get("WSBENCH_STRICT", "").strip().lower() in ("1", "true", "yes")


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _allowed() -> set[str] | None:
    raw = os.environ.get("WSBENCH_PLUGINS")
    if raw is None or not raw.strip():
        return None
    return {_normal(n) for n in raw.split(",") if n.strip()}


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def _entry_points() -> tuple[list, set[str]]:
    """The group's entry points less those of built-in modules, sorted by (distribution, name), and the
    normalised names of every distribution that declares any (built-in modules included)."""
    every = list(entry_points(group=GROUP))
    eps = [ep for ep in every if ep.module not in DEFAULT_PLUGINS]
    declared = {_normal(ep.dist.name) for ep in every if ep.dist}
    return sorted(eps, key=lambda e: (e.dist.name if e.dist else "", e.name)), declared


def load_registry(strict: bool | None = None, extra_plugins: Iterable = ()) -> Registry:
    """Register the built-ins, then every ``wsbench`` entry point (filtered by WSBENCH_PLUGINS), then
    ``extra_plugins``.

    ``extra_plugins`` are ``(module_or_object, distribution, version)`` tuples,
    used by tests to register throwaway plugins without installing them.
    """
    strict = _strict_default() if strict is None else strict
    registry = Registry()
    pm = make_manager()
    allowed = _allowed()

    def problem(message: str):
        if strict:
            raise WsbenchError(message + " (strict mode; unset --strict/WSBENCH_STRICT to skip it)")
        registry.warnings.append(message)

    sources = []
    for module in DEFAULT_PLUGINS:
        name = module.rsplit(".", 1)[-1]
        try:
            obj = importlib.import_module(module)
        except Exception as exc:  # a built-in whose dependency is missing must not take the others down
            problem(f"built-in plugin {name!r} from distribution {HOST!r} failed to import: "
                    f"{type(exc).__name__}: {exc}")
            continue
        sources.append((obj, f"{HOST}:{name}", HOST, __version__))
    eps, declared = _entry_points()
    installed = sorted({ep.dist.name for ep in eps if ep.dist})  # third-party distributions
    if allowed is not None:
        for name in sorted(allowed - declared - {HOST}):
            problem(f"WSBENCH_PLUGINS names {name!r}, which matches no installed distribution with wsbench "
                    f"entry points; installed third-party plugins: {', '.join(installed) or '(none)'}")
    for ep in eps:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if allowed is not None and _normal(dist) not in allowed:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            problem(f"plugin {ep.name!r} from distribution {dist!r} failed to import: {type(exc).__name__}: {exc}")
            continue
        sources.append((obj, f"{dist}:{ep.name}", dist, version))
    for obj, dist, version in extra_plugins:
        sources.append((obj, f"{dist}:{getattr(obj, '__name__', type(obj).__name__)}", dist, version))

    for obj, plugin_name, dist, version in sources:
        try:
            pm.register(obj, name=plugin_name)
        except Exception as exc:
            problem(f"plugin {plugin_name!r} from distribution {dist!r} failed to register: {exc}")
            continue
        # A hookimpl whose name matches no hookspec is a typo in a plugin: say so, and what was meant.
        for caller in pm.get_hookcallers(obj) or []:
            if not caller.has_spec():
                close = difflib.get_close_matches(caller.name, HOOKS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; wsbench hooks: {', '.join(HOOKS)}"
                problem(f"distribution {dist!r} implements hook {caller.name!r}, which is no wsbench hook{hint}")
        hooks = []
        for hook_name, (kind, spec_type) in HOOKS.items():
            impls = [i for i in getattr(pm.hook, hook_name).get_hookimpls() if i.plugin is obj]
            for impl in impls:
                hooks.append(hook_name)
                added: list = []

                def register(spec, _kind=kind, _type=spec_type, _added=added, _hook=hook_name, _dist=dist,
                             _version=version):
                    if not isinstance(spec, _type):
                        raise TypeError(f"{_hook} expects {_type.__name__}, got {type(spec).__name__}")
                    spec.distribution, spec.version = _dist, _version
                    _added.append(spec)

                try:
                    impl.function(register=register)
                except Exception as exc:
                    problem(f"plugin {plugin_name!r} from distribution {dist!r} failed in {hook_name}: "
                            f"{type(exc).__name__}: {exc}")
                    continue
                table = registry.table(kind)
                for spec in added:
                    if spec.name in table:
                        other = table[spec.name]
                        raise WsbenchError(
                            f"{kind} {spec.name!r} is registered twice: by {other.distribution!r} and by "
                            f"{dist!r}; uninstall one of them or limit loading with WSBENCH_PLUGINS")
                    table[spec.name] = spec
        registry.plugins[plugin_name] = (dist, version, tuple(hooks))
    return registry


_cached: Registry | None = None


def registry(strict: bool | None = None) -> Registry:
    """The process-wide registry, loaded once (idempotent)."""
    global _cached
    if _cached is None:
        _cached = load_registry(strict=strict)
        for w in _cached.warnings:
            print(f"warning: {w}", file=sys.stderr)
    return _cached


def reset() -> None:
    global _cached
    _cached = None
