"""The result tables and how every file is written.

Tables (Hive-partitioned Parquet under a results root; :class:`wsbench.store.Store` reads and
writes them):

  runs             one row per run                   partitioned by dataset, arch
  predictions      one row per test sample            partitioned by dataset, arch
  representations  one row per (layer, test sample)   partitioned by dataset, arch
  similarity       one row per (layer_a, layer_b)     partitioned by dataset, metric

Every row carries ``schema_version``. The schemas below are the tables' columns without the
partition columns, which live in the path.

Writing: every file wsbench keeps (tables, exports, zoo arrays and manifests, downloads) goes
through :func:`atomic_write`: written under a unique dot-prefixed temporary name in the same
folder (readers ignore dot files) and renamed into place with ``os.replace``, so a killed process
never leaves a half file and concurrent writers never collide. A temporary name carries its
writer's host and pid (:func:`temp_path`), so the leftovers of a killed writer (SIGKILL leaves
them) are removed by :func:`sweep_temporaries`: at once when the writer ran on this host and is
dead, after :data:`TEMP_STALE_S` otherwise.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from wsbench.claims import host_key, pid_alive

SCHEMA_VERSION = 1
TABLES = ("runs", "predictions", "representations", "similarity")
PARTITIONS = {
    "runs": ("dataset", "arch"), "predictions": ("dataset", "arch"),
    "representations": ("dataset", "arch"), "similarity": ("dataset", "metric"),
}

# Schemas ---------------------------------------------------------------------------------

# The runs table has a fixed schema: finished and failed runs fill different columns,
# and an explicit schema keeps their files readable as one dataset.
RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("seed", pa.int64()), ("status", pa.string()), ("error", pa.string()),
    ("traceback", pa.string()), ("test_acc", pa.float64()), ("val_acc", pa.float64()),
    ("best_epoch", pa.int64()), ("epochs", pa.int64()), ("n_train", pa.int64()), ("n_val", pa.int64()),
    ("n_test", pa.int64()), ("view", pa.string()), ("limit", pa.int64()), ("config", pa.string()),
    ("history", pa.string()), ("layers", pa.string()), ("zoo_key", pa.string()),
    ("inr_psnr_mean", pa.float64()), ("wsbench_version", pa.string()), ("plugin_distribution", pa.string()),
    ("plugin_version", pa.string()), ("torch_version", pa.string()), ("device", pa.string()),
    # torch's intra-op thread count: CPU results depend on it (reductions split differently); older
    # files lack the column and read as null.
    ("threads", pa.int64()),
    ("host", pa.string()), ("wall_time_s", pa.float64()), ("started_at", pa.string()),
    ("finished_at", pa.string()),
    # Provenance (wsbench.provenance; null in rows stored before these columns existed): the commit of the
    # wsbench checkout and whether tracked files differed from it, the hardware
    # and the library versions (JSON); resumed_from: the epoch a killed run was resumed after (0: none).
    ("git_commit", pa.string()), ("git_dirty", pa.bool_()),
    ("hardware", pa.string()), ("library_versions", pa.string()), ("resumed_from", pa.int64()),
    # The task's scores (wsbench.scores): its target kind ("class"/"scalar"), the primary score's name,
    # its test and validation values (for a class target the accuracy, equal to test_acc and val_acc),
    # and every test score as JSON. Rows stored before these columns read as null (class, accuracy).
    ("target", pa.string()), ("score", pa.string()), ("test_score", pa.float64()), ("val_score", pa.float64()),
    ("test_scores", pa.string()),
    ("schema_version", pa.int32()),
])

# A class target fills label, pred, correct and confidence; a scalar target fills target and
# prediction (in the target's units) and leaves those null.
PREDICTIONS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("sample_id", pa.int64()), ("label", pa.int64()), ("pred", pa.int64()),
    ("correct", pa.bool_()), ("confidence", pa.float32()), ("target", pa.float64()), ("prediction", pa.float64()),
    ("schema_version", pa.int32()),
])

# ``values``: the layer's vector for the sample.
REPRESENTATIONS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("layer", pa.string()), ("layer_index", pa.int32()), ("sample_id", pa.int64()),
    ("values", pa.list_(pa.float32())), ("schema_version", pa.int32()),
])

# Columns are described in :mod:`wsbench.similarity`.
SIMILARITY_SCHEMA = pa.schema([
    ("run_a", pa.string()), ("run_b", pa.string()), ("arch_a", pa.string()), ("arch_b", pa.string()),
    ("seed_a", pa.int64()), ("seed_b", pa.int64()), ("layer_a", pa.string()), ("layer_b", pa.string()),
    ("layer_index_a", pa.int64()), ("layer_index_b", pa.int64()), ("value", pa.float64()), ("n", pa.int64()),
    ("d_a", pa.int64()), ("d_b", pa.int64()), ("estimator", pa.string()), ("higher_is_better", pa.bool_()),
    ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("null_mean", pa.float64()), ("null_high", pa.float64()),
    ("resamples", pa.int64()), ("permutations", pa.int64()), ("check_self", pa.float64()),
    ("check_invariance", pa.float64()), ("checks_passed", pa.bool_()), ("checks", pa.string()),
    # Added with interval kinds; files written before them lack these columns and read as null.
    ("ci_kind", pa.string()), ("calibrated", pa.float64()), ("check_interval", pa.bool_()), ("reason", pa.string()),
    ("schema_version", pa.int32()),
])


TABLE_SCHEMAS = {"runs": RUNS_SCHEMA, "predictions": PREDICTIONS_SCHEMA, "representations": REPRESENTATIONS_SCHEMA,
                 "similarity": SIMILARITY_SCHEMA}
# The columns without which a file is not one of the table's (a foreign or damaged file).
REQUIRED_COLUMNS = {
    "runs": ("run_id", "status", "seed"),
    "predictions": ("run_id", "sample_id", "label", "pred"),
    "representations": ("run_id", "layer", "layer_index", "sample_id", "values"),
    "similarity": ("run_a", "run_b", "layer_a", "layer_b", "value"),
}


def partitioning(table: str) -> pads.Partitioning:
    """The Hive partitioning of ``table`` (its partition columns as strings)."""
    return pads.partitioning(pa.schema([(k, pa.string()) for k in PARTITIONS[table]]), flavor="hive")


# Row builders ----------------------------------------------------------------------------

def _versions(n: int) -> pa.Array:
    return pa.array([SCHEMA_VERSION] * n, pa.int32())


def run_rows(rows: list[dict]) -> pa.Table:
    """``runs`` rows as a table with :data:`RUNS_SCHEMA` (missing columns null)."""
    full = [{**{f.name: None for f in RUNS_SCHEMA}, "schema_version": SCHEMA_VERSION, **r} for r in rows]
    return pa.Table.from_pylist(full, schema=RUNS_SCHEMA)


def prediction_table(run_id: str, sample_ids: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                     confidence: np.ndarray, scalar: bool = False) -> pa.Table:
    """One row per test sample (arrays ``(n,)``): label, predicted class, whether it is right, confidence;
    with ``scalar``, the target value and the prediction instead."""
    n = len(sample_ids)
    ids = pa.array(sample_ids.astype(np.int64))
    if scalar:
        nul_i, nul_b, nul_f = pa.nulls(n, pa.int64()), pa.nulls(n, pa.bool_()), pa.nulls(n, pa.float32())
        return pa.Table.from_arrays([
            pa.array([run_id] * n), ids, nul_i, nul_i, nul_b, nul_f, pa.array(labels.astype(np.float64)),
            pa.array(preds.astype(np.float64)), _versions(n)], schema=PREDICTIONS_SCHEMA)
    return pa.Table.from_arrays([
        pa.array([run_id] * n), ids, pa.array(labels.astype(np.int64)),
        pa.array(preds.astype(np.int64)), pa.array(preds == labels), pa.array(confidence.astype(np.float32)),
        pa.nulls(n, pa.float64()), pa.nulls(n, pa.float64()), _versions(n)], schema=PREDICTIONS_SCHEMA)


def representation_table(run_id: str, sample_ids: np.ndarray, layers: dict) -> pa.Table:
    """Long format: one row per (layer, sample) with the vector as ``list<float32>``.

    ``layers``: ``{name: (n, d)}`` in layer order; ``sample_ids (n,)``.
    """
    parts = []
    for i, (name, mat) in enumerate(layers.items()):
        mat = np.ascontiguousarray(mat, dtype=np.float32)
        n, d = mat.shape
        values = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)),
                                          pa.array(mat.reshape(-1)))
        parts.append(pa.Table.from_arrays([
            pa.array([run_id] * n), pa.array([name] * n), pa.array(np.full(n, i, dtype=np.int32)),
            pa.array(np.asarray(sample_ids, dtype=np.int64)), values, _versions(n)], schema=REPRESENTATIONS_SCHEMA))
    return pa.concat_tables(parts) if parts else pa.table({})


# Atomic writes ---------------------------------------------------------------------------

TEMP_STALE_S = 3600.0  # a temporary file this old is abandoned whoever wrote it (no write takes an hour)


def _host_tag() -> str:
    return hashlib.sha1(host_key().encode()).hexdigest()[:8]


def temp_path(path: Path | str, suffix: str = "tmp") -> Path:
    """A unique dot-prefixed sibling of ``path``: ``.NAME.HOST-PID.RANDOM.tmp`` (see :func:`sweep_temporaries`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_host_tag()}-{os.getpid()}.{uuid.uuid4().hex[:8]}.{suffix}")


def abandoned(tmp: Path, now: float | None = None) -> bool:
    """Whether the temporary ``tmp`` was left by a writer that is gone: its pid (in the name) is dead
    on this host, or it is older than :data:`TEMP_STALE_S`."""
    parts = tmp.name.split(".")
    owner = parts[-3] if len(parts) >= 4 else ""
    host, _, pid = owner.rpartition("-")
    if host == _host_tag() and pid.isdigit() and not pid_alive(int(pid), None):
        return True
    try:
        age = (now or time.time()) - tmp.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > TEMP_STALE_S


def sweep_temporaries(folders: Iterable[Path | str], patterns: Iterable[str] = (".*.tmp",),
                      recursive: bool = True) -> list[Path]:
    """Remove abandoned temporaries (:func:`abandoned`) matching ``patterns`` in ``folders`` (and their
    subfolders when ``recursive``); returns what was removed. Anything in use is left alone."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for pattern in patterns:
            for tmp in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
                if not abandoned(tmp):
                    continue
                try:
                    if tmp.is_dir() and not tmp.is_symlink():
                        shutil.rmtree(tmp)
                    else:
                        tmp.unlink()
                    removed.append(tmp)
                except OSError:
                    pass  # removed by someone else meanwhile, or not ours to remove
    return removed


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Create ``path`` through ``write(tmp)``, which writes a file (or builds a folder) at ``tmp``;
    then rename it into place. The parent folder is created. ``tmp`` is a unique dot-prefixed
    name in the same folder (:func:`temp_path`), removed whatever happens; an exception from
    ``write`` leaves ``path`` as it was. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return path


def write_parquet(path: Path | str, table: pa.Table) -> Path:
    """``table`` as a Parquet file at ``path``, atomically."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_csv(path: Path | str, table: pa.Table) -> Path:
    """``table`` as a CSV file at ``path``, atomically."""
    return atomic_write(path, lambda tmp: pacsv.write_csv(table, tmp))


def write_text(path: Path | str, text: str) -> Path:
    """``text`` at ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_bytes(path: Path | str, data: bytes) -> Path:
    """``data`` at ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _save(tmp: Path, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name
        np.save(f, array)


def save_npy(path: Path | str, array: np.ndarray) -> Path:
    """``array`` as a ``.npy`` file at ``path``, atomically."""
    return atomic_write(path, lambda tmp: _save(tmp, array))
