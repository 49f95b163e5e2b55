"""Rows of a blend, columnar: COYO pairs as samples, and grouped pairs merged into one sample.

A blend row is a training sample (DESIGN.md §Records) plus where it came from:
`component` (the catalog dataset) and `epoch` (0 = first draw, k = k-th repeat). While a blend
is assembled, rows also carry `pos` (their place in the shuffled blend) and `member` (their
place inside a group of pairs); `merge_groups` folds those away.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vilactl.base.kinds import Kind
from vilactl.curation.hf_layout import plain_samples
from vilactl.curation.records import SAMPLE_SCHEMA, SEGMENT, sample_schema_problem

BLEND_SCHEMA = pa.schema(list(SAMPLE_SCHEMA) + [("component", pa.string()),
                                                 ("epoch", pa.int32())])
PAIR_KINDS = (Kind.COYO_IMAGES,)          # image-text pairs that become [image, text] samples


def _interleave(first: pa.Array, second: pa.Array) -> pa.Array:
    """[a0, b0, a1, b1, …] from equal-length arrays."""
    n = len(first)
    order = np.empty(2 * n, np.int64)
    order[0::2], order[1::2] = np.arange(n), np.arange(n) + n
    return pa.concat_arrays([first, second]).take(pa.array(order))


def pairs_as_samples(table: pa.Table, source: str = "coyo") -> pa.Table:
    """COYO rows with images → samples [user image, user caption]; the COYO id is the id."""
    n = table.num_rows
    image = table["image"].combine_chunks()
    text = table["text"].combine_chunks().cast(pa.string())
    segs = pa.StructArray.from_arrays(
        [pa.array(["user"] * (2 * n), pa.string()),
         _interleave(pa.nulls(n, pa.string()), text),
         _interleave(image.cast(pa.binary()), pa.nulls(n, pa.binary()))],
        fields=list(SEGMENT))
    segments = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                        segs)
    return pa.table({"sample_id": pc.cast(table["id"], pa.string()),
                     "source": pa.array([source] * n, pa.string()),
                     "segments": segments}, schema=SAMPLE_SCHEMA)


def as_samples(table: pa.Table, kind: str) -> pa.Table:
    """Any supported component table in the sample schema."""
    if kind in PAIR_KINDS:
        return pairs_as_samples(table)
    # a blend as a component holds HF `Image` structs: back to plain bytes, then the schema
    return plain_samples(table.select(SAMPLE_SCHEMA.names)).cast(SAMPLE_SCHEMA)


def blendable_problem(kind: str, schema: pa.Schema) -> str | None:
    """Why a dataset cannot be a blend component, or None."""
    if kind in PAIR_KINDS:
        return None
    if kind in (Kind.COYO_METADATA, Kind.MMC4_DOCS):
        return "has no images (download it first: vilactl download …)"
    if kind == Kind.MMC4_IMAGES:
        return "holds raw documents (make samples first: vilactl build mmc4 --variant …)"
    problem = sample_schema_problem(schema)
    return f"is not in the training-sample schema ({problem})" if problem else None


def merge_groups(table: pa.Table) -> pa.Table:
    """Sort rows by (pos, member) and merge rows sharing a pos into one sample: segments
    concatenated in member order, ids joined with '+'."""
    table = table.sort_by([("pos", "ascending"), ("member", "ascending")])
    pos = table["pos"].to_numpy()
    starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]]) if len(pos) else np.zeros(0, int)
    if len(starts) == len(pos):
        return table.select(BLEND_SCHEMA.names).cast(BLEND_SCHEMA)
    bounds = np.r_[starts, len(pos)].astype(np.int32)
    segs = table["segments"].combine_chunks()
    seg_ends = np.r_[0, np.cumsum(pc.list_value_length(segs).to_numpy())].astype(np.int32)
    segments = pa.ListArray.from_arrays(pa.array(seg_ends[bounds]), segs.flatten())
    ids = pa.ListArray.from_arrays(pa.array(bounds), table["sample_id"].combine_chunks())
    head = table.take(pa.array(starts))
    return pa.table({"sample_id": pc.binary_join(ids, "+"), "source": head["source"],
                     "segments": segments, "component": head["component"],
                     "epoch": head["epoch"]}, schema=BLEND_SCHEMA)
