"""What `vilactl curate` reads and how it sizes its work: the dataset, the score, the parts.

  * the dataset: `--dataset`, else the newest COYO dataset (metadata or images) that curate did
    not make itself — so `register coyo` then `curate coyo --top-k K` works with defaults;
  * the score: `--score EXPR`; else the newest `vilactl score` run of that dataset; else, on
    data with COYO's precomputed similarities, VILA's sum of the two — said in the first line;
  * sizes from the Parquet footers: bytes per row and per row group, for what a Ray task needs
    (its `memory` resource) and for output row groups of ≥ 64k rows or ~128 MB.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from rich.markup import escape

from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.catalog.rows import clip_score_shards, dataset_shards, newest_source
from vilactl.curation import score_expr
from vilactl.curation.shard_select import BATCH_ROWS, ShardSource

CURATABLE = (Kind.COYO_METADATA, Kind.COYO_IMAGES)
VILA_SCORE = "clip_similarity_vitb32 + clip_similarity_vitl14"
GROUP_BYTES = 128 << 20          # target bytes of an output row group (decoded)
GROUP_ROWS = 1 << 17             # …and its most rows; 64k is the floor the layout promises
WORKER_BYTES = 256 << 20         # a task's own overhead beyond the data it holds


@dataclass
class SourcePlan:
    dataset: str
    row: dict
    sources: list[ShardSource]
    score_info: dict
    bytes_per_row: float         # decoded, over all columns
    row_group_bytes: int         # the largest input row group, compressed
    memory_scan: int             # what a counting task needs
    schema_keys: list[str]       # shards with the same key can share an output file


def _dataset(workspace: Path, name: str | None, console) -> str:
    if name:
        return name
    found = newest_source(workspace, [str(k) for k in CURATABLE])
    if found is None:
        raise VilactlError("no COYO dataset to curate: register the metadata first "
                           "(`vilactl register coyo --metadata 'coyo/*.parquet'`)")
    console.print(f"curate: dataset {escape(found)} (the newest COYO dataset; --dataset to "
                  "choose another)", soft_wrap=True)
    return found


def _score(workspace: Path, dataset: str, expr: str | None, paths: list[str], console):
    """(sources, score_info) for the chosen score."""
    schema = pq.read_schema(paths[0])
    if expr:
        score_expr.check(expr, schema, f"dataset {dataset!r}")
        return [ShardSource(p, expr=expr) for p in paths], {
            "score_source": "expression", "score_expr": expr}
    scores = clip_score_shards(workspace, dataset)
    if not scores:
        if not all(c in schema.names for c in score_expr.columns(VILA_SCORE)):
            raise VilactlError(f"no CLIP scores for {dataset!r} and no COYO similarity columns: "
                               f"run `vilactl score {dataset}` first, or pass --score EXPR "
                               "over its columns")
        console.print(f"curate: no `vilactl score` run for {escape(dataset)}: selecting by "
                      f"COYO's precomputed CLIP similarities, {VILA_SCORE} (VILA's sum, in "
                      "float64); change it with --score EXPR, or download and run `vilactl "
                      "score` for recomputed scores", soft_wrap=True)
        return _score(workspace, dataset, VILA_SCORE, paths, console)
    latest = scores[0][0]
    by_source = {src: path for name, _, src, path in scores if name == latest}
    missing = [p for p in paths if p not in by_source]
    if missing:
        raise VilactlError(f"scores {latest!r} do not cover shard {missing[0]}; rerun "
                           f"`vilactl score {dataset}`")
    params = scores[0][1]
    dataset_shards(workspace, latest)            # the score files unchanged since recorded
    return [ShardSource(p, scores=by_source[p]) for p in paths], {
        "score_source": "clip", "score_expr": f"clip:{params.get('model')}",
        "scores_dataset": latest, "model": params.get("model"),
        "weights_sha256": params.get("weights_sha256")}


def plan_sources(workspace: Path, name: str | None, expr: str | None, console) -> SourcePlan:
    dataset = _dataset(workspace, name, console)
    row, paths = dataset_shards(workspace, dataset)
    if row["kind"] not in CURATABLE or row["format"] != "parquet":
        raise VilactlError(f"dataset {dataset!r} is {row['kind']}/{row['format']}; curate "
                           f"takes {' or '.join(sorted(str(k) for k in CURATABLE))} Parquet")
    if not paths:
        raise VilactlError(f"dataset {dataset!r} has no finished shards")
    sources, info = _score(workspace, dataset, expr, paths, console)
    metas = [pq.read_metadata(p) for p in paths]
    rows = sum(m.num_rows for m in metas) or 1
    decoded = sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups))
    group = max((_compressed(m, i) for m in metas for i in range(m.num_row_groups)), default=0)
    per_row = decoded / rows
    return SourcePlan(dataset, row, sources, info, per_row, group,
                      WORKER_BYTES + group // 2 + (64 << 20),
                      [m.schema.to_arrow_schema().to_string() for m in metas])


def _compressed(meta, i: int) -> int:
    rg = meta.row_group(i)
    return sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))


def group_rows(bytes_per_row: float) -> int:
    """Rows per output row group: ~128 MB decoded, at most 128k rows."""
    return max(1, min(GROUP_ROWS, int(GROUP_BYTES / max(bytes_per_row, 1.0))))


def task_bytes(bytes_per_row: float, group: int, row_group_bytes: int) -> int:
    """Memory of a write task: one input row group (compressed, pre-buffered), a few decoded
    batches, and the output row group it fills (plus the slice it writes)."""
    batch = int(BATCH_ROWS * bytes_per_row)
    return WORKER_BYTES + row_group_bytes + 4 * batch + int(2.5 * group * bytes_per_row)


def plan_parts(per_shard: list[int], schema_keys: list[str],
               group: int) -> list[tuple[list[int], int]]:
    """Consecutive shards with selected rows, grouped into output parts of at least ~4 row
    groups each (and never mixing schemas): [(shard indexes, rows)]."""
    target = 4 * group
    parts: list[tuple[list[int], int]] = []
    for i, n in enumerate(per_shard):
        if not n:
            continue
        if parts and parts[-1][1] < target and schema_keys[parts[-1][0][-1]] == schema_keys[i]:
            parts[-1][0].append(i)
            parts[-1] = (parts[-1][0], parts[-1][1] + n)
        else:
            parts.append(([i], n))
    if len(parts) > 1 and parts[-1][1] < group // 2 and \
            schema_keys[parts[-1][0][0]] == schema_keys[parts[-2][0][-1]]:
        last = parts.pop()  # a small remainder joins the part before it
        parts[-1] = (parts[-1][0] + last[0], parts[-1][1] + last[1])
    return parts
