"""Studies: a named, versioned grid (datasets x architectures x seeds) with its similarity
measures and leaderboard export, run with one command and resumed where it stopped.

A study is a TOML file: the built-in ones live in ``wsbench/studies/``; any path works too.
Stages per dataset: INR zoo, training grid, similarity; then one leaderboard export for all.
Wall times of every stage are appended to ``<out>/study-<name>.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from wsbench.errors import WsbenchError

STUDY_DIR = Path(__file__).parent / "studies"


@dataclass
class Study:
    name: str
    title: str
    datasets: list
    architectures: list
    seeds: int
    metrics: list
    resamples: int = 1000
    permutations: int = 100
    export: str = ""
    published: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # per-architecture overrides: {"gmn": {"probes": 0}}
    path: str = ""

    def overrides(self) -> dict:
        """The study's config as ``ARCH.key`` overrides (wsbench.config.scoped)."""
        from wsbench.config import scoped
        bad = sorted(k for k, v in self.config.items() if not isinstance(v, dict))
        if bad:
            raise WsbenchError(f"study {self.name!r}: config.{bad[0]} must be a table of one architecture's "
                               f"keys, e.g. [config.gmn] probes = 0")
        return scoped(self.config)


def known_studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.toml"))


def load_study(name_or_path: str) -> Study:
    """A built-in study by name, or a study TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        path = STUDY_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise WsbenchError(f"unknown study {name_or_path!r}; known studies: {', '.join(known_studies())} "
                           "(or pass the path of a study .toml file)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise WsbenchError(f"study file {path} is not valid TOML ({exc}); fix its syntax") from None
    fields = set(Study.__dataclass_fields__) - {"path"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise WsbenchError(f"study file {path}: unknown key(s) {', '.join(unknown)}; known keys: "
                           f"{', '.join(sorted(fields))}")
    missing = [k for k in ("name", "title", "datasets", "architectures", "seeds", "metrics") if k not in raw]
    if missing:
        raise WsbenchError(f"study file {path}: missing key(s) {', '.join(missing)}")
    study = Study(**raw, path=str(path))
    study.overrides()  # a malformed [config] table is an error now, not when the grid starts
    return study


def log_stage(out: Path, study: Study, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"study-{study.name}.json"
    log = json.loads(path.read_text()) if path.exists() else {"study": study.name, "stages": []}
    log["stages"].append(record)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(log, indent=2) + "\n")
    os.replace(tmp, path)


def grid_command(study: Study, dataset: str, seeds: list[int], out: Path, common: list[str]) -> list[str]:
    # A trailing comma makes a single seed a list, not a count.
    seed_list = ",".join(map(str, seeds)) + ","
    cmd = [sys.executable, "-m", "wsbench", "grid", "--dataset", dataset, "--seeds", seed_list,
           "--out", str(out), *common]
    for key, value in study.overrides().items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    for a in study.architectures:
        cmd += ["--arch", a]
    return cmd


def run_grid_workers(cmd: list[str], workers: int, log_dir: Path, on_poll=None) -> list[int]:
    """Run ``workers`` copies of one grid command on one results root; the store's run
    claims split the cells between them (several small models share one GPU well)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    # Share the CPU cores between workers: oversubscribed BLAS threads slow every worker down.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                           str(max(1, (os.cpu_count() or 1) // workers)))}
    procs = []
    for k in range(workers):
        log = open(log_dir / f"grid-worker-{k}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(0.5 if k == 0 else 0.1)
    try:
        while any(p.poll() is None for p, _ in procs):
            if on_poll is not None:
                on_poll()
            time.sleep(2)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.terminate()
            log.close()
    return [p.returncode for p, _ in procs]
