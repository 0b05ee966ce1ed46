"""The one results store: Hive-partitioned Parquet under a results root.

  runs/dataset=D/arch=A/<run_id>.parquet             one row per run
  predictions/dataset=D/arch=A/<run_id>.parquet      one row per test sample
  representations/dataset=D/arch=A/<run_id>.parquet  one row per (layer, test sample)
  similarity/dataset=D/metric=M/<pair_key>.parquet   one row per (layer_a, layer_b)

Partition columns live in the path, not in the files; the tables' schemas and row
builders are in :mod:`wsbench.tables`. Each file is written atomically
(:func:`wsbench.tables.write_parquet`), so a killed process leaves no half file and
concurrent workers never collide. A run's ``runs/`` row is written last: a run is
stored once that file exists.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from wsbench.tables import PARTITIONS, RUNS_SCHEMA, SCHEMA_VERSION, partitioning, write_parquet


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
        return write_parquet(self.path(table, key, **parts), rows)

    def read(self, table: str, filter=None, columns=None) -> pa.Table:
        """The whole table (partition columns included), or an empty table if none is stored."""
        base = self.root / table
        if not base.exists() or not any(base.rglob("*.parquet")):
            return pa.table({})
        schema = None
        if table == "runs":
            schema = pa.schema([*RUNS_SCHEMA, *[(k, pa.string()) for k in PARTITIONS[table]]])
        ds = pads.dataset(base, format="parquet", partitioning=partitioning(table), schema=schema)
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
        out: dict = {}
        sample_ids: np.ndarray | None = None
        for k in np.unique(layer_index):
            rows = np.flatnonzero(layer_index == k)  # contiguous after the sort
            block = values.slice(int(rows[0]), len(rows)).flatten().to_numpy(zero_copy_only=False)
            out[names[rows[0]]] = block.astype(np.float32, copy=False).reshape(len(rows), -1)
            sample_ids = ids[rows] if sample_ids is None else sample_ids
        return (ids if sample_ids is None else sample_ids), out  # no layers: the (empty) ids column

