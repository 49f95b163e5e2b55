"""One shard of MMC4 documents (with images) → one variant in the training-sample schema.

Each document is optionally rescored (its similarity matrix recomputed by a CLIP from its own
images), its images assigned to sentences (mmc4_variants.assignment), filtered mmc4-core style
(dropped documents counted per reason) and turned into samples of the variant. Pure file work:
pipeline/jobs/build.py runs `build_shard` as a Ray task per shard.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from vilactl.base import atomic
from vilactl.curation.clip_scorer import ClipScorer, ScorerSpec
from vilactl.curation.images import ImageProblem, open_image
from vilactl.curation.mmc4_variants import CoreFilter, assignment, build, count
from vilactl.curation.records import sample_table


def rescored(doc: dict, scorer: ClipScorer) -> dict:
    """The document with its similarity matrix recomputed by `scorer` from its own images."""
    if not doc["image_info"] or not doc["text_list"]:
        return doc
    pixels = scorer.pixels([open_image(i["image"]) for i in doc["image_info"]])
    return {**doc, "similarity_matrix": scorer.similarity_matrix(pixels, doc["text_list"])
            .tolist()}


def build_shard(src: str, out: str, variant: str, max_images: int, seed: int,
                core: CoreFilter, rescore: ScorerSpec | None = None,
                image_order: str = "page") -> dict:
    """Filter and convert one shard; returns its counts (written atomically to `out`)."""
    samples, dropped = [], Counter()
    docs = 0
    scorer = ClipScorer(rescore) if rescore else None
    for doc in pq.read_table(src).to_pylist():
        docs += 1
        if scorer:
            try:
                doc = rescored(doc, scorer)
            except ImageProblem as e:     # cannot be rescored: dropped like a filtered doc
                dropped["aspect_ratio" if "aspect ratio" in str(e) else "bad_image"] += 1
                continue
        matched, sims = assignment(doc)
        why = core.reason(doc, matched, sims)
        if why:
            dropped[why] += 1
            continue
        made = build(doc, variant, max_images=max_images, seed=seed, image_order=image_order)
        if not made:
            dropped["no_assigned_image"] += 1
        samples.extend(made)
    atomic.write_parquet(Path(out), sample_table(samples), row_group_size=512)
    return {"documents_in": docs, "documents_kept": docs - sum(dropped.values()),
            "dropped": dict(sorted(dropped.items())), **count(samples)}
