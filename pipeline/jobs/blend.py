"""`vilactl blend`: seeded, image-proportioned mixtures of catalog datasets as Parquet shards.

Plan (curation/blend_plan.py) → scatter → gather. The planner draws each component's samples and
gives every sample its place in one global shuffle. Scatter reads each source shard once, takes
the drawn rows (repeats included), and files them under the output shard their place falls in —
in memory, spilled to Arrow files under the temp folder past `memory_bytes`, so a blend larger
than RAM still reads every source once. Gather sorts each output shard by place, merges grouped
pairs, and writes it with row groups sized for streaming. Everything is written into a temp
folder that is renamed into place, then the blend (and a dataset of kind `blend` with its
`samples_<name>` view) lands in the catalog in one transaction: a killed blend leaves nothing.
"""
from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.paths import check_name
from vilactl.base.progress import tracked
from vilactl.catalog import jobs
from vilactl.catalog.rows import (
    Dataset,
    Shard,
    dataset_shards,
    record_blend,
    resolve,
)
from vilactl.curation.blend_plan import Plan, Supply, check_weights, plan
from vilactl.curation.blend_rows import PAIR_KINDS, as_samples, blendable_problem, merge_groups
from vilactl.curation.hf_layout import hf_samples
from vilactl.curation.records import SAMPLE_SCHEMA, segment_counts

UNIT_RULE = ("weights are shares of images; a text-only component counts samples instead")


@dataclass
class BlendRequest:
    weights: dict[str, float]          # dataset → weight, in the order given
    images: int | None = None          # None: the most reachable without repeating a sample
    seed: int = 0
    name: str | None = None
    coyo_group: int = 1                # pairs merged into one sample
    allow_upsample: bool = False
    normalize: bool = False
    shard_size: int = 4096             # samples per output shard
    row_group_size: int = 256
    memory_bytes: int = 2 << 30        # scatter buffer before spilling to disk
    replace: bool = False

    @property
    def out_name(self) -> str:
        return self.name or "blend_" + "_".join(f"{d}{round(w * 100)}"
                                                for d, w in self.weights.items())


@dataclass
class Source:
    dataset: str
    kind: str
    paths: list[str]
    starts: np.ndarray                 # first sample index of each shard
    images: np.ndarray                 # per sample


def _source(workspace: Path, name: str) -> Source:
    row, paths = dataset_shards(workspace, name)
    if not paths:
        raise VilactlError(f"component {name!r} has no samples (no finished shards)")
    problem = blendable_problem(row["kind"], pq.read_schema(paths[0]))
    if problem:
        raise VilactlError(f"component {name!r} ({row['kind']}) {problem}")
    counts = []
    for p in paths:
        if row["kind"] in PAIR_KINDS:
            counts.append(np.ones(pq.ParquetFile(p).metadata.num_rows, np.int64))
        else:
            # Only the text leaf is read: images are counted without reading their bytes.
            texts = pq.ParquetFile(p).read(columns=["segments.list.element.text"])
            counts.append(segment_counts(texts["segments"])[0])
    starts = np.cumsum([0] + [len(c) for c in counts[:-1]])
    return Source(name, row["kind"], paths, starts, np.concatenate(counts))


@dataclass
class Buckets:
    """Rows filed by output shard; spilled to uncompressed Arrow files past a byte budget."""
    spill_dir: Path
    budget: int
    parts: dict[int, list[pa.Table]] = field(default_factory=dict)
    spilled: dict[int, list[Path]] = field(default_factory=dict)
    held: int = 0

    def add(self, table: pa.Table, shard: np.ndarray) -> None:
        """File rows already sorted by place (so by shard too)."""
        for j in np.unique(shard):
            lo, hi = np.searchsorted(shard, [j, j + 1])
            self.parts.setdefault(int(j), []).append(table.slice(lo, hi - lo))
        self.held += table.nbytes
        if self.held > self.budget:
            self.spill()

    def spill(self) -> None:
        self.spill_dir.mkdir(exist_ok=True)
        for j, parts in self.parts.items():
            files = self.spilled.setdefault(j, [])
            path = self.spill_dir / f"{j:06d}-{len(files):04d}.arrow"
            feather.write_feather(pa.concat_tables(parts), path, compression="uncompressed")
            files.append(path)
        self.parts, self.held = {}, 0

    def take(self, j: int) -> pa.Table:
        tables = [feather.read_table(p) for p in self.spilled.pop(j, [])]
        tables += self.parts.pop(j, [])
        for p in self.spill_dir.glob(f"{j:06d}-*.arrow"):
            p.unlink()
        return pa.concat_tables(tables)


def _ordered(fn, items: list, workers: int = 2):
    """fn over items on `workers` threads (pyarrow's I/O and compute release the GIL), results
    in order, at most workers + 1 in flight so memory stays bounded."""
    with ThreadPoolExecutor(workers) as pool:
        pending = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()


def _scatter(sources: list[Source], p: Plan, req: BlendRequest, buckets: Buckets,
             quiet: bool) -> None:
    """Read each drawn source shard once; file its rows, by place, under their output shard."""
    first = np.cumsum([0] + [len(d.rows) for d in p.draws])   # plan rows are by component
    shard_of = [np.searchsorted(s.starts, d.rows, side="right") - 1
                for s, d in zip(sources, p.draws)]

    def read(job: tuple[int, int, np.ndarray]) -> pa.Table:
        i, k, mine = job
        src, d = sources[i], p.draws[i]
        sel = first[i] + mine
        cols = ["id", "text", "image"] if src.kind in PAIR_KINDS else SAMPLE_SCHEMA.names
        table = pq.read_table(src.paths[k], columns=cols)
        table = as_samples(table.take(pa.array(d.rows[mine] - src.starts[k])), src.kind)
        return (table.append_column("component", pa.array([src.dataset] * len(mine)))
                .append_column("epoch", pa.array(d.epoch[mine]))
                .append_column("pos", pa.array(p.position[sel]))
                .append_column("member", pa.array(p.member[sel])))

    jobs = []
    for i, src in enumerate(sources):
        for k in range(len(src.paths)):
            mine = np.flatnonzero(shard_of[i] == k)
            if len(mine):   # sorted by place, so one take files rows in shard order
                jobs.append((i, k, mine[np.argsort(p.position[first[i] + mine], kind="stable")]))
    tables = _ordered(read, jobs)
    for table in tracked(tables, "blend: reading", len(jobs), "source files", quiet):
        buckets.add(table, table["pos"].to_numpy() // req.shard_size)


def _gather(tmp: Path, p: Plan, req: BlendRequest, buckets: Buckets, quiet: bool,
            stats: dict[str, Counter]) -> list[dict]:
    """Write the output shards in place order, two at a time; images and text words counted
    per shard and per component."""
    def write(j: int) -> tuple[dict, dict]:
        # images as HF `Image` structs, so `datasets` and the Hub viewer show them as images
        table = hf_samples(merge_groups(buckets.take(j)))
        path = tmp / f"part-{j:05d}.parquet"
        atomic.write_parquet(path, table, row_group_size=req.row_group_size)
        images, words = segment_counts(table["segments"])
        comp = table["component"].to_numpy(zero_copy_only=False)
        per = {name: (int(images[comp == name].sum()), int(words[comp == name].sum()))
               for name in np.unique(comp)}
        return {"file": path.name, "rows": table.num_rows, "images": int(images.sum()),
                "text_words": int(words.sum()), "bytes": path.stat().st_size,
                "sha256": atomic.sha256_file(path)}, per

    n_out = -(-p.num_samples // req.shard_size)
    done = _ordered(write, list(range(n_out)))
    out = []
    for shard, per in tracked(done, "blend: writing", n_out, "shards", quiet):
        out.append(shard)
        for name, (images, words) in per.items():
            stats[name].update(images=images, text_words=words)
    return out


def _components(p: Plan, sources: list[Source], stats: dict) -> list[dict]:
    return [{"dataset": d.dataset, "kind": s.kind, "unit": d.unit, "weight": d.weight,
             "target_units": d.target, "units": d.units,
             "achieved_share": p.achieved_share(d), "num_samples": d.num_samples,
             "num_rows_drawn": len(d.rows), "num_images": d.images, "repeats": d.repeats,
             "group": d.group, "num_text_words": stats[d.dataset]["text_words"]}
            for d, s in zip(p.draws, sources)]


def blend(workspace: Path, req: BlendRequest, quiet: bool = False) -> dict:
    """Make and register the blend; returns its manifest."""
    check_name(req.out_name)
    weights = check_weights(req.weights, req.normalize)
    for opt, v in (("--coyo-group", req.coyo_group), ("--shard-size", req.shard_size),
                   ("--row-group-size", req.row_group_size)):
        if v <= 0:
            raise VilactlError(f"{opt} must be positive, got {v}")
    args = {"weights": req.weights, "normalize": req.normalize, "images": req.images,
            "seed": req.seed, "coyo_group": req.coyo_group, "allow_upsample": req.allow_upsample,
            "shard_size": req.shard_size, "row_group_size": req.row_group_size,
            "name": req.out_name}
    with jobs.dataset_job(workspace, "vilactl blend", args, req.out_name, Kind.BLEND,
                          req.replace, area="blends") as job:
        sources = [_source(workspace, name) for name in weights]
        supplies = [Supply(s.dataset, weights[s.dataset], s.images,
                           req.coyo_group if s.kind in PAIR_KINDS else 1) for s in sources]
        p = plan(supplies, req.seed, req.images, req.allow_upsample)
        tmp = job.dir
        buckets = Buckets(tmp / "_spill", req.memory_bytes)
        _scatter(sources, p, req, buckets, quiet)
        stats = {s.dataset: Counter() for s in sources}
        shards = _gather(tmp, p, req, buckets, quiet, stats)
        if (tmp / "_spill").exists():
            (tmp / "_spill").rmdir()
        manifest = {"format": "vilactl-blend/1", "name": req.out_name, "seed": req.seed,
                    "unit_rule": UNIT_RULE, "params": args,
                    "components": _components(p, sources, stats), "shards": shards,
                    "num_samples": sum(s["rows"] for s in shards),
                    "num_images": sum(s["images"] for s in shards),
                    "num_text_words": sum(s["text_words"] for s in shards)}
        atomic.write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        _record(job, manifest)
    return manifest


def _record(job, m: dict) -> None:
    folder = job.folder
    shards = [Shard(path=resolve(folder / s["file"]), rows=s["rows"], bytes=s["bytes"],
                    checksum=s["sha256"], counts={"images": s["images"],
                                                  "text_words": s["text_words"]})
              for s in m["shards"]]
    parents = [c["dataset"] for c in m["components"]]
    ds = Dataset(name=m["name"], kind=Kind.BLEND, format="parquet", uri=resolve(folder),
                 num_samples=m["num_samples"], num_images=m["num_images"], num_texts=None,
                 num_bytes=sum(s.bytes for s in shards), parents=parents, params=m["params"])
    job.counts.update(samples=m["num_samples"], images=m["num_images"],
                      text_words=m["num_text_words"])

    job.dataset(ds, shards, text_words=m["num_text_words"])
    job.commit(lambda con: record_blend(con, m, resolve(folder), parents, job.run.id))
