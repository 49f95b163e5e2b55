"""Opening the DuckDB catalog: one writer at a time, idempotent migrations, clear refusals.

DuckDB allows one writing process per file. vilactl keeps write connections short (open,
one transaction, close) and, when another process holds the file, waits up to a timeout and then
says so in one line — never a half-written catalog. Only the driver process writes; Ray workers
return counts and the driver records them.
"""
from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from vilactl.base import locks
from vilactl.base.errors import VilactlError
from vilactl.base.locks import lock_wait
from vilactl.base.paths import check_workspace
from vilactl.catalog.schema import MIGRATIONS, SCHEMA_VERSION

CATALOG_FILE = "catalog.duckdb"


def catalog_path(workspace: str | Path) -> Path:
    return Path(workspace) / CATALOG_FILE


def _connect(path: Path, read_only: bool, wait_s: float,
             config: dict | None = None) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config or {})
            # DuckDB draws a progress bar on stdout after 2 s, even into a pipe or a CSV
            con.execute("SET enable_progress_bar_print = false")
            return con
        except (duckdb.IOException, duckdb.ConnectionException) as e:
            if "lock" not in str(e).lower():
                raise VilactlError(f"{path}: cannot open catalog: {_first_line(e)}") from e
            if time.monotonic() >= deadline:
                pid = re.search(r"PID (\d+)", str(e))
                who = f" (PID {pid.group(1)})" if pid else ""
                raise VilactlError(
                    f"{path}: catalog is in use by another process{who}; waited {wait_s:.0f} s "
                    "— retry when it finishes (set VILACTL_LOCK_WAIT to wait longer)") from e
            time.sleep(0.2)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """First column of the first row, or None. (DuckDB 2 relations have no fetchone.)"""
    rows = con.sql(sql, params=params).fetchall()
    return rows[0][0] if rows else None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _version(con: duckdb.DuckDBPyConnection) -> int:
    has = scalar(con, "SELECT count(*) FROM information_schema.tables "
                      "WHERE table_name = 'schema_version'")
    if not has:
        return 0
    return scalar(con, "SELECT coalesce(max(version), 0) FROM schema_version")


def _check_version(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise VilactlError(
            f"{path}: catalog schema version {version} is newer than this vilactl knows "
            f"({SCHEMA_VERSION}); upgrade vilactl to use it")


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Apply the migrations this catalog lacks, each in its own transaction. Returns the version."""
    version = _version(con)
    _check_version(path, version)
    if version == 0:
        con.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                    "version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
    for v in sorted(MIGRATIONS):
        if v <= version:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for stmt in MIGRATIONS[v]:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [v])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        version = v
    return version


def init(workspace: str | Path) -> Path:
    """Create the workspace and catalog (or bring an existing one up to date)."""
    path = catalog_path(check_workspace(workspace, write=True))
    con = _connect(path, read_only=False, wait_s=lock_wait())
    try:
        migrate(con, path)
    finally:
        con.close()
    return path


@contextlib.contextmanager
def writer(workspace: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection inside one transaction: everything in the block lands, or nothing."""
    path = catalog_path(check_workspace(workspace, write=True))
    if not path.exists():
        init(workspace)
    con = _connect(path, read_only=False, wait_s=lock_wait())
    try:
        _check_version(path, _version(con))
        migrate(con, path)
        mark_dead_runs(con, Path(workspace))
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()


def mark_dead_runs(con: duckdb.DuckDBPyConnection, workspace: Path) -> int:
    """Runs left `running` by a process that died (SIGKILL, the OOM killer, a torchrun whose
    rendezvous timed out) become `incomplete`. Every job holds its output's lock from before
    its `running` row is written until after its last status is (catalog/jobs.py; torchrun's
    other ranks record nothing), and the kernel drops a dead holder's lock: a `running` row
    whose target lock is free has no live process. Returns how many were marked."""
    rows = con.sql("SELECT id, target FROM runs WHERE status = 'running' AND "
                   "target IS NOT NULL").fetchall()
    dead = [run_id for run_id, target in rows if not locks.held(workspace, target)]
    if dead:
        from datetime import datetime, timezone

        con.execute("UPDATE runs SET status = 'incomplete', finished_at = ?, "
                    "error = ? WHERE list_contains(?, id)",
                    [datetime.now(timezone.utc).replace(tzinfo=None),
                     "its process ended before the run finished (found when the catalog was "
                     "next written)", dead])
    return len(dead)


@contextlib.contextmanager
def reader(workspace: str | Path, config: dict | None = None
           ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection; an older catalog is first brought up to date (briefly taking the
    write lock), so that readers always see the current column names."""
    path = catalog_path(check_workspace(workspace))
    if not path.exists():
        raise VilactlError(f"{path}: no catalog here; run `vilactl init` (or pass --workspace)")
    con = _connect(path, read_only=True, wait_s=lock_wait(), config=config)
    try:
        version = _version(con)
        _check_version(path, version)
        if version < SCHEMA_VERSION:
            con.close()
            init(workspace)
            con = _connect(path, read_only=True, wait_s=lock_wait(), config=config)
        yield con
    finally:
        con.close()
