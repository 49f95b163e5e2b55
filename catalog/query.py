"""Read-only SQL over the catalog, and the numbers behind `vilactl catalog`.

`vilactl sql` relies on DuckDB's own guards, not on a list of forbidden words:
  * every statement must be a SELECT as DuckDB's parser classifies it (DESCRIBE, SHOW, SUMMARIZE,
    FROM-first and VALUES are SELECTs too); EXPLAIN is offered as `--explain` on a SELECT, since
    `EXPLAIN ANALYZE` executes what it explains (a COPY … TO included);
  * the catalog is opened read-only, with extensions neither installed nor loaded on demand;
  * `enable_external_access = false` with `allowed_directories` = the workspace and
    `allowed_paths` = the registered files outside it, so a query reads the catalog's own data
    and nothing else (no /etc/shadow, no http:// URL);
  * `lock_configuration = true`, so the query cannot switch any of this back.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from vilactl.base.errors import VilactlError
from vilactl.catalog import db


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise VilactlError(f"SQL error: {_one_line(e)}") from e
    if not statements:
        raise VilactlError("SQL error: empty query")
    for st in statements:
        kind = st.type.name
        if kind == "EXPLAIN":
            raise VilactlError("refused: EXPLAIN runs only as `vilactl sql --explain "
                               "\"SELECT …\"` (EXPLAIN ANALYZE executes the statement)")
        if kind != "SELECT":
            raise VilactlError(f"refused: `vilactl sql` is read-only and this is a {kind} "
                               "statement; the catalog is written only by vilactl commands")
    return statements


def _lock_down(con: duckdb.DuckDBPyConnection, workspace: Path) -> None:
    """Reads limited to the workspace and the registered files outside it, then frozen."""
    root = Path(workspace).resolve()
    outside = sorted({str(Path(p).resolve()) for (p,) in con.sql(
        "SELECT path FROM shards").fetchall() if not Path(p).resolve().is_relative_to(root)})
    con.execute("SET allowed_directories = ?", [[str(root) + "/"]])
    if outside:
        con.execute("SET allowed_paths = ?", [outside])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def run_sql(workspace: str | Path, sql: str, explain: bool = False) -> pa.Table:
    """Run read-only SQL against the catalog; the last statement's result as an Arrow table."""
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    with db.reader(workspace, config=config) as con:
        statements = _statements(con, sql)
        if explain and len(statements) != 1:
            raise VilactlError("--explain takes a single SELECT statement")
        _lock_down(con, Path(workspace))
        try:
            result = None
            for st in statements:
                result = con.sql(("EXPLAIN " if explain else "") + st.query)
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
