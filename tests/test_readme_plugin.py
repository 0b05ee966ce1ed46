"""The README's plugin examples work as written: each ``<!-- plugin-example: KIND -->`` code block is
written to a module, registered as a throwaway plugin and used the way the README says."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsbench import ImageData, WsbenchError
from wsbench.config import resolve
from wsbench.plugins import load_registry
from wsbench.similarity import evaluate, invariance_checks
from wsbench.task import make_task
from wsbench.train import train

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = re.compile(r"<!-- plugin-example: (\w+) -->\s*```python\n(.*?)```", re.DOTALL)
KINDS = ("architecture", "dataset", "metric", "networks")


def examples() -> dict[str, str]:
    found = {}
    for kind, code in EXAMPLE.findall(README.read_text()):
        assert kind not in found, f"two README examples marked {kind!r}"
        found[kind] = code
    return found


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """Every README example as an imported module, kind -> module."""
    folder = tmp_path_factory.mktemp("readme_plugins")
    out = {}
    for kind, code in examples().items():
        name = f"wsbench_readme_{kind}"
        path = folder / f"{name}.py"
        path.write_text(code)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        out[kind] = module
    yield out
    for kind in out:
        sys.modules.pop(f"wsbench_readme_{kind}", None)


@pytest.fixture
def registry(modules):
    reg = load_registry(strict=True, extra_plugins=[(m, "wsbench-readme", "0.1.0") for m in modules.values()])
    assert not reg.warnings
    return reg


def test_readme_has_one_example_of_each_kind_importing_only_the_plugin_api():
    found = examples()
    assert sorted(found) == sorted(KINDS)
    for kind, code in found.items():
        imports = re.findall(r"^(?:from|import) (\S+)", code, re.MULTILINE)
        assert "wsbench" in imports, kind
        assert not [m for m in imports if m.startswith(("wsbench.", "wsbench_plugins"))], (kind, imports)


def test_readme_examples_register_one_spec_each(registry):
    assert registry.architecture("tinynet").distribution == "wsbench-readme"
    assert registry.dataset("stripes").distribution == "wsbench-readme"
    assert registry.metric("linear-r2").distribution == "wsbench-readme"
    assert registry.dataset("sine-nets").distribution == "wsbench-readme"


def test_readme_architecture_learns_the_tiny_shapes_task(registry, shapes_task):
    arch = registry.architecture("tinynet")
    # The session's task has 120 training INRs: smaller batches give the few epochs enough steps.
    config = resolve(arch, "shapes", {"batch_size": 16, "epochs": 20})
    result = train(shapes_task, arch, config, seed=0, device=torch.device("cpu"))
    chance = 1 / shapes_task.info.num_classes
    assert result.test_acc >= 1.5 * chance, (result.test_acc, chance)
    assert list(result.layers) == ["hidden", "logits"]
    assert result.layers["hidden"].shape == (len(shapes_task.splits["test"]), 64)


def test_readme_architecture_reads_standardised_weights_when_asked(registry, shapes_task):
    arch = registry.architecture("tinynet")
    model = arch.build(shapes_task.info, resolve(arch, "shapes", {"read": "weights"}))
    x = shapes_task.inputs("weights")[:5]
    logits, layers = model(x)
    assert logits.shape == (5, shapes_task.info.num_classes) and layers["hidden"].shape == (5, 64)
    z = (x - model.mean) / model.std
    assert torch.allclose(layers["hidden"], model.body(z))


def test_readme_dataset_loads_and_becomes_a_task(registry, tmp_path):
    spec = registry.dataset("stripes")
    data = spec.load(tmp_path)
    assert isinstance(data, ImageData)
    assert data.train_images.shape == (600, 1, 12, 12) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (200, 1, 12, 12) and data.test_labels.dtype == np.int64
    assert set(np.unique(data.train_labels)) == {0, 1} and list(data.classes) == ["horizontal", "vertical"]
    again = spec.load(tmp_path)
    assert np.array_equal(again.train_images, data.train_images)  # the same arrays every time
    task = make_task(spec, data_dir=tmp_path, cache_dir=tmp_path / "cache", limit=8)
    assert task.info.inr.dims == [2, 16, 16, 1] and task.weights.shape == (24, task.info.weight_dim)
    assert task.zoo.manifest["recipe"]["steps"] == 100


def related(seed: int, n: int, dims) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return [z @ torch.randn(3, d, generator=g, dtype=torch.float64)
            + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0 for d in dims]


def test_readme_metric_runs_through_the_similarity_harness(registry):
    metric = registry.metric("linear-r2")
    reps = related(0, 200, [4, 6, 9])
    unrelated = torch.randn(200, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reps.append(unrelated)
    pairs = [(0, 1), (0, 2), (1, 2), (0, 3), (2, 2)]
    res = evaluate(metric, reps, pairs, resamples=20, permutations_=5, seed=0)
    assert res["path"] == "fn"  # no batched path: the harness resamples and permutes pair by pair
    value = res["value"]
    assert np.all(value[:3] > 0.8) and value[3] < 0.1 and value[4] == pytest.approx(1.0, abs=1e-9)
    assert np.all(np.isfinite(res["ci_low"])) and np.all(res["ci_low"] <= res["ci_high"])
    assert np.all(value[:3] > res["null_high"][:3])
    checks = invariance_checks(metric, reps, pairs[:3])
    assert set(checks) == {"orthogonal", "isotropic-scaling", "translation"}
    assert all(v < 1e-6 for v in checks.values()), checks


def test_readme_zoo_of_networks_trains_weight_and_function_models(registry, tmp_path):
    from wsbench.grid import Cell
    from wsbench.runner import Runner, Settings
    runner = Runner(registry, Settings(out=tmp_path, device="cpu", overrides={"epochs": 15}))
    rows = {arch: runner.run(Cell("sine-nets", arch, 0)) for arch in ("fn-mlp", "flat-mlp", "gmn")}
    assert all(r["score"] == "kendall_tau" for r in rows.values())
    assert rows["fn-mlp"]["test_score"] > 0.8  # the target is a function of the function view
    assert rows["flat-mlp"]["test_score"] > 0.3, rows["flat-mlp"]["test_score"]
    assert rows["gmn"]["test_score"] > 0.3, rows["gmn"]["test_score"]  # a zoo of SIRENs: read as INRs
    with pytest.raises(WsbenchError, match="does not offer"):
        runner.validate([Cell("sine-nets", "mlp", 0)])
