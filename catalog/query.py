"""Read-only SQL over the catalog, and the numbers behind `vilactl catalog`.

`vilactl sql` opens the file read-only *and* accepts only statements that read (SELECT, WITH,
FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN), so a query can neither change the catalog nor write
files with COPY or ATTACH another database for writing.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from vilactl.base.errors import VilactlError
from vilactl.catalog import db

READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise VilactlError(f"SQL error: {_one_line(e)}") from e
    if not statements:
        raise VilactlError("SQL error: empty query")
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_TYPES:
            raise VilactlError(f"refused: `vilactl sql` is read-only and this is a {kind} "
                               "statement; the catalog is written only by vilactl commands")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def run_sql(workspace: str | Path, sql: str) -> pa.Table:
    """Run read-only SQL against the catalog; the last statement's result as an Arrow table."""
    with db.reader(workspace) as con:
        check_read_only(con, sql)
        try:
            result = None
            for st in con.extract_statements(sql):
                result = con.sql(st.query)
            return result.to_arrow_table() if result is not None else pa.table({})
        except duckdb.Error as e:
            raise VilactlError(f"SQL error: {_one_line(e)}") from e


def summary(workspace: str | Path) -> dict:
    """What the catalog holds: datasets, recent runs, and the counts of every other table."""
    with db.reader(workspace) as con:
        datasets = con.sql(
            "SELECT name, kind, format, num_samples, num_images, num_texts, num_bytes, "
            "(SELECT count(*) FROM shards s WHERE s.dataset = d.name) AS shards, "
            "array_to_string(parents, ',') AS parents "
            "FROM datasets d ORDER BY created_at, name").to_arrow_table().to_pylist()
        runs = con.sql("SELECT id, command, status, started_at, finished_at, error FROM runs "
                       "ORDER BY started_at DESC LIMIT 10").to_arrow_table().to_pylist()
        tables = {t: db.scalar(con, f"SELECT count(*) FROM {t}")
                  for t in ("runs", "selections", "blends", "checkpoints", "evals")}
        version = db.scalar(con, "SELECT max(version) FROM schema_version")
    return {"path": str(db.catalog_path(workspace)), "schema_version": version,
            "datasets": datasets, "runs": runs, "tables": tables}
