"""Test isolation: only wsbench's built-in plugins load, and caches/results go to temp dirs."""
import os

import pytest

# Plugins installed on the machine must never leak into tests (set before wsbench loads any): naming only
# the host distribution admits no third-party entry point, and the built-ins always load.
os.environ["WSBENCH_PLUGINS"] = "wsbench"
os.environ.pop("WSBENCH_STRICT", None)
os.environ.pop("WSBENCH_DATA", None)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "wsbench-cache"  # shared across tests: zoos are reused
    monkeypatch.setenv("WSBENCH_CACHE", str(cache))
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench")
    from wsbench import plugins
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def shapes_task(tmp_path_factory):
    """The built-in shapes task, limited and with a short zoo fit, built once per session."""
    from wsbench.plugins import load_registry
    from wsbench.task import make_task
    spec = load_registry().dataset("shapes")
    return make_task(spec, cache_dir=tmp_path_factory.mktemp("zoo"), limit=120)
