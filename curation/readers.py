"""Reading raw corpora file by file, validating as we go, with errors that name file and row.

Pure functions over files (no Ray, no DuckDB): the pipeline maps them over shards. Memory stays
flat in the file size: COYO Parquet is read one record batch at a time, MMC4 JSONL one line at a
time (also inside MMC4's .jsonl.zip shards).
"""
from __future__ import annotations

import glob as globlib
import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vilactl.base import json_bounds
from vilactl.base.atomic import sha256_file
from vilactl.base.errors import RecordError, VilactlError
from vilactl.curation.records import (
    coyo_batch_problem,
    coyo_schema_problem,
    parse_mmc4_doc,
    sample_schema_problem,
)

MMC4_SUFFIXES = (".jsonl", ".jsonl.zip", ".jsonl.gz")


def expand(pattern: str, what: str = "files") -> list[Path]:
    """Sorted files matching a glob (`**` allowed); an empty match is an error."""
    paths = sorted(Path(p) for p in globlib.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise VilactlError(f"no {what} match {pattern!r}")
    return paths


@dataclass
class FileStats:
    path: Path
    rows: int
    bytes: int
    checksum: str
    images: int = 0
    texts: int = 0


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise RecordError(f"{path}: not a readable Parquet file: {e}") from e


def scan_coyo(path: Path) -> FileStats:
    """Validate one COYO metadata Parquet file (schema, then every row) and count it."""
    pf = _open_parquet(path)
    problem = coyo_schema_problem(pf.schema_arrow)
    if problem:
        raise RecordError(f"{path}: {problem}")
    rows = 0
    for batch in pf.iter_batches(columns=["id", "url"], batch_size=65536):
        problem = coyo_batch_problem(batch, rows)
        if problem:
            raise RecordError(f"{path}: {problem}")
        rows += batch.num_rows
    return FileStats(path, rows, path.stat().st_size, sha256_file(path), images=rows, texts=rows)


def read_row_range(path: Path, start: int, stop: int,
                   columns: list[str] | None = None) -> pa.Table:
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    pf = _open_parquet(path)
    groups, first, offset = [], None, 0
    for i in range(pf.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if offset + n > start and offset < stop:
            groups.append(i)
            first = offset if first is None else first
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table().select(columns) if columns else \
            pf.schema_arrow.empty_table()
    return pf.read_row_groups(groups, columns=columns).slice(start - first, stop - start)


def parquet_rows(path: Path) -> int:
    return _open_parquet(path).metadata.num_rows


def scan_samples(path: Path) -> FileStats:
    """Validate a training-sample Parquet file and count its samples, images and texts."""
    pf = _open_parquet(path)
    problem = sample_schema_problem(pf.schema_arrow)
    if problem:
        raise RecordError(f"{path}: {problem}")
    rows = images = texts = 0
    for batch in pf.iter_batches(columns=["segments"], batch_size=4096):
        segs = pc.list_flatten(batch.column(0))
        images += pc.sum(pc.is_valid(segs.field("image"))).as_py() or 0
        texts += pc.sum(pc.is_valid(segs.field("text"))).as_py() or 0
        rows += batch.num_rows
    return FileStats(path, rows, path.stat().st_size, sha256_file(path), images, texts)


def _jsonl_members(path: Path) -> Iterator[tuple[str, str, io.TextIOBase]]:
    """(label for errors, key stem, text stream) for each JSONL inside the file."""
    name = path.name
    if name.endswith(".jsonl.zip"):
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise RecordError(f"{path}: not a readable zip archive: {e}") from e
        with zf:
            members = sorted(m for m in zf.namelist() if m.endswith(".jsonl"))
            if not members:
                raise RecordError(f"{path}: the archive holds no .jsonl file")
            for member in members:
                with zf.open(member) as raw:
                    # keyed by the member's whole path: two folders may hold the same file name
                    yield (f"{path}!{member}", member[:-len(".jsonl")],
                           io.TextIOWrapper(raw, encoding="utf-8"))
    elif name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            yield str(path), name[:-len(".jsonl.gz")], f
    elif name.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            yield str(path), name[:-len(".jsonl")], f
    else:
        raise RecordError(f"{path}: expected one of {', '.join(MMC4_SUFFIXES)}")


def read_mmc4(path: Path) -> Iterator[dict]:
    """Validated MMC4 documents of one file, each with a stable doc_id '<stem>:<line>'."""
    for label, stem, stream in _jsonl_members(path):
        try:
            for line_no, line in json_bounds.lines(stream, label):
                json_bounds.check_depth(line, f"{label}:{line_no}")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(f"{label}:{line_no}: malformed JSON: {e.msg} "
                                      f"(column {e.colno})") from e
                try:
                    yield parse_mmc4_doc(obj, f"{stem}:{line_no}")
                except RecordError as e:
                    raise RecordError(f"{label}:{line_no}: {e}") from e
        except UnicodeDecodeError as e:
            raise RecordError(f"{label}: not UTF-8 text: {e.reason}") from e
