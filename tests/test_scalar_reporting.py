"""Leaderboards of scalar targets (zoos of networks whose target is, say, their test accuracy): ranking
by the primary score in its direction, intervals clipped to the score's range, the sample analysis of
weight-view against function-view models, Kendall-tau prediction agreement, and the pages, exports and
figures of a toy-zoo results root alone and beside a class-target dataset."""
import json
import math

import conftest
import numpy as np
import pytest

from wsbench.reporting import export
from wsbench.reporting.board import (
    accuracy_rows,
    build,
    compare_sets,
    sample_analysis,
    scalar_sample_analysis,
    tau_agreement,
)
from wsbench.reporting.stats import mean_ci
from wsbench.reporting.text import render_comparison_markdown, render_markdown, render_rich


def _scalar_run(arch, seed, scores, view="weights", dataset="zoo", primary="kendall_tau"):
    return {"run_id": f"{arch}-{seed}", "dataset": dataset, "arch": arch, "seed": seed, "status": "finished",
            "test_acc": None, "view": view, "target": "scalar", "score": primary, "test_score": scores[primary],
            "test_scores": json.dumps(scores)}


def test_a_lower_is_better_primary_score_ranks_ascending():
    runs = [_scalar_run("good", s, {"mse": v}, primary="mse") for s, v in enumerate([0.10, 0.11, 0.12])]
    runs += [_scalar_run("bad", s, {"mse": v}, primary="mse") for s, v in enumerate([0.50, 0.52, 0.51])]
    runs += [_scalar_run("near", s, {"mse": v}, primary="mse") for s, v in enumerate([0.09, 0.13, 0.11])]
    rows = accuracy_rows(runs)
    assert [r["arch"] for r in rows] == ["good", "near", "bad"]  # ascending mean: 0.11, 0.11 (by name), 0.51
    by = {r["arch"]: r for r in rows}
    assert by["good"]["rank"] == by["near"]["rank"] == 1 and by["good"]["tie"]
    assert (by["bad"]["rank"], by["bad"]["tie"]) == (3, False)
    assert by["good"]["higher_is_better"] is False and by["good"]["score"] == "mse"
    assert (by["good"]["best"], by["good"]["worst"]) == (0.10, 0.12)  # best in the score's direction


def test_a_higher_is_better_score_ranks_descending_with_other_scores_beside():
    runs = [_scalar_run("a", s, {"kendall_tau": t, "r2": 0.5, "mse": 0.02}) for s, t in enumerate([0.2, 0.25, 0.3])]
    runs += [_scalar_run("b", s, {"kendall_tau": t, "r2": 0.6, "mse": 0.01}) for s, t in enumerate([0.8, 0.85, 0.9])]
    rows = accuracy_rows(runs)
    assert [(r["arch"], r["rank"]) for r in rows] == [("b", 1), ("a", 2)]
    assert rows[0]["r2_mean"] == pytest.approx(0.6) and rows[0]["mse_mean"] == pytest.approx(0.01)
    assert rows[0]["r2_ci_low"] == pytest.approx(0.6)  # seeds that agree: a zero-width interval


def test_intervals_are_clipped_to_the_scores_range():
    taus, r2s = [0.99, 0.90, 0.999], [0.98, 0.80, 0.99]
    runs = [_scalar_run("a", s, {"kendall_tau": t, "r2": r, "mse": m})
            for s, (t, r, m) in enumerate(zip(taus, r2s, [0.001, 0.2, 0.002]))]
    row = accuracy_rows(runs)[0]
    assert mean_ci(taus)[3] > 1 and row["ci_high"] == 1.0 and row["ci_low"] == pytest.approx(mean_ci(taus)[2])
    assert mean_ci(r2s)[3] > 1 and row["r2_ci_high"] == 1.0
    assert mean_ci([0.001, 0.2, 0.002])[2] < 0 and row["mse_ci_low"] == 0.0  # an MSE is never negative


def _analysis_case():
    """10 networks; W (weights) and F (function), 2 seeds each, predicting target + e and target - e, so each
    architecture's mean absolute error is e and its mean prediction the target."""
    e_w = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    e_f = np.array([1.0, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.5, 0.1])
    targets = 0.05 * np.arange(10)
    runs, preds = [], []
    for arch, view, e in (("W", "weights", e_w), ("F", "function", e_f)):
        for seed, sign in ((0, 1), (1, -1)):
            run = _scalar_run(arch, seed, {"kendall_tau": 0.5}, view=view)
            runs.append(run)
            preds += [{"run_id": run["run_id"], "dataset": "zoo", "arch": arch, "sample_id": 100 + i, "label": None,
                       "pred": None, "target": float(targets[i]), "prediction": float(targets[i] + sign * e[i])}
                      for i in range(10)]
    return runs, preds, targets


def test_scalar_sample_analysis_finds_the_networks_the_rule_names():
    runs, preds, targets = _analysis_case()
    summary, examples, agreement = scalar_sample_analysis(runs, preds)
    # W below its median (0.55): networks 0-4; F above its 90th percentile (0.91): network 0 -> weights-better {0}.
    # F below its median: networks 1, 2, 3, 8, 9; W above its 90th percentile: network 9 -> function-better {9}.
    (row,) = summary
    assert (row["weight_arch"], row["data_archs"], row["data_view"], row["networks"]) == ("W", "F", "function", 10)
    assert (row["weights_better"], row["data_better"]) == (1, 1)
    assert row["expected_weights_better"] == pytest.approx(10 * 0.5 * 0.1)
    assert row["expected_data_better"] == pytest.approx(10 * 0.1 * 0.5)
    assert row["weight_mean_abs_error"] == pytest.approx(0.55)  # absolute errors, not signed ones (those are 0)
    got = {(s["group"], s["sample_id"]) for s in examples}
    assert got == {("weights-better", 100), ("function-better", 109)}
    ex = next(s for s in examples if s["sample_id"] == 109)
    assert ex["target"] == pytest.approx(targets[9]) and ex["weight_error"] == pytest.approx(1.0)
    assert ex["mean_prediction"] == {"W": pytest.approx(targets[9]), "F": pytest.approx(targets[9])}
    assert {(r["arch_a"], r["arch_b"]) for r in agreement} == {("F", "F"), ("F", "W"), ("W", "W")}
    assert sample_analysis(runs, preds) == ([], [], [])  # the class analysis leaves scalar datasets alone


def test_scalar_sample_analysis_keeps_at_most_the_example_limit():
    runs, preds, _ = _analysis_case()
    _, examples, _ = scalar_sample_analysis(runs, preds, examples=0)
    assert examples == []


def test_tau_agreement_is_kendalls_tau_between_runs_averaged_over_run_pairs():
    preds = np.array([[1, 2, 3, 4], [1, 3, 2, 4], [4, 3, 2, 1]], dtype=float)
    rows = {(r["arch_a"], r["arch_b"]): r for r in tau_agreement(preds, ["a0", "a1", "b0"], ["a", "a", "b"], "zoo", 4)}
    # tau([1,2,3,4], [1,3,2,4]) = (5 concordant - 1 discordant) / 6 pairs; against the reversed order -1 and -2/3.
    assert rows[("a", "a")]["agreement"] == pytest.approx(2 / 3) and rows[("a", "a")]["pairs"] == 1
    assert rows[("a", "b")]["agreement"] == pytest.approx((-1 - 2 / 3) / 2) and rows[("a", "b")]["pairs"] == 2
    assert ("b", "b") not in rows  # one run: no pair of distinct seeds
    assert all(r["measure"] == "kendall_tau" for r in rows.values())


def test_tau_agreement_interval_stays_within_minus_one_and_one():
    rng = np.random.default_rng(0)
    base = rng.normal(size=30)
    preds = np.stack([base + 0.01 * rng.normal(size=30) for _ in range(3)])
    (row,) = tau_agreement(preds, ["a0", "a1", "a2"], ["a", "a", "a"], "zoo", 30)
    assert -1.0 <= row["ci_low"] <= row["agreement"] <= row["ci_high"] <= 1.0


def test_compare_uses_the_primary_score():
    a = [_scalar_run("m", s, {"kendall_tau": t}) for s, t in enumerate([0.5, 0.52, 0.54])]
    b = [{**r, "test_score": r["test_score"] + 0.3} for r in a]
    c = compare_sets(a, [], b, [], "A", "B")
    (row,) = c.accuracy
    assert row["score"] == "kendall_tau" and row["diff"] == pytest.approx(0.3) and row["separated"]
    md = render_comparison_markdown(c)
    assert "## Test Kendall's tau: B − A" in md and "Test accuracy" not in md


# A toy-zoo results root, and one with a class-target dataset beside it -----------------------------------------

def _toy_runs(out):
    from wsbench import similarity as sim
    from wsbench.grid import Cell
    from wsbench.runner import Runner, Settings
    from wsbench.store import Store

    reg = conftest.toy_registry()
    runner = Runner(reg, Settings(out=out, device="cpu", overrides={"epochs": 3}))
    for arch in ("flat-mlp", "fn-mlp", "weight-stats"):
        for seed in range(3):
            runner.run(Cell("toy-zoo", arch, seed))
    sim.compute(Store(out), [reg.metric("cka")], None, device="cpu", resamples=20, permutations=5)
    return reg


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "R"
    _toy_runs(out)
    return out


def _board(root):
    t = export.load(root)
    return t, build(t.runs, t.similarity, metric="cka", predictions=t.predictions, value_range=(-1.0, 1.0))


def test_a_toy_zoo_root_renders_markdown_rich_and_html(toy_root):
    from wsbench.reporting.html import render_html

    _, board = _board(toy_root)
    md = render_markdown(board)
    assert "## Test scores" in md and "Kendall" in md and "## Test accuracy" not in md
    assert "MSE (mean; lower is better)" in md and "function-better" not in md.split("## Sample analysis")[0]
    assert "Networks that split weight-view from data-view models" in md
    assert "Prediction agreement between architectures (scalar targets)" in md
    assert board.chance == {}  # no class, no chance level
    assert {r["view"] for r in board.accuracy} == {"weights", "function"}
    # The weights-vs-function heatmaps: cross-architecture similarity needs no view of its own.
    assert {(r["arch_a"], r["arch_b"]) for r in board.cross} >= {("flat-mlp", "fn-mlp")}
    assert len(render_rich(board)) > 3
    page = render_html(board, title="toy")
    assert "Kendall" in page and "function-view model" in page and "chance" not in page
    assert 'aria-label="test Kendall&#x27;s tau with 95 % intervals"' in page


def test_a_toy_zoo_export_writes_the_scalar_tables(toy_root, tmp_path):
    t, board = _board(toy_root)
    written = export.write_export(t, board, tmp_path / "lb", "toy")
    names = {p.name for p in written}
    assert {"scalar_sample_summary.csv", "scalar_sample_analysis.csv", "accuracy.csv"} <= names
    import pyarrow.csv as pacsv
    acc = pacsv.read_csv(tmp_path / "lb" / "tables" / "accuracy.csv").column_names
    assert {"score", "target", "higher_is_better", "r2_mean", "mse_ci_high"} <= set(acc)
    assert "measure" in pacsv.read_csv(tmp_path / "lb" / "tables" / "agreement.csv").column_names
    again = export.load(tmp_path / "lb")  # the export re-renders: its predictions keep target and prediction
    assert "Kendall" in render_markdown(build(again.runs, again.similarity, predictions=again.predictions))
    assert build(again.runs, again.similarity, predictions=again.predictions).scalar_samples == board.scalar_samples


def test_plot_writes_a_score_figure_for_a_scalar_dataset(toy_root, tmp_path):
    pytest.importorskip("matplotlib")
    from wsbench.reporting import figures

    t, board = _board(toy_root)
    written = figures.write_figures(board, figures.seed_scores(t.runs, board), {}, tmp_path, formats=("png",))
    assert {p.name for p in written} >= {"scores.png", "stability.png", "cross-toy-zoo.png"}
    assert all(p.stat().st_size > 1000 for p in written)
    left, right, step = figures.score_range([0.50, 0.52], [0.53, 0.55], "kendall_tau")
    assert -1 <= left < 0.50 and 0.55 < right <= 1 and right - left >= 0.1 and step > 0
    assert figures.score_range([0.97], [0.99], "kendall_tau")[1] == 1.0  # never past tau's range


def test_a_mixed_root_renders_both_sections(toy_root, shapes_task, tmp_path):
    import shutil

    from wsbench.grid import Cell
    from wsbench.reporting.html import render_html
    from wsbench.runner import Runner, Settings

    root = tmp_path / "R"
    shutil.copytree(toy_root, root)
    runner = Runner(conftest.toy_registry(), Settings(out=root, device="cpu", limit=120, overrides={"epochs": 2}))
    runner._tasks["shapes"] = shapes_task
    for arch in ("flat-mlp", "mlp"):
        for seed in range(2):
            runner.run(Cell("shapes", arch, seed))
    t, board = _board(root)
    md = render_markdown(board)
    assert "## Test scores" in md and "### Test accuracy" in md and "### Test Kendall's tau, with R² and MSE" in md
    assert {r["dataset"] for r in board.samples} == {"shapes"}
    assert {r["dataset"] for r in board.scalar_samples} == {"toy-zoo"}
    assert "How often two runs predict the same class" in md and "(scalar targets)" in md
    assert set(board.chance) == {"shapes"}
    page = render_html(board)
    assert "Test scores" in page and "test accuracy (%)" in page and "Kendall" in page
    export.write_export(t, board, tmp_path / "lb", "mixed")
    import pyarrow.csv as pacsv
    acc = pacsv.read_csv(tmp_path / "lb" / "tables" / "accuracy.csv").to_pylist()
    assert {r["score"] or None for r in acc} == {None, "kendall_tau"} and not any(math.isnan(r["mean"]) for r in acc)
