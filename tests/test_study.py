"""Studies: one command runs zoos, grid, similarity and the export, and resumes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsbench.errors import WsbenchError
from wsbench.runner import Settings
from wsbench.study import known_studies, load_study, study_settings

STUDY = """
name = "tiny"
title = "A tiny study"
datasets = ["shapes"]
architectures = ["flat-mlp", "mlp"]
seeds = 2
metrics = ["cka"]
resamples = 20
permutations = 5
"""


def test_builtin_study_is_complete():
    assert "yeom2025" in known_studies()
    s = load_study("yeom2025")
    assert s.datasets == ["mnist", "fmnist", "cifar10"] and s.seeds == 5
    assert {"gmn", "mlp", "cnn"} <= set(s.architectures) and "cka" in s.metrics


def test_bad_study_files_are_one_line_errors(tmp_path):
    with pytest.raises(WsbenchError, match="unknown study 'nope'; known studies: .*yeom2025"):
        load_study("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text(STUDY + "colour = 'red'\n")
    with pytest.raises(WsbenchError, match="unknown key.*colour"):
        load_study(str(bad))
    bad.write_text(STUDY + "[config]\nlr = 0.1\n")
    with pytest.raises(WsbenchError, match="config.lr must be a table of one architecture's keys"):
        load_study(str(bad))


def _wsbench(*args):
    return subprocess.run([sys.executable, "-m", "wsbench", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_study_config_is_per_architecture():
    s = load_study("yeom2025")
    # The paper's GMN reads parameters alone, whatever the gmn's dataset defaults become.
    assert s.overrides() == {"gmn.probes": 0, "gmn.augment": "none"}
    # The grid's workers are built from these settings: the study's config reaches them as overrides.
    overrides = study_settings(s, Settings(out=Path("R"))).overrides
    assert overrides["gmn.probes"] == 0 and overrides["gmn.augment"] == "none"


def test_study_runs_end_to_end_with_workers_and_resumes(tmp_path):
    study = tmp_path / "tiny.toml"
    study.write_text(STUDY + "[config.mlp]\nlabel_smoothing = 0.05\n")
    out, lb = tmp_path / "R", tmp_path / "lb"
    args = ["study", "run", str(study), "--out", str(out), "--export", str(lb), "--limit", "60", "--epochs", "1",
            "--workers", "2"]
    res = _wsbench(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    log = json.loads((out / "study-tiny.json").read_text())
    assert [s["stage"] for s in log["stages"]] == ["zoo", "grid", "similarity", "export"]
    runs = list((out / "runs").rglob("*.parquet"))
    assert len(runs) == 4
    import pyarrow.parquet as pq
    smoothing = {p.parent.name: json.loads(pq.read_table(p).column("config")[0].as_py())["label_smoothing"]
                 for p in runs}
    assert smoothing == {"arch=mlp": 0.05, "arch=flat-mlp": 0.0}  # the study's [config.mlp] reached mlp only
    assert (lb / "leaderboard.md").exists() and (lb / "index.html").exists()
    assert (lb / "tables" / "runs.parquet").exists()
    sim_files = sorted(p.name for p in (out / "similarity").rglob("*.parquet"))
    assert len(sim_files) == 6  # 4 runs -> 6 unordered pairs, one metric
    again = _wsbench(*args)
    assert again.returncode == 0
    assert sorted(p.name for p in (out / "runs").rglob("*.parquet")) == sorted(p.name for p in runs)
    assert sorted(p.name for p in (out / "similarity").rglob("*.parquet")) == sim_files
    rerender = _wsbench("leaderboard", "--out", str(lb), "--format", "md")
    assert rerender.returncode == 0 and "flat-mlp" in rerender.stdout
