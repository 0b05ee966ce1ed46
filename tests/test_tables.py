"""The result tables' schemas and row builders, and the one atomic writer every kept file goes through."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wsbench.store import Store
from wsbench.tables import (
    PARTITIONS,
    PREDICTIONS_SCHEMA,
    REPRESENTATIONS_SCHEMA,
    RUNS_SCHEMA,
    SCHEMA_VERSION,
    SIMILARITY_SCHEMA,
    TABLES,
    atomic_write,
    prediction_table,
    representation_table,
    run_rows,
    save_npy,
    write_bytes,
    write_csv,
    write_parquet,
    write_text,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_every_table_has_a_schema_that_ends_with_schema_version():
    for schema in (RUNS_SCHEMA, PREDICTIONS_SCHEMA, REPRESENTATIONS_SCHEMA, SIMILARITY_SCHEMA):
        assert schema.names[-1] == "schema_version" and schema.field("schema_version").type == pa.int32()
    assert set(PARTITIONS) == set(TABLES)


def test_row_builders_give_their_schemas_and_the_store_reads_them_back(tmp_path):
    ids, labels, preds = np.array([5, 7, 9]), np.array([0, 1, 2]), np.array([0, 2, 2])
    predictions = prediction_table("r", ids, labels, preds, np.array([0.9, 0.5, 0.7]))
    assert predictions.schema == PREDICTIONS_SCHEMA
    assert predictions.column("correct").to_pylist() == [True, False, True]
    reps = representation_table("r", ids, {"a": np.ones((3, 2)), "b": np.arange(3.0)[:, None]})
    assert reps.schema == REPRESENTATIONS_SCHEMA and reps.num_rows == 6
    runs = run_rows([{"run_id": "r", "seed": 0, "status": "finished"}])
    assert runs.schema == RUNS_SCHEMA and runs.column("schema_version").to_pylist() == [SCHEMA_VERSION]
    store = Store(tmp_path)
    for table, rows in (("predictions", predictions), ("representations", reps), ("runs", runs)):
        store.write(table, "r", rows, dataset="d", arch="a")
    got_ids, layers = store.representations("d", "a", "r")
    assert got_ids.tolist() == [5, 7, 9] and layers["b"].ravel().tolist() == [0.0, 1.0, 2.0]
    assert [r["run_id"] for r in store.finished_runs("d")] == ["r"]
    assert pq.read_table(store.path("predictions", "r", dataset="d", arch="a")).schema == PREDICTIONS_SCHEMA


def test_each_writer_round_trips_and_leaves_no_temporary(tmp_path):
    table = pa.table({"x": [1, 2]})
    write_parquet(tmp_path / "t.parquet", table)
    write_csv(tmp_path / "t.csv", table)
    write_text(tmp_path / "deep" / "er" / "t.txt", "text")  # folders are created
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    save_npy(tmp_path / "a.npy", np.arange(3))
    assert pq.read_table(tmp_path / "t.parquet").equals(table)
    assert (tmp_path / "t.csv").read_text() == '"x"\n1\n2\n'
    assert (tmp_path / "deep" / "er" / "t.txt").read_text() == "text"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
    assert _names(tmp_path) == ["a.npy", "b.bin", "deep", "t.csv", "t.parquet"]  # no "a.npy.npy", no dot files


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = write_text(tmp_path / "f.txt", "old")

    def killed(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, killed)
    assert path.read_text() == "old" and _names(tmp_path) == ["f.txt"]


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    def build(tmp):
        tmp.mkdir()
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("2")
    atomic_write(tmp_path / "zoo", build)
    assert _names(tmp_path / "zoo") == ["a", "b"]

    def broken(tmp):
        tmp.mkdir()
        (tmp / "a").write_text("1")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "other", broken)
    assert _names(tmp_path) == ["zoo"]


def test_writers_of_one_path_never_share_a_temporary(tmp_path):
    path, seen = tmp_path / "f.txt", []

    def outer(tmp):
        seen.append(tmp)
        atomic_write(path, lambda inner: (seen.append(inner), inner.write_text("inner")))
        tmp.write_text("outer")
    atomic_write(path, outer)
    assert seen[0] != seen[1] and all(t.parent == tmp_path and t.name.startswith(".") for t in seen)
    assert path.read_text() == "outer" and _names(tmp_path) == ["f.txt"]
