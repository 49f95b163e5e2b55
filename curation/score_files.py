"""vilactl's layout for score files, and exact top-K reads that skip what cannot be selected.

A score file (one per input shard, written by `vilactl score`) holds its pairs sorted best first
— score desc, id asc — in row groups of `ROW_GROUP` rows; a pair without a score (an undecodable
image) is stored as null, after all others. Its footer's key-value metadata carries a small
index, written with the data: for each row group its rows, nulls and maximum score, and the
score at every `SKETCH`-th rank.

Why: a global top-K then reads only the leading row groups of each file. The index proves, from
the footers alone, that at least j·SKETCH pairs of a file score ≥ its j-th sketch entry; the
highest v for which the proofs of all files add up to K is a lower bound of the K-th score, and a
row group whose maximum is below it cannot hold a selected pair: it is counted (rows, nulls) and
never read. The result stays exact; the saving comes from the sort. Files without the index
(COYO metadata, scores written by older versions) are read whole, as before.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vilactl.base import atomic
from vilactl.curation.topk import TopK, order_key

INDEX_KEY = b"vilactl.score_index"
LAYOUT = "score-desc/v1"
ROW_GROUP = 8192  # small enough to skip most of a shard, large enough to read fast whole
SKETCH = 1024     # rank granularity of the bound


def write_score_file(path: str | Path, table: pa.Table) -> None:
    """Write `table` (with `id` and a float `score`) in the score-file layout, atomically."""
    score = table.column("score")
    # NaN and ±inf are stored as null: never selected, and never in the index's bounds
    bad = pc.invert(pc.fill_null(pc.is_finite(score), True))
    table = table.set_column(table.schema.get_field_index("score"), "score",
                             pc.if_else(bad, pa.scalar(None, score.type), score))
    order = pc.sort_indices(table, [("score", "descending", "at_end"),
                                    ("id", "ascending", "at_end")])
    table = table.take(order)
    valid = table.column("score").drop_null().to_numpy().astype(np.float64)
    groups = []
    for start in range(0, table.num_rows, ROW_GROUP):
        rows = min(ROW_GROUP, table.num_rows - start)
        groups.append([rows, max(0, start + rows - max(start, len(valid))),
                       float(valid[start]) if start < len(valid) else None])
    index = {"layout": LAYOUT, "groups": groups, "every": SKETCH,
             "sketch": valid[SKETCH - 1::SKETCH].tolist()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           INDEX_KEY: json.dumps(index).encode()})
    # snappy, not zstd: small row groups read ~2x faster, and score files are small anyway.
    atomic.write_parquet(path, table, row_group_size=ROW_GROUP, compression="snappy")


class Footer:
    """A score file's index and its parsed footer (reading the file again with it skips a
    second parse, which costs about as much as reading a row group)."""

    def __init__(self, meta, index: dict):
        self.meta = meta
        self.groups: list[tuple[int, int, float | None]] = [tuple(g) for g in index["groups"]]
        # Disjoint row sets (score, rows): `rows` pairs that each score at least `score`.
        self.proofs = [(v, index["every"]) for v in index["sketch"]]


def read_footer(path: str | Path) -> Footer | None:
    """The index of a score file in vilactl's layout; None for any other file."""
    meta = pq.read_metadata(path)
    raw = (meta.metadata or {}).get(INDEX_KEY)
    if raw is None:
        return None
    index = json.loads(raw)
    return Footer(meta, index) if index.get("layout") == LAYOUT else None


def lower_bound(proofs: list[tuple[float, int]], k: int) -> float | None:
    """The highest v for which the proofs show ≥ k rows scoring ≥ v, or None."""
    covered = 0
    for low, rows in sorted(proofs, reverse=True):
        covered += rows
        if covered >= k:
            return low
    return None


def bound_key(footers: list[Footer | None], k: int) -> np.uint64:
    """Order key of the footers' lower bound of the K-th score (0: no bound)."""
    low = lower_bound([p for f in footers if f is not None for p in f.proofs], k)
    return np.uint64(0) if low is None else order_key(np.array([low]))[0]


def read_candidates(path: str | Path, k: int, threshold: int = 0,
                    footer: Footer | None = None) -> TopK:
    """This file's candidates for the global top-K at or above `threshold` (an order key).

    In vilactl's layout only the row groups whose maximum reaches the threshold are read; the
    others are counted as seen (and their nulls as excluded). Any other file is read whole."""
    sel = TopK(k, threshold=np.uint64(threshold))
    footer = footer or read_footer(path)
    if footer is None:
        table = pq.read_table(path, columns=["id", "score"])
        sel.add(as_floats(table.column("score")), table.column("id").to_numpy())
        return sel
    keep = []
    for i, (rows, nulls, top) in enumerate(footer.groups):
        if top is not None and order_key(np.array([top]))[0] >= threshold:
            keep.append(i)
        else:
            sel.seen += rows
            sel.excluded_nan += nulls
    if keep:
        table = pq.ParquetFile(path, metadata=footer.meta).read_row_groups(
            keep, columns=["id", "score"])
        sel.add(as_floats(table.column("score")), table.column("id").to_numpy())
    return sel


def as_floats(col) -> np.ndarray:
    arr = pc.cast(col, pa.float64())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.to_numpy(zero_copy_only=False)  # nulls become NaN: excluded and counted


def select_files(paths: list[Path], k: int, workers: int = 2) -> TopK:
    """The exact top K over score files, in-process: footers first (the bound), then each file's
    candidates in a thread pool (pyarrow and numpy release the GIL), merged as they come."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        footers = list(pool.map(read_footer, paths))
        total = TopK(k, threshold=bound_key(footers, k))

        def one(job):
            path, footer = job
            return read_candidates(path, k, int(total.threshold), footer)

        for part in pool.map(one, zip(paths, footers)):
            total.merge(part)
    return total
