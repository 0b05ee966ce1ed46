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


CRASHING_PLUGIN = """
import os
from wsbench import ArchitectureSpec, hookimpl

def build(info, config):
    os._exit(3)  # the whole worker process ends, as a segfault or the OOM killer would end it

@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(name="crash", view="images", build=build, description="ends its process"))
"""


def install_crashing_plugin(tmp_path, monkeypatch) -> None:
    """Install the distribution ``wsbench-crash`` (a dist-info on sys.path and PYTHONPATH, which
    spawned and Ray workers inherit) whose architecture ``crash`` ends the process that builds it."""
    root = tmp_path / "site"
    info = root / "wsbench_crash-0.1.dist-info"
    info.mkdir(parents=True)
    (root / "wsbench_crash.py").write_text(CRASHING_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wsbench-crash\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wsbench]\ncrash = wsbench_crash\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench,wsbench-crash")


@pytest.fixture(scope="session")
def shapes_task(tmp_path_factory):
    """The built-in shapes task, limited and with a short zoo fit, built once per session."""
    from wsbench.plugins import load_registry
    from wsbench.task import make_task
    spec = load_registry().dataset("shapes")
    return make_task(spec, cache_dir=tmp_path_factory.mktemp("zoo"), limit=120)


TOY_ZOO_SIZE = 90


def toy_networks(request):
    """A synthetic zoo of 90 tiny 'networks' (SIREN layout 2 -> 4 -> 1, 17 weights) whose scalar target
    is a smooth function of its weights plus noise, with a function view of 6 probes x 3 outputs."""
    import numpy as np

    from wsbench import NetworkZoo, SirenSpec
    rng = np.random.default_rng(0)
    spec = SirenSpec(in_dim=2, hidden=(4,), out_dim=1)
    n = TOY_ZOO_SIZE
    w = rng.normal(size=(n, spec.num_params)).astype(np.float32)
    target = 1 / (1 + np.exp(-(w[:, :3].sum(1) / 2))) + 0.02 * rng.normal(size=n)
    fn = np.tanh(w[:, None, :3] * np.linspace(-1, 1, 6)[None, :, None]).astype(np.float32)
    perm = rng.permutation(n)
    splits = {"test": np.sort(perm[:30]), "val": np.sort(perm[30:45]), "train": np.sort(perm[45:])}
    if request.limit:
        splits = {k: v[:request.limit] for k, v in splits.items()}
    return NetworkZoo(ids=np.arange(n, dtype=np.int64) + 1000, targets=target, splits=splits,
                      views={"weights": w, "function": fn}, network=spec, key="toy-0000")


class ToyZooPlugin:
    """A throwaway plugin registering ``toy-zoo``: a scalar-target zoo of networks (weights, function)."""

    @staticmethod
    def register_datasets(register):
        from wsbench import DatasetSpec
        register(DatasetSpec(name="toy-zoo", target="scalar", views=("weights", "function"),
                             networks=toy_networks, zoo_recipes={"cpu": {"zoo_size": TOY_ZOO_SIZE}}))


def toy_registry():
    """The built-ins plus ``toy-zoo`` (see :class:`ToyZooPlugin`)."""
    from wsbench import hookimpl
    from wsbench.plugins import load_registry

    class _P:
        register_datasets = staticmethod(hookimpl(ToyZooPlugin.register_datasets))
    return load_registry(extra_plugins=[(_P, "toy-dist", "0.0")])


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A tiny MNIST in the official IDX layout (60 training and 20 test images) under ``tmp_path/data``."""
    from test_datasets import fake_idx, write_files

    import wsbench_plugins.images as im

    monkeypatch.setattr(im, "N_TRAIN_IDX", 60)
    monkeypatch.setattr(im, "N_TEST_IDX", 20)
    write_files(tmp_path / "data" / "MNIST" / "raw", fake_idx())
    return tmp_path / "data"
