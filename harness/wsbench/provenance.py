"""Where a run's numbers come from: the code's git commit, the machine and the library versions.

Every stored run row carries these (:func:`run_provenance`), so a published table can name the
code and the hardware that made it. The commit is that of the checkout wsbench is imported from
(``git_commit``, ``git_dirty``: tracked files changed since it); both are null when wsbench runs
from an installed copy rather than a git checkout.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

# Libraries whose versions change numbers or files; recorded with every run.
LIBRARIES = ("numpy", "pyarrow", "torch-geometric", "pluggy", "safetensors")


def _git(root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


@functools.cache
def git_info(package_dir: str | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding the wsbench package, or ``(None, None)``.

    Only a checkout of wsbench itself counts: the top folder must hold ``harness/wsbench``, so a
    copy installed inside some other repository does not borrow that repository's commit.
    """
    here = Path(package_dir) if package_dir else Path(__file__).resolve().parent
    top = _git(here, "rev-parse", "--show-toplevel")
    if not top or not (Path(top) / "harness" / "wsbench").is_dir():
        return None, None
    commit = _git(Path(top), "rev-parse", "HEAD")
    if not commit:
        return None, None
    status = _git(Path(top), "status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


@functools.cache
def cpu_name() -> str:
    """The CPU model as the OS names it (``/proc/cpuinfo``), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    """One line: the accelerator when the run used one, else the CPU, with the core count."""
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)}; {cpu_name()} ({os.cpu_count()} cores)"
    return f"{cpu_name()} ({os.cpu_count()} cores)"


@functools.cache
def library_versions() -> str:
    """``{"python": ..., "numpy": ..., ...}`` as JSON (a library that is not installed is left out)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return json.dumps(out, sort_keys=True)


def run_provenance(device: torch.device) -> dict:
    """The provenance columns of a runs row (see :data:`wsbench.tables.RUNS_SCHEMA`)."""
    commit, dirty = git_info()
    return {"git_commit": commit, "git_dirty": dirty,
            "hardware": hardware(device), "library_versions": library_versions()}
