"""`wsbench plugins check NAME`: passes on the built-in models, names what fails on broken ones."""
from collections import OrderedDict

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from wsbench import plugins
from wsbench.cli import app
from wsbench.conformance import check_architecture
from wsbench.hookspecs import hookimpl
from wsbench.plugins import load_registry
from wsbench.specs import ArchitectureSpec


class _Plugin:
    def __init__(self, name, specs):
        self.__name__ = name
        self.register_architectures = hookimpl(lambda register: [register(s) for s in specs])


class Good(nn.Module):
    def __init__(self, info):
        super().__init__()
        self.fc = nn.Linear(info.weight_dim, 16)
        self.out = nn.Linear(16, info.num_classes)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.out(h), OrderedDict(hidden=h)


class OneRowLayer(Good):
    """Returns a representation with one row for the whole batch."""

    def forward(self, x):
        logits, _ = super().forward(x)
        return logits, OrderedDict(hidden=logits.mean(0, keepdim=True))


class Detached(Good):
    """Logits detached from the parameters: no step can lower the loss."""

    def forward(self, x):
        logits, layers = super().forward(x)
        return logits.detach() + 0 * x.sum(1, keepdim=True), layers


class Noisy(Good):
    """Draws noise from an unseeded generator: the same seed cannot give the same numbers."""

    def __init__(self, info):
        super().__init__(info)
        self.gen = torch.Generator().manual_seed(torch.seed() % 2**31 + id(self) % 997)

    def forward(self, x):
        logits, layers = super().forward(x)
        # Small noise: one step still lowers the loss, but no two runs give the same numbers.
        return logits + 1e-4 * torch.randn(logits.shape, generator=self.gen), layers


class _Reversed(torch.autograd.Function):
    """Identity forward, negated gradient: steps climb the loss."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return -g


class Ascent(Good):
    def forward(self, x):
        logits, layers = super().forward(x)
        return _Reversed.apply(logits), layers


def _spec(name, cls):
    return ArchitectureSpec(name=name, view="weights", build=lambda info, cfg, _c=cls: _c(info),
                            description="throwaway", defaults={"lr": 1e-2})


def _registry():
    specs = [_spec("good", Good), _spec("one-row", OneRowLayer), _spec("detached", Detached),
             _spec("noisy", Noisy), _spec("ascent", Ascent),
             ArchitectureSpec(name="not-a-module", view="weights", build=lambda info, cfg: "oops")]
    return load_registry(extra_plugins=[(_Plugin("throwaway", specs), "broken-dist", "0.0")])


def _failed(results):
    return {r.name for r in results if not r.ok}


def test_a_conforming_throwaway_plugin_passes():
    assert _failed(check_architecture(_registry().architecture("good"))) == set()


@pytest.mark.parametrize("name,failing,words", [
    ("one-row", {"representations", "deterministic"}, "one row per sample"),
    ("detached", {"one step", "deterministic"}, "are the logits detached?"),
    ("noisy", {"deterministic"}, "same seed gave different"),
    ("ascent", {"one step"}, "did not lower the loss"),
    ("not-a-module", {"build", "representations", "one step", "deterministic"}, "not a torch.nn.Module"),
])
def test_broken_plugins_fail_the_named_check(name, failing, words):
    results = check_architecture(_registry().architecture(name))
    assert _failed(results) == failing
    assert any(words in r.detail for r in results if not r.ok)


@pytest.mark.parametrize("arch,small", [("gmn", {"hidden_dim": 16}), ("nfn-np", {"channels": 8}),
                                        ("cnn", {"channels": [8, 16, 16]})])
def test_builtin_models_pass(arch, small):
    results = check_architecture(load_registry().architecture(arch), overrides=small)
    assert all(r.ok for r in results), [(r.name, r.detail) for r in results if not r.ok]


def test_cli_check_exits_nonzero_and_names_the_failure(monkeypatch):
    monkeypatch.setattr(plugins, "_cached", _registry())
    res = CliRunner().invoke(app, ["plugins", "check", "one-row"])
    assert res.exit_code == 1
    assert "representations" in res.output and "one row per sample" in res.output
    res = CliRunner().invoke(app, ["plugins", "check", "good", "--set", "lr=0.001"])
    assert res.exit_code == 0 and "all 4 checks passed" in res.output
    res = CliRunner().invoke(app, ["plugins", "check", "good", "--set", "widht=3"])
    assert res.exit_code != 0 and "unknown config key(s) widht" in str(res.exception or res.output)
