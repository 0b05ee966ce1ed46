"""Reading the tables a leaderboard needs, from a results root or an exported folder,
and writing such a folder.

An exported leaderboard (``wsbench leaderboard --format md --output leaderboards/NAME/``)::

  leaderboard.md            the Markdown leaderboard (split samples shown from samples/)
  README.md                 never written: the folder's authors keep their findings there
  index.html                the self-contained HTML page
  manifest.json             title, source, metric, counts, wsbench version, date
  tables/runs.parquet       every run (status, accuracies, config, provenance) + .csv
  tables/similarity.parquet every similarity row (with intervals when computed); no CSV: a full
                            study has tens of thousands of pairs (22 MB as CSV, 1.6 MB as Parquet)
  tables/predictions.parquet per (run, test sample): label, prediction, confidence
  tables/sample_images.parquet  the split samples' images as PNG bytes (and class names)
  tables/{accuracy,stability,cross,within,agreement,sample_summary,sample_analysis}.csv
  samples/<dataset>/<sample_id>.png

Representations stay out (they are the large table). ``wsbench leaderboard --out
FOLDER`` re-renders from these tables alone.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from wsbench import __version__
from wsbench.errors import WsbenchError
from wsbench.reporting.board import MAX_IMAGES, Board, sample_groups
from wsbench.reporting.html import png_bytes, render_html
from wsbench.reporting.text import render_markdown
from wsbench.store import Store
from wsbench.tables import PARTITIONS, partitioning, write_bytes, write_csv, write_parquet, write_text

EXPORT_FORMAT = 1


@dataclass
class Tables:
    """What a leaderboard is a function of, plus what the page shows beside it."""

    runs: list
    similarity: list
    predictions: list
    source: str
    images: dict = field(default_factory=dict)  # (dataset, sample_id) -> PNG bytes
    classes: dict = field(default_factory=dict)  # dataset -> class names
    manifest: dict = field(default_factory=dict)  # an export's manifest, else empty


def is_export(path: Path) -> bool:
    return (Path(path) / "tables" / "runs.parquet").exists()


def read_table(root: Path, table: str) -> pa.Table:
    """One store table with the union of its files' schemas (older files may lack newer columns)."""
    base = Path(root) / table
    if not base.exists() or not any(base.rglob("*.parquet")):
        return pa.table({})
    if table == "runs":
        return Store(root).read("runs")
    part = partitioning(table)
    ds = pads.dataset(base, format="parquet", partitioning=part)
    schema = pa.unify_schemas([f.physical_schema for f in ds.get_fragments()]
                              + [pa.schema([(k, pa.string()) for k in PARTITIONS[table]])])
    return pads.dataset(base, format="parquet", partitioning=part, schema=schema).to_table()


def load(path: Path | str) -> Tables:
    """The tables of a results root or of an exported leaderboard folder."""
    path = Path(path)
    if is_export(path):
        return load_export(path)
    if not (path / "runs").exists():
        raise WsbenchError(f"no runs under {path}; run `wsbench grid` first, or pass --out with a results root "
                           "or an exported leaderboard folder (one with tables/runs.parquet)")
    return Tables(runs=read_table(path, "runs").to_pylist(), similarity=read_table(path, "similarity").to_pylist(),
                  predictions=read_table(path, "predictions").select(
                      ["dataset", "arch", "run_id", "sample_id", "label", "pred", "correct"]).to_pylist()
                  if (path / "predictions").exists() else [],
                  source=str(path))


def load_export(path: Path) -> Tables:
    tables = path / "tables"

    def rows(name):
        p = tables / f"{name}.parquet"
        return pq.read_table(p).to_pylist() if p.exists() else []
    images, classes = {}, {}
    for r in rows("sample_images"):
        images[(r["dataset"], int(r["sample_id"]))] = r["png"]
        if r.get("classes") and r["dataset"] not in classes:
            classes[r["dataset"]] = json.loads(r["classes"])
    manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").exists() else {}
    return Tables(runs=rows("runs"), similarity=rows("similarity"), predictions=rows("predictions"),
                  source=str(path), images=images, classes=classes, manifest=manifest)


# Images of the split samples ------------------------------------------------------------------

def image_of(data, sample_id: int) -> np.ndarray:
    """The ``(C, H, W)`` uint8 image of a sample id (ids as in wsbench.task: official train
    images first, then official test images)."""
    n_train = len(data.train_images)
    return data.train_images[sample_id] if sample_id < n_train else data.test_images[sample_id - n_train]


def wanted_images(board: Board, per_group: int = MAX_IMAGES) -> dict[str, list[int]]:
    """The sample ids shown, per dataset: the first ``per_group`` of each split group."""
    out: dict[str, list[int]] = {}
    for (ds, _, _), chosen in sample_groups(board):
        ids = out.setdefault(ds, [])
        ids += [s["sample_id"] for s in chosen[:per_group] if s["sample_id"] not in ids]
    return out


def attach_images(tables: Tables, board: Board, load_dataset, warn=print) -> None:
    """Fill ``tables.images``/``classes`` for the split samples not already there.

    ``load_dataset(name)`` returns the dataset plugin's ImageData (the CLI passes one
    reading the data directory); a dataset that cannot be loaded is reported with
    ``warn`` and shown without images.
    """
    for ds, ids in wanted_images(board).items():
        missing = [i for i in ids if (ds, i) not in tables.images]
        if not missing and ds in tables.classes:
            continue
        try:
            data = load_dataset(ds)
        except Exception as exc:
            warn(f"images of {ds} not shown: {type(exc).__name__}: {exc}")
            continue
        tables.classes.setdefault(ds, [str(c) for c in data.classes])
        for i in missing:
            tables.images[(ds, i)] = png_bytes(image_of(data, i))


# Writing an export ---------------------------------------------------------------------------

def _flat_samples(board: Board) -> list[dict]:
    archs = sorted({a for s in board.sample_list for a in s["right_fraction"]})
    return [{**{k: v for k, v in s.items() if k != "right_fraction"},
             **{f"right_{a}": s["right_fraction"].get(a) for a in archs}} for s in board.sample_list]


def _write(table: pa.Table, path: Path, csv: bool) -> list[Path]:
    """Parquet at ``path`` (and CSV beside it)."""
    return [write_parquet(path, table)] + ([write_csv(path.with_suffix(".csv"), table)] if csv else [])


def _from_rows(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows) if rows else pa.table({})


def write_export(tables: Tables, board: Board, out: Path, title: str) -> list[Path]:
    """Write the folder described in the module docstring; returns the paths written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise WsbenchError(f"--output {out} is a file; give a folder (ending in /) for an export")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise WsbenchError(f"--output {out} is a non-empty folder that is not an exported leaderboard; "
                           "choose a new or empty folder")
    # A previous export's sample images may no longer be split samples.
    shutil.rmtree(out / "samples", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    t = out / "tables"
    written += _write(_from_rows(tables.runs), t / "runs.parquet", csv=True)
    written += _write(_from_rows(tables.similarity), t / "similarity.parquet", csv=False)
    written += _write(_from_rows(tables.predictions), t / "predictions.parquet", csv=False)
    shown = {(ds, i) for ds, ids in wanted_images(board).items() for i in ids if (ds, i) in tables.images}
    labels = {(s["dataset"], s["sample_id"]): s["label"] for s in board.sample_list}
    image_rows = [{"dataset": ds, "sample_id": i, "label": labels.get((ds, i)), "png": tables.images[(ds, i)],
                   "classes": json.dumps(tables.classes.get(ds))} for ds, i in sorted(shown)]
    written += _write(pa.Table.from_pylist(image_rows, schema=pa.schema([
        ("dataset", pa.string()), ("sample_id", pa.int64()), ("label", pa.int64()), ("png", pa.binary()),
        ("classes", pa.string())])), t / "sample_images.parquet", csv=False)
    derived = {"accuracy": board.accuracy, "stability": board.stability, "cross": board.cross, "within": board.within,
               "agreement": board.agreement, "sample_summary": board.samples, "sample_analysis": _flat_samples(board)}
    for name, rows in derived.items():  # CSV only: a reader's view; re-rendering derives them again
        written.append(write_csv(t / f"{name}.csv", _from_rows(rows)))
    for ds, i in sorted(shown):
        written.append(write_bytes(out / "samples" / ds / f"{i}.png", tables.images[(ds, i)]))
    written.append(write_text(out / "leaderboard.md", render_markdown(board, title=title, image_dir="samples",
                                                                      image_ids=shown, classes=tables.classes,
                                                                      html_name="index.html")))
    written.append(write_text(out / "index.html", render_html(board, title=title, images=tables.images,
                                                              classes=tables.classes, source=tables.source)))
    manifest = {"format": EXPORT_FORMAT, "title": title, "metric": board.metric,
                "source": tables.manifest.get("source", tables.source),
                "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wsbench_version": __version__, "runs": len(tables.runs),
                "finished_runs": sum(1 for r in tables.runs if r.get("status") == "finished"),
                "similarity_rows": len(tables.similarity), "prediction_rows": len(tables.predictions),
                "datasets": sorted({r["dataset"] for r in tables.runs})}
    if board.calibrated:  # the similarity pages show null-calibrated values (wsbench leaderboard --calibrated)
        manifest["calibrated"] = True
    written.append(write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n"))
    return written
