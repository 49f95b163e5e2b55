"""`vilactl build mmc4 --variant …`: MMC4 documents with images → training samples, per shard.

Each shard of a downloaded MMC4 dataset (kind mmc4-images) is filtered (mmc4-core style,
counted per reason) and turned into one variant (curation/mmc4_variants.py) by a Ray task that
writes `part-<shard>.parquet` in the training-sample schema. The folder is renamed into place
when every shard is done; the dataset (kind `mmc4-<variant>`, with its counts and text words)
and the run land in the catalog in one transaction.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.paths import check_name
from vilactl.base.vocab import IMAGE_ORDERS
from vilactl.catalog import jobs
from vilactl.catalog.rows import Dataset, dataset_shards, resolve
from vilactl.curation.clip_scorer import ClipScorer, ScorerSpec
from vilactl.curation.mmc4_build import build_shard
from vilactl.curation.mmc4_variants import VARIANTS, CoreFilter
from vilactl.pipeline.services.ray_runtime import call, ray_session, run_tasks


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
    image_order: str = "page"             # which max_images images: first in page (VILA)

    @property
    def out_name(self) -> str:
        return self.name or f"{self.dataset}_{self.variant}"


def _kept_line():
    """Progress status: documents kept of those read so far."""
    seen = Counter()

    def line(_name, c: dict | None) -> str:
        if c:
            seen.update(read=c["documents_in"], kept=c["documents_kept"])
        return f"{seen['kept']:,} of {seen['read']:,} documents kept"
    return line


def build_variant(workspace: Path, req: BuildRequest, ray_address: str | None,
                  console=None, quiet: bool = False) -> Dataset:
    if req.variant not in VARIANTS:
        raise VilactlError(f"--variant must be one of {', '.join(VARIANTS)}, got {req.variant!r}")
    if req.max_images <= 0:
        raise VilactlError(f"--max-images must be positive, got {req.max_images}")
    if req.image_order not in IMAGE_ORDERS:
        raise VilactlError(f"--image-order must be one of {', '.join(IMAGE_ORDERS)}, got "
                           f"{req.image_order!r}")
    check_name(req.out_name)
    row, paths = dataset_shards(workspace, req.dataset)
    if row["kind"] != Kind.MMC4_IMAGES:
        raise VilactlError(f"dataset {req.dataset!r} is {row['kind']}; build takes downloaded "
                           f"MMC4 documents (vilactl download mmc4 --from-dataset "
                           f"{req.dataset})")
    args = {"variant": req.variant, "dataset": req.dataset, "max_images": req.max_images,
            "seed": req.seed, "filters": asdict(req.core), "name": req.out_name,
            "rescore": _describe(req.rescore), "image_order": req.image_order}
    with jobs.dataset_job(workspace, f"vilactl build mmc4 --variant {req.variant}", args,
                          req.out_name, Kind.mmc4_variant(req.variant), req.replace) as job, \
            ray_session(ray_address):
        calls = [(p, (build_shard, p, str(job.dir / Path(p).name), req.variant,
                      req.max_images, req.seed, req.core, req.rescore, req.image_order))
                 for p in paths]
        results, errors = run_tasks(call, calls, num_cpus=0.5, retries=1,
                                    describe=f"build {req.variant}", quiet=quiet,
                                    on_done=_kept_line())
        if errors:
            name, err = sorted(errors.items())[0]
            raise VilactlError(f"build failed on shard {name}: {err}")
        ds = _dataset(job, req, paths, results, args)
    warning = dropped_line(job.counts)
    if warning and console is not None:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    return ds


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
    ds = Dataset(name=req.out_name, kind=Kind.mmc4_variant(req.variant), format="parquet",
                 uri=resolve(job.folder), num_samples=total["samples"],
                 num_images=total["images"], num_texts=total["sentences"],
                 num_bytes=sum(s.bytes for s in shards), parents=[req.dataset], params=args)
    job.counts.update({**dict(total), "dropped": dict(sorted(dropped.items()))})
    job.dataset(ds, shards, text_words=total["text_words"])
    return ds


def dropped_line(counts: dict) -> str | None:
    """A warning when the filters dropped every document, with the counts by reason."""
    if counts.get("documents_in") and not counts.get("documents_kept"):
        reasons = ", ".join(f"{k} {v}" for k, v in counts["dropped"].items())
        return (f"every one of {counts['documents_in']} documents was dropped ({reasons}); "
                "loosen the filters (--min-sentences, --min-images, --min-strong-share, …)")
    return None
