"""Per-shard work of `vilactl curate`, run as Ray tasks: count, find the boundary, gather, write.

A `ShardSource` is one shard of the dataset being curated with where its score comes from: an
expression over its own columns, or the matching shard of a `vilactl score` output (joined on
`id`). Every function here streams its shard one record batch at a time, reading only the
columns it needs — never a whole shard with all columns — so a task's memory is one batch plus
what it returns, whatever the file's size. No catalog access here; pipeline/jobs/curate.py
drives these (the passes are explained in curation/histogram_select.py).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vilactl.base import atomic
from vilactl.curation import score_expr
from vilactl.curation.histogram_select import (
    Boundary,
    Histogram,
    boundary_candidates,
    finite_keys,
)
from vilactl.curation.score_files import as_floats
from vilactl.curation.topk import Cutoff, TopK

BATCH_ROWS = 1 << 16


def batches(path: str, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """The file's rows a record batch at a time (pyarrow reads a row group's column chunks,
    then decodes batch by batch), only `columns` (all if None)."""
    pf = pq.ParquetFile(path)
    yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)


@dataclass(frozen=True)
class ShardSource:
    data: str                  # a shard of the curated dataset (COYO metadata or images)
    scores: str | None = None  # the matching `vilactl score` shard, or None
    expr: str | None = None    # or an expression over the shard's columns

    def scores_and_ids(self, ids: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(float64 scores, ids or None) one batch at a time, from the fewest columns."""
        if self.scores:
            path, cols = self.scores, ["score"]
        else:
            path, cols = self.data, score_expr.columns(self.expr)
        cols = sorted(set(cols) | ({"id"} if ids else set()))
        for batch in batches(path, cols):
            s = batch.column("score") if self.scores else score_expr.evaluate(self.expr, batch)
            yield as_floats(s), (batch.column("id").to_numpy(zero_copy_only=False)
                                 if ids else None)

    def rows(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The shard's rows (all columns, or `id` and the named ones), a batch at a time, with a
        float64 `score` column appended."""
        lookup = None
        if self.scores:  # a score file is small (id, score): held whole for the join
            lookup = pq.read_table(self.scores, columns=["id", "score"])
        read = None if columns is None else sorted(
            set(columns) | {"id"} | (set(score_expr.columns(self.expr)) if self.expr else set()))
        for batch in batches(self.data, read):
            if lookup is None:
                score = score_expr.evaluate(self.expr, batch)
            else:
                idx = pc.index_in(batch.column("id"), value_set=lookup.column("id"))
                score = pc.cast(pc.take(lookup.column("score"), idx), pa.float64())
            if columns is not None:
                batch = batch.select(["id"] + [c for c in columns if c != "id"])
            elif "score" in batch.schema.names:  # an earlier selection's: this one replaces it
                batch = batch.drop_columns(["score"])
            yield batch.append_column("score", pa.array(score, pa.float64()))


def shard_histogram(src: ShardSource) -> Histogram:
    """Pass 1: this shard's score counts per bucket (scores only, no ids)."""
    hist = Histogram()
    for scores, _ in src.scores_and_ids(ids=False):
        hist.add(scores)
    hist.fold()  # one sorted (bucket, count) array pair to send back
    return hist


def shard_boundary(src: ShardSource, b: Boundary) -> tuple[int, np.ndarray, np.ndarray]:
    """Pass 2: (rows above the boundary bucket, keys and ids of this shard's best `need` rows
    inside it)."""
    above, sel = 0, TopK(b.need)
    for scores, ids in src.scores_and_ids():
        n, part = boundary_candidates(scores, ids, b)
        above += n
        sel.merge(part)
    keys, ids = sel.result()
    return above, keys, ids


def shard_gather(src: ShardSource, cutoff: Cutoff, columns: list[str]) -> pa.Table:
    """The selected rows' id, order key and `columns` (for dedup): O(selected rows)."""
    parts = []
    for batch in src.rows(columns):
        keep = cutoff.keep(as_floats(batch.column("score")), batch.column("id").to_numpy(
            zero_copy_only=False))
        if keep.any():
            kept = batch.filter(pa.array(keep))
            _, keys = finite_keys(as_floats(kept.column("score")))
            parts.append(pa.table({"id": kept.column("id"), "key": keys,
                                   **{c: kept.column(c) for c in columns}}))
    if not parts:
        return pa.table({"id": pa.array([], pa.int64()), "key": pa.array([], pa.uint64()),
                         **{c: pa.array([], pa.string()) for c in columns}})
    return pa.concat_tables(parts, promote_options="permissive")


def part_write(sources: list[ShardSource], cutoff: Cutoff, dropped: np.ndarray, out: str,
               group_rows: int) -> int:
    """Pass 3: write the selected rows of `sources` (with their score) to one Parquet file in
    row groups of `group_rows`, streaming; returns the rows written."""
    writer = None
    try:
        for src in sources:
            for batch in src.rows():
                ids = batch.column("id").to_numpy(zero_copy_only=False)
                keep = cutoff.keep(as_floats(batch.column("score")), ids)
                if len(dropped):
                    keep &= ~np.isin(ids, dropped)
                if not keep.any():
                    continue
                kept = batch.filter(pa.array(keep))
                writer = writer or atomic.ParquetParts(Path(out), kept.schema, group_rows)
                writer.write(kept.cast(writer.schema))  # shards of one part share columns
    except BaseException:
        if writer:
            writer.abort()
        raise
    return writer.close() if writer else 0
