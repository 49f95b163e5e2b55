"""`vilactl curate coyo --top-k K`: the exact global top-K pairs by score, deduplicated.

Three Ray passes over the shards, each streaming record batches of only the columns it needs
(curation/shard_select.py), so memory does not grow with N, K or the file size:
  count     each shard's scores per bucket → the bucket of the K-th row (histogram_select.py)
  boundary  each shard's best rows inside that bucket → the exact cutoff (score, id) and how
            many rows every shard contributes
  write     shards grouped into output parts of a known size, written in row groups of
            ≥ 64k rows (or ~128 MB) with their `score` column
With --dedup the rows at or above the cutoff (K plus a margin) are gathered with their url /
pHash, deduplicated best first (curation/dedup.py) — memory O(K) there, inherent to dedup —
and the cutoff moves down to the K-th kept row. The selection (K, rows scanned, cutoff and tie
id, exclusions by reason, score source, model) goes to the catalog's `selections` table, the rows
to a new dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vilactl.base.errors import VilactlError
from vilactl.base.paths import check_name
from vilactl.catalog import jobs
from vilactl.catalog.rows import Dataset, record_selection, resolve
from vilactl.curation import histogram_select as hs
from vilactl.curation import shard_select as shards_mod
from vilactl.curation.dedup import DEDUP_FIELDS, check_fields, dedup_ranked
from vilactl.curation.topk import Cutoff
from vilactl.pipeline.jobs.curate_plan import (
    SourcePlan,
    group_rows,
    plan_parts,
    plan_sources,
    task_bytes,
)
from vilactl.pipeline.services.ray_runtime import call, ray_session, run_tasks


@dataclass
class CurateRequest:
    top_k: int
    dataset: str | None = None          # None: the newest COYO dataset not made by curate
    score: str | None = None            # expression; None = the recomputed CLIP score
    dedup: list[str] = field(default_factory=list)
    name: str | None = None
    replace: bool = False

    def out_name(self, dataset: str) -> str:
        return self.name or f"{dataset}_top{self.top_k}"


@dataclass
class Selection:
    cutoff: Cutoff | None
    per_shard: list[int]                # selected rows of each source, in order
    dropped: np.ndarray                 # duplicate ids ranked above the cutoff
    counts: dict                        # rows_scanned, excluded_non_finite, duplicate_*


class Passes:
    """Runs one pass over every source as Ray tasks; failures become one line."""

    def __init__(self, plan: SourcePlan, console):
        self.plan, self.console = plan, console

    def run(self, fn, args: tuple, what: str, memory: int, rows_of=None) -> list:
        """fn(source, *args) for every source, in source order."""
        calls = [(str(i), (fn, s, *args)) for i, s in enumerate(self.plan.sources)]
        return self._run(calls, what, memory, rows_of, "shards")

    def _run(self, calls, what, memory, rows_of, unit) -> list:
        # Retried when a worker dies (OOM, lost node); an exception is the data's, not luck's.
        results, errors = run_tasks(call, calls, num_cpus=1, retries=2, memory=memory,
                                    retry_exceptions=False,
                                    describe=f"curate: {what}", rows_of=rows_of,
                                    console=self.console, unit=unit)
        if errors:
            name, err = sorted(errors.items(), key=lambda kv: int(kv[0]))[0]
            shard = self.plan.sources[int(name)].data if unit == "shards" else f"part {name}"
            raise VilactlError(f"curate failed ({what}) on {shard}: {err}")
        return [results[str(i)] for i in range(len(calls))]


def _cutoff(passes: Passes, k: int) -> tuple[Cutoff | None, list[int], dict]:
    """Count + boundary passes: the exact cutoff of the top k and the rows of each shard."""
    plan = passes.plan
    hists = passes.run(shards_mod.shard_histogram, (), "count",
                       plan.memory_scan, rows_of=lambda h: h.seen)
    total = hs.Histogram()
    for h in hists:
        total.merge(h)
    counts = {"rows_scanned": total.seen, "excluded_non_finite": total.excluded}
    b = hs.boundary(total, k)
    if b is None:
        return None, [0] * len(plan.sources), counts
    parts = passes.run(shards_mod.shard_boundary, (b,), "boundary",
                       plan.memory_scan + 48 * b.need)
    cutoff = hs.exact_cutoff(((keys, ids) for _, keys, ids in parts), b.need)
    per_shard = [above + int(np.count_nonzero(cutoff.keep_keys(keys, ids)))
                 for above, keys, ids in parts]
    return cutoff, per_shard, counts


def _dedup(passes: Passes, req: CurateRequest) -> Selection:
    """Select K + margin, drop duplicates best first, widen the margin until K remain."""
    columns = [DEDUP_FIELDS[f] for f in req.dedup]
    margin = max(1000, req.top_k // 20)
    while True:
        cutoff, _, counts = _cutoff(passes, req.top_k + margin)
        if cutoff is None:
            return Selection(None, [0] * len(passes.plan.sources), np.empty(0, np.int64), counts)
        tables = passes.run(shards_mod.shard_gather, (cutoff, columns), "gather",
                            passes.plan.memory_scan + 64 * (req.top_k + margin))
        shard_of = np.concatenate([np.full(t.num_rows, i) for i, t in enumerate(tables)])
        rows = pa.concat_tables(tables, promote_options="permissive")
        keys, ids = rows.column("key").to_numpy(), rows.column("id").to_numpy()
        order = _rank(keys, ids)
        meta = {i: {c: v for c, v in zip(columns, vals)} for i, *vals in zip(
            ids.tolist(), *(rows.column(c).to_pylist() for c in columns))}
        kept, dropped, dups = dedup_ranked(ids[order].tolist(), meta, req.dedup)
        exhausted = len(ids) < req.top_k + margin
        if len(kept) >= req.top_k or exhausted:
            return _dedup_selection(ids, keys, order, kept[:req.top_k], dropped, shard_of,
                                    {**counts, **{f"duplicate_{f}": n for f, n in dups.items()}},
                                    len(tables))
        margin *= 4  # more duplicates than spare candidates: widen and select again


def _rank(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of the rows best first: key desc, id asc."""
    return np.lexsort((ids, ~keys))


def _dedup_selection(ids, keys, order, kept, dropped, shard_of, counts, n) -> Selection:
    if not kept:
        return Selection(None, [0] * n, np.empty(0, np.int64), counts)
    pos = {i: p for p, i in enumerate(ids.tolist())}
    last = pos[kept[-1]]
    cutoff = Cutoff(int(keys[last]), ids[last].item())
    rank = {ids[p].item(): r for r, p in enumerate(order)}
    dropped = [d for d in dropped if rank[d] < rank[kept[-1]]]  # only those above the cutoff
    per_shard = np.bincount([shard_of[pos[i]] for i in kept], minlength=n).tolist()
    return Selection(cutoff, per_shard, np.array(dropped, dtype=ids.dtype), counts)


def select(passes: Passes, req: CurateRequest) -> Selection:
    """The exact selection (cutoff, rows per shard, dropped duplicates, counts)."""
    if req.dedup:
        return _dedup(passes, req)
    cutoff, per_shard, counts = _cutoff(passes, req.top_k)
    return Selection(cutoff, per_shard, np.empty(0, np.int64), counts)


def curate(workspace: Path, req: CurateRequest, ray_address: str | None, console) -> Dataset:
    if not 0 < req.top_k < 2**63:
        raise VilactlError(f"--top-k must be a positive integer below 2^63, got {req.top_k}")
    check_fields(req.dedup)
    plan = plan_sources(workspace, req.dataset, req.score, console)
    out_name = req.out_name(plan.dataset)
    check_name(out_name)
    args = {"top_k": req.top_k, "dataset": plan.dataset, "score": req.score,
            "dedup": req.dedup, "name": out_name}
    with jobs.dataset_job(workspace, f"vilactl curate coyo --top-k {req.top_k} --dataset "
                          f"{plan.dataset}", args, out_name, plan.row["kind"],
                          req.replace) as job, ray_session(ray_address):
        passes = Passes(plan, console)
        sel = select(passes, req)
        n = sum(sel.per_shard)
        if n == 0:
            raise VilactlError(
                f"no row of {plan.dataset!r} has a finite score under "
                f"{plan.score_info['score_expr']!r} ({sel.counts['rows_scanned']} rows, "
                f"{sel.counts['excluded_non_finite']} NaN, infinite or null): nothing to select")
        if n < req.top_k:
            console.print(f"[yellow]warning:[/yellow] only {n} eligible rows for "
                          f"K={req.top_k}: keeping all of them")
        rows = _write(passes, sel, job.dir) if sel.cutoff else 0
        _check_unique(plan.dataset, job.dir, rows, n)
        return _dataset(job, req, plan, out_name, rows, sel)


def _check_unique(dataset: str, folder: Path, rows: int, n: int) -> None:
    """Ids key downloads and ties: register refuses duplicates, but a file can change behind
    the catalog's back. A shared id at the cutoff shows as a count mismatch; anywhere else only
    a check of the selection finds it (out of core, in DuckDB's fixed budget)."""
    from vilactl.catalog.checks import duplicate_keys

    dup = rows != n
    if not dup and rows:
        dup = duplicate_keys(sorted(folder.glob("part-*.parquet")), "id",
                             temp=folder / ".dup-check")[0] > 0
    if dup:
        raise VilactlError(
            f"dataset {dataset!r} holds rows with the same id among the selected "
            f"({rows} rows written for {n} selected); ids must be unique — register the "
            "metadata again (register refuses duplicates)")


def _write(passes: Passes, sel: Selection, folder: Path) -> int:
    plan = passes.plan
    size = group_rows(plan.bytes_per_row)
    parts = plan_parts(sel.per_shard, plan.schema_keys, size)
    calls = []
    for p, (members, rows) in enumerate(parts):
        srcs = [plan.sources[i] for i in members]
        n_groups = max(1, round(rows / size))
        calls.append((str(p), (shards_mod.part_write, srcs, sel.cutoff, sel.dropped,
                               str(folder / f"part-{p:05d}.parquet"), -(-rows // n_groups))))
    memory = task_bytes(plan.bytes_per_row, size, plan.row_group_bytes)
    return sum(passes._run(calls, "write", memory, lambda r: r, "parts"))


def _dataset(job, req, plan: SourcePlan, out_name: str, n: int, sel: Selection) -> Dataset:
    shards = [job.shard(f, pq.ParquetFile(f).metadata.num_rows)
              for f in sorted(job.dir.glob("part-*.parquet"))]
    ds = Dataset(name=out_name, kind=plan.row["kind"], format="parquet", uri=resolve(job.folder),
                 num_samples=n, num_images=n, num_texts=n,
                 num_bytes=sum(s.bytes for s in shards), parents=[plan.dataset],
                 params={**plan.score_info, "top_k": req.top_k, "dedup": req.dedup})
    cutoff = sel.cutoff
    params = {**plan.score_info, "tie_id": cutoff.id if cutoff else None, "excluded": {
        k: v for k, v in sel.counts.items() if k != "rows_scanned"}, "dedup": req.dedup}
    job.counts.update({**sel.counts, "selected": n})
    job.dataset(ds, shards)
    job.commit(lambda con: record_selection(
        con, out_name, plan.dataset, plan.score_info["score_expr"], req.top_k,
        cutoff.score if cutoff else None, sel.counts["rows_scanned"], n, params, job.run.id))
    return ds
