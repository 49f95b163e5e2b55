"""`vilactl build mmc4 --variant …`: MMC4 documents with images → training samples, per shard.

Each shard of a downloaded MMC4 dataset (kind mmc4-images) is filtered (mmc4-core style,
counted per reason) and turned into one variant (curation/mmc4_variants.py) by a Ray task that
writes `part-<shard>.parquet` in the training-sample schema. The folder is renamed into place
when every shard is done; the dataset (kind `mmc4-<variant>`, with its counts and text tokens)
and the run land in the catalog in one transaction.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.base.paths import check_name
from vilactl.catalog import jobs
from vilactl.catalog.register import Dataset, dataset_shards, resolve
from vilactl.curation.clip_scorer import ClipScorer, ScorerSpec
from vilactl.curation.mmc4_variants import VARIANTS, CoreFilter, assignment, build, count
from vilactl.curation.records import sample_table
from vilactl.pipeline.ray_runtime import call, ray_session, run_tasks


@dataclass
class BuildRequest:
    variant: str
    dataset: str = "mmc4"
    max_images: int = 6
    seed: int = 0
    name: str | None = None
    replace: bool = False
    core: CoreFilter = field(default_factory=CoreFilter)
    rescore: ScorerSpec | None = None     # recompute similarity matrices with this CLIP

    @property
    def out_name(self) -> str:
        return self.name or f"{self.dataset}_{self.variant}"


def rescored(doc: dict, scorer: ClipScorer) -> dict:
    """The document with its similarity matrix recomputed by `scorer` from its own images."""
    from vilactl.curation.images import open_image

    if not doc["image_info"] or not doc["text_list"]:
        return doc
    pixels = scorer.pixels([open_image(i["image"]) for i in doc["image_info"]])
    return {**doc, "similarity_matrix": scorer.similarity_matrix(pixels, doc["text_list"])
            .tolist()}


def build_shard(src: str, out: str, variant: str, max_images: int, seed: int,
                core: CoreFilter, rescore: ScorerSpec | None = None) -> dict:
    """Filter and convert one shard; returns its counts (written atomically to `out`)."""
    samples, dropped = [], Counter()
    docs = 0
    scorer = ClipScorer(rescore) if rescore else None
    for doc in pq.read_table(src).to_pylist():
        docs += 1
        if scorer:
            doc = rescored(doc, scorer)
        matched, sims = assignment(doc)
        why = core.reason(doc, matched, sims)
        if why:
            dropped[why] += 1
            continue
        made = build(doc, variant, max_images=max_images, seed=seed)
        if not made:
            dropped["no_assigned_image"] += 1
        samples.extend(made)
    atomic.write_parquet(Path(out), sample_table(samples), row_group_size=512)
    return {"documents_in": docs, "documents_kept": docs - sum(dropped.values()),
            "dropped": dict(sorted(dropped.items())), **count(samples)}


def build_variant(workspace: Path, req: BuildRequest, ray_address: str | None) -> Dataset:
    if req.variant not in VARIANTS:
        raise VilactlError(f"--variant must be one of {', '.join(VARIANTS)}, got {req.variant!r}")
    if req.max_images <= 0:
        raise VilactlError(f"--max-images must be positive, got {req.max_images}")
    check_name(req.out_name)
    row, paths = dataset_shards(workspace, req.dataset)
    if row["kind"] != "mmc4-images":
        raise VilactlError(f"dataset {req.dataset!r} is {row['kind']}; build takes downloaded "
                           f"MMC4 documents (vilactl download mmc4 --from-dataset "
                           f"{req.dataset})")
    args = {"variant": req.variant, "dataset": req.dataset, "max_images": req.max_images,
            "seed": req.seed, "filters": asdict(req.core), "name": req.out_name,
            "rescore": _describe(req.rescore)}
    with jobs.dataset_job(workspace, f"vilactl build mmc4 --variant {req.variant}", args,
                          req.out_name, req.replace) as job, ray_session(ray_address):
        calls = [(p, (build_shard, p, str(job.dir / Path(p).name), req.variant,
                      req.max_images, req.seed, req.core, req.rescore)) for p in paths]
        results, errors = run_tasks(call, calls, num_cpus=0.5, retries=1,
                                    describe=f"build {req.variant}", quiet=True)
        if errors:
            name, err = sorted(errors.items())[0]
            raise VilactlError(f"build failed on shard {name}: {err}")
        return _dataset(job, req, paths, results, args)


def _describe(spec: ScorerSpec | None) -> dict | None:
    """Model, weights hash and preprocessing of a rescoring CLIP (validates it up front)."""
    if spec is None:
        return None
    scorer = ClipScorer(spec, device="cpu")
    return spec.describe(scorer.model, scorer.preprocess)


def _dataset(job, req, paths, results, args) -> Dataset:
    shards, total, dropped = [], Counter(), Counter()
    for p in paths:
        c = results[p]
        total.update({k: v for k, v in c.items() if k != "dropped"})
        dropped.update(c["dropped"])
        shards.append(job.shard(job.dir / Path(p).name, c["samples"], source=p, counts=c))
    ds = Dataset(name=req.out_name, kind=f"mmc4-{req.variant}", format="parquet",
                 uri=resolve(job.folder), num_samples=total["samples"],
                 num_images=total["images"], num_texts=total["sentences"],
                 num_bytes=sum(s.bytes for s in shards), parents=[req.dataset], params=args)
    job.counts.update({**dict(total), "dropped": dict(sorted(dropped.items()))})
    job.dataset(ds, shards, text_tokens=total["text_tokens"])
    return ds
