"""Checks over many Parquet files at once, in DuckDB (out of core: COYO's 747M ids fit).

Keys must be unique before anything is keyed by them: a COYO `id` keys its download, its score
and the top-K tie-break; an MMC4 `doc_id` keys its images. Two rows sharing a key would receive
each other's images or crash a selection later, so register refuses them with a count and the
first example's files and rows.
"""
from __future__ import annotations

from pathlib import Path

import duckdb


def _files(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def duplicate_keys(paths: list[Path], column: str) -> tuple[int, list[tuple[str, int]], object]:
    """(number of values that occur more than once, where the smallest such value occurs — up to
    two (file, row) pairs, rows counted from 0 — and the value itself)."""
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        src = f"read_parquet({_files(paths)}, filename = true, file_row_number = true)"
        dup = f'SELECT "{column}" AS k FROM {src} GROUP BY k HAVING count(*) > 1'
        n, first = con.sql(f"SELECT count(*), min(k) FROM ({dup})").fetchall()[0]
        if not n:
            return 0, [], None
        rows = con.sql(f'SELECT filename, file_row_number FROM {src} WHERE "{column}" = ? '
                       "ORDER BY filename, file_row_number LIMIT 2", params=[first]).fetchall()
        return n, [(f, int(r)) for f, r in rows], first
    finally:
        con.close()


def duplicates_problem(paths: list[Path], column: str, what: str,
                       names: dict[str, str] | None = None) -> str | None:
    """One line describing duplicate keys, or None. `names` maps a file to how to call it
    (e.g. a normalised part back to the source file it came from)."""
    n, rows, value = duplicate_keys(paths, column)
    if not n:
        return None
    names = names or {}
    where = " and ".join(f"{names.get(f, f)} row {r}" for f, r in rows)
    return (f"{n} {what} value(s) occur more than once, e.g. {column} {value!r} at {where}; "
            f"every {what} must be unique")
