"""Read-only SQL over the catalog, and the numbers behind `vilactl catalog`.

`vilactl sql` relies on DuckDB's own guards, not on a list of forbidden words:
  * every statement must be a SELECT as DuckDB's parser classifies it (DESCRIBE, SHOW, SUMMARIZE,
    FROM-first and VALUES are SELECTs too); EXPLAIN is offered as `--explain` on a SELECT, since
    `EXPLAIN ANALYZE` executes what it explains (a COPY … TO included);
  * the catalog is opened read-only (and copied, see below), extensions neither installed nor
    loaded on demand;
  * `enable_external_access = false` with `allowed_directories` = the workspace and
    `allowed_paths` = the registered files outside it, so a query reads the catalog's own data
    and nothing else (no /etc/shadow, no http:// URL);
  * `lock_configuration = true`, so the query cannot switch any of this back.

and it is bounded, so that no query holds the machine or the catalog:
  * the query runs on an in-memory copy of the catalog's tables and views (a few MB: the catalog
    holds metadata, samples stay in Parquet), taken under the read lock in milliseconds; the
    file is closed before the query starts, so a writer (`register`, `curate`, …) never waits
    for a query, however long it runs;
  * `memory_limit` (`--memory-gb`, default 2 GB), `threads` (at most 4) and no spilling to disk
    (`temp_directory = ''`) are set when the connection opens, before `lock_configuration`; the
    result is streamed into Arrow batch by batch and refused once it passes the same limit;
  * the query runs in a worker thread while the main thread waits in short steps, so a timeout
    (`--timeout`, default 60 s) or Ctrl-C calls DuckDB's `interrupt()`, which stops it within
    a moment: one line, exit 1 for a timeout and 130 for Ctrl-C.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from vilactl.base.errors import VilactlError
from vilactl.base.paths import check_workspace
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


DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_GB = 2.0
MAX_THREADS = 4                     # a query shares the machine with running jobs
_BATCH_ROWS = 65536


def check_bounds(timeout_s: float, memory_gb: float) -> None:
    """Both limits finite and positive (memory below 1 PB, which DuckDB can parse)."""
    for flag, value, unit, top in (("--timeout", timeout_s, "seconds", math.inf),
                                   ("--memory-gb", memory_gb, "GB", 1e6)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < top):
            raise VilactlError(f"{flag} {value!r}: give a finite number of {unit} > 0"
                               + (f" and < {top:g}" if top != math.inf else ""))


def _snapshot(workspace: Path, memory_gb: float) -> duckdb.DuckDBPyConnection:
    """An in-memory database named `catalog` holding a copy of the catalog's tables and views;
    the catalog file is open only while it is copied."""
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
              "memory_limit": f"{max(1, round(memory_gb * 1024))}MiB",
              "threads": max(1, min(MAX_THREADS, os.cpu_count() or 1)),
              "temp_directory": ""}                    # no spilling: the limit is the limit
    con = duckdb.connect(":memory:", config=config)
    # DuckDB draws a progress bar on stdout after 2 s, even into a pipe or a CSV
    con.execute("SET enable_progress_bar = false")
    # checked first: resolve() of a symlink loop is a RuntimeError, not a line
    path = str(db.catalog_path(check_workspace(workspace)).resolve()).replace("'", "''")
    try:
        # db.reader waits for a writer to finish and brings an older catalog up to date
        with db.reader(workspace):
            con.execute(f"ATTACH '{path}' AS vilactl_catalog_file (READ_ONLY)")
            con.execute("ATTACH ':memory:' AS catalog")
            con.execute("COPY FROM DATABASE vilactl_catalog_file TO catalog")
            con.execute("DETACH vilactl_catalog_file")
        con.execute("USE catalog")
    except duckdb.OutOfMemoryException as e:
        con.close()
        raise VilactlError(f"the catalog does not fit in --memory-gb {memory_gb:g}; raise it "
                           f"({_one_line(e)[:200]})") from e
    except BaseException:
        con.close()
        raise
    return con


def _name_thread(name: bytes) -> None:
    """Give the calling thread a name the OS shows (`ps -L`, `top -H`, /proc/PID/task/*/comm),
    so an operator (and the interrupt test) can see that a query is running. Linux only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(15, name[:15], 0, 0, 0)   # PR_SET_NAME


def _fetch(con: duckdb.DuckDBPyConnection, statements: list, explain: bool, max_bytes: int,
           out: dict, done: threading.Event) -> None:
    """The worker: run the statements, stream the last result into Arrow within max_bytes."""
    _name_thread(b"vilactl-sql")
    try:
        result = None
        for st in statements:
            result = con.sql(("EXPLAIN " if explain else "") + st.query)
        if result is None:
            out["table"] = pa.table({})
            return
        with result.to_arrow_reader(_BATCH_ROWS) as reader:   # closed before the connection
            batches, size = [], 0
            for batch in reader:
                size += batch.nbytes
                if size > max_bytes:
                    out["too_big"] = sum(b.num_rows for b in batches)
                    return
                batches.append(batch)
            out["table"] = pa.Table.from_batches(batches, schema=reader.schema)
    except BaseException as e:                 # handed to the main thread
        out["error"] = e
    finally:
        done.set()


def _wait(con, done: threading.Event, timeout_s: float) -> bool:
    """Wait for the worker in short steps (so that Ctrl-C reaches Python); interrupt the query
    at the deadline or on Ctrl-C. True when the deadline stopped it. (An Event, not
    Thread.join: a join that Ctrl-C interrupts marks the thread stopped in Python 3.11.)"""
    deadline = time.monotonic() + timeout_s
    try:
        while not done.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                con.interrupt()
                done.wait(5)
                return True
    except KeyboardInterrupt:
        con.interrupt()
        done.wait(5)
        raise
    return False


def run_sql(workspace: str | Path, sql: str, explain: bool = False,
            timeout_s: float = DEFAULT_TIMEOUT_S,
            memory_gb: float = DEFAULT_MEMORY_GB) -> pa.Table:
    """Run read-only SQL against a copy of the catalog within `timeout_s` seconds and
    `memory_gb`; the last statement's result as an Arrow table."""
    check_bounds(timeout_s, memory_gb)
    con = _snapshot(Path(workspace), memory_gb)
    out: dict = {}
    done = threading.Event()
    started = False
    try:
        statements = _statements(con, sql)
        if explain and len(statements) != 1:
            raise VilactlError("--explain takes a single SELECT statement")
        _lock_down(con, Path(workspace))
        threading.Thread(target=_fetch, name="vilactl-sql", daemon=True,
                         args=(con, statements, explain, int(memory_gb * 2**30), out,
                               done)).start()
        started = True
        if _wait(con, done, timeout_s):
            raise VilactlError(f"query stopped after --timeout {timeout_s:g} s; raise it with "
                               "--timeout SECONDS (or narrow the query)")
    finally:
        if not started or done.is_set():
            con.close()                 # a worker still inside DuckDB dies with the process
    if "too_big" in out:
        raise VilactlError(f"the result is larger than --memory-gb {memory_gb:g} (stopped after "
                           f"{out['too_big']} rows); add a LIMIT or raise --memory-gb")
    if isinstance(out.get("error"), duckdb.OutOfMemoryException):
        raise VilactlError(f"SQL error: the query needs more than --memory-gb {memory_gb:g}; "
                           f"raise it ({_one_line(out['error'])[:200]})") from out["error"]
    if isinstance(out.get("error"), duckdb.Error):
        raise VilactlError(f"SQL error: {_one_line(out['error'])}") from out["error"]
    if "error" in out:
        raise out["error"]
    return out["table"]


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
