"""Leaderboards as pure functions of the tables: ranks and ties, intervals, stability, layer
matrices, the sample analysis, comparisons, Markdown, and the export folder round trip."""
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from wsbench.reporting import export
from wsbench.reporting.board import (
    Board,
    accuracy_rows,
    build,
    compare,
    layer_matrices,
    sample_analysis,
    stability_rows,
    variant_labels,
)
from wsbench.reporting.html import png_bytes
from wsbench.reporting.stats import mean_ci, t95
from wsbench.reporting.text import (
    accuracy_table,
    markdown_gallery,
    render_comparison_markdown,
    render_markdown,
    stability_table,
)
from wsbench.store import Store
from wsbench.tables import run_rows


def _run(arch, seed, acc, view="images", dataset="shapes", status="finished"):
    return {"run_id": f"{arch}-{seed}", "dataset": dataset, "arch": arch, "seed": seed, "status": status,
            "test_acc": acc if status == "finished" else None, "view": view, "error": None if status == "finished"
            else "ValueError: x"}


def test_accuracy_mean_std_interval_are_the_t_formulas():
    rows = accuracy_rows([_run("a", s, v) for s, v in enumerate([0.80, 0.82, 0.84])])
    r = rows[0]
    h = 4.302652729749464 * 0.02 / math.sqrt(3)  # t_{0.975, 2}, exact (the old table had 4.303)
    assert r["mean"] == pytest.approx(0.82) and r["std"] == pytest.approx(0.02)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(0.82 - h), pytest.approx(0.82 + h))
    assert r["seeds"] == 3 and r["best"] == 0.84 and r["worst"] == 0.80


def test_ranks_tie_where_intervals_overlap_and_failed_runs_do_not_count():
    runs = [_run("top", s, v) for s, v in enumerate([0.95, 0.951, 0.949])]
    runs += [_run("b", s, v) for s, v in enumerate([0.70, 0.80, 0.75])]
    runs += [_run("c", s, v) for s, v in enumerate([0.72, 0.78, 0.74])]
    runs += [_run("c", 9, None, status="failed")]
    rows = {r["arch"]: r for r in accuracy_rows(runs)}
    assert (rows["top"]["rank"], rows["top"]["tie"]) == (1, False)
    assert rows["b"]["rank"] == rows["c"]["rank"] == 2 and rows["b"]["tie"] and rows["c"]["tie"]
    assert rows["c"]["seeds"] == 3
    assert [r["arch"] for r in accuracy_rows(runs)] == ["top", "b", "c"]  # by mean within a tie
    _, body = accuracy_table(build(runs, []))
    assert [row[1] for row in body] == ["1", "2=", "2="]


def test_accuracy_interval_is_clamped_to_unit_range_and_one_seed_has_none():
    rows = {r["arch"]: r for r in accuracy_rows([_run("a", 0, 0.99), _run("a", 1, 0.5), _run("one", 0, 0.3)])}
    assert rows["a"]["ci_low"] == 0.0 and rows["a"]["ci_high"] == 1.0
    assert math.isnan(rows["one"]["ci_low"]) and math.isnan(rows["one"]["std"])


def _sim(arch_a, seed_a, arch_b, seed_b, la, lb_, value, ia=None, ib=None, **extra):
    layers = ["fc1", "fc2", "logits"]
    return {"dataset": "shapes", "metric": "cka", "run_a": f"{arch_a}-{seed_a}", "run_b": f"{arch_b}-{seed_b}",
            "arch_a": arch_a, "arch_b": arch_b, "seed_a": seed_a, "seed_b": seed_b, "layer_a": la, "layer_b": lb_,
            "layer_index_a": layers.index(la) if ia is None else ia,
            "layer_index_b": layers.index(lb_) if ib is None else ib, "value": value, **extra}


def test_stability_averages_seed_pairs_and_carries_bootstrap_and_null():
    sims = [_sim("m", 0, "m", 1, "fc1", "fc1", 0.9, ci_low=0.85, ci_high=0.95, null_mean=0.01, null_high=0.02),
            _sim("m", 0, "m", 2, "fc1", "fc1", 0.8, ci_low=0.75, ci_high=0.85, null_mean=0.03, null_high=0.04),
            _sim("m", 1, "m", 2, "fc1", "fc1", 0.7, ci_low=0.65, ci_high=0.75, null_mean=0.02, null_high=0.03),
            _sim("m", 0, "m", 1, "fc1", "fc2", 0.1),  # other layer: not stability
            _sim("m", 0, "w", 0, "fc1", "fc1", 0.5),  # other arch: not stability
            {**_sim("m", 0, "m", 1, "fc1", "fc1", 0.0), "metric": "other"}]
    (r,) = stability_rows(sims, "cka")
    _, s, _, _ = mean_ci([0.9, 0.8, 0.7])
    # The seed is the unit: deleting seed 0, 1 or 2 leaves the pair (1, 2), (0, 2) or (0, 1), i.e. 0.7, 0.8
    # or 0.9; jackknife variance (2/3)(0.01 + 0 + 0.01), t on 3 - 1 = 2 df.
    h = 4.302652729749464 * math.sqrt(2 / 3 * 0.02)
    assert (r["mean"], r["std"], r["ci_low"], r["ci_high"], r["pairs"], r["seeds"]) == (
        pytest.approx(0.8), pytest.approx(s), pytest.approx(0.8 - h), pytest.approx(0.8 + h), 3, 3)
    assert r["boot_low"] == pytest.approx(0.75) and r["boot_high"] == pytest.approx(0.85)
    assert r["null_mean"] == pytest.approx(0.02)
    board = build([], sims)
    head, _ = stability_table(board)
    assert "bootstrap 95 % CI (samples)" in head and "permutation null (mean)" in head
    # Without the interval columns (older similarity rows) the table has no such columns.
    plain = [{k: v for k, v in s.items() if k not in ("ci_low", "ci_high", "null_mean", "null_high")} for s in sims]
    head, _ = stability_table(build([], plain))
    assert "bootstrap 95 % CI (samples)" not in head and "permutation null (mean)" not in head


def test_layer_matrices_within_are_symmetric_and_cross_are_oriented():
    sims = [_sim("m", 0, "m", 1, "fc1", "fc2", 0.4), _sim("m", 0, "m", 1, "fc2", "fc1", 0.6),
            _sim("m", 0, "m", 1, "fc1", "fc1", 0.9), _sim("m", 0, "m", 1, "fc2", "fc2", 0.8),
            # a cross pair stored with arch_a > arch_b is turned around
            _sim("z", 0, "a", 0, "fc1", "fc2", 0.3), _sim("z", 0, "a", 1, "fc1", "fc2", 0.5)]
    board = build([], sims)
    (w,) = layer_matrices(board.within)
    assert w["rows"] == w["cols"] == ["fc1", "fc2"]
    assert np.allclose(w["values"], [[0.9, 0.5], [0.5, 0.8]])
    (c,) = layer_matrices(board.cross)
    assert (c["arch_a"], c["arch_b"], c["rows"], c["cols"]) == ("a", "z", ["fc2"], ["fc1"])
    assert c["values"][0][0] == pytest.approx(0.4) and c["cells"][("fc2", "fc1")]["pairs"] == 2


# Sample analysis -------------------------------------------------------------------------

LABELS = [0, 1, 2, 3, 4, 5]


def _preds(run, preds):
    return [{"run_id": run["run_id"], "dataset": run["dataset"], "arch": run["arch"], "sample_id": 100 + i,
             "label": LABELS[i], "pred": p, "correct": p == LABELS[i]} for i, p in enumerate(preds)]


def _sample_fixture():
    # Sample 100: every w1 run right, every image run wrong (w2 wrong too: judged apart, it hides nothing).
    # Sample 101: the reverse for w1 and w2. Sample 102: w1 and im right, w2 wrong.
    # 103-105: everyone right / wrong / mixed.
    runs = [_run("w1", 0, 0.5, "weights"), _run("w1", 1, 0.5, "weights"), _run("w2", 0, 0.5, "weights"),
            _run("im", 0, 0.5, "images"), _run("im", 1, 0.5, "images"), _run("im", 2, 0.1, status="failed")]
    preds = {"w1-0": [0, 9, 2, 3, 9, 5], "w1-1": [0, 9, 2, 3, 9, 9], "w2-0": [9, 8, 9, 3, 9, 5],
             "im-0": [7, 1, 2, 3, 9, 5], "im-1": [7, 1, 2, 3, 9, 9]}
    rows = [p for r in runs if r["run_id"] in preds for p in _preds(r, preds[r["run_id"]])]
    # The failed run's stray predictions must be ignored.
    rows += _preds(runs[-1], [9, 9, 9, 9, 9, 9])
    return runs, rows


def test_sample_analysis_finds_the_samples_that_split_weight_and_image_models():
    runs, preds = _sample_fixture()
    summary, samples, agreement = sample_analysis(runs, preds)
    s1, s2 = summary
    assert (s1["weight_arch"], s2["weight_arch"]) == ("w1", "w2") and s1["image_archs"] == "im"
    assert (s1["samples"], s1["weight_runs"], s1["image_runs"], s2["weight_runs"]) == (6, 2, 2, 1)
    assert (s1["weights_only"], s1["images_only"], s1["all_right"], s1["all_wrong"]) == (1, 1, 2, 1)
    assert (s2["weights_only"], s2["images_only"], s2["all_right"], s2["all_wrong"]) == (0, 2, 1, 2)
    groups = {(x["weight_arch"], x["group"]): [y["sample_id"] for y in samples
                                               if (y["weight_arch"], y["group"]) == (x["weight_arch"], x["group"])]
              for x in samples}
    assert groups == {("w1", "weights-only"): [100], ("w1", "images-only"): [101], ("w2", "images-only"): [101, 102]}
    by_group = {(x["weight_arch"], x["group"], x["sample_id"]): x for x in samples}
    assert by_group[("w1", "weights-only", 100)]["wrong_pred"] == 7
    assert by_group[("w1", "images-only", 101)]["wrong_pred"] == 9
    assert by_group[("w2", "images-only", 101)]["wrong_pred"] == 8
    assert by_group[("w1", "images-only", 101)]["right_fraction"] == {"im": 1.0, "w1": 0.0, "w2": 0.0}
    agree = {(a["arch_a"], a["arch_b"]): a for a in agreement}
    # w1 seed 0 vs seed 1 differ only on sample 105.
    assert agree[("w1", "w1")]["agreement"] == pytest.approx(5 / 6) and agree[("w1", "w1")]["pairs"] == 1
    # im vs w1: 4 run pairs; (im-0,w1-0) agree on 102,103,104,105 -> 4/6, and so on.
    expected = np.mean([4 / 6, 3 / 6, 3 / 6, 4 / 6])
    assert agree[("im", "w1")]["agreement"] == pytest.approx(expected) and agree[("im", "w1")]["pairs"] == 4
    assert ("w2", "w2") not in agree  # one seed: no pair


def test_sample_analysis_uses_only_the_samples_every_run_predicted_and_needs_both_kinds():
    runs, preds = _sample_fixture()
    preds = [p for p in preds if not (p["run_id"] == "im-1" and p["sample_id"] == 100)]
    (s, _), samples, _ = sample_analysis(runs, preds)
    assert s["weight_arch"] == "w1" and s["samples"] == 5 and s["weights_only"] == 0
    only_weights = [r for r in runs if r["view"] == "weights"]
    (s,), samples, _ = sample_analysis(only_weights, preds)
    assert s["weights_only"] == s["images_only"] == 0 and samples == [] and s["image_runs"] == 0
    assert s["weight_arch"] is None


# Compare ---------------------------------------------------------------------------------

def test_compare_gives_welch_differences_and_marks_separated_ones():
    a = build([_run("m", s, v) for s, v in enumerate([0.50, 0.52, 0.54])]
                 + [_run("x", s, v) for s, v in enumerate([0.3, 0.5])], [])
    b = build([_run("m", s, v) for s, v in enumerate([0.60, 0.62, 0.64, 0.66])]
                 + [_run("x", s, v) for s, v in enumerate([0.2, 0.6])] + [_run("new", 0, 0.9)], [])
    c = compare(a, b, "A", "B")
    rows = {r["arch"]: r for r in c.accuracy}
    va, vb = 0.02 ** 2 / 3, np.var([0.60, 0.62, 0.64, 0.66], ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    h = t95(df) * math.sqrt(va + vb)
    assert rows["m"]["diff"] == pytest.approx(0.11)
    assert (rows["m"]["diff_low"], rows["m"]["diff_high"]) == (pytest.approx(0.11 - h), pytest.approx(0.11 + h))
    assert rows["m"]["separated"] and not rows["x"]["separated"]
    assert math.isnan(rows["new"]["diff"]) and rows["new"]["a_n"] == 0 and rows["new"]["b_n"] == 1
    md = render_comparison_markdown(c)
    assert "# B against A" in md and "| shapes | m | 52.00 |" in md and "11.00 *" in md


def test_markdown_has_every_section_and_escapes_pipes():
    runs, preds = _sample_fixture()
    runs[-1]["error"] = "ValueError: a|b"
    board = build(runs, [_sim("w1", 0, "w1", 1, "fc1", "fc1", 0.9)], predictions=preds)
    md = render_markdown(board, title="T")
    for section in ("# T", "## Test accuracy", "## Cross-seed stability", "## Cross-architecture similarity",
                    "## Sample analysis", "### Prediction agreement", "### The split samples", "## Failed runs"):
        assert section in md
    assert "ValueError: a\\|b" in md
    md = render_markdown(board, image_dir="samples", image_ids={("shapes", 100)})
    assert '<img src="samples/shapes/100.png"' in md and "samples/shapes/101.png" not in md


# Export ----------------------------------------------------------------------------------

def _write_store(root, runs, preds, sims):
    store = Store(root)
    for r in runs:
        rest = {k: v for k, v in r.items() if k not in ("dataset", "arch")}
        store.write("runs", r["run_id"], run_rows([rest]), dataset=r["dataset"], arch=r["arch"])
        mine = [{k: v for k, v in p.items() if k not in ("dataset", "arch")} for p in preds
                if p["run_id"] == r["run_id"]]
        if mine and r["status"] == "finished":
            store.write("predictions", r["run_id"], pa.Table.from_pylist(mine), dataset=r["dataset"], arch=r["arch"])
    for k, s in enumerate(sims):
        store.write("similarity", f"p{k}", pa.Table.from_pylist([{x: v for x, v in s.items()
                                                                  if x not in ("dataset", "metric")}]),
                    dataset=s["dataset"], metric=s["metric"])


def test_export_folder_rerenders_to_the_same_leaderboard(tmp_path):
    runs, preds = _sample_fixture()
    preds = [p for p in preds if p["run_id"] != "im-2"]
    sims = [_sim("w1", 0, "w1", 1, "fc1", "fc1", 0.9, ci_low=0.8, ci_high=0.95, null_mean=0.0),
            _sim("im", 0, "w1", 0, "fc1", "fc2", 0.3)]  # an older file without interval columns
    _write_store(tmp_path / "R", runs, preds, sims)
    tables = export.load(tmp_path / "R")
    assert len(tables.runs) == 6 and len(tables.similarity) == 2 and len(tables.predictions) == 30
    board = build(tables.runs, tables.similarity, predictions=tables.predictions)
    img = np.arange(48, dtype=np.uint8).reshape(3, 4, 4)
    tables.images = {("shapes", 100): png_bytes(img), ("shapes", 101): png_bytes(img[:1])}
    tables.classes = {"shapes": ["c0", "c1", "c2", "c3", "c4", "c5"]}
    out = tmp_path / "lb" / "demo"
    written = export.write_export(tables, board, out, "Demo")
    names = {p.relative_to(out).as_posix() for p in written}
    assert {"leaderboard.md", "index.html", "manifest.json", "tables/runs.parquet", "tables/runs.csv",
            "tables/similarity.parquet", "tables/predictions.parquet",
            "tables/sample_analysis.csv", "tables/sample_summary.csv", "tables/agreement.csv",
            "samples/shapes/100.png", "samples/shapes/101.png"} <= names
    assert "tables/similarity.csv" not in names  # large; the Parquet table holds it
    assert not list(out.rglob("representations*")) and not list(out.rglob(".*"))
    readme = (out / "leaderboard.md").read_text()
    assert "# Demo" in readme and "100: c0 → 7" in readme and "101: c1 → 9" in readme

    again = export.load(out)
    assert again.manifest["title"] == "Demo" and again.classes == tables.classes
    assert again.images == tables.images
    board2 = build(again.runs, again.similarity, predictions=again.predictions)
    assert render_markdown(board2, "Demo") == render_markdown(board, "Demo")
    assert board2.samples == board.samples and board2.agreement == board.agreement
    # Exporting the folder onto itself keeps it whole, and leaves the authors' README.md alone.
    (out / "README.md").write_text("our findings\n")
    export.write_export(again, board2, out, "Demo")
    assert (out / "README.md").read_text() == "our findings\n"
    assert (out / "leaderboard.md").read_text() == readme
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished_runs"] == 5 and manifest["source"] == "R"  # by name: no machine-local path


def test_export_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(Exception, match="not an exported leaderboard"):
        export.write_export(export.Tables([], [], [], "x"), Board(), tmp_path / "mine", "t")


def test_images_come_from_the_dataset_by_sample_id(shapes_task):
    """Sample ids map to the same pixels as the Task built by wsbench.task."""
    from wsbench.plugins import load_registry
    data = load_registry().dataset("shapes").load(None)
    for row in (0, len(shapes_task.ids) - 1, int(shapes_task.splits["test"][3])):
        assert np.array_equal(export.image_of(data, int(shapes_task.ids[row])), shapes_task.images[row])


def test_cli_exports_rerenders_and_compares(tmp_path):
    from wsbench.cli import app
    runs, preds = _sample_fixture()
    _write_store(tmp_path / "R", runs, preds, [_sim("w1", 0, "w1", 1, "fc1", "fc1", 0.9)])
    cli = CliRunner()
    res = cli.invoke(app, ["leaderboard", "--out", str(tmp_path / "R"), "--format", "md",
                           "--output", str(tmp_path / "lb" / "x") + "/"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "lb" / "x" / "index.html").exists()
    # The fixture's sample ids (100, 101) are shapes images: the page shows them.
    assert (tmp_path / "lb" / "x" / "samples" / "shapes" / "100.png").exists()
    res = cli.invoke(app, ["leaderboard", "--out", str(tmp_path / "lb" / "x"), "--format", "md"])
    assert res.exit_code == 0 and "| shapes | 1= | w1 | weights |" in res.output
    res = cli.invoke(app, ["leaderboard", "--out", str(tmp_path / "lb" / "x"), "--output", str(tmp_path / "p.html")])
    assert res.exit_code == 0 and (tmp_path / "p.html").read_text().startswith("<!DOCTYPE html>")
    res = cli.invoke(app, ["leaderboard", "compare", str(tmp_path / "R"), str(tmp_path / "lb" / "x"),
                           "--format", "md"])
    assert res.exit_code == 0, res.output
    assert "# x against R" in res.output and "| shapes | w1 |" in res.output
    res = cli.invoke(app, ["leaderboard", "--out", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "no runs under" in str(res.exception)
    res = cli.invoke(app, ["leaderboard", "--out", str(tmp_path / "R"), "--format", "pdf"])
    assert "unknown format 'pdf'; known formats: html, md, rich" in str(res.exception)


def test_runs_of_one_arch_with_different_settings_are_never_pooled_as_seeds():
    runs = [{**_run("m", s, 0.5 + s / 100), "config": json.dumps({"epochs": 2, "lr": 0.001}), "limit": 60}
            for s in range(2)]
    runs += [{**_run("m", s, 0.9), "run_id": f"m-long-{s}", "config": json.dumps({"epochs": 20, "lr": 0.001}),
              "limit": 60} for s in range(3)]
    runs += [{**_run("w", 0, 0.3, "weights"), "config": "{}", "limit": None}]
    labels = variant_labels(runs)
    assert labels["m-0"] == "m (epochs=2)" and labels["m-long-0"] == "m (epochs=20)" and labels["w-0"] == "w"
    board = build(runs, [_sim("m", 0, "m", 1, "fc1", "fc1", 0.9)])
    rows = {r["arch"]: r for r in board.accuracy}
    assert rows["m (epochs=2)"]["seeds"] == 2 and rows["m (epochs=20)"]["seeds"] == 3
    assert board.stability[0]["arch"] == "m (epochs=2)"
    # Runs on zoos of different recipes: the label names the recipe keys that differ, not the whole recipe.
    zoo = [{**_run("g", s, 0.8, "weights"), "run_id": f"g-{k}-{s}", "limit": None,
            "config": json.dumps({"lr": 0.003, "inr_recipe": {"lr": lr, "steps": 100, "w0": 30.0}})}
           for k, lr in enumerate((0.01, 0.001)) for s in range(2)]
    labels = variant_labels(zoo)
    assert labels["g-0-1"] == "g (inr_recipe.lr=0.01)" and labels["g-1-0"] == "g (inr_recipe.lr=0.001)"


def test_markdown_gallery_shows_at_most_per_group_images():
    # Another group's images may be in the export too; a group still shows only its first ``per_group``.
    samples = [{"dataset": "d", "weight_arch": "w", "group": g, "sample_id": i, "label": 0, "wrong_pred": 1,
                "right_fraction": {}} for g, ids in (("images-only", [1, 2, 3]), ("weights-only", [4])) for i in ids]
    board = Board(metric="cka", accuracy=[], stability=[], within=[], cross=[], samples=[],
                     sample_list=samples, agreement=[], failures=[])
    lines = markdown_gallery(board, "samples", {("d", i) for i in (1, 2, 3, 4)}, {}, per_group=2)
    text = "\n".join(lines)
    assert text.count("<img") == 3 and "samples/d/3.png" not in text
    assert "(3 samples, first 2 shown" in text and "**d, w: weights-only** (1 samples" in text
