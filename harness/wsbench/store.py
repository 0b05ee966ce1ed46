"""The one results store: Hive-partitioned Parquet under a results root.

  runs/dataset=D/arch=A/<run_id>.parquet             one row per run
  predictions/dataset=D/arch=A/<run_id>.parquet      one row per test sample
  representations/dataset=D/arch=A/<run_id>.parquet  one row per (layer, test sample)
  similarity/dataset=D/metric=M/<pair_key>.parquet   one row per (layer_a, layer_b)

Partition columns live in the path, not in the files. Each file is written to a
dot-prefixed temporary name (which readers ignore) and renamed, so a killed
process leaves no half file and concurrent workers never collide. A run's
``runs/`` row is written last: a run is stored once that file exists.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
TABLES = ("runs", "predictions", "representations", "similarity")
PARTITIONS = {
    "runs": ("dataset", "arch"), "predictions": ("dataset", "arch"),
    "representations": ("dataset", "arch"), "similarity": ("dataset", "metric"),
}


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
    ("finished_at", pa.string()), ("schema_version", pa.int32()),
])


def run_rows(rows: list[dict]) -> pa.Table:
    """``runs`` rows as a table with :data:`RUNS_SCHEMA` (missing columns null)."""
    full = [{**{f.name: None for f in RUNS_SCHEMA}, "schema_version": SCHEMA_VERSION, **r} for r in rows]
    return pa.Table.from_pylist(full, schema=RUNS_SCHEMA)


def _partitioning(table: str) -> pads.Partitioning:
    return pads.partitioning(pa.schema([(k, pa.string()) for k in PARTITIONS[table]]), flavor="hive")


def write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Store:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, table: str, key: str, **parts: str) -> Path:
        p = self.root / table
        for k in PARTITIONS[table]:
            p = p / f"{k}={parts[k]}"
        return p / f"{key}.parquet"

    def write(self, table: str, key: str, rows: pa.Table, **parts: str) -> Path:
        """Write one file of ``table`` atomically; ``schema_version`` is added to every row."""
        if "schema_version" not in rows.column_names:
            rows = rows.append_column("schema_version", pa.array([SCHEMA_VERSION] * rows.num_rows, pa.int32()))
        path = self.path(table, key, **parts)
        write_atomic(rows, path)
        return path

    def read(self, table: str, filter=None, columns=None) -> pa.Table:
        """The whole table (partition columns included), or an empty table if none is stored."""
        base = self.root / table
        if not base.exists() or not any(base.rglob("*.parquet")):
            return pa.table({})
        schema = None
        if table == "runs":
            schema = pa.schema([*RUNS_SCHEMA, *[(k, pa.string()) for k in PARTITIONS[table]]])
        ds = pads.dataset(base, format="parquet", partitioning=_partitioning(table), schema=schema)
        return ds.to_table(filter=filter, columns=columns)

    # Runs -----------------------------------------------------------------
    def runs(self) -> list[dict]:
        return self.read("runs").to_pylist()

    def finished_runs(self, dataset: str | None = None) -> list[dict]:
        rows = [r for r in self.runs() if r["status"] == "finished"]
        if dataset is not None:
            rows = [r for r in rows if r["dataset"] == dataset]
        return sorted(rows, key=lambda r: (r["dataset"], r["arch"], r["seed"], r["run_id"]))

    def run_status(self, dataset: str, arch: str, run_id: str) -> str | None:
        path = self.path("runs", run_id, dataset=dataset, arch=arch)
        if not path.exists():
            return None
        return pq.read_table(path, columns=["status"]).column("status")[0].as_py()

    def representations(self, dataset: str, arch: str, run_id: str) -> tuple[np.ndarray, dict]:
        """``(sample_ids (n,), {layer: (n, d) float32})`` of one run, sorted by sample id."""
        t = pq.read_table(self.path("representations", run_id, dataset=dataset, arch=arch))
        t = t.sort_by([("layer_index", "ascending"), ("sample_id", "ascending")])
        layer_index = t.column("layer_index").to_numpy()
        names = t.column("layer").to_pylist()
        ids = t.column("sample_id").to_numpy()
        values = t.column("values").combine_chunks()
        out, sample_ids = {}, None
        for k in np.unique(layer_index):
            rows = np.flatnonzero(layer_index == k)  # contiguous after the sort
            block = values.slice(int(rows[0]), len(rows)).flatten().to_numpy(zero_copy_only=False)
            out[names[rows[0]]] = block.astype(np.float32, copy=False).reshape(len(rows), -1)
            sample_ids = ids[rows] if sample_ids is None else sample_ids
        return sample_ids, out


def representation_table(run_id: str, sample_ids: np.ndarray, layers: dict) -> pa.Table:
    """Long format: one row per (layer, sample) with the vector as ``list<float32>``."""
    parts = []
    for i, (name, mat) in enumerate(layers.items()):
        mat = np.ascontiguousarray(mat, dtype=np.float32)
        n, d = mat.shape
        values = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)),
                                          pa.array(mat.reshape(-1)))
        parts.append(pa.table({
            "run_id": pa.array([run_id] * n), "layer": pa.array([name] * n),
            "layer_index": pa.array(np.full(n, i, dtype=np.int32)),
            "sample_id": pa.array(np.asarray(sample_ids, dtype=np.int64)), "values": values}))
    return pa.concat_tables(parts) if parts else pa.table({})
