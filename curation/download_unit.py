"""One download work unit: read its rows, fetch their images, commit its outputs atomically.

A unit is a row range of one input Parquet file. It writes, in this order:
  part-<unit>.parquet | .tar        the records with their images (successes only)
  _failures/part-<unit>.parquet     key, url, reason, error of every failed URL
  _stats/part-<unit>.json           counts — written last: its presence means the unit is done
Each file goes to a temporary name and is renamed into place, so a killed worker leaves no
half-written file under a final name, and a rerun that redoes the unit overwrites the same names:
each key lands exactly once. No Ray here; pipeline/jobs/download.py runs these as Ray tasks.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vilactl.base import atomic
from vilactl.curation.fetch import FetchOptions, fetch
from vilactl.curation.fetch_results import is_transient
from vilactl.curation.mmc4_images import attach, flatten
from vilactl.curation.readers import read_row_range
from vilactl.curation.records import (
    COYO_IMAGES_SCHEMA,
    FAILURES_SCHEMA,
    MMC4_IMAGES_SCHEMA,
    conform_coyo,
)


@dataclass(frozen=True)
class Unit:
    id: str       # "<input file index>-<chunk index>", stable for a given input list and size
    source: str   # input Parquet file
    start: int
    stop: int

    def data_path(self, out: Path, fmt: str = "parquet") -> Path:
        return out / f"part-{self.id}{data_suffix(fmt)}"

    def failures_path(self, out: Path) -> Path:
        return out / "_failures" / f"part-{self.id}.parquet"

    def stats_path(self, out: Path) -> Path:
        return out / "_stats" / f"part-{self.id}.json"


def data_suffix(fmt: str) -> str:
    return ".tar" if fmt == "webdataset" else ".parquet"


def is_done(unit: Unit, out: Path) -> bool:
    return unit.stats_path(out).exists()


def read_stats(unit: Unit, out: Path) -> dict:
    return json.loads(unit.stats_path(out).read_text())


def _fetch_counts(results: pa.Table, seconds: float) -> dict:
    reasons = Counter(r for r in results.column("reason").to_pylist() if r is not None)
    ok = results.num_rows - sum(reasons.values())
    nbytes = int(pc.sum(pc.binary_length(results.column("image"))).as_py() or 0)
    return {"attempted": results.num_rows, "succeeded": ok, "failed": dict(sorted(reasons.items())),
            "bytes": nbytes, "seconds": round(seconds, 3),
            "images_per_s": round(ok / seconds, 1) if seconds > 0 else None}


def _failures(results: pa.Table, urls: dict[str, str]) -> pa.Table:
    failed = results.filter(pc.is_valid(results.column("reason")))
    keys = failed.column("key").to_pylist()
    return pa.table({"key": keys, "url": [urls[k] for k in keys],
                     "reason": failed.column("reason"), "error": failed.column("error")},
                    schema=FAILURES_SCHEMA)


def _commit(unit: Unit, out: Path, fmt: str, data: pa.Table, failures: pa.Table,
            stats: dict) -> None:
    path = unit.data_path(out, fmt)
    if fmt == "webdataset":
        atomic.write_bytes(path, _to_tar(data))
    else:
        atomic.write_parquet(path, data, row_group_size=1024)
    atomic.write_parquet(unit.failures_path(out), failures)
    stats = {**stats, "unit": unit.id, "source": unit.source, "rows": data.num_rows,
             "file_bytes": path.stat().st_size, "checksum": atomic.sha256_file(path)}
    atomic.write_text(unit.stats_path(out), json.dumps(stats, sort_keys=True))


def _to_tar(table: pa.Table) -> bytes:
    """WebDataset shard: <key>.jpg, <key>.txt, <key>.json per sample, fixed mtimes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for row in table.to_pylist():
            image = row.pop("image")
            meta = {k: v for k, v in row.items() if not isinstance(v, bytes)}
            for ext, blob in (("jpg", image), ("txt", (row.get("text") or "").encode()),
                              ("json", json.dumps(meta, sort_keys=True).encode())):
                info = tarfile.TarInfo(f"{row['key']}.{ext}")
                info.size, info.mtime = len(blob), 0
                tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


# ---------------------------------------------------------------- COYO pairs
SCORE = "score"  # the column `vilactl curate` adds: the score each pair was selected by


def _coyo_rows(unit: Unit) -> pa.Table:
    """The unit's COYO columns, and the `score` of a curated selection when it has one (so the
    downloaded pairs keep the score they were selected by)."""
    table = conform_coyo(read_row_range(Path(unit.source), unit.start, unit.stop))
    keep = list(COYO_IMAGES_SCHEMA.names[1:18]) + (["score"] if SCORE in table.column_names
                                                   else [])
    return table.select(keep)


def coyo_unit(unit: Unit, out: Path, opts: FetchOptions, fmt: str, workdir: Path) -> dict:
    if is_done(unit, out):  # a retried Ray task must not redo committed work
        return read_stats(unit, out)
    rows = _coyo_rows(unit)
    data, failures, stats = _fetch_coyo(rows, opts, workdir)
    _commit(unit, out, fmt, data, failures, stats)
    return read_stats(unit, out)


def _fetch_coyo(rows: pa.Table, opts: FetchOptions, workdir: Path
                ) -> tuple[pa.Table, pa.Table, dict]:
    """(successful rows with their images, failures, counts) for COYO rows."""
    keys = [str(i) for i in rows.column("id").to_pylist()]
    urls = rows.column("url").to_pylist()
    t0 = time.monotonic()
    results = fetch(keys, urls, opts, workdir)
    stats = _fetch_counts(results, time.monotonic() - t0)
    return _coyo_join(rows, keys, results), _failures(results, dict(zip(keys, urls))), stats


def _coyo_join(rows: pa.Table, keys: list[str], results: pa.Table) -> pa.Table:
    ok = pc.is_null(results.column("reason"))
    rows = rows.add_column(0, "key", pa.array(keys)).filter(ok)
    res = results.filter(ok)
    for name in ("image", "width", "height", "original_width", "original_height", "sha256"):
        col = f"image_{name}" if name in ("width", "height") else name
        rows = rows.append_column(col, res.column(name))
    if SCORE in rows.column_names:  # after the image fields, as a curated selection has it
        score = rows.column(SCORE)
        rows = rows.drop_columns([SCORE]).append_column(SCORE, score)
        return rows.cast(pa.schema(list(COYO_IMAGES_SCHEMA) + [(SCORE, pa.float64())]))
    return rows.cast(COYO_IMAGES_SCHEMA)


def coyo_retry(unit: Unit, out: Path, opts: FetchOptions, fmt: str, workdir: Path) -> dict:
    """Re-attempt a done unit's transient failures; merge new successes (each key once)."""
    stats = read_stats(unit, out)
    failures = pq.read_table(unit.failures_path(out))
    retry = failures.filter(pa.array([is_transient(r) for r in
                                      failures.column("reason").to_pylist()], pa.bool_()))
    if retry.num_rows == 0 or fmt != "parquet":
        return stats
    rows = _coyo_rows(unit)
    rows = rows.filter(pc.is_in(pc.cast(rows.column("id"), pa.string()),
                                value_set=retry.column("key")))
    fresh, fresh_failures, new = _fetch_coyo(rows, opts, workdir)
    old = pq.read_table(unit.data_path(out))
    merged = pa.concat_tables([old.filter(pc.invert(pc.is_in(old.column("key"),
                                                             fresh.column("key")))), fresh])
    remaining = pa.concat_tables([
        failures.filter(pc.invert(pc.is_in(failures.column("key"), retry.column("key")))),
        fresh_failures])
    stats["succeeded"] += new["succeeded"]
    failed = Counter(r for r in remaining.column("reason").to_pylist())
    stats["failed"] = dict(sorted(failed.items()))
    stats["bytes"] += new["bytes"]
    stats["retried"] = stats.get("retried", 0) + retry.num_rows
    _commit(unit, out, fmt, merged, remaining, stats)
    return read_stats(unit, out)


# ---------------------------------------------------------------- MMC4 documents
def mmc4_unit(unit: Unit, out: Path, opts: FetchOptions, require_all: bool,
              workdir: Path, force: bool = False) -> dict:
    if is_done(unit, out) and not force:
        return read_stats(unit, out)
    docs = read_row_range(Path(unit.source), unit.start, unit.stop).to_pylist()
    keys, urls = flatten(docs)
    t0 = time.monotonic()
    results = fetch(keys, urls, opts, workdir)
    stats = _fetch_counts(results, time.monotonic() - t0)
    fetched = {r["key"]: r for r in results.to_pylist()}
    kept, doc_counts = attach(docs, fetched, require_all=require_all)
    stats["documents"] = dict(sorted(doc_counts.items()))
    stats["texts"] = sum(len(d["text_list"]) for d in kept)
    data = pa.Table.from_pylist(kept, schema=MMC4_IMAGES_SCHEMA)
    _commit(unit, out, "parquet", data, _failures(results, dict(zip(keys, urls))), stats)
    return read_stats(unit, out)


def has_transient_failures(unit: Unit, out: Path) -> bool:
    return any(is_transient(r) for r in read_stats(unit, out)["failed"])
