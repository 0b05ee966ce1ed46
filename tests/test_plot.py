"""Paper figures (``wsbench plot``): PDF and PNG files from a results root or an export, round accuracy
ticks with the chance level, and a one-line error naming the extra when matplotlib is missing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsbench.errors import WsbenchError
from wsbench.reporting import build, export, figures

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboards" / "yeom2025"


def test_accuracy_axis_is_round_and_holds_chance_only_when_it_does_not_squeeze_the_intervals():
    left, right, step = figures.accuracy_range([42.2, 12.0], [91.0, 55.6], 10.0)
    assert step in (10.0, 20.0) and left % step == 0 and right % step == 0 and left <= 10.0 and right >= 91.0
    # MNIST-like: accuracies between 93 and 99.6 %, chance 10 %: chance is named, the axis stays on the data.
    assert not figures.chance_on_axis([93.0, 95.0], [93.6, 99.7], 10.0)
    left, right, step = figures.accuracy_range([93.0, 95.0], [93.6, 99.7], 10.0)
    assert left >= 90.0 and right == 100.0 and step in (0.5, 1.0, 2.0)
    assert figures.chance_on_axis([42.0], [78.0], 16.7)
    # One run: an axis of at least 5 points around it, on round ticks.
    left, right, step = figures.accuracy_range([23.3], [23.3], 16.7)
    assert right - left >= 5 and left <= 23.3 <= right and left % step == 0 and right % step == 0


@pytest.mark.skipif(not (COMMITTED / "tables" / "runs.parquet").exists(), reason="no committed yeom2025 tables")
def test_plot_writes_pdf_and_png_of_every_figure_from_an_export(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the plot and test extras")
    res = subprocess.run([sys.executable, "-m", "wsbench", "plot", "--results", str(COMMITTED), "--output",
                          str(tmp_path / "fig")], capture_output=True, text=True, env=os.environ.copy())
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    stems = ["accuracy", "cross-cifar10", "cross-fmnist", "cross-mnist", "stability"]
    assert names == sorted(f"{s}.{k}" for s in stems for k in ("pdf", "png"))
    for s in stems:
        assert (tmp_path / "fig" / f"{s}.pdf").read_bytes()[:5] == b"%PDF-"
        assert (tmp_path / "fig" / f"{s}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = export.load(COMMITTED)
    assert figures.chance_levels(tables.predictions, tables.classes) == {"cifar10": 0.1, "fmnist": 0.1, "mnist": 0.1}


def test_figures_carry_axis_titles_a_labelled_colour_bar_and_the_chance_line():
    pytest.importorskip("matplotlib", reason="matplotlib is in the plot and test extras")
    tables = export.load(COMMITTED)
    board = build(tables.runs, tables.similarity, metric="cka", predictions=tables.predictions)
    fig = figures.cross_figure(board, "mnist")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 6 and all(ax.get_xlabel().endswith(" layer") and ax.get_ylabel().endswith(" layer")
                                    for ax in panels)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "CKA" in bars[0].get_ylabel()  # one shared colour bar, labelled
    fig = figures.accuracy_figure(board, figures.seed_accuracies(tables.runs, board), {"cifar10": 0.1})
    cifar = fig.axes[0]
    assert cifar.get_title() == "cifar10" and cifar.get_xlabel() == "test accuracy (%)"
    assert any(line.get_linestyle() == "--" and list(line.get_xdata()) == [10.0, 10.0] for line in cifar.lines)
    ticks = [t for t in cifar.get_xticks() if cifar.get_xlim()[0] <= t <= cifar.get_xlim()[1]]
    assert all(float(t).is_integer() and t % 5 == 0 for t in ticks)


def test_plot_without_matplotlib_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(WsbenchError, match=r"pip install 'wsbench\[plot\]'"):
        figures.pyplot()
