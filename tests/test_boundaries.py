"""Import boundaries, read from the source (AST), and the plugin API they rest on.

- A plugin (``plugins/``) imports wsbench only as ``from wsbench import NAME`` with NAME in
  ``wsbench.__all__``: never a ``wsbench.<submodule>``, never another plugin module.
- A benchmark (``benchmarks/``) may use wsbench's submodules, never ``wsbench_plugins``.
- No module of the project imports another module's private name: ``from x import _y``, or
  ``x._y`` on a name bound by an import of a project module. Third-party privates are their owners'
  affair; dunder names (``__version__``) are not private.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import wsbench

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("harness", "plugins", "benchmarks", "scripts", "tests")


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


# Project modules: the two packages, and the scripts, benchmarks and tests importable by file name.
FIRST_PARTY = {"wsbench", "wsbench_plugins"} | {p.stem for f in ("benchmarks", "scripts", "tests") for p in _files(f)}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _first_party(module: str | None, level: int = 0) -> bool:
    return level > 0 or (module or "").split(".")[0] in FIRST_PARTY


def import_problems(path: Path, folder: str) -> list[str]:
    """Every boundary a file crosses, as ``path:line: what``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT)
    out = []
    bound: set[str] = set()  # names bound to project modules or their members by an import
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                if _first_party(name):
                    bound.add(alias.asname or name.split(".")[0])
                if folder == "plugins" and (name.startswith("wsbench.") or name.split(".")[0] == "wsbench_plugins"):
                    out.append(f"{where}:{node.lineno}: plugin imports {name}; use `from wsbench import ...`")
                if folder == "benchmarks" and name.split(".")[0] == "wsbench_plugins":
                    out.append(f"{where}:{node.lineno}: benchmark imports plugin module {name}; use the registry")
        elif isinstance(node, ast.ImportFrom):
            module, level = node.module or "", node.level
            names = [a.name for a in node.names]
            if _first_party(module, level):
                bound.update(a.asname or a.name for a in node.names)
                for name in names:
                    if _private(name):
                        out.append(f"{where}:{node.lineno}: imports private {name} from {'.' * level}{module}")
            if folder == "plugins":
                if level > 0 or module.split(".")[0] == "wsbench_plugins":
                    out.append(f"{where}:{node.lineno}: plugin imports another plugin ({'.' * level}{module})")
                elif module.startswith("wsbench."):
                    out.append(f"{where}:{node.lineno}: plugin imports {module}; use `from wsbench import ...`")
                elif module == "wsbench":
                    out += [f"{where}:{node.lineno}: plugin imports wsbench.{n}, which is not in wsbench.__all__"
                            for n in names if n not in wsbench.__all__]
            if folder == "benchmarks" and module.split(".")[0] == "wsbench_plugins":
                out.append(f"{where}:{node.lineno}: benchmark imports plugin module {module}; use the registry")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                out.append(f"{where}:{node.lineno}: uses private {ast.unparse(node)}")
    return out


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_module_crosses_an_import_boundary(folder):
    problems = [p for path in _files(folder) for p in import_problems(path, folder)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, folder, expected", [
    ("from wsbench_plugins.gmn import layer_statistics\n", "plugins", "another plugin"),
    ("from .head import Head\n", "plugins", "another plugin"),
    ("import wsbench_plugins.head\n", "plugins", "plugin imports wsbench_plugins.head"),
    ("from wsbench.specs import MetricSpec\n", "plugins", "plugin imports wsbench.specs"),
    ("from wsbench import similarity\n", "plugins", "not in wsbench.__all__"),
    ("from wsbench_plugins import cka\n", "benchmarks", "benchmark imports plugin module"),
    ("from wsbench.inr import _check_recipe\n", "tests", "imports private _check_recipe"),
    ("from wsbench import inr\nx = inr._POOL\n", "harness", "uses private inr._POOL"),
    ("import wsbench.inr\nx = wsbench.inr._POOL\n", "scripts", "uses private wsbench.inr._POOL"),
])
def test_the_boundary_check_catches(tmp_path, monkeypatch, source, folder, expected):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    path = tmp_path / folder / "example.py"
    path.parent.mkdir()
    path.write_text(source)
    problems = import_problems(path, folder)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_boundary_check_lets_public_and_third_party_names_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    path = tmp_path / "plugins" / "example.py"
    path.parent.mkdir()
    path.write_text("import torch\nfrom wsbench import ArchitectureSpec, __version__, hookimpl\n"
                    "norm = torch.nn.modules.batchnorm._BatchNorm\n\nclass A:\n    def f(self):\n"
                    "        return self._x\n")
    assert import_problems(path, "plugins") == []


# The plugin API -------------------------------------------------------------------------------------

def test_every_name_of_the_plugin_api_resolves():
    missing = [name for name in wsbench.__all__ if getattr(wsbench, name, None) is None]
    assert not missing


def test_plugin_api_lists_agree():
    """``__all__``, the lazy table and the imports type checkers read name the same things."""
    tree = ast.parse((ROOT / "harness" / "wsbench" / "__init__.py").read_text())
    checked, table = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                checked.update({a.name: imp.module for a in imp.names})
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_API":
            table = ast.literal_eval(node.value)
    assert set(wsbench.__all__) - {"__version__"} == set(table) == set(checked)
    assert table == checked


def test_importing_the_plugin_api_spares_torch_until_a_name_needs_it():
    code = ("import sys, wsbench\nfrom wsbench import ArchitectureSpec, MetricSpec, hookimpl\n"
            "assert 'torch' not in sys.modules\nfrom wsbench import Head\nassert 'torch' in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
