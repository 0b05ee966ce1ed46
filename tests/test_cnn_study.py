"""The cnn-zoo study end to end on a tiny CNN zoo (CPU): zoo, grid, similarity, leaderboard export; and
a zoo imported from the Small CNN Zoo's release layout trained on like a built one."""
import json

import numpy as np
import pytest
from test_cnnzoo import write_release

from wsbench.cli import main

TINY = ["--recipe", "zoo_size=40", "--recipe", "epochs=1", "--recipe", "train_subset=60", "--recipe",
        "test_subset=20", "--recipe", "chunk_size=20", "--recipe", "n_probe=8", "--recipe", "train_eval=20"]


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def test_cnn_zoo_study_runs_end_to_end_on_a_tiny_zoo(tmp_path, fake_mnist, capsys):
    res, lb = tmp_path / "results", tmp_path / "lb"
    code, _out, err = cli(capsys, "study", "run", "cnn-zoo", "--dataset", "cnn-mnist", "--seeds", "2", "--epochs", "2",
                         "--resamples", "20", "--data-dir", fake_mnist, "--results", res, "--export", f"{lb}/",
                         "--device", "cpu", *TINY)
    assert code == 0, err
    page = (lb / "leaderboard.md").read_text()
    # Ranked by Kendall's tau with R2 and MSE; weight-view and function-view models; their similarity.
    assert "Kendall's tau" in page and "R²" in page and "MSE" in page
    for arch in ("gmn", "weight-stats", "flat-mlp", "nfn-np", "fn-mlp"):
        assert f"| {arch} |" in page
    assert "weights better" in page and "Cross-seed stability" in page
    sim = json.loads((lb / "manifest.json").read_text())
    assert sim["runs"] == 10 and sim["finished_runs"] == 10
    cross = (lb / "tables" / "cross.csv").read_text()
    assert "fn-mlp" in cross and "weight-stats" in cross  # weights vs function similarity, sample ids aligned
    # Re-rendering the export from its own tables gives the same page.
    code, again, err = cli(capsys, "leaderboard", "--results", lb, "--format", "md")
    assert code == 0 and "Kendall's tau" in again


def test_an_imported_small_cnn_zoo_trains_like_a_built_one(tmp_path, capsys):
    rows = np.random.default_rng(0).normal(0, 0.3, (60, 4970))
    write_release(tmp_path / "release", rows, with_layout=True)
    cache = tmp_path / "cache"
    code, out, err = cli(capsys, "zoo", "import", tmp_path / "release", "--name", "tiny", "--image-size", "28",
                         "--cache-dir", cache)
    assert code == 0, err
    assert "imported 30 CNNs" in out
    folder = out.split(" as ")[1].split(";")[0]
    code, out, err = cli(capsys, "zoo", "info", "--cache-dir", cache)  # the listing knows CNN zoos
    assert code == 0 and "BROKEN" not in out, err
    code, out, err = cli(capsys, "zoo", "info", "--cache-dir", cache, "--json")
    (listed,) = json.loads(out)
    assert listed["kind"] == "cnn" and listed["imported"] == "small-cnn-zoo" and listed["count"] == 30
    code, out, err = cli(capsys, "run", "--arch", "weight-stats", "--dataset", "cnn-imported", "--recipe",
                         f"zoo={folder[:20]}", "--epochs", "1", "--cache-dir", cache, "--results", tmp_path / "r")
    assert code == 0, err
    assert "test Kendall's tau" in out
    # The release has no network outputs: a function-view model is refused before any work.
    code, _, err = cli(capsys, "run", "--arch", "fn-mlp", "--dataset", "cnn-imported", "--recipe",
                       f"zoo={folder}", "--cache-dir", cache, "--results", tmp_path / "r")
    assert code == 2 and "does not offer" in err
    # Without a zoo name the error lists the imported zoos.
    code, _, err = cli(capsys, "run", "--arch", "flat-mlp", "--dataset", "cnn-imported", "--cache-dir", cache,
                       "--results", tmp_path / "r2")
    assert code == 2 and "--recipe zoo=FOLDER" in err and folder in err


def test_a_cnn_zoo_build_killed_with_sigkill_resumes_to_the_same_zoo(tmp_path, fake_mnist):
    import os
    import signal
    import subprocess
    import sys
    import time

    # The fake MNIST files are 60 + 20 images: the subprocess needs the same small counts.
    code = ("import sys, wsbench_plugins.images as im; im.N_TRAIN_IDX, im.N_TEST_IDX = 60, 20; "
            "from wsbench.cli import main; main(sys.argv[1:])")
    recipe = [*TINY, "--recipe", "epochs=40", "--recipe", "chunk_size=10"]  # 4 chunks of ~1 s each

    def build(cache, kill=False):
        cmd = [sys.executable, "-c", code, "zoo", "build", "--dataset", "cnn-mnist", "--data-dir", str(fake_mnist),
               "--cache-dir", str(cache), "--device", "cpu", *recipe]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
        if kill:
            deadline = time.time() + 120
            while time.time() < deadline and not list(cache.glob("zoos/*/done.json")):
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=300)
        return proc.returncode

    assert build(tmp_path / "whole") == 0
    assert build(tmp_path / "killed", kill=True) == -signal.SIGKILL
    (folder,) = (tmp_path / "killed" / "zoos").iterdir()
    done = json.loads((folder / "done.json").read_text())
    assert not (folder / "manifest.json").exists() and 1 <= len(done) < 4  # killed mid-build
    assert build(tmp_path / "killed") == 0
    (whole,) = (tmp_path / "whole" / "zoos").iterdir()
    assert folder.name == whole.name
    for name in ("weights.npy", "function.npy", "test_acc.npy", "train_acc.npy"):
        assert np.array_equal(np.load(folder / name), np.load(whole / name), equal_nan=True), name
