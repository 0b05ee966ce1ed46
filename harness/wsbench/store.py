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

Damaged files never stop a command: a file that is not readable Parquet, or whose columns are not
the table's (a foreign file), is named in a :class:`wsbench.errors.DamagedFileWarning` with the fix
and skipped (an error under ``--strict``); everything else is read. A run whose stored files are
damaged counts as not stored, so a grid retrains it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from wsbench.errors import WsbenchError, damaged
from wsbench.tables import (
    PARTITIONS,
    REQUIRED_COLUMNS,
    RUNS_SCHEMA,
    SCHEMA_VERSION,
    TABLE_SCHEMAS,
    TABLES,
    partitioning,
    sweep_temporaries,
    temp_path,
    write_parquet,
)

# What to do about a damaged file of each table.
_FIX = {
    "runs": "delete it, or rerun the grid: the cell counts as not stored and is trained again",
    "predictions": "delete it, or rerun the grid: the cell counts as not stored and is trained again",
    "representations": "delete it, or rerun the grid: the cell counts as not stored and is trained again",
    "similarity": "delete it and rerun `wsbench similarity` to compute the pair again",
}


def file_problem(path: Path, table: str) -> str | None:
    """Why ``path`` cannot be a file of ``table`` (unreadable footer, missing or mistyped columns), or
    None when it can. Reads the footer only: cheap enough for every file of a table."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        return "it has disappeared"
    except Exception as exc:  # ArrowInvalid (truncated, zero bytes, not Parquet), OSError
        first = (str(exc).splitlines() or [""])[0][:160]
        return f"it is not a readable Parquet file ({type(exc).__name__}: {first})"
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in schema.names]
    if missing:
        return f"it is not a wsbench {table} file (no {', '.join(missing)} column)"
    canonical = TABLE_SCHEMAS[table]
    for f in schema:
        if f.name in canonical.names and not pa.types.is_null(f.type) and f.type != canonical.field(f.name).type:
            return f"its column {f.name} is {f.type}, not {canonical.field(f.name).type}: not a wsbench {table} file"
    return None


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

    def check_writable(self) -> None:
        """Fail at once, with the fix, when the results root is a file or cannot be written to."""
        if self.root.exists() and not self.root.is_dir():
            raise WsbenchError(f"--results {self.root} is a file, not a results folder; pass a folder (it is created "
                               "when missing)")
        probe = temp_path(self.root / "write-check")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
        except OSError as exc:
            raise WsbenchError(f"results root {self.root} is not writable ({exc.strerror or exc}); pass --results with "
                               "a folder you can write to, or fix its permissions") from None
        finally:
            probe.unlink(missing_ok=True)

    def sweep(self) -> list[Path]:
        """Remove the temporaries that killed writers left under the root (tables and claims); see
        :func:`wsbench.tables.sweep_temporaries`. Returns what was removed."""
        return (sweep_temporaries([self.root / t for t in TABLES])
                + sweep_temporaries([self.root / ".claims"], (".*.tmp", ".*.stale.*")))

    def files(self, table: str) -> list[Path]:
        """Every stored file of ``table`` (temporary dot files of writers in flight left out)."""
        base = self.root / table
        if not base.is_dir():
            return []
        return sorted(p for p in base.rglob("*.parquet") if not p.name.startswith(".") and p.is_file())

    def report(self, path: Path, table: str, problem: str) -> None:
        """Name a damaged file of ``table`` and the fix; it is skipped (an error under --strict)."""
        foreign = "not a wsbench" in problem
        fix = "move it out of the results root: every .parquet file there is read as a table" if foreign \
            else _FIX[table]
        damaged(f"skipped {path}: {problem}; {fix}")

    def usable(self, path: Path, table: str) -> bool:
        """Whether ``path`` is a readable file of ``table``; a damaged one is reported."""
        problem = file_problem(path, table)
        if problem is not None and Path(path).exists():
            self.report(Path(path), table, problem)
        return problem is None

    def read(self, table: str, filter=None, columns=None) -> pa.Table:
        """The whole table (partition columns included), or an empty table if none is stored.

        Damaged and foreign files are reported and skipped (see the module docstring).
        """
        base = self.root / table
        good = [p for p in self.files(table) if self.usable(p, table)]
        if not good:
            return pa.table({})
        parts = [(k, pa.string()) for k in PARTITIONS[table]]
        if table == "runs":
            schema = pa.schema([*RUNS_SCHEMA, *parts])
        else:  # the union of the files' schemas: older files may lack newer columns
            schema = pa.unify_schemas([pq.read_schema(p) for p in good] + [pa.schema(parts)])

        def dataset(paths):
            return pads.dataset([str(p) for p in paths], format="parquet", partitioning=partitioning(table),
                                partition_base_dir=str(base), schema=schema)
        try:
            return dataset(good).to_table(filter=filter, columns=columns)
        except (pa.ArrowException, OSError):
            pass  # a file with a sound footer and damaged data: find it, file by file
        pieces = []
        for p in good:
            try:
                pieces.append(dataset([p]).to_table(filter=filter, columns=columns))
            except (pa.ArrowException, OSError) as exc:
                self.report(p, table, f"its data is damaged ({type(exc).__name__}: {str(exc)[:160]})")
        return pa.concat_tables(pieces) if pieces else pa.table({})

    # Runs -----------------------------------------------------------------
    def runs(self) -> list[dict]:
        return self.read("runs").to_pylist()

    def finished_runs(self, dataset: str | None = None) -> list[dict]:
        rows = [r for r in self.runs() if r["status"] == "finished"]
        if dataset is not None:
            rows = [r for r in rows if r["dataset"] == dataset]
        return sorted(rows, key=lambda r: (r["dataset"], r["arch"], r["seed"], r["run_id"]))

    def run_row(self, dataset: str, arch: str, run_id: str) -> dict | None:
        """The stored ``runs`` row of a run, or None when it has none or its file is damaged (reported)."""
        path = self.path("runs", run_id, dataset=dataset, arch=arch)
        if not path.exists() or not self.usable(path, "runs"):
            return None
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            self.report(path, "runs", f"its data is damaged ({type(exc).__name__}: {str(exc)[:160]})")
            return None
        return rows[0] if rows else None

    def run_status(self, dataset: str, arch: str, run_id: str) -> str | None:
        """The stored status of a run; None when it is not stored or its runs file is damaged."""
        row = self.run_row(dataset, arch, run_id)
        return None if row is None else row.get("status")

    def is_complete(self, dataset: str, arch: str, run_id: str) -> bool:
        """Whether a run is stored finished with readable predictions and representations (their
        footers are checked, not their data): what a grid skips."""
        if self.run_status(dataset, arch, run_id) != "finished":
            return False
        return all(self.usable(self.path(t, run_id, dataset=dataset, arch=arch), t)
                   for t in ("predictions", "representations"))

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

