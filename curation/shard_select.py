"""Per-shard work of `vilactl curate`, run as Ray tasks: score, select, look up, write.

A `ShardSource` is one shard of the dataset being curated with where its score comes from:
an expression over its own columns, or the matching shard of a `vilactl score` output (joined on
`id`). No catalog access here; pipeline/jobs/curate.py drives these.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vilactl.base import atomic
from vilactl.curation import score_expr
from vilactl.curation.score_files import as_floats, read_candidates
from vilactl.curation.topk import Cutoff, TopK


@dataclass(frozen=True)
class ShardSource:
    data: str                  # a shard of the curated dataset (COYO metadata or images)
    scores: str | None = None  # the matching `vilactl score` shard, or None
    expr: str | None = None    # or an expression over the shard's columns

    def expr_scores_and_ids(self) -> tuple[np.ndarray, np.ndarray]:
        cols = sorted(set(score_expr.columns(self.expr)) | {"id"})
        table = pq.read_table(self.data, columns=cols)
        return as_floats(score_expr.evaluate(self.expr, table)), table.column("id").to_numpy()

    def with_scores(self, columns: list[str] | None = None) -> pa.Table:
        """The shard's rows (all columns unless named) with a float64 `score` column."""
        if self.expr:
            cols = None if columns is None else sorted(set(columns) | set(
                score_expr.columns(self.expr)) | {"id"})
            table = pq.read_table(self.data, columns=cols)
            score = score_expr.evaluate(self.expr, table)
            table = table.select(columns) if columns else table
            return table.append_column("score", score)
        table = pq.read_table(self.data, columns=columns)
        scores = pq.read_table(self.scores, columns=["id", "score"])
        idx = pc.index_in(table.column("id"), value_set=scores.column("id"))
        return table.append_column("score", pc.cast(pc.take(scores.column("score"), idx),
                                                   pa.float64()))


def shard_topk(src: ShardSource, k: int, threshold: int) -> TopK:
    """This shard's candidates for the global top-K, at or above the driver's threshold (a
    score file in vilactl's layout is read only as far as the threshold reaches)."""
    if src.scores:
        sel = read_candidates(src.scores, k, threshold)
    else:
        sel = TopK(k, threshold=np.uint64(threshold))
        sel.add(*src.expr_scores_and_ids())
    sel.compact()
    return sel


def shard_lookup(src: ShardSource, ids: np.ndarray, columns: list[str]) -> dict:
    """{id: {column: value}} for the given ids found in this shard (for dedup)."""
    table = pq.read_table(src.data, columns=sorted(set(columns) | {"id"}))
    table = table.filter(pc.is_in(table.column("id"), value_set=pa.array(ids)))
    return {r["id"]: r for r in table.to_pylist()}


def shard_write(src: ShardSource, cutoff: Cutoff, dropped: np.ndarray, out: str) -> int:
    """Write the shard's selected rows (with their score) to `out`; returns the row count."""
    table = src.with_scores()
    ids = table.column("id").to_numpy()
    keep = cutoff.keep(as_floats(table.column("score")), ids)
    if len(dropped):
        keep &= ~np.isin(ids, dropped)
    kept = table.filter(pa.array(keep))
    atomic.write_parquet(Path(out), kept, row_group_size=1024)
    return kept.num_rows
