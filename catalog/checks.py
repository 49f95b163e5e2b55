"""Checks over many Parquet files at once, in DuckDB, out of core within a fixed memory budget.

Keys must be unique before anything is keyed by them: a COYO `id` keys its download, its score
and the top-K tie-break; an MMC4 `doc_id` keys its images. Two rows sharing a key would receive
each other's images or crash a selection later, so register refuses them with a count and the
first example's files and rows.

The check is a GROUP BY over every key: in memory it grows with N (~64 B a row, ~48 GB for
COYO-700M). DuckDB's aggregate spills to disk past `memory_limit`, so it runs with a fixed
budget (MEMORY_LIMIT) and a temp folder inside the workspace (cleaned afterwards); its progress
is polled into the caller's progress line.
"""
from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

MEMORY_LIMIT = "1GB"   # DuckDB's own budget; measured: 100M COYO ids, 1.1 GB peak, 35 s


def _files(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


@contextlib.contextmanager
def _bounded(temp: Path | None, progress: Callable[[float], None] | None
             ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with a memory budget, spilling into `temp`, reporting progress."""
    con = duckdb.connect()
    stop = threading.Event()
    try:
        con.execute("SET threads TO 2")
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar_print = false")   # never onto stdout
        if temp is not None:
            temp.mkdir(parents=True, exist_ok=True)
            con.execute("SET temp_directory = ?", [str(temp)])
        if progress is not None:
            con.execute("SET enable_progress_bar = true")
            threading.Thread(target=_poll, args=(con, progress, stop), daemon=True).start()
        yield con
    finally:
        stop.set()
        con.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _poll(con: duckdb.DuckDBPyConnection, progress: Callable[[float], None],
          stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(Exception):
            done = con.query_progress()
            if done >= 0:
                progress(done)


def duplicate_keys(paths: list[Path], column: str, temp: Path | None = None,
                   progress: Callable[[float], None] | None = None
                   ) -> tuple[int, list[tuple[str, int]], object]:
    """(number of values that occur more than once, where the smallest such value occurs — up to
    two (file, row) pairs, rows counted from 0 — and the value itself). `temp`: where DuckDB
    may spill; `progress(percent)` is called about once a second."""
    with _bounded(temp, progress) as con:
        src = f"read_parquet({_files(paths)}, filename = true, file_row_number = true)"
        dup = f'SELECT "{column}" AS k FROM {src} GROUP BY k HAVING count(*) > 1'
        n, first = con.sql(f"SELECT count(*), min(k) FROM ({dup})").fetchall()[0]
        if not n:
            return 0, [], None
        rows = con.sql(f'SELECT filename, file_row_number FROM {src} WHERE "{column}" = ? '
                       "ORDER BY filename, file_row_number LIMIT 2", params=[first]).fetchall()
        return n, [(f, int(r)) for f, r in rows], first


def duplicates_problem(paths: list[Path], column: str, what: str,
                       names: dict[str, str] | None = None, temp: Path | None = None,
                       progress: Callable[[float], None] | None = None) -> str | None:
    """One line describing duplicate keys, or None. `names` maps a file to how to call it
    (e.g. a normalised part back to the source file it came from)."""
    n, rows, value = duplicate_keys(paths, column, temp, progress)
    if not n:
        return None
    names = names or {}
    where = " and ".join(f"{names.get(f, f)} row {r}" for f, r in rows)
    return (f"{n} {what} value(s) occur more than once, e.g. {column} {value!r} at {where}; "
            f"every {what} must be unique")
