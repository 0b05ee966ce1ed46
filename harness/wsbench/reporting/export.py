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
  tables/{scalar_sample_summary,scalar_sample_analysis}.csv   only when a dataset has a scalar target
  samples/<dataset>/<sample_id>.png

CSV columns for scalar targets. ``accuracy.csv`` holds every dataset's ranked scores (class datasets
alone give exactly the columns it always had: ``mean``, ``std``, ``ci_low``... of test accuracy).
When a dataset has a scalar target its rows add ``target`` ("scalar"), ``score`` (the primary score
that ``mean``/``std``/``ci_*``/``best``/``worst`` are of: ``kendall_tau``), ``higher_is_better``,
``missing`` (seeds whose score is undefined) and, per other score S, ``S_mean``, ``S_std``,
``S_ci_low``, ``S_ci_high`` (``r2_*``, ``mse_*``); class rows leave these empty. ``agreement.csv``
adds ``measure`` (``kendall_tau``: Kendall's tau between two runs' predictions; empty: the
same-class rate) and ``missing`` (run pairs with an undefined tau). ``scalar_sample_summary.csv``:
per (dataset, weight-view architecture) the counts of ``weights_better`` and ``data_better`` networks
with their ``expected_*`` counts under independence; ``scalar_sample_analysis.csv``: the example
networks, with ``target``, ``weight_error`` and ``pred_<arch>`` (each architecture's mean prediction).

Representations stay out (they are the large table). ``wsbench leaderboard --out
FOLDER`` re-renders from these tables alone, with the metric the export was made with.

Writing is atomic as a whole: the export is built in a uniquely named dot folder beside the
target, the files the folder's authors keep there (anything the previous export did not write:
``README.md``, ``samples/README.md``, a study log) are linked into it, and it is swapped in with
one rename. The manifest lists every file the export wrote (``files``), so the next export knows
what it may replace; it never deletes a file it did not write. A killed export leaves the old
folder as it was (its leftover dot folder is removed by the next export), and a folder without
``manifest.json`` is never taken for an export.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wsbench import __version__
from wsbench.errors import WsbenchError, damaged
from wsbench.reporting.board import MAX_IMAGES, Board, sample_groups
from wsbench.reporting.html import png_bytes, render_html
from wsbench.reporting.text import render_markdown
from wsbench.store import Store
from wsbench.tables import sweep_temporaries, temp_path, write_bytes, write_csv, write_parquet, write_text

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
    """Whether ``path`` is a complete exported leaderboard (its manifest is what completes it)."""
    return (Path(path) / "tables" / "runs.parquet").exists() and (Path(path) / "manifest.json").exists()


def read_table(root: Path, table: str) -> pa.Table:
    """One store table with the union of its files' schemas (older files may lack newer columns);
    damaged and foreign files are reported and skipped (:meth:`wsbench.store.Store.read`)."""
    return Store(root).read(table)


def load(path: Path | str) -> Tables:
    """The tables of a results root or of an exported leaderboard folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WsbenchError(f"--results {path} is a file; pass a results root (a folder with runs/) or an exported "
                           "leaderboard folder (one with manifest.json and tables/)")
    if is_export(path):
        return load_export(path)
    if (path / "tables" / "runs.parquet").exists():
        raise WsbenchError(f"{path} is an unfinished leaderboard export (tables/ but no manifest.json: the export was "
                           f"interrupted); export it again with `wsbench leaderboard --out RESULTS --output {path}/`")
    if not (path / "runs").exists():
        raise WsbenchError(f"no runs under {path}; run `wsbench grid` first, or pass --results with a results root "
                           "or an exported leaderboard folder (one with tables/runs.parquet)")
    predictions = read_table(path, "predictions")
    keep = ["dataset", "arch", "run_id", "sample_id", "label", "pred", "correct"]
    # A scalar target's rows (target, prediction), only when some are stored: class-only exports stay as they were.
    keep += [c for c in ("target", "prediction") if c in predictions.column_names
             and predictions.column(c).null_count < predictions.num_rows]
    return Tables(runs=read_table(path, "runs").to_pylist(), similarity=read_table(path, "similarity").to_pylist(),
                  predictions=predictions.select([c for c in keep if c in predictions.column_names]).to_pylist()
                  if predictions.num_rows else [],
                  source=str(path))


def load_export(path: Path) -> Tables:
    tables = path / "tables"
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise WsbenchError(f"{path}/manifest.json is unreadable ({type(exc).__name__}: {exc}); export the "
                           f"leaderboard again with `wsbench leaderboard --out RESULTS --output {path}/`") from None

    def rows(name):
        p = tables / f"{name}.parquet"
        if not p.exists():
            return []
        try:
            return pq.read_table(p).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            if name == "runs":
                raise WsbenchError(f"{p} is unreadable ({type(exc).__name__}: {exc}); export the leaderboard again "
                                   f"with `wsbench leaderboard --out RESULTS --output {path}/`") from None
            damaged(f"skipped {p}: it is unreadable ({type(exc).__name__}: {exc}); the page is rendered without it; "
                    "export the leaderboard again to restore it")
            return []
    images, classes = {}, {}
    for r in rows("sample_images"):
        images[(r["dataset"], int(r["sample_id"]))] = r["png"]
        if r.get("classes") and r["dataset"] not in classes:
            classes[r["dataset"]] = json.loads(r["classes"])
    return Tables(runs=rows("runs"), similarity=rows("similarity"), predictions=rows("predictions"),
                  source=str(path), images=images, classes=classes, manifest=manifest if isinstance(manifest, dict)
                  else {})


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


def _flat_examples(board: Board) -> list[dict]:
    archs = sorted({a for s in board.scalar_examples for a in s["mean_prediction"]})
    return [{**{k: v for k, v in s.items() if k != "mean_prediction"},
             **{f"pred_{a}": s["mean_prediction"].get(a) for a in archs}} for s in board.scalar_examples]


def _union(rows: list[dict]) -> list[dict]:
    """Rows with every key any of them has (in order of first appearance; None where absent): rows of
    class and scalar targets side by side in one CSV. Rows that share their keys come back unchanged."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def _write(table: pa.Table, path: Path, csv: bool) -> list[Path]:
    """Parquet at ``path`` (and CSV beside it)."""
    return [write_parquet(path, table)] + ([write_csv(path.with_suffix(".csv"), table)] if csv else [])


def _from_rows(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(_union(rows)) if rows else pa.table({})


# What an export writes besides samples/<dataset>/<id>.png: an export made before manifests listed
# their files is known by these names (and every PNG under samples/, which such exports replaced whole).
_FIXED = ("leaderboard.md", "index.html", "manifest.json", "tables/runs.parquet", "tables/runs.csv",
          "tables/similarity.parquet", "tables/predictions.parquet", "tables/sample_images.parquet",
          *(f"tables/{n}.csv" for n in ("accuracy", "stability", "cross", "within", "agreement", "sample_summary",
                                        "sample_analysis")))


def exported_files(out: Path) -> set[str] | None:
    """The files (relative POSIX paths) the previous export wrote into ``out``, or None when ``out``
    holds no export. An export's manifest lists them; for an older export, or one interrupted
    before its manifest, they are the fixed names plus the PNGs under ``samples/``."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if isinstance(manifest, dict) and isinstance(manifest.get("files"), list):
            return {str(f) for f in manifest["files"]} | {"manifest.json"}
    except (OSError, ValueError):
        pass
    if not (out / "manifest.json").exists() and not (out / "tables" / "runs.parquet").exists():
        return None
    return set(_FIXED) | {p.relative_to(out).as_posix() for p in out.glob("samples/*/*.png")}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # a file system without exchange: the two-rename swap below
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the folder ``tmp`` at ``out``; whatever was at ``out`` ends up at ``tmp`` (to be removed)."""
    if not out.exists():
        try:
            os.rename(tmp, out)
            return
        except OSError:
            if not out.exists():
                raise  # not a race with a concurrent export: a real error
    if _exchange(tmp, out):
        return
    aside = temp_path(out, "old")  # no exchange: two renames, with a moment between them
    os.rename(out, aside)
    os.rename(tmp, out)
    os.rename(aside, tmp)


def _keep(src: Path, dst: Path) -> None:
    """``dst`` as the same file as ``src`` (a hard link; a copy where links are not possible)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_export(tables: Tables, board: Board, out: Path, title: str) -> list[Path]:
    """Write the folder described in the module docstring atomically; returns the paths written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise WsbenchError(f"--output {out} is a file; give a folder (ending in /) for an export")
    previous = exported_files(out) if out.is_dir() else None
    if previous is None and out.is_dir() and any(out.iterdir()):
        raise WsbenchError(f"--output {out} is a non-empty folder that is not an exported leaderboard; "
                           "choose a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Folders killed exports left beside this one (this folder's only; nothing else is looked at).
    sweep_temporaries([out.parent], (f".{out.name}.*.tmp", f".{out.name}.*.old"), recursive=False)
    tmp = temp_path(out)
    tmp.mkdir()
    try:
        written = _write_files(tables, board, tmp, title)
        ours = set(written)
        previous = exported_files(out) if out.is_dir() else None  # again: another export may have landed since
        if previous is not None:
            # The authors' files (anything the previous export did not write) move with the folder.
            for f in sorted(out.rglob("*")):
                rel = f.relative_to(out).as_posix()
                if rel in previous or rel in ours:
                    continue
                if f.is_symlink():
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(os.readlink(f), tmp / rel)
                elif f.is_dir():
                    (tmp / rel).mkdir(parents=True, exist_ok=True)
                elif f.is_file():
                    _keep(f, tmp / rel)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the new folder if it never moved, else the old export
    return [out / rel for rel in written]


def _write_files(tables: Tables, board: Board, out: Path, title: str) -> list[str]:
    """Every file of an export into the (new, empty) folder ``out``, the manifest last; returns their
    paths relative to ``out``."""
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
    if board.scalar_samples:  # written only when there are scalar targets: class-only exports keep their files
        derived.update(scalar_sample_summary=board.scalar_samples, scalar_sample_analysis=_flat_examples(board))
    for name, rows in derived.items():  # CSV only: a reader's view; re-rendering derives them again
        written.append(write_csv(t / f"{name}.csv", _from_rows(rows)))
    for ds, i in sorted(shown):
        written.append(write_bytes(out / "samples" / ds / f"{i}.png", tables.images[(ds, i)]))
    written.append(write_text(out / "leaderboard.md", render_markdown(board, title=title, image_dir="samples",
                                                                      image_ids=shown, classes=tables.classes,
                                                                      html_name="index.html")))
    # Where the tables came from, by folder name only: a published export names no machine-local path.
    source = Path(str(tables.manifest.get("source") or tables.source)).name
    written.append(write_text(out / "index.html", render_html(board, title=title, images=tables.images,
                                                              classes=tables.classes, source=source)))
    files = sorted(p.relative_to(out).as_posix() for p in written)
    manifest = {"format": EXPORT_FORMAT, "title": title, "metric": board.metric,
                "source": source,
                "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wsbench_version": __version__, "runs": len(tables.runs),
                "finished_runs": sum(1 for r in tables.runs if r.get("status") == "finished"),
                "similarity_rows": len(tables.similarity), "prediction_rows": len(tables.predictions),
                "datasets": sorted({r["dataset"] for r in tables.runs}),
                # What this export wrote: the next export replaces these and keeps every other file.
                "files": [*files, "manifest.json"]}
    if board.calibrated:  # the similarity pages show null-calibrated values (wsbench leaderboard --calibrated)
        manifest["calibrated"] = True
    write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return [*files, "manifest.json"]
