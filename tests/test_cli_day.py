"""The command line as a new user and a batch scheduler meet it: --version, help that shows flags,
defaults and extras as written, errors that keep their brackets, --json summaries and plain
per-epoch log lines with rates and ETAs when stderr is a file."""
import json
import os
import subprocess
import sys

from wsbench import __version__


def _wsbench(*args, **kw):
    env = {**os.environ, "COLUMNS": "200", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "wsbench", *args], capture_output=True, text=True, env=env, **kw)


def test_version_prints_and_exits_0():
    res = _wsbench("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"wsbench {__version__}"


def test_help_shows_flags_as_flags_defaults_and_extras_verbatim():
    top = _wsbench("--help").stdout
    assert "--debug " in top and "<bool>" not in top and "--version" in top
    grid = _wsbench("grid", "--help").stdout
    text = " ".join(grid.split())
    assert "pip install 'wsbench[ray]'" in text  # no markup eats the extra
    assert "WSBENCH_CACHE" in text and "~/.cache/wsbench" in text and "WSBENCH_DATA" in text
    assert "EACH split" in text and "--save-models" in text and "--track" in text and "--json" in text
    assert "--results, --out" in text or "--results" in text
    assert "<bool>" not in grid  # --save-models, --json render as flags
    for cmd in (["leaderboard"], ["similarity"], ["plot"], ["model", "eval"], ["study", "run"]):
        assert "--results" in _wsbench(*cmd, "--help").stdout, cmd


def test_errors_keep_their_brackets(tmp_path):
    res = _wsbench("run", "--arch", "mlp", "--set", "bogus[ray]=1", "--results", str(tmp_path / "r"))
    assert res.returncode == 2 and "unknown config key(s) bogus[ray]" in res.stderr


def test_unknown_tracker_is_one_line_before_any_work(tmp_path):
    res = _wsbench("run", "--arch", "mlp", "--track", "mlflow", "--results", str(tmp_path / "r"))
    assert res.returncode == 2 and "unknown tracker 'mlflow'; known: tensorboard, wandb" in res.stderr
    assert not (tmp_path / "r").exists()


def test_grid_in_a_log_file_prints_epoch_lines_and_a_json_summary(tmp_path, shapes_task):
    cache = shapes_task.zoo.path.parents[1]
    out = tmp_path / "R"
    args = ["grid", "--arch", "mlp", "--arch", "flat-mlp", "--seeds", "2", "--limit", "120", "--epochs", "3",
            "--cache-dir", str(cache), "--device", "cpu", "--out", str(out), "--json"]  # --out: the older alias
    res = _wsbench(*args)  # stderr is a pipe here, as under a batch scheduler
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["results"] == str(out.resolve()) and summary["counts"] == {"finished": 4}
    assert sorted((r["arch"], r["seed"]) for r in summary["runs"]) == [("flat-mlp", 0), ("flat-mlp", 1),
                                                                       ("mlp", 0), ("mlp", 1)]
    assert all(len(r["run_id"]) == 16 and r["status"] == "finished" and r["model"] is None for r in summary["runs"])
    lines = res.stderr.splitlines()
    epochs = [line for line in lines if line.startswith("shapes/mlp/seed 0: epoch ")]
    assert len(epochs) == 3, res.stderr
    assert all("s/epoch" in line and "cell ETA" in line and "grid ETA" in line for line in epochs)
    again = _wsbench(*args)
    assert json.loads(again.stdout)["counts"] == {"skipped": 4}


def test_study_run_json_names_the_export(tmp_path, shapes_task):
    study = tmp_path / "tiny.toml"
    study.write_text('name = "tiny"\ntitle = "Tiny"\ndatasets = ["shapes"]\narchitectures = ["mlp"]\nseeds = 2\n'
                     'metrics = ["cka"]\nresamples = 0\npermutations = 0\n'
                     f'export = "{tmp_path / "lb"}"\n')
    res = _wsbench("study", "run", str(study), "--limit", "120", "--cache-dir", str(shapes_task.zoo.path.parents[1]),
                   "--results", str(tmp_path / "R"), "--device", "cpu", "--epochs", "1", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["study"] == "tiny" and summary["export"] == str(tmp_path / "lb")
    assert summary["counts"] == {"finished": 2}


def test_eta_comes_from_epoch_times_not_start_up():
    import io

    from rich.console import Console

    from wsbench.progress import GridDisplay
    from wsbench.runner import Cell

    display = GridDisplay(Console(file=io.StringIO(), force_terminal=False))
    cells = [Cell("shapes", "gmn", s) for s in range(3)]
    display({"type": "plan", "total": 3, "skipped": 0, "cells": cells, "out": "R"})
    display({"type": "start", "cell": cells[0]})
    assert display.eta() is None and display.untimed() == 3  # nothing measured yet

    def epoch(k, seconds):
        display({"type": "epoch", "cell": cells[0], "epoch": k, "total": 10, "train_loss": 1.0, "val_acc": 0.5,
                 "seconds": seconds})
    epoch(1, 30.0)  # the first epoch carries the start-up (compilation, data on the device)
    epoch(2, 2.0)
    epoch(3, 2.0)
    # 7 epochs left at 2 s, then two whole cells of 10 epochs at 2 s: the first epoch's 30 s is left out.
    assert display.eta() == 2.0 * 7 + 2 * 2.0 * 10 and display.untimed() == 0
    log = display.console.file.getvalue()
    assert "shapes/gmn/seed 0: epoch 3/10 · loss 1.000 · val 50.0% · 2.00 s/epoch · cell ETA 0:00:14 · grid ETA " \
           "0:00:54" in log
    # A cell of an architecture not timed yet is not guessed from another one: it is named apart.
    display({"type": "plan", "total": 4, "skipped": 0, "cells": [*cells[1:], Cell("shapes", "mlp", 0)], "out": "R"})
    assert display.eta() == 2.0 * 7 + 2 * 2.0 * 10 and display.untimed() == 1
    assert display.eta_text() == "ETA 0:00:54 + 1 cell not timed yet"


def test_runs_record_the_commit_threads_hardware_and_versions(tmp_path, shapes_task):
    import torch

    from wsbench.plugins import load_registry
    from wsbench.provenance import git_info
    from wsbench.runner import Cell, Runner, Settings

    runner = Runner(load_registry(), Settings(out=tmp_path / "r", limit=120, device="cpu", overrides={"epochs": 1}))
    runner._tasks["shapes"] = shapes_task
    row = runner.run(Cell("shapes", "mlp", 0))
    commit, dirty = git_info()
    assert row["git_commit"] == commit and row["git_dirty"] == dirty
    if commit is not None:  # run from a git checkout of wsbench (the tests are)
        assert len(commit) == 40 and isinstance(dirty, bool)
    assert row["threads"] == torch.get_num_threads() and "cores" in row["hardware"]
    versions = json.loads(row["library_versions"])
    assert {"python", "numpy", "pyarrow"} <= set(versions)
    assert git_info(str(tmp_path)) == (None, None)  # not a checkout of wsbench: null, not another repo's commit
