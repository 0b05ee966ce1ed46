"""The hooks a wsbench plugin implements.

Each hook receives a ``register`` callback; the plugin calls it once per spec it
provides. Hooks return nothing.
"""
import pluggy

hookspec = pluggy.HookspecMarker("wsbench")
hookimpl = pluggy.HookimplMarker("wsbench")


@hookspec
def register_architectures(register):
    """Register architectures: call ``register(ArchitectureSpec(...))`` for each one."""


@hookspec
def register_datasets(register):
    """Register datasets: call ``register(DatasetSpec(...))`` for each one."""


@hookspec
def register_metrics(register):
    """Register similarity metrics: call ``register(MetricSpec(...))`` for each one."""
