"""Atomic writes: a reader sees a file either complete or not at all.

Everything vilactl writes goes to a temporary name in the same directory and is renamed into
place (rename is atomic on POSIX within one filesystem), so a killed run never leaves a
half-written file that a rerun would mistake for finished work.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vilactl.base.errors import VilactlError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it to `dest` only if the block succeeds."""
    dest = Path(dest)
    if dest.is_dir():
        raise VilactlError(f"{dest}: is a folder; give a file path to write")
    with _cannot_write(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)   # mkstemp makes 0600; outputs are shared data
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `dest`; it replaces `dest` only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(dest)
    try:
        yield tmp
        remove(swap_in(tmp, dest))
    finally:
        remove(tmp)


def swap_in(tmp: Path, dest: Path) -> Path | None:
    """Rename `tmp` to `dest`. Whatever was at `dest` is renamed aside first (a name the stale
    sweep recognises) and returned, for the caller to remove once the swap is committed."""
    old = None
    if dest.is_symlink() or dest.exists():
        old = dest.with_name(f".{dest.name}~{os.getpid()}-{time.monotonic_ns()}.old.tmp")
        os.replace(dest, old)
    os.replace(tmp, dest)
    return old


def remove(path: Path | None) -> None:
    """Remove a file, a symlink (never what it points to) or a folder; absent is fine."""
    if path is None:
        return
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def temp_dir(dest: str | Path) -> Path:
    """A new empty folder beside `dest` (`.<name>~<random>.tmp`), with the umask's normal
    permissions: mkdtemp makes 0700, and outputs are shared data (other users, other nodes).
    `~` cannot occur in an output name, so the temps of `a` are never those of `a.b`."""
    dest = Path(dest)
    with _cannot_write(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}~", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


@contextlib.contextmanager
def _cannot_write(folder: Path) -> Iterator[None]:
    """A folder that cannot take a new file (read-only, another user's, a file in the way) is
    one line naming it, not a traceback from the first write."""
    try:
        yield
    except OSError as e:
        raise VilactlError(f"{folder}: cannot write here: {e.strerror or e}") from None


def stale_temps(dest: str | Path) -> list[Path]:
    """Temp files and folders that killed runs left beside `dest` (never final names)."""
    dest = Path(dest)
    return sorted(dest.parent.glob(f".{dest.name}~*.tmp")) if dest.parent.is_dir() else []


def shared_mode(path: str | Path) -> None:
    """The umask's normal permissions on a file a library wrote 0600 (safetensors does):
    weights are shared data like the JSON beside them (an eval job of another user reads
    them)."""
    os.chmod(path, 0o666 & ~_UMASK)


def save_tensors(tensors: dict, dest: str | Path) -> None:
    """safetensors' save_file, with the file's permissions following the umask."""
    from safetensors.torch import save_file

    save_file(tensors, str(dest))
    shared_mode(dest)


def write_bytes(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_parquet(dest: str | Path, table: pa.Table, row_group_size: int | None = None,
                  compression: str = "zstd") -> None:
    # No timestamps or writer ids in the file, so the same table always gives the same bytes.
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression=compression)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ParquetParts:
    """Streams record batches into a Parquet file in row groups of `group_rows` rows (the last
    may be smaller), holding at most one group in memory; renamed into place by `close()`.

    Why: a selection's rows arrive a few at a time from many input row groups; written as they
    come they would make thousands of tiny row groups that every later reader pays for."""

    def __init__(self, dest: str | Path, schema: pa.Schema, group_rows: int,
                 compression: str = "zstd"):
        self.dest, self.schema = Path(dest), schema
        self.group_rows, self.rows = max(1, group_rows), 0
        self._ctx = atomic_path(self.dest)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, schema, compression=compression)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not batch.num_rows:
            return
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self.group_rows:
            self._flush(self.group_rows)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._pending)
        self._writer.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        self.rows += rows

    def close(self) -> int:
        """Write what is left and rename the file into place; returns the rows written."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._writer.close()
        self._ctx.__exit__(None, None, None)
        return self.rows

    def abort(self) -> None:
        self._writer.close()
        self._ctx.__exit__(VilactlError, VilactlError("aborted"), None)
