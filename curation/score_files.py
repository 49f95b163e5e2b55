"""vilactl's layout for score files, and reading scores as float64.

A score file (one per input shard, written by `vilactl score`) holds the shard's pairs sorted
best first — score desc, id asc — so a user's `head` of it shows the best pairs; a pair without a
finite score (an undecodable image) is stored as null, after all others. `vilactl curate` reads
only its `score` column (and `id` where needed), a record batch at a time
(curation/shard_select.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vilactl.base import atomic

ROW_GROUP = 65536  # rows; a score file is ~12 bytes a row


def write_score_file(path: str | Path, table: pa.Table) -> None:
    """Write `table` (with `id` and a float `score`) in the score-file layout, atomically."""
    score = table.column("score")
    # NaN and ±inf are stored as null: never selected
    bad = pc.invert(pc.fill_null(pc.is_finite(score), True))
    table = table.set_column(table.schema.get_field_index("score"), "score",
                             pc.if_else(bad, pa.scalar(None, score.type), score))
    order = pc.sort_indices(table, [("score", "descending", "at_end"),
                                    ("id", "ascending", "at_end")])
    table = table.take(order)
    atomic.write_parquet(path, table, row_group_size=ROW_GROUP)


def as_floats(col) -> np.ndarray:
    arr = pc.cast(col, pa.float64())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.to_numpy(zero_copy_only=False)  # nulls become NaN: excluded and counted
