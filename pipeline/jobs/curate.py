"""`vilactl curate coyo --top-k K`: the exact global top-K pairs by score, deduplicated.

Pass 1 (Ray tasks, one per shard) computes each shard's candidates above the driver's running
threshold; the driver merges them into the exact top K by (score desc, id asc) — memory O(K + one
shard). With --dedup, candidates are deduplicated best first (curation/dedup.py; a margin of
extra candidates covers the dropped ones, widened and rerun if it does not). The final pass
writes every row at or above the cutoff (score, id), minus dropped duplicates: exactly K rows.
The selection (K, rows scanned, cutoff and tie id, exclusions by reason, score source, model)
goes to the catalog's `selections` table, the rows to a new dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.paths import check_name
from vilactl.catalog import jobs
from vilactl.catalog.rows import (
    Dataset,
    clip_score_shards,
    dataset_shards,
    record_selection,
    resolve,
)
from vilactl.curation import score_expr
from vilactl.curation import shard_select as shards_mod
from vilactl.curation.dedup import DEDUP_FIELDS, check_fields, dedup_ranked
from vilactl.curation.score_files import bound_key, read_footer
from vilactl.curation.shard_select import ShardSource
from vilactl.curation.topk import TopK, cutoff_of
from vilactl.pipeline.services.ray_runtime import call, ray_session, run_tasks

CURATABLE = {Kind.COYO_METADATA, Kind.COYO_IMAGES}


@dataclass
class CurateRequest:
    top_k: int
    dataset: str = "coyo"
    score: str | None = None            # expression; None = the recomputed CLIP score
    dedup: list[str] = field(default_factory=list)
    name: str | None = None
    replace: bool = False

    @property
    def out_name(self) -> str:
        return self.name or f"{self.dataset}_top{self.top_k}"


def _sources(workspace: Path, req: CurateRequest) -> tuple[list[ShardSource], dict, dict]:
    """The shards with their score source, the dataset row, and what the score is."""
    if req.top_k <= 0:
        raise VilactlError(f"--top-k must be positive, got {req.top_k}")
    check_fields(req.dedup)
    row, paths = dataset_shards(workspace, req.dataset)
    scores = None if req.score else clip_score_shards(workspace, req.dataset)
    if row["kind"] not in CURATABLE or row["format"] != "parquet":
        raise VilactlError(f"dataset {req.dataset!r} is {row['kind']}/{row['format']}; "
                           f"curate takes {' or '.join(sorted(CURATABLE))} Parquet")
    if req.score:
        score_expr.check(req.score, pq.read_schema(paths[0]), f"dataset {req.dataset!r}")
        return [ShardSource(p, expr=req.score) for p in paths], row, {
            "score_source": "expression", "score_expr": req.score}
    if not scores:
        raise VilactlError(f"no CLIP scores for {req.dataset!r}: run `vilactl score "
                           f"{req.dataset}` first, or pass --score EXPR over its columns")
    latest = scores[0][0]
    by_source = {src: path for name, _, src, path in scores if name == latest}
    missing = [p for p in paths if p not in by_source]
    if missing:
        raise VilactlError(f"scores {latest!r} do not cover shard {missing[0]}; rerun "
                           f"`vilactl score {req.dataset}`")
    params = scores[0][1]
    return [ShardSource(p, scores=by_source[p]) for p in paths], row, {
        "score_source": "clip", "score_expr": f"clip:{params.get('model')}",
        "scores_dataset": latest, "model": params.get("model"),
        "weights_sha256": params.get("weights_sha256")}


def _select(sources: list[ShardSource], k: int) -> TopK:
    # Score files in vilactl's layout carry an index in their footers that bounds the K-th
    # score before any data is read: every task starts with a useful threshold and reads only
    # the row groups that reach it (curation/score_files.py).
    footers = [read_footer(s.scores) if s.scores else None for s in sources]
    total = TopK(k, threshold=bound_key(footers, k))

    def merge(_name, part):
        total.merge(part)
        return f"threshold {total.threshold}"

    # Each shard returns at most k candidates; merging compacts, so the driver holds O(2k).
    calls = [(s.data, (shards_mod.shard_topk, s, k, int(total.threshold))) for s in sources]
    _run(calls, "select", merge)
    return total


def _run(calls, describe, on_done=None) -> dict:
    results, errors = run_tasks(call, calls, num_cpus=0.5, retries=1, describe=describe,
                                on_done=on_done, quiet=True)
    if errors:
        name, err = sorted(errors.items())[0]
        raise VilactlError(f"curate failed on shard {name}: {err}")
    return results


def _dedup(sources, req, keys, ids) -> tuple[np.ndarray, np.ndarray, list, dict]:
    columns = [DEDUP_FIELDS[f] for f in req.dedup]
    meta: dict = {}
    for part in _run([(s.data, (shards_mod.shard_lookup, s, ids, columns)) for s in sources],
                     "dedup lookup").values():
        meta.update(part)
    kept, dropped, counts = dedup_ranked(ids.tolist(), meta, req.dedup)
    rank = {i: r for r, i in enumerate(ids.tolist())}
    kept = kept[:req.top_k]
    last = rank[kept[-1]] if kept else -1
    dropped = [d for d in dropped if rank[d] < last]  # only those above the cutoff matter
    sel = np.array([rank[i] for i in kept], dtype=np.int64)
    return keys[sel], ids[sel], dropped, {f"duplicate_{f}": n for f, n in counts.items()}


def select(sources: list[ShardSource], req: CurateRequest):
    """(keys, ids, dropped duplicate ids, counts, rows scanned, nan excluded), exact."""
    margin = 0 if not req.dedup else max(1000, req.top_k // 20)
    while True:
        sel = _select(sources, req.top_k + margin)
        keys, ids = sel.result()
        if not req.dedup:
            return keys, ids, [], {}, sel.seen, sel.excluded_nan
        k_keys, k_ids, dropped, counts = _dedup(sources, req, keys, ids)
        exhausted = len(ids) < req.top_k + margin
        if len(k_ids) >= req.top_k or exhausted:
            return k_keys, k_ids, dropped, counts, sel.seen, sel.excluded_nan
        margin *= 4  # more duplicates than spare candidates: widen and select again


def curate(workspace: Path, req: CurateRequest, ray_address: str | None, console) -> Dataset:
    check_name(req.out_name)
    sources, src_row, score_info = _sources(workspace, req)
    args = {"top_k": req.top_k, "dataset": req.dataset, "score": req.score, "dedup": req.dedup,
            "name": req.out_name}
    with jobs.dataset_job(workspace, f"vilactl curate coyo --top-k {req.top_k} --dataset "
                          f"{req.dataset}", args, req.out_name, src_row["kind"],
                          req.replace) as job, \
            ray_session(ray_address):
        keys, ids, dropped, dup_counts, seen, nan = select(sources, req)
        if len(ids) < req.top_k:
            console.print(f"[yellow]warning:[/yellow] only {len(ids)} eligible rows for "
                          f"K={req.top_k}: keeping all of them")
        cutoff = cutoff_of(keys, ids)
        rows = _write(sources, cutoff, np.array(dropped, dtype=np.int64), job.dir) \
            if cutoff else {}
        if sum(rows.values()) != len(ids) or len(np.unique(ids)) != len(ids):  # a shared id
            raise VilactlError(
                f"dataset {req.dataset!r} holds rows with the same id among the selected "
                f"({sum(rows.values())} rows for {len(ids)} ids); ids must be unique — "
                "register the metadata again (register refuses duplicates)")
        return _dataset(job, req, src_row, score_info, rows, cutoff,
                        {"rows_scanned": seen, "excluded_non_finite": nan, **dup_counts})


def _write(sources, cutoff, dropped, folder: Path) -> dict:
    calls = [(s.data, (shards_mod.shard_write, s, cutoff, dropped,
                       str(folder / f"part-{Path(s.data).stem.removeprefix('part-')}.parquet")))
             for s in sources]
    return _run(calls, "write")


def _dataset(job, req, src_row, score_info, rows, cutoff, counts) -> Dataset:
    shards = [job.shard(f, pq.ParquetFile(f).metadata.num_rows)
              for f in sorted(job.dir.glob("part-*.parquet"))]
    n = sum(rows.values())
    ds = Dataset(name=req.out_name, kind=src_row["kind"], format="parquet",
                 uri=resolve(job.folder), num_samples=n, num_images=n, num_texts=n,
                 num_bytes=sum(s.bytes for s in shards), parents=[req.dataset],
                 params={**score_info, "top_k": req.top_k, "dedup": req.dedup})
    params = {**score_info, "tie_id": cutoff.id if cutoff else None, "excluded": {
        k: v for k, v in counts.items() if k != "rows_scanned"}, "dedup": req.dedup}
    job.counts.update({**counts, "selected": n})

    job.dataset(ds, shards)
    job.commit(lambda con: record_selection(
        con, req.out_name, req.dataset, score_info["score_expr"], req.top_k,
        cutoff.score if cutoff else None, counts["rows_scanned"], n, params, job.run.id))
    return ds
