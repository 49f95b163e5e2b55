"""Noticing registered files that changed behind the catalog's back.

The catalog records each shard's path, rows, bytes, sha256 and (since migration 8) mtime. A file
replaced by another valid Parquet file, truncated or deleted would otherwise be read as if it
were the one recorded: a blend exits 0 with the wrong samples under the old name.

- `check_unchanged` runs before a command reads a dataset's files (`rows.dataset_shards`, which
  blend, curate, score, build, download --from-dataset, train and eval go through). It stays
  cheap: a stat (size, mtime), the Parquet footer (row count) and the full sha256 only of small
  files (≤ VILACTL_CHECK_HASH_BYTES, default 4 MiB each, 256 MiB per check). The first change
  stops the command with one line naming the file and `vilactl verify`.
- `verify` (`vilactl verify [DATASET…]`) rereads every recorded file in full and compares its
  sha256; a file whose content is unchanged but whose mtime moved (a `touch`, a copy that kept
  the bytes) gets its new mtime recorded, so the cheap check accepts it again.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from vilactl.base.atomic import sha256_file
from vilactl.base.errors import VilactlError
from vilactl.base.ranges import env_number

DEFAULT_HASH_BYTES = 4 << 20          # a file this small is hashed in full on every read
HASH_BUDGET = 256 << 20               # … up to this many bytes per check


@dataclass
class Recorded:
    dataset: str
    path: str
    rows: int | None
    bytes: int | None
    checksum: str | None
    mtime_ns: int | None


def recorded_shards(con: duckdb.DuckDBPyConnection, dataset: str | None = None
                    ) -> list[Recorded]:
    """The finished shards of one dataset (or all), ordered by dataset and path."""
    where, params = ("AND dataset = ?", [dataset]) if dataset is not None else ("", [])
    rows = con.sql("SELECT dataset, path, rows, bytes, checksum, mtime_ns FROM shards "
                   f"WHERE status = 'done' {where} ORDER BY dataset, path",
                   params=params).fetchall()
    return [Recorded(*r) for r in rows]


def hash_bytes() -> int:
    """Files up to this size are hashed before each read (0 turns the per-read sha256 off)."""
    return env_number("VILACTL_CHECK_HASH_BYTES", DEFAULT_HASH_BYTES, 0, None, integer=True)


def _stat_change(rec: Recorded) -> tuple[str | None, os.stat_result | None]:
    """What a stat and the Parquet footer show changed, or None; and the stat."""
    try:
        st = os.stat(rec.path)
    except FileNotFoundError:
        return "it is gone (deleted or moved)", None
    except OSError as e:
        return f"it cannot be read ({e.strerror})", None
    if rec.bytes is not None and st.st_size != rec.bytes:
        return f"{st.st_size} bytes, recorded {rec.bytes}", st
    if rec.path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            n = pq.ParquetFile(rec.path).metadata.num_rows
        except Exception:                          # any footer pyarrow cannot read
            return "not a readable Parquet file any more", st
        if rec.rows is not None and n != rec.rows:
            return f"its Parquet footer says {n} rows, recorded {rec.rows}", st
    return None, st


def _hash_change(rec: Recorded) -> str | None:
    if rec.checksum and sha256_file(rec.path) != rec.checksum:
        return "its sha256 differs from the recorded one"
    return None


def cheap_change(rec: Recorded, budget: list[int]) -> str | None:
    """The pre-read check of one file (stat, footer, sha256 if small); `budget` is the hash
    bytes left for this check, shared across its files."""
    why, st = _stat_change(rec)
    if why or st is None:
        return why
    small = st.st_size <= hash_bytes() and st.st_size <= budget[0]
    if small:
        budget[0] -= st.st_size
        why = _hash_change(rec)
        if why or rec.mtime_ns is None or st.st_mtime_ns == rec.mtime_ns:
            return why
        return None                                # touched, same bytes
    if rec.mtime_ns is not None and st.st_mtime_ns != rec.mtime_ns:
        return "it was modified after it was recorded (mtime)"
    return None


def check_unchanged(dataset: str, recs: list[Recorded]) -> None:
    """Stop with one line at the first recorded file of `dataset` that changed."""
    budget = [HASH_BUDGET]
    for rec in recs:
        why = cheap_change(rec, budget)
        if why:
            raise VilactlError(f"{rec.path} (dataset {dataset!r}) changed since the catalog "
                               f"recorded it: {why}; run `vilactl verify` to check every "
                               "file, then register or remake the dataset")


@dataclass
class Verdict:
    rec: Recorded
    problem: str | None
    mtime_ns: int | None = None          # to record: content unchanged, mtime new or missing


def full_check(rec: Recorded) -> Verdict:
    why, st = _stat_change(rec)
    if why or st is None:
        return Verdict(rec, why)
    why = _hash_change(rec)
    fresh = None if why or st.st_mtime_ns == rec.mtime_ns else st.st_mtime_ns
    return Verdict(rec, why, fresh)


def verify(con: duckdb.DuckDBPyConnection, datasets: list[str],
           advance: Callable[[int, int], None]) -> dict[str, list[Verdict]]:
    """Every recorded file of `datasets` (all when empty) rehashed; advance(files, bytes)
    after each. Unknown dataset names are refused before any file is read."""
    known = [r[0] for r in con.sql("SELECT name FROM datasets ORDER BY name").fetchall()]
    missing = [d for d in datasets if d not in known]
    if missing:
        raise VilactlError(f"unknown dataset(s) {', '.join(map(repr, missing))} "
                           "(see `vilactl catalog`)")
    out: dict[str, list[Verdict]] = {d: [] for d in (datasets or known)}
    for rec in recorded_shards(con):
        if rec.dataset in out:
            v = full_check(rec)
            out[rec.dataset].append(v)
            advance(1, rec.bytes or 0)
    return out


def total_bytes(con: duckdb.DuckDBPyConnection, datasets: list[str]) -> tuple[int, int]:
    """(files, bytes) that `verify` will read."""
    recs = [r for r in recorded_shards(con) if not datasets or r.dataset in datasets]
    return len(recs), sum(r.bytes or 0 for r in recs)


def record_mtimes(con: duckdb.DuckDBPyConnection, verdicts: list[Verdict]) -> int:
    """Record the new mtime of files whose content verify found unchanged."""
    fresh = [[v.mtime_ns, v.rec.dataset, v.rec.path] for v in verdicts
             if v.problem is None and v.mtime_ns is not None]
    if fresh:
        con.executemany("UPDATE shards SET mtime_ns = ? WHERE dataset = ? AND path = ?", fresh)
    return len(fresh)

