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
never leaves a half file and concurrent writers never collide.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

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
    ("host", pa.string()), ("wall_time_s", pa.float64()), ("started_at", pa.string()),
    ("finished_at", pa.string()),
    # Provenance (wsbench.provenance; null in rows stored before these columns existed): the commit of the
    # wsbench checkout and whether tracked files differed from it, torch's intra-op threads, the hardware
    # and the library versions (JSON); resumed_from: the epoch a killed run was resumed after (0: none).
    ("git_commit", pa.string()), ("git_dirty", pa.bool_()), ("torch_threads", pa.int64()),
    ("hardware", pa.string()), ("library_versions", pa.string()), ("resumed_from", pa.int64()),
    ("schema_version", pa.int32()),
])

PREDICTIONS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("sample_id", pa.int64()), ("label", pa.int64()), ("pred", pa.int64()),
    ("correct", pa.bool_()), ("confidence", pa.float32()), ("schema_version", pa.int32()),
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
    ("schema_version", pa.int32()),
])


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
                     confidence: np.ndarray) -> pa.Table:
    """One row per test sample (arrays ``(n,)``): label, predicted class, whether it is right, confidence."""
    n = len(sample_ids)
    return pa.Table.from_arrays([
        pa.array([run_id] * n), pa.array(sample_ids.astype(np.int64)), pa.array(labels.astype(np.int64)),
        pa.array(preds.astype(np.int64)), pa.array(preds == labels), pa.array(confidence.astype(np.float32)),
        _versions(n)], schema=PREDICTIONS_SCHEMA)


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

def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Create ``path`` through ``write(tmp)``, which writes a file (or builds a folder) at ``tmp``;
    then rename it into place. The parent folder is created. ``tmp`` is a unique dot-prefixed
    name in the same folder, removed whatever happens; an exception from ``write`` leaves
    ``path`` as it was. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
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
