"""The plugin manager: built-ins always first, entry points one at a time, warnings, strictness, filtering,
duplicates."""
import inspect
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsbench import hookspecs
from wsbench.errors import WsbenchError
from wsbench.hookspecs import hookimpl
from wsbench.plugins import DEFAULT_PLUGINS, load_registry
from wsbench.specs import ArchitectureSpec, DatasetSpec, MetricSpec


class _Plugin:
    """A throwaway plugin object registered without installing anything."""

    def __init__(self, name, **hooks):
        self.__name__ = name
        for hook, fn in hooks.items():
            setattr(self, hook, hookimpl(fn))


def _arch(name="extra-arch"):
    return ArchitectureSpec(name=name, view="weights", build=lambda info, cfg: None, description="test")


def test_builtins_load_as_distribution_wsbench():
    reg = load_registry(strict=True)
    assert {"flat-mlp", "mlp"} <= set(reg.architectures)
    assert "shapes" in reg.datasets and "cka" in reg.metrics
    assert all(s.distribution == "wsbench" for s in reg.all_specs())
    assert not reg.warnings


def test_hook_register_architectures():
    p = _Plugin("p", register_architectures=lambda register: register(_arch()))
    reg = load_registry(extra_plugins=[(p, "third-party", "1.2")])
    spec = reg.architecture("extra-arch")
    assert (spec.distribution, spec.version, spec.view) == ("third-party", "1.2", "weights")


def test_hook_register_datasets():
    p = _Plugin("p", register_datasets=lambda register: register(DatasetSpec(name="tiny", load=lambda d: None)))
    reg = load_registry(extra_plugins=[(p, "third-party", "1.0")])
    assert reg.dataset("tiny").distribution == "third-party"


def test_hook_register_metrics():
    p = _Plugin("p", register_metrics=lambda register: register(
        MetricSpec(name="zero", fn=lambda x, y: 0.0, estimator="const", higher_is_better=False)))
    reg = load_registry(extra_plugins=[(p, "third-party", "1.0")])
    assert reg.metric("zero").higher_is_better is False


def test_every_hookspec_has_a_test():
    """Guard: a new hookspec needs a ``test_hook_<name>`` test somewhere in tests/."""
    names = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")]
    assert names
    text = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    missing = [n for n in names if not re.search(rf"def test_hook_{n}\b", text)]
    assert not missing, f"hookspecs without a test_hook_<name> test: {missing}"


def test_broken_registration_warns_and_others_still_load():
    def boom(register):
        raise RuntimeError("kaput")
    bad = _Plugin("bad", register_architectures=boom)
    good = _Plugin("good", register_architectures=lambda register: register(_arch("fine")))
    reg = load_registry(strict=False, extra_plugins=[(bad, "bad-dist", "0"), (good, "good-dist", "0")])
    assert "fine" in reg.architectures and "mlp" in reg.architectures
    assert len(reg.warnings) == 1 and "bad-dist" in reg.warnings[0] and "kaput" in reg.warnings[0]
    with pytest.raises(WsbenchError, match="bad-dist"):
        load_registry(strict=True, extra_plugins=[(bad, "bad-dist", "0")])


def test_wrong_spec_type_is_reported():
    p = _Plugin("p", register_metrics=lambda register: register(_arch()))
    reg = load_registry(extra_plugins=[(p, "odd", "0")])
    assert "MetricSpec" in reg.warnings[0]


def test_misnamed_hook_is_reported():
    p = _Plugin("p", register_architecture=lambda register: None)  # missing the trailing "s"
    reg = load_registry(extra_plugins=[(p, "typo-dist", "0")])
    assert any("register_architecture" in w for w in reg.warnings)


def test_misnamed_hook_warning_names_the_distribution_and_the_closest_hook(fake_dist, monkeypatch):
    fake_dist("wsbench-typo", "from wsbench import hookimpl\n\n@hookimpl\ndef register_metric(register):\n    pass\n")
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench-typo")
    reg = load_registry(strict=False)
    assert len(reg.warnings) == 1, reg.warnings
    warning = reg.warnings[0]
    assert "'wsbench-typo'" in warning and "'register_metric'" in warning
    assert "did you mean 'register_metrics'?" in warning
    assert ".py" not in warning and "wsbench_typo" not in warning  # the distribution, not a module path
    with pytest.raises(WsbenchError, match="wsbench-typo"):
        load_registry(strict=True)


def test_builtins_load_whatever_wsbench_plugins_names(monkeypatch):
    monkeypatch.setenv("WSBENCH_PLUGINS", "nothing-installed")
    reg = load_registry(strict=False)
    assert {"shapes", "mnist"} <= set(reg.datasets) and {"gmn", "mlp"} <= set(reg.architectures)
    assert "cka" in reg.metrics
    assert all(s.distribution == "wsbench" for s in reg.all_specs())
    assert [name for name in reg.plugins] == [f"wsbench:{m.rsplit('.', 1)[1]}" for m in DEFAULT_PLUGINS]


def test_wsbench_plugins_name_that_matches_nothing_warns_and_lists_the_installed(fake_dist, monkeypatch):
    fake_dist("wsbench-thirdnet", THIRD_PARTY)
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench,nothing-installed")
    reg = load_registry(strict=False)
    assert len(reg.warnings) == 1, reg.warnings
    assert "'nothing-installed'" in reg.warnings[0] and "wsbench-thirdnet" in reg.warnings[0]
    assert "thirdnet" not in reg.architectures and "mlp" in reg.architectures
    with pytest.raises(WsbenchError, match="nothing-installed"):
        load_registry(strict=True)


def test_an_entry_point_of_a_builtin_module_is_skipped(tmp_path, monkeypatch):
    """An old install that still lists the built-ins as entry points must not register them twice."""
    info = tmp_path / "wsbench_legacy-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wsbench-legacy\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[wsbench]\nshapes = wsbench_plugins.shapes\ncka = wsbench_plugins.cka\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench,wsbench-legacy")
    reg = load_registry(strict=True)
    assert reg.dataset("shapes").distribution == "wsbench" and not reg.warnings
    assert not any(name.startswith("wsbench-legacy") for name in reg.plugins)


def test_duplicate_names_name_both_providers():
    p = _Plugin("p", register_architectures=lambda register: register(_arch("mlp")))
    with pytest.raises(WsbenchError, match=r"'mlp'.*'wsbench'.*'copycat'"):
        load_registry(extra_plugins=[(p, "copycat", "0")])


def test_unknown_name_lists_known_names():
    with pytest.raises(WsbenchError, match=r"unknown architecture 'nope'; known architectures: .*flat-mlp.*mlp"):
        load_registry().architecture("nope")


def test_all_specs_sorted_by_kind_then_name():
    specs = load_registry().all_specs()
    keys = [(s.kind, s.name) for s in specs]
    assert keys == sorted(keys)


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """An 'installed' third-party distribution: a dist-info with entry points on sys.path."""
    def make(name, module_source, ep_name=None):
        mod = name.replace("-", "_")
        (tmp_path / f"{mod}.py").write_text(textwrap.dedent(module_source))
        info = tmp_path / f"{mod}-0.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
        (info / "entry_points.txt").write_text(f"[wsbench]\n{ep_name or mod} = {mod}\n")
        return tmp_path
    monkeypatch.syspath_prepend(str(tmp_path))
    return make


THIRD_PARTY = """
from collections import OrderedDict
from torch import nn
from wsbench.hookspecs import hookimpl
from wsbench.specs import ArchitectureSpec

class Net(nn.Module):
    def __init__(self, d, k):
        super().__init__()
        self.a = nn.Linear(d, 16)
        self.b = nn.Linear(16, k)
    def forward(self, x):
        h = self.a(x).relu()
        out = self.b(h)
        return out, OrderedDict(hidden=h, logits=out)

@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(name="thirdnet", view="weights",
                              build=lambda info, cfg: Net(info.weight_dim, info.num_classes),
                              description="third-party test net", defaults={"epochs": 2}))
"""


def test_installed_third_party_plugin_is_found_and_filtered(fake_dist, monkeypatch):
    fake_dist("wsbench-thirdnet", THIRD_PARTY)
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench,wsbench-thirdnet")
    reg = load_registry(strict=True)
    assert reg.architecture("thirdnet").distribution == "wsbench-thirdnet"
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench")
    assert "thirdnet" not in load_registry().architectures


def test_import_error_of_one_distribution_is_one_warning(fake_dist, monkeypatch):
    fake_dist("wsbench-broken", "raise ImportError('missing dependency xyz')\n")
    monkeypatch.setenv("WSBENCH_PLUGINS", "wsbench,wsbench-broken")
    reg = load_registry(strict=False)
    assert "mlp" in reg.architectures
    assert len(reg.warnings) == 1 and "wsbench-broken" in reg.warnings[0] and "xyz" in reg.warnings[0]
    with pytest.raises(WsbenchError, match="wsbench-broken"):
        load_registry(strict=True)


def _cli(*args, env=None, cwd=None):
    import os
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "wsbench", *args], capture_output=True, text=True, env=e, cwd=cwd)


def test_cli_plugins_json_and_third_party_run(fake_dist, tmp_path):
    fake_dist("wsbench-thirdnet", THIRD_PARTY)
    env = {"WSBENCH_PLUGINS": "wsbench,wsbench-thirdnet", "PYTHONPATH": str(tmp_path)}
    res = _cli("plugins", "--json", env=env)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert rows == sorted(rows, key=lambda r: (r["kind"], r["name"]))
    by_name = {r["name"]: r for r in rows}
    for key in ("name", "kind", "distribution", "version", "description"):
        assert key in by_name["thirdnet"]
    assert by_name["thirdnet"]["distribution"] == "wsbench-thirdnet" and by_name["mlp"]["distribution"] == "wsbench"
    res = _cli("run", "--arch", "thirdnet", "--dataset", "shapes", "--limit", "60", "--epochs", "1",
               "--out", str(tmp_path / "r"), env=env)
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout


def test_cli_broken_plugin_warns_once_and_strict_fails(fake_dist, tmp_path):
    fake_dist("wsbench-broken", "raise ImportError('missing dependency xyz')\n")
    env = {"WSBENCH_PLUGINS": "wsbench,wsbench-broken", "PYTHONPATH": str(tmp_path)}
    res = _cli("plugins", "--json", env=env)
    assert res.returncode == 0
    assert res.stderr.count("warning:") == 1 and "wsbench-broken" in res.stderr
    res = _cli("--strict", "plugins", env=env)
    assert res.returncode == 2 and "wsbench-broken" in res.stderr and "Traceback" not in res.stderr


def test_cli_plugins_lists_builtins_when_wsbench_plugins_matches_nothing():
    res = _cli("plugins", "--json", env={"WSBENCH_PLUGINS": "nothing-installed"})
    assert res.returncode == 0, res.stderr
    names = {r["name"] for r in json.loads(res.stdout)}
    assert {"shapes", "mnist", "gmn", "cka"} <= names
    assert res.stderr.count("warning:") == 1 and "nothing-installed" in res.stderr
    res = _cli("--strict", "plugins", env={"WSBENCH_PLUGINS": "nothing-installed"})
    assert res.returncode == 2 and "nothing-installed" in res.stderr and "Traceback" not in res.stderr


BLOCK_TORCH_GEOMETRIC = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch_geometric":
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Blocker())
from wsbench.plugins import load_registry
reg = load_registry(strict=False)
assert "nfn-np" in reg.architectures and "gmn" not in reg.architectures, sorted(reg.architectures)
assert len(reg.warnings) == 1 and "'gmn'" in reg.warnings[0] and "torch_geometric" in reg.warnings[0], reg.warnings
assert "torch_geometric" not in sys.modules
print("ok")
"""


def test_nfn_np_loads_without_torch_geometric():
    """The parameter-graph toolkit is the harness's: only the gmn model itself needs torch-geometric."""
    res = subprocess.run([sys.executable, "-c", BLOCK_TORCH_GEOMETRIC], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_a_dataset_default_that_is_not_a_config_key_is_an_error_naming_it():
    from wsbench import ArchitectureSpec, WsbenchError
    from wsbench.config import resolve
    spec = ArchitectureSpec(name="typo", view="weights", build=lambda info, config: None,
                            defaults={"depth": 4}, dataset_defaults={"shapes": {"layers": 2}})
    with pytest.raises(WsbenchError, match=r"dataset_defaults\['shapes'\] sets layers, which is not one of its"):
        resolve(spec, "shapes", {})
    assert resolve(spec, "mnist", {})["depth"] == 4  # other datasets are unaffected
