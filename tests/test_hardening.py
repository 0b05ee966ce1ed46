"""Issue #14, "Nothing fake, nothing lost": every input checked before work, every damaged file survived.

One section per numbered item of the issue (item 8, Ray, is in tests/test_ray.py). Each test names the
behaviour that used to fail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from wsbench import Param
from wsbench import plugins as plugin_mod
from wsbench import similarity as sim
from wsbench.cli import main, parse_seeds
from wsbench.config import resolve
from wsbench.errors import DamagedFileWarning, WsbenchError
from wsbench.grid import grid_cells, run_cells
from wsbench.hookspecs import hookimpl
from wsbench.plugins import load_registry
from wsbench.reporting import export
from wsbench.reporting.board import build, compare_sets, sample_analysis, variant_labels
from wsbench.runner import Cell, Runner, Settings
from wsbench.specs import ArchitectureSpec, SirenSpec
from wsbench.store import Store
from wsbench.study import load_study
from wsbench.tables import run_rows, temp_path
from wsbench.zoo import ZooDamaged, build_zoo, list_zoos, open_zoo

LIMIT = 120  # the session's shapes_task (conftest): its zoo is fitted once


def _cache(task) -> str:
    return str(task.zoo.path.parent.parent)


def cli(capsys, *args) -> tuple[int, str, str]:
    """``wsbench ARGS`` through the console entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out = capsys.readouterr()
    code = exit_.value.code
    assert isinstance(code, int), code
    return code, out.out, out.err


@pytest.fixture(scope="module")
def results(tmp_path_factory, shapes_task):
    """A small results root: mlp and flat-mlp, seeds 0 and 1, with cka and mknn similarity (no intervals)."""
    root = tmp_path_factory.mktemp("results") / "R"
    reg = load_registry()
    settings = Settings(out=root, limit=LIMIT, cache_dir=Path(_cache(shapes_task)), overrides={"epochs": 1})
    outcomes = run_cells(grid_cells(["shapes"], ["mlp", "flat-mlp"], [0, 1]), settings, reg)
    assert [o.status for o in outcomes] == ["finished"] * 4
    sim.compute(Store(root), [reg.metric("cka"), reg.metric("mknn")], resamples=0, permutations=0)
    return root


@pytest.fixture
def copy_of(results, tmp_path):
    dst = tmp_path / "R"
    shutil.copytree(results, dst)
    return dst


# 1. Invalid numbers give fake `finished` runs ------------------------------------------------------------

@pytest.mark.parametrize("args, key", [
    (["--epochs", "0"], "'epochs' = 0"),
    (["--set", "batch_size=-4"], "'batch_size' = -4"),
    (["--set", "grad_clip=-1"], "'grad_clip' = -1"),
    (["--set", "lr=abc"], "'lr' = 'abc'"),
    (["--set", "epochs=abc"], "'epochs' = 'abc'"),
    (["--set", "dropout=2"], "'dropout' = 2"),
    (["--set", "batch_size=0"], "'batch_size' = 0"),
    (["--set", "lr=NaN"], "'lr' = nan"),
    (["--set", "epochs=1.5"], "'epochs' = 1.5"),
])
def test_invalid_config_values_fail_before_any_work_naming_key_value_range_and_architecture(capsys, tmp_path, args,
                                                                                             key):
    code, _, err = cli(capsys, "run", "--arch", "mlp", "--limit", LIMIT, "--out", tmp_path / "R",
                       "--cache-dir", tmp_path / "cache", *args)
    assert code == 2, err
    assert key in err and "architecture 'mlp'" in err and "expected" in err and "--set" in err
    assert not (tmp_path / "R" / "runs").exists()  # nothing stored, no fake or failed row
    assert not (tmp_path / "cache").exists()  # and no zoo fitted first


def test_config_values_are_converted_once_so_equal_values_share_a_run_id():
    reg = load_registry()
    mlp = reg.architecture("mlp")
    assert resolve(mlp, "shapes", {"epochs": 2.0}) == resolve(mlp, "shapes", {"epochs": 2})
    assert resolve(mlp, "shapes", {"lr": 1})["lr"] == 1.0 and isinstance(resolve(mlp, "shapes", {"lr": 1})["lr"], float)
    assert resolve(mlp, "shapes", {"grad_clip": None})["grad_clip"] is None  # null: clipping off
    with pytest.raises(WsbenchError, match="'hidden' = \\[64, 1.5\\]"):
        resolve(mlp, "shapes", {"hidden": [64, 1.5]})  # a list of ints, typed by its default


def test_defaults_of_every_builtin_architecture_resolve_unchanged():
    """Typing the config changes no default, so no stored run id moves."""
    from wsbench.config import TRAIN_DEFAULTS
    reg = load_registry()
    for spec in reg.architectures.values():
        for ds in ("shapes", "mnist", "fmnist", "cifar10"):
            plain = {**TRAIN_DEFAULTS, **spec.defaults, **spec.dataset_defaults.get(ds, {})}
            assert json.dumps(resolve(spec, ds, {})) == json.dumps(dict(sorted(plain.items()))), (spec.name, ds)


def test_a_plugin_declares_the_type_and_range_of_its_keys():
    spec = ArchitectureSpec(name="typed", view="images", build=lambda i, c: None,
                            defaults={"width": 64, "read": "function", "scale": 0.5},
                            params={"width": Param(int, ge=1), "read": Param(str, choices=("function", "weights"))})
    assert resolve(spec, "shapes", {"width": 8.0})["width"] == 8
    for bad, needle in (({"width": 0}, "'width' = 0 is not valid; expected an integer >= 1"),
                        ({"read": "pixels"}, "expected one of 'function', 'weights'"),
                        ({"scale": "big"}, "'scale' = 'big' is not valid; expected a finite number")):  # by default
        with pytest.raises(WsbenchError, match=needle):
            resolve(spec, "shapes", bad)
    with pytest.raises(TypeError, match="must be a wsbench.Param"):
        ArchitectureSpec(name="x", view="images", build=lambda i, c: None, params={"width": int})


def test_gmn_declares_its_choices_and_ranges():
    gmn = load_registry().architecture("gmn")
    for bad, needle in (({"aggr": "max"}, "expected one of 'mean', 'sum'"), ({"depth": 0}, "'depth' = 0"),
                        ({"probes": -1}, "'probes' = -1")):
        with pytest.raises(WsbenchError, match=needle):
            resolve(gmn, "mnist", bad)


# 2. Re-exporting deletes the authors' files -------------------------------------------------------------

def _export(root: Path, out: Path, metric: str = "cka") -> list[Path]:
    tables = export.load(root)
    board = build(tables.runs, tables.similarity, metric=metric, predictions=tables.predictions)
    return export.write_export(tables, board, out, "t")


def test_reexport_keeps_every_file_it_did_not_write(results, tmp_path):
    out = tmp_path / "board"
    _export(results, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "leaderboard.md" in manifest["files"] and "manifest.json" in manifest["files"]
    (out / "README.md").write_text("findings\n")
    (out / "samples" / "shapes").mkdir(parents=True, exist_ok=True)
    (out / "samples" / "README.md").write_text("notes on the samples\n")
    (out / "samples" / "shapes" / "why.txt").write_text("a note beside the images\n")
    stale = out / "samples" / "shapes" / "999999.png"  # a sample image an earlier export wrote
    stale.write_bytes(b"png")
    manifest["files"].append("samples/shapes/999999.png")
    (out / "manifest.json").write_text(json.dumps(manifest))
    _export(results, out)
    assert (out / "README.md").read_text() == "findings\n"
    assert (out / "samples" / "README.md").read_text() == "notes on the samples\n"
    assert (out / "samples" / "shapes" / "why.txt").exists()
    assert not stale.exists()  # what wsbench wrote and no longer writes goes
    assert (out / "leaderboard.md").exists() and not list(tmp_path.glob(".board.*"))


def test_reexport_over_an_export_made_before_file_lists_keeps_the_authors_files(results, tmp_path):
    out = tmp_path / "board"
    _export(results, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]  # as exports made before this change are
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "samples").mkdir(exist_ok=True)
    (out / "samples" / "README.md").write_text("kept\n")
    _export(results, out)
    assert (out / "samples" / "README.md").read_text() == "kept\n"


# 3. Interrupted and concurrent exports -------------------------------------------------------------------

def test_an_export_killed_partway_leaves_nothing_that_passes_for_an_export_and_can_be_rerun(results, tmp_path,
                                                                                          monkeypatch, capsys):
    out = tmp_path / "board"

    def killed(*a, **k):
        raise KeyboardInterrupt  # the export stops between its files
    monkeypatch.setattr(export, "render_html", killed)
    with pytest.raises(KeyboardInterrupt):
        _export(results, out)
    monkeypatch.undo()
    assert not out.exists()  # written beside and swapped in whole: nothing half-written at the target
    _export(results, out)  # the rerun works
    assert (out / "manifest.json").exists()
    # A half-written folder (as an export killed by an older wsbench left it) is not accepted as an export ...
    half = tmp_path / "half"
    shutil.copytree(out, half)
    (half / "manifest.json").unlink()
    code, _, err = cli(capsys, "leaderboard", "--out", half)
    assert code == 2 and "unfinished leaderboard export" in err and "--output" in err
    # ... and exporting into it again completes it.
    _export(results, half)
    assert export.is_export(half)


def test_an_export_killed_over_a_previous_one_leaves_the_previous_one_whole(results, tmp_path, monkeypatch):
    out = tmp_path / "board"
    _export(results, out)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(export, "render_html", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        _export(results, out)
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_two_exports_to_one_folder_at_once_give_one_whole_export(results, tmp_path):
    out = tmp_path / "board"
    errors = []

    def one():
        try:
            _export(results, out)
        except Exception as exc:  # pragma: no cover - the failure this test is about
            errors.append(exc)
    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(manifest["files"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_temporary_folders_of_killed_exports_are_removed_by_the_next_export(results, tmp_path):
    out = tmp_path / "board"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = temp_path(out)
    leftover = leftover.with_name(leftover.name.replace(f"-{os.getpid()}.", f"-{dead.pid}."))
    leftover.mkdir()
    (leftover / "leaderboard.md").write_text("half")
    _export(results, out)
    assert not leftover.exists()


# 4. Damaged zoo caches -----------------------------------------------------------------------------------

def _tiny_zoo(root: Path, dataset: str = "t"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 1, 6, 6), dtype=np.uint8)
    return build_zoo(root, dataset, images, np.arange(12), SirenSpec(hidden=(4, 4)),
                     {"steps": 3, "chunk_size": 8}), images


def _damage(zoo_path: Path, how: str) -> None:
    w = zoo_path / "weights.npy"
    if how == "truncated":
        w.write_bytes(w.read_bytes()[:-100])
    elif how == "zero-byte":
        w.write_bytes(b"")
    elif how == "zeros":
        arr = np.load(w)
        np.save(w, np.zeros_like(arr))  # the right shape, the wrong numbers
    elif how == "manifest-edited":
        m = json.loads((zoo_path / "manifest.json").read_text())
        m["psnr"]["mean"] = 99.0
        (zoo_path / "manifest.json").write_text(json.dumps(m))
    elif how == "manifest-corrupt":
        (zoo_path / "manifest.json").write_text("{not json")


@pytest.mark.parametrize("how, needle", [
    ("truncated", "weights.npy has"), ("zero-byte", "weights.npy has 0 bytes"),
    ("zeros", "weights.npy does not match its checksum"), ("manifest-edited", "manifest.json was edited"),
    ("manifest-corrupt", "manifest.json is unreadable"),
])
def test_a_damaged_zoo_is_named_with_its_fix_and_inrs_build_repairs_it(tmp_path, how, needle):
    zoo, images = _tiny_zoo(tmp_path)
    good = np.asarray(zoo.weights).copy()
    assert set(zoo.manifest["files"]) == {"weights.npy", "psnr.npy", "ids.npy"}
    _damage(zoo.path, how)
    with pytest.raises(ZooDamaged, match=needle) as err:
        open_zoo(zoo.path)
    assert str(zoo.path) in str(err.value) and "wsbench inrs build --dataset t" in str(err.value)
    with pytest.raises(ZooDamaged):  # a run or grid stops with the same message
        build_zoo(tmp_path, "t", images, np.arange(12), SirenSpec(hidden=(4, 4)), {"steps": 3, "chunk_size": 8})
    with pytest.warns(Warning, match="fitting it again"):
        fixed = build_zoo(tmp_path, "t", images, np.arange(12), SirenSpec(hidden=(4, 4)),
                          {"steps": 3, "chunk_size": 8}, repair=True)
    assert np.array_equal(np.asarray(fixed.weights), good)
    assert open_zoo(zoo.path).manifest["key"] == zoo.manifest["key"]


def test_a_zero_byte_weights_file_is_an_error_message_not_aborted_even_under_debug(capsys, tmp_path, shapes_task):
    cache = tmp_path / "cache"
    shutil.copytree(_cache(shapes_task), cache)
    (zoo_dir,) = (cache / "zoos").iterdir()
    (zoo_dir / "weights.npy").write_bytes(b"")
    args = ["run", "--arch", "flat-mlp", "--limit", LIMIT, "--epochs", "1", "--out", tmp_path / "R",
            "--cache-dir", cache]
    code, _, err = cli(capsys, *args)
    assert code == 2 and "is damaged: weights.npy has 0 bytes" in err and "wsbench inrs build --dataset shapes" in err
    assert "Aborted" not in err
    with pytest.raises(ZooDamaged):  # --debug: the traceback, not a bare "Aborted."
        main(["--debug", *map(str, args)])
    code, out, err = cli(capsys, "inrs", "build", "--dataset", "shapes", "--limit", LIMIT, "--cache-dir", cache)
    assert code == 0 and "fitting it again" in err and f"{zoo_dir}" in out.replace("\n", "")
    code, out, err = cli(capsys, *args)
    assert code == 0 and "test accuracy" in out, err


def test_inrs_info_lists_a_broken_zoo_as_broken_and_the_others_still(capsys, tmp_path):
    a, _ = _tiny_zoo(tmp_path, "a")
    _tiny_zoo(tmp_path, "b")
    _damage(a.path, "manifest-corrupt")
    listed = {z["dataset"]: z for z in list_zoos(tmp_path)}
    assert "broken" in listed["a"] and "broken" not in listed["b"] and listed["b"]["count"] == 12
    code, out, err = cli(capsys, "inrs", "info", "--cache-dir", tmp_path)
    assert code == 0 and "BRO" in out and f"{a.path} is damaged: manifest.json is unreadable" in err
    code, out, _ = cli(capsys, "inrs", "info", "--cache-dir", tmp_path, "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, _, err = cli(capsys, "inrs", "info", a.path.name, "--cache-dir", tmp_path)
    assert code == 2 and "is damaged" in err


def test_verifying_a_zoo_hashes_each_file_state_once_per_process(tmp_path, monkeypatch):
    import wsbench.zoo as zoo_mod
    zoo, _ = _tiny_zoo(tmp_path)
    calls = []
    real = zoo_mod.file_sha256
    monkeypatch.setattr(zoo_mod, "file_sha256", lambda p: calls.append(p.name) or real(p))
    open_zoo(zoo.path)
    open_zoo(zoo.path)
    assert calls == []  # hashed when the build sealed it: no open hashes it again
    weights = (zoo.path / "weights.npy").read_bytes()
    np.save(zoo.path / "weights.npy", np.zeros_like(np.asarray(zoo.weights)))  # a new state: hashed again
    with pytest.raises(ZooDamaged):
        open_zoo(zoo.path)
    (zoo.path / "weights.npy").write_bytes(weights)  # the right bytes back (a new mtime): hashed once more
    open_zoo(zoo.path)
    open_zoo(zoo.path)
    assert calls == ["weights.npy", "weights.npy"]


# 5. Errors reach wsbench's handler -----------------------------------------------------------------------

def test_an_eoferror_is_named_not_turned_into_aborted(capsys, monkeypatch, tmp_path):
    import wsbench.cli as cli_mod

    def eof(*a, **k):
        raise EOFError("No data left in file")
    monkeypatch.setattr(cli_mod, "_run_cells", eof)
    code, _, err = cli(capsys, "run", "--arch", "mlp", "--out", tmp_path / "R")
    assert code == 1 and "EOFError: No data left in file" in err and "Aborted" not in err and "--debug" in err
    with pytest.raises(EOFError):
        main(["--debug", "run", "--arch", "mlp", "--out", str(tmp_path / "R")])


def test_ctrl_c_says_what_is_kept_and_how_to_resume(capsys, monkeypatch, tmp_path):
    import wsbench.cli as cli_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_mod, "_run_cells", interrupted)
    code, _, err = cli(capsys, "grid", "--arch", "mlp", "--seeds", "2", "--out", tmp_path / "R")
    assert code == 130
    assert "interrupted" in err and "kept" in err and f"wsbench grid --arch mlp --seeds 2 --out {tmp_path / 'R'}" in err


def test_usage_errors_keep_exit_code_2(capsys):
    code, _, err = cli(capsys, "run", "--no-such-option")
    assert code == 2 and "No such option" in err
    code, _, _ = cli(capsys, "run", "--help")
    assert code == 0


# 6. One corrupt Parquet file stops whole commands --------------------------------------------------------

def test_a_zero_byte_or_foreign_file_in_runs_is_skipped_with_a_warning_naming_it(copy_of, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_STRICT", "")  # --strict below sets it: restored (unset) afterwards
    zero = copy_of / "runs" / "dataset=shapes" / "arch=mlp" / "zero.parquet"
    zero.write_bytes(b"")
    foreign = copy_of / "runs" / "dataset=shapes" / "arch=mlp" / "foreign.parquet"
    foreign.write_text("not parquet at all")
    code, out, err = cli(capsys, "leaderboard", "--out", copy_of, "--format", "md")
    assert code == 0, err
    assert str(zero) in err and str(foreign) in err and "not a readable Parquet file" in err
    assert "| mlp |" in out or "mlp" in out
    with pytest.warns(DamagedFileWarning):
        assert len(Store(copy_of).runs()) == 4
    code, _, err = cli(capsys, "--strict", "leaderboard", "--out", copy_of)
    assert code == 2 and str(foreign) in err and "strict mode" in err


def test_a_valid_parquet_file_with_a_foreign_schema_is_skipped_not_read_as_a_null_row(copy_of):
    foreign = copy_of / "runs" / "dataset=shapes" / "arch=mlp" / "notes.parquet"
    pq.write_table(pa.table({"note": ["hello"], "n": [1]}), foreign)
    with pytest.warns(DamagedFileWarning, match="not a wsbench runs file"):
        runs = Store(copy_of).runs()
    assert len(runs) == 4 and all(r["run_id"] for r in runs)
    mistyped = copy_of / "similarity" / "dataset=shapes" / "metric=cka" / "x.parquet"
    pq.write_table(pa.table({"run_a": [1], "run_b": [2], "layer_a": ["a"], "layer_b": ["b"], "value": ["v"]}), mistyped)
    with pytest.warns(DamagedFileWarning, match="column run_a is int64"):
        assert Store(copy_of).read("similarity").num_rows > 0


def test_one_runs_truncated_representations_do_not_block_the_other_pairs(copy_of):
    store = Store(copy_of)
    runs = store.finished_runs()
    victim = runs[0]
    rep = store.path("representations", victim["run_id"], dataset="shapes", arch=victim["arch"])
    rep.write_bytes(rep.read_bytes()[:200])
    shutil.rmtree(copy_of / "similarity")
    with pytest.warns(DamagedFileWarning, match=str(rep)):
        counts = sim.compute(store, [load_registry().metric("cka")], resamples=0, permutations=0)
    assert counts["pairs"] == 3 and counts["skipped_runs"] == [victim["run_id"]]  # the 3 pairs of the 3 others


def test_grid_retrains_a_cell_whose_stored_files_are_unreadable(copy_of, shapes_task):
    store = Store(copy_of)
    runs = {r["run_id"]: r for r in store.finished_runs()}
    cells = grid_cells(["shapes"], ["mlp", "flat-mlp"], [0, 1])
    runner = Runner(load_registry(), Settings(out=copy_of, limit=LIMIT, cache_dir=Path(_cache(shapes_task)),
                                              overrides={"epochs": 1}))
    victim, other = runner.config_for(cells[0])[1], runner.config_for(cells[2])[1]
    runs_file = store.path("runs", victim, dataset="shapes", arch="mlp")
    runs_file.write_bytes(runs_file.read_bytes()[:50])  # a truncated runs file
    preds = store.path("predictions", other, dataset="shapes", arch="flat-mlp")
    preds.write_bytes(b"")  # and a finished run's zero-byte predictions
    with pytest.warns(DamagedFileWarning):
        outcomes = run_cells(cells, runner.settings, load_registry())
    assert sorted(o.status for o in outcomes) == ["finished", "finished", "skipped", "skipped"]
    assert {o.cell for o in outcomes if o.status == "finished"} == {cells[0], cells[2]}
    assert len(Store(copy_of).finished_runs()) == len(runs)


# 7. Seeds ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("0,99999999999999999999,2", "out of range"), ("100000000000", "at most 10000"), (",", "lists no seed"),
    ("-5,", "seed -5 is out of range"), ("-1", "neither a positive count"), ("0,1,1", "repeats a seed"),
])
def test_bad_seeds_are_refused_before_any_cell(text, needle):
    with pytest.raises(WsbenchError, match=needle):
        parse_seeds(text)


def test_a_seed_beyond_int64_stops_the_grid_before_anything_runs(capsys, tmp_path):
    code, _, err = cli(capsys, "grid", "--arch", "mlp", "--seeds", "0,99999999999999999999,2", "--out", tmp_path / "R")
    assert code == 2 and "99999999999999999999" in err and not (tmp_path / "R" / "runs").exists()
    runner = Runner(load_registry(), Settings(out=tmp_path / "R"))
    with pytest.raises(WsbenchError, match="out of range"):
        runner.validate([Cell("shapes", "mlp", 2**63)])
    assert parse_seeds("0,9223372036854775807") == [0, 2**63 - 1]


# 9. Leaderboards -----------------------------------------------------------------------------------------

def _runs(arch, config, seeds, acc, dataset="shapes", **extra):
    return [{"run_id": f"{arch}-{json.dumps(config, sort_keys=True)}-{s}", "dataset": dataset, "arch": arch, "seed": s,
             "status": "finished", "test_acc": acc + 0.01 * s, "view": "images", "config": json.dumps(config),
             "limit": None, **extra} for s in seeds]


def test_compare_matches_rows_by_settings_and_labels_variants():
    a = _runs("mlp", {"epochs": 2}, [0, 1, 2], 0.5)
    b = _runs("mlp", {"epochs": 3}, [0, 1, 2], 0.7)
    rows = compare_sets(a, [], b, [], "A", "B").accuracy
    # Different configs of one architecture are two labelled rows, never one matched row.
    assert sorted(r["arch"] for r in rows) == ["mlp (epochs=2)", "mlp (epochs=3)"]
    assert all(np.isnan(r["diff"]) for r in rows)
    # The same config matches even when one side also holds another variant.
    b2 = _runs("mlp", {"epochs": 2}, [0, 1, 2], 0.6) + b
    rows = {r["arch"]: r for r in compare_sets(a, [], b2, [], "A", "B").accuracy}
    assert rows["mlp (epochs=2)"]["a_n"] == 3 and rows["mlp (epochs=2)"]["b_n"] == 3
    assert rows["mlp (epochs=2)"]["diff"] == pytest.approx(0.1)
    assert rows["mlp (epochs=3)"]["a_n"] == 0


def test_similarity_intervals_are_clipped_to_the_metric_range():
    sims = [{"dataset": "shapes", "metric": "cka", "arch_a": "mlp", "arch_b": "mlp", "seed_a": a, "seed_b": b,
             "layer_a": "fc1", "layer_b": "fc1", "layer_index_a": 0, "layer_index_b": 0, "value": v}
            for (a, b), v in zip([(0, 1), (0, 2), (1, 2)], [0.999, 0.995, 0.9999])]
    free = build([], sims).stability[0]
    assert free["ci_high"] > 1  # the t-interval alone claims CKA above 1
    row = build([], sims, value_range=(-1.0, 1.0)).stability[0]
    assert row["ci_high"] == 1.0 and row["ci_low"] == free["ci_low"]
    assert load_registry().metric("cka").range == (-1.0, 1.0)
    assert build([], sims, value_range=(-1.0, 1.0)).within[0]["ci_high"] == 1.0


def test_prediction_agreement_intervals_never_pass_100_percent():
    runs = [{"run_id": f"r{s}", "dataset": "d", "arch": "a", "seed": s, "status": "finished", "view": "images"}
            for s in range(3)]
    preds = [{"run_id": f"r{s}", "sample_id": i, "label": 0, "pred": 0 if (s, i) != (2, 0) else 1}
             for s in range(3) for i in range(40)]
    (row,) = sample_analysis(runs, preds)[2]
    assert row["agreement"] < 1 and row["ci_high"] <= 1.0


def test_a_reexport_remembers_its_metric_and_metric_is_checked(results, tmp_path, capsys):
    out = tmp_path / "board"
    code, _, err = cli(capsys, "leaderboard", "--out", results, "--metric", "mknn", "--output", f"{out}/",
                       "--no-images")
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["metric"] == "mknn"
    code, page, _ = cli(capsys, "leaderboard", "--out", out, "--format", "md")
    assert code == 0 and "mknn" in page and "cka" not in page.split("## ")[0] + "".join(
        line for line in page.splitlines() if line.startswith("## "))
    code, _, err = cli(capsys, "leaderboard", "--out", results, "--metric", "nosuch")
    assert code == 2 and "unknown metric 'nosuch'" in err and "cka, mknn" in err
    code, _, err = cli(capsys, "leaderboard", "--out", results, "--metric", "svcca", "--format", "md")
    assert code == 0 and "no svcca similarity" in err and "wsbench similarity --metric svcca" in err
    code, helptext, _ = cli(capsys, "leaderboard", "--help")
    assert "--metric" in helptext


def test_every_run_records_its_thread_count_and_cpu_thread_counts_are_variants(results):
    runs = Store(results).runs()
    assert {r["threads"] for r in runs} == {torch.get_num_threads()}
    one = _runs("mlp", {"epochs": 1}, [0, 1], 0.5, device="cpu", threads=1)
    two = _runs("mlp", {"epochs": 1}, [2, 3], 0.5, device="cpu", threads=2)
    labels = set(variant_labels(one + two).values())
    assert labels == {"mlp (threads=1)", "mlp (threads=2)"}
    gpu = _runs("mlp", {"epochs": 1}, [0, 1], 0.5, device="cuda:0", threads=1) + \
        _runs("mlp", {"epochs": 1}, [2, 3], 0.5, device="cuda:0", threads=8)
    assert set(variant_labels(gpu).values()) == {"mlp"}
    old = run_rows([{"run_id": "x", "seed": 0, "status": "finished"}])
    assert old.column("threads").to_pylist() == [None]  # rows without it read as null


# 10. Smaller -------------------------------------------------------------------------------------------------

def test_similarity_with_an_unknown_dataset_is_an_error(results, capsys):
    code, _, err = cli(capsys, "similarity", "--out", results, "--dataset", "nosuch")
    assert code == 2 and "--dataset nosuch" in err and "shapes" in err


def test_a_study_string_where_a_list_belongs_is_an_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\ntitle = "t"\ndatasets = "mnist"\narchitectures = ["mlp"]\nseeds = 2\n'
                    'metrics = ["cka"]\n')
    with pytest.raises(WsbenchError, match="datasets = 'mnist' is not a non-empty list"):
        load_study(str(path))


def test_a_study_named_like_a_path_is_an_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "../x"\ntitle = "t"\ndatasets = ["shapes"]\narchitectures = ["mlp"]\nseeds = 1\n'
                    'metrics = ["cka"]\n')
    with pytest.raises(WsbenchError, match="name = '../x' is not a plain name"):
        load_study(str(path))


def test_an_imported_zoo_name_cannot_leave_the_cache(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    code, _, err = cli(capsys, "inrs", "import", tmp_path / "src", "--layout", "nfn", "--name", "../..",
                       "--cache-dir", tmp_path / "cache")
    assert code == 2 and "'../..' is not a plain name" in err
    from wsbench.importers import import_zoo
    with pytest.raises(WsbenchError, match="is not a plain name"):
        import_zoo(tmp_path / "src", "nfn", tmp_path / "cache", name="../..")


def test_out_pointing_at_a_file_is_an_error_with_the_fix(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for args in (["run", "--arch", "mlp"], ["leaderboard"], ["similarity"]):
        code, _, err = cli(capsys, *args, "--out", f)
        assert code == 2 and f"--results {f} is a file" in err, (args, err)


def test_a_results_root_that_cannot_be_written_is_an_error_with_the_fix(tmp_path, capsys, monkeypatch):
    real = Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".write-check"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, data)
    monkeypatch.setattr(Path, "write_bytes", refuse)
    code, _, err = cli(capsys, "run", "--arch", "mlp", "--out", tmp_path / "R")
    assert code == 2 and "is not writable (Permission denied)" in err and "--results" in err


class _ExitingPlugin:
    @hookimpl
    def register_architectures(self, register):
        register(ArchitectureSpec(name="exits", view="images", build=_exiting_build, defaults={"epochs": 1}))
        register(ArchitectureSpec(name="tiny", view="images", build=_Tiny, defaults={"epochs": 1}))


def _exiting_build(info, config):
    sys.exit(5)


class _Tiny(nn.Module):
    def __init__(self, info, config):
        super().__init__()
        c, h, w = info.image_shape
        self.fc = nn.Linear(c * h * w, info.num_classes)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return logits, OrderedDict(logits=logits)


def test_a_plugin_calling_sys_exit_fails_its_cell_and_the_grid_goes_on(tmp_path, capsys, monkeypatch, shapes_task):
    reg = load_registry(extra_plugins=[(_ExitingPlugin(), "wsbench-test", "0")])
    monkeypatch.setattr(plugin_mod, "_cached", reg)
    code, out, err = cli(capsys, "grid", "--arch", "exits", "--arch", "tiny", "--seeds", "1", "--limit", LIMIT,
                         "--cache-dir", _cache(shapes_task), "--out", tmp_path / "R")
    assert code == 1 and "grid: 1 failed, 1 finished" in out
    assert "called sys.exit(5)" in err
    rows = {r["arch"]: r for r in Store(tmp_path / "R").runs()}
    assert rows["exits"]["status"] == "failed" and rows["tiny"]["status"] == "finished"


def test_a_zero_byte_claim_is_taken_over_after_seconds_not_minutes(tmp_path):
    from wsbench.claims import UNREADABLE_GRACE_S, Claims
    c = Claims(tmp_path, stale_after_s=600)
    c.dir.mkdir(parents=True)
    c.path("r1").write_text("")
    old = time.time() - UNREADABLE_GRACE_S - 1
    os.utime(c.path("r1"), (old, old))
    claim = c.acquire("r1")
    assert claim is not None and c.still_mine(claim)
    assert UNREADABLE_GRACE_S <= 10


def test_temporaries_left_by_a_killed_writer_are_cleaned(copy_of):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = copy_of / "runs" / "dataset=shapes" / "arch=mlp"
    mine = temp_path(folder / "x.parquet")
    killed = mine.with_name(mine.name.replace(f"-{os.getpid()}.", f"-{dead.pid}."))
    killed.write_bytes(b"half")
    old_style = folder / ".y.parquet.12345.abcd1234.tmp"  # written before temporaries named their host
    old_style.write_bytes(b"half")
    ancient = time.time() - 7200
    os.utime(old_style, (ancient, ancient))
    live = folder / f".z.parquet.{mine.name.split('.')[-3]}.abcd1234.tmp"  # this process's: in use
    live.write_bytes(b"writing")
    claims = copy_of / ".claims"
    claims.mkdir()
    (claims / ".r.token.tmp").write_bytes(b"")
    os.utime(claims / ".r.token.tmp", (ancient, ancient))
    removed = Store(copy_of).sweep()
    assert set(removed) == {killed, old_style, claims / ".r.token.tmp"} and live.exists()


def test_a_repeated_arch_is_an_error_not_two_cells(tmp_path, capsys):
    code, _, err = cli(capsys, "grid", "--arch", "mlp", "--arch", "mlp", "--out", tmp_path / "R")
    assert code == 2 and "--arch mlp is given more than once" in err
    assert grid_cells(["shapes"], ["mlp", "mlp"], [0, 0]) == [Cell("shapes", "mlp", 0)]


def test_the_readme_tables_example_runs_with_pyarrow_alone(results, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- tables-example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "pandas" not in block.split("#")[0]
    shutil.copytree(results, tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # not installed: the example must not need it
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["runs"].num_rows == 4


def test_a_dataset_spec_types_its_fields_when_registered():
    from wsbench import DatasetSpec
    for bad, needle in (({"num_val": -1}, "num_val"), ({"split_seed": 1.5}, "split_seed"),
                        ({"inr_hidden": (32, 0)}, "inr_hidden")):
        with pytest.raises(ValueError, match=needle):
            DatasetSpec(name="d", load=lambda p: None, **bad)
    reg = load_registry()
    runner = Runner(reg, Settings(recipe={"steps": 1.5}))
    with pytest.raises(WsbenchError, match="'steps' = 1.5 is not valid; expected an integer >= 1"):
        runner.validate([Cell("shapes", "flat-mlp", 0)])
