"""`vilactl score`, `vilactl curate`, `vilactl build`: the curation commands (their work is in
pipeline/jobs/score.py, curate.py and build.py)."""
from __future__ import annotations

import typer
from rich.markup import escape

from vilactl.base.errors import VilactlError
from vilactl.base.ranges import check_range
from vilactl.pipeline.cli.choices import CoyoCorpus, ImageOrder, Mmc4Corpus, Mmc4Variant
from vilactl.pipeline.cli.context import COUNT, NON_NEGATIVE, SEED, console, in_range, state


def score(
    dataset: str = typer.Argument(..., help="A downloaded dataset with images (coyo-images)."),
    model: str = typer.Option("ViT-B-32", help="open_clip model name (vilactl-demo-clip for "
                                               "the demo's own)."),
    pretrained: str | None = typer.Option("openai", help="open_clip weights tag or a local "
                                                         "checkpoint path (.safetensors)."),
    batch_size: int = typer.Option(256, callback=COUNT, help="Pairs per forward pass."),
    name: str | None = typer.Option(None, help="Output dataset (default <DATASET>_scores)."),
    replace: bool = typer.Option(False, "--replace", help="Recompute all shards."),
) -> None:
    """CLIP image–text similarity per pair (open_clip, Ray Data actor pool), resumable."""
    from vilactl.curation.clip_scorer import ScorerSpec
    from vilactl.pipeline.jobs.score import ScoreRequest
    from vilactl.pipeline.jobs.score import score as run

    req = ScoreRequest(dataset, ScorerSpec(model, pretrained or None), name, batch_size, replace)
    ds = run(state.workspace, req, state.ray_address, console)
    console.print(f"scored [bold]{ds.name}[/bold]: {ds.num_samples} pairs")


def curate(
    corpus: CoyoCorpus = typer.Argument("coyo", help="coyo (image-text pairs)."),  # noqa: ARG001
    top_k: int = typer.Option(..., "--top-k", callback=COUNT,
                              help="Keep exactly this many pairs (VILA: 25000000 of COYO-700M)."),
    dataset: str | None = typer.Option(None, help="Dataset to select from (COYO metadata or "
                                                  "downloaded images); default: the newest "
                                                  "one curate did not make."),
    score: str | None = typer.Option(None, help="Expression over its columns, evaluated in "
                                                "float64, e.g. 'clip_similarity_vitb32 + "
                                                "clip_similarity_vitl14'. Default: the scores "
                                                "of `vilactl score` if the dataset has them, "
                                                "else that sum (VILA's)."),
    dedup: str | None = typer.Option(None, help="Comma list: url, phash (keep the best of each "
                                                "group; default: no deduplication)."),
    name: str | None = typer.Option(None, help="Output dataset (default <DATASET>_top<K>)."),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing output."),
) -> None:
    """Exact global top-K by (score desc, id asc) on Ray: two counting passes over the score
    columns, then one write pass; memory does not grow with K or N."""
    from vilactl.pipeline.jobs.curate import CurateRequest
    from vilactl.pipeline.jobs.curate import curate as run

    fields = [f for f in (dedup or "").split(",") if f]
    req = CurateRequest(top_k, dataset, score, fields, name, replace)
    ds = run(state.workspace, req, state.ray_address, console)
    console.print(f"curated [bold]{escape(ds.name)}[/bold]: {ds.num_samples} pairs → "
                  f"{escape(ds.uri)}", soft_wrap=True)


def build(
    corpus: Mmc4Corpus = typer.Argument("mmc4", help="mmc4 (documents)."),  # noqa: ARG001
    variant: Mmc4Variant = typer.Option(..., help="interleaved: images before their matched "
                                                  "sentence (VILA's MMC4); after; shuffled (a "
                                                  "control); pairs: each image with its "
                                                  "sentence."),
    dataset: str = typer.Option("mmc4", help="Downloaded MMC4 documents (mmc4-images)."),
    max_images: int = typer.Option(6, callback=COUNT,
                                   help="Images KEPT per document in the output (VILA: 6; "
                                        "which ones: --image-order)."),
    image_order: ImageOrder = typer.Option("page", help="page: the first --max-images images "
                                                        "in page order (VILA); sentence: those "
                                                        "matched to the earliest sentences."),
    seed: int = typer.Option(0, callback=SEED, help="Seed of the shuffled variant."),
    min_sentences: int = typer.Option(4, callback=NON_NEGATIVE,
                                      help="Filter: drop documents with fewer sentences."),
    max_sentences: int = typer.Option(40, callback=NON_NEGATIVE,
                                      help="Filter: drop documents with more sentences."),
    min_images: int = typer.Option(2, callback=NON_NEGATIVE,
                                   help="Filter: drop documents with fewer images."),
    max_images_per_doc: int = typer.Option(15, callback=NON_NEGATIVE,
                                           help="Filter: drop documents with MORE images than "
                                                "this (mmc4-core); unlike --max-images, which "
                                                "trims the kept ones."),
    min_strong_share: float = typer.Option(0.75, callback=in_range(0, 1),
                                           help="Filter: share of a document's image "
                                                "assignments that must have similarity > 0.25."),
    min_side: int = typer.Option(0, callback=NON_NEGATIVE,
                                 help="Filter: smallest image side in pixels (0: any)."),
    max_aspect: float = typer.Option(0.0, callback=NON_NEGATIVE,
                                     help="Filter: largest aspect ratio, long side / short "
                                          "side: 0 (any) or ≥ 1."),
    name: str | None = typer.Option(None, help="Output dataset (default <DATASET>_<VARIANT>)."),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing output."),
    rescore: bool = typer.Option(False, "--rescore", help="Recompute each document's "
                                 "similarity matrix with a CLIP before assigning images."),
    model: str = typer.Option("ViT-L-14", help="--rescore: open_clip model (MMC4 used ViT-L-14)."),
    pretrained: str | None = typer.Option("openai", help="--rescore: weights tag or path."),
) -> None:
    """Build an MMC4 variant in the training-sample schema, with mmc4-core filters; documents
    dropped by the filters are counted by reason."""
    from vilactl.curation.clip_scorer import ScorerSpec
    from vilactl.curation.mmc4_variants import CoreFilter
    from vilactl.pipeline.jobs.build import BuildRequest, build_variant

    check_range(max_sentences, "--max-sentences", min_sentences, lo_name="--min-sentences")
    check_range(max_images_per_doc, "--max-images-per-doc", min_images,
                lo_name="--min-images")
    if 0 < max_aspect < 1:                # a long/short side ratio is never below 1
        raise VilactlError(f"--max-aspect must be 0 (any) or ≥ 1, got {max_aspect}")
    core = CoreFilter(min_sentences, max_sentences, min_images, max_images_per_doc,
                      min_strong_share=min_strong_share, min_side=min_side,
                      max_aspect=max_aspect)
    spec = ScorerSpec(model, pretrained or None) if rescore else None
    req = BuildRequest(variant.value, dataset, max_images, seed, name, replace, core, spec,
                       image_order.value)
    ds = build_variant(state.workspace, req, state.ray_address, console,
                       quiet=not console.is_terminal)
    console.print(f"built [bold]{ds.name}[/bold]: {ds.num_samples} samples, "
                  f"{ds.num_images} images → {escape(ds.uri)}")
