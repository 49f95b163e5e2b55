"""The DuckDB catalog: migrations, version refusal, read-only SQL, one writer, views."""
import json
import subprocess
import sys
import time

import duckdb
import pytest

from vilactl.base.errors import VilactlError
from vilactl.catalog import db
from vilactl.catalog.query import run_sql, summary
from vilactl.catalog.rows import Dataset, Run, Shard, record_dataset, record_run
from vilactl.catalog.schema import SCHEMA_VERSION

TABLES = {"runs", "datasets", "shards", "selections", "blends", "blend_components",
          "checkpoints", "evals", "schema_version"}


def test_init_is_idempotent_and_creates_every_table(tmp_path):
    db.init(tmp_path)
    db.init(tmp_path)
    names = {r["table_name"] for r in run_sql(tmp_path, "SELECT table_name FROM "
                                              "information_schema.tables").to_pylist()}
    assert TABLES | {"lineage"} <= names
    assert run_sql(tmp_path, "SELECT count(*) AS n FROM schema_version").to_pylist() == \
        [{"n": SCHEMA_VERSION}]


def _bump_version(ws, version):
    con = duckdb.connect(str(db.catalog_path(ws)))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
    con.close()


def test_newer_schema_version_is_refused(tmp_path):
    db.init(tmp_path)
    _bump_version(tmp_path, 99)
    with pytest.raises(VilactlError, match="schema version 99 is newer"):
        with db.writer(tmp_path):
            pass
    with pytest.raises(VilactlError, match="schema version 99 is newer"):
        run_sql(tmp_path, "SELECT 1")


@pytest.mark.parametrize("stmt", ["DELETE FROM datasets", "DROP TABLE runs",
                                  "INSERT INTO runs (id) VALUES ('x')",
                                  "COPY datasets TO '/tmp/x.csv'", "ATTACH '/tmp/other.duckdb'",
                                  "SELECT 1; DELETE FROM datasets", "CREATE TABLE t (a INT)"])
def test_sql_is_read_only(tmp_path, stmt):
    db.init(tmp_path)
    with pytest.raises(VilactlError, match="refused: `vilactl sql` is read-only"):
        run_sql(tmp_path, stmt)


def test_malformed_sql_is_one_line(tmp_path):
    db.init(tmp_path)
    with pytest.raises(VilactlError) as e:
        run_sql(tmp_path, "SELEC name FROM datasets")
    assert str(e.value).startswith("SQL error: Parser Error") and "\n" not in str(e.value)
    with pytest.raises(VilactlError, match="Table with name nope does not exist"):
        run_sql(tmp_path, "SELECT * FROM nope")


def test_missing_catalog_says_run_init(tmp_path):
    with pytest.raises(VilactlError, match="run `vilactl init`"):
        run_sql(tmp_path / "nowhere", "SELECT 1")


def test_second_writer_waits_then_gets_a_clear_message(tmp_path, monkeypatch):
    db.init(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(30)", str(db.catalog_path(tmp_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("VILACTL_LOCK_WAIT", "1")
        t0 = time.monotonic()
        with pytest.raises(VilactlError, match=rf"in use by another process \(PID {holder.pid}\)"):
            with db.writer(tmp_path):
                pass
        assert time.monotonic() - t0 >= 1.0
    finally:
        holder.kill()
        holder.wait()
    with db.writer(tmp_path) as con:  # free again once the holder is gone
        assert db.scalar(con, "SELECT 1") == 1


def test_dataset_rows_shards_view_and_lineage(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"sample_id": ["a", "b"], "x": [1, 2]}), data)
    run = Run(command="test", args={"k": 1}, status="ok")
    ds = Dataset("child-set", "samples", "parquet", str(data), 2, 0, 2, data.stat().st_size,
                 parents=["p1", "p2"], params={"why": "test"})
    with db.writer(tmp_path) as con:
        record_run(con, run)
        record_dataset(con, ds, [Shard(str(data), 2, 10, "abc")], run.id)
    assert run_sql(tmp_path, "SELECT sum(x) AS s FROM samples_child_set").to_pylist() == [{"s": 3}]
    assert run_sql(tmp_path, "SELECT parent FROM lineage ORDER BY 1").column(0).to_pylist() == \
        ["p1", "p2"]
    row = run_sql(tmp_path, "SELECT params->>'why' AS why, run_id FROM datasets").to_pylist()[0]
    assert row == {"why": "test", "run_id": run.id}
    versions = json.loads(run_sql(tmp_path, "SELECT versions FROM runs").column(0)[0].as_py())
    assert "duckdb" in versions and "python" in versions
    with pytest.raises(VilactlError, match="already in the catalog"):
        with db.writer(tmp_path) as con:
            record_dataset(con, ds, [], run.id)
    s = summary(tmp_path)
    assert [d["name"] for d in s["datasets"]] == ["child-set"] and s["tables"]["runs"] == 1


def test_a_failed_transaction_leaves_nothing(tmp_path):
    db.init(tmp_path)
    with pytest.raises(RuntimeError):
        with db.writer(tmp_path) as con:
            record_run(con, Run(command="half"))
            raise RuntimeError("crash mid-write")
    assert run_sql(tmp_path, "SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 0}]
