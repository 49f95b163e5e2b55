"""The `vilactl` command line (typer + rich).

Global options pick the workspace (where the catalog and all outputs live) and the Ray cluster.
Problems with the user's input raise VilactlError, which `main` prints as one line on stderr
with exit code 1; usage errors exit 2 (click's convention).
"""
from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path

import typer

from vilactl.base.errors import VilactlError
from vilactl.catalog import db
from vilactl.pipeline import output
from vilactl.pipeline.cli_blend import blend as blend_cmd
from vilactl.pipeline.cli_download import download as download_cmd
from vilactl.pipeline.cli_eval import eval_cmd
from vilactl.pipeline.cli_register_instruct import register_llava as register_llava_cmd
from vilactl.pipeline.cli_register_instruct import register_text_instruct as register_text_cmd
from vilactl.pipeline.cli_train import train as train_cmd
from vilactl.pipeline.context import console, err_console, state


def _flags_without_types() -> None:
    """typer 0.29's help prints `<bool>` beside every flag (`--replace <bool>`, `--help <bool>`),
    which reads as if the flag took a value: show no type for flags (only the rendering)."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "vilactl", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and not self.count else shown(self, ctx)
    display_type_rich.vilactl = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_types()
app = typer.Typer(
    name="vilactl",
    help="Curate MMC4 and COYO into CLIP-filtered, catalogued Parquet blends, and train a "
         "VLM with the VILA recipe (projector init → pretraining → joint SFT).",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
register_app = typer.Typer(help="Validate real-format corpora and record them in the catalog "
                                "(nothing is downloaded).", no_args_is_help=True)
mirror_app = typer.Typer(help="The loopback image mirror used by the demo and the tests.",
                         no_args_is_help=True)
app.add_typer(register_app, name="register")
register_app.command("llava")(register_llava_cmd)
register_app.command("text-instruct")(register_text_cmd)
app.command("download")(download_cmd)
app.command("blend")(blend_cmd)
app.command("train")(train_cmd)
app.command("eval")(eval_cmd)
app.add_typer(mirror_app, name="mirror")


@app.callback()
def _global(
    workspace: Path = typer.Option(Path("workspace"), "--workspace", "-w",
                                   envvar="VILACTL_WORKSPACE",
                                   help="Folder holding catalog.duckdb and every output."),
    ray_address: str | None = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                                              help="Ray cluster to run jobs on; unset means a "
                                                   "local Ray started for the command."),
) -> None:
    state.workspace = workspace
    state.ray_address = ray_address


@app.command()
def report(out: Path | None = typer.Option(None, "--out", help="HTML file to write (default: "
                                                                "<workspace>/report.html)."),
           ) -> None:
    """One self-contained HTML report: counts, CLIP curation with image grids, MMC4 variants,
    blends, loss curves and evals."""
    from vilactl.pipeline.report import build

    path = build(state.workspace, out)
    console.print(f"report written to [bold]{path}[/bold]")


@app.command()
def ablate(
    pretrain_steps: int = typer.Option(80, help="Pretraining steps of each run."),
    sft_steps: int = typer.Option(80, help="SFT steps of each run (identical for all)."),
    config: str | None = typer.Option(None, help="Training config (default: debug)."),
    seed: int = typer.Option(0, help="Seed of the ablation blends."),
) -> None:
    """The paper's pretraining-data ablation on the demo world: COYO, MMC4-pairs, MMC4,
    MMC4+COYO at equal image counts, then identical SFT and evaluation; prints the table."""
    from vilactl.pipeline.ablate import ablate as run

    run(state.workspace, console, pretrain_steps, sft_steps, config, seed)


@app.command()
def init() -> None:
    """Create the workspace and its catalog (idempotent; migrates an older catalog)."""
    path = db.init(state.workspace)
    console.print(f"catalog ready at [bold]{path}[/bold]")


@app.command()
def demo(
    seed: int = typer.Option(0, help="Seed of the embedded world (same seed, same bytes)."),
    size: str = typer.Option("demo", help="World size preset: demo or tiny."),
    force: bool = typer.Option(False, "--force", help="Redo steps that finished earlier."),
    until: str | None = typer.Option(None, help="Stop after this step (e.g. blends)."),
) -> None:
    """Run the whole pipeline on the embedded demo world, resuming finished steps."""
    from vilactl.pipeline.demo import run_demo

    run_demo(state.workspace, seed, size, force, console, state.ray_address, until=until)
    output.print_summary(console, state.workspace)
    report = state.workspace / "report.html"
    if report.exists():
        console.print(f"report: [bold]{report.resolve()}[/bold]")


@app.command()
def world(
    out: Path = typer.Option(..., "--out", help="Folder to write the world to."),
    seed: int = typer.Option(0), size: str = typer.Option("demo", help="demo or tiny."),
) -> None:
    """Write the embedded demo world (COYO/MMC4/instruction/eval files) without a catalog."""
    from vilactl.base import atomic
    from vilactl.curation.world import generate
    from vilactl.pipeline.demo import _config, refuse_foreign

    refuse_foreign(out, "--out")
    with atomic.atomic_dir(out) as tmp:
        manifest = generate(tmp, _config(seed, size))
    for name, c in manifest["counts"].items():
        console.print(f"{name:>14}: {c['samples']} samples, {c['images']} images")


@register_app.command("coyo")
def register_coyo(
    metadata: str = typer.Option(..., help="Glob of COYO-700M metadata Parquet files."),
    name: str = typer.Option("coyo_meta", help="Catalog dataset name."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Validate COYO-700M metadata Parquet (id, url, text required) and record it."""
    from vilactl.pipeline.register import register_coyo as run

    ds = run(state.workspace, metadata, name, replace=replace)
    console.print(f"registered [bold]{ds.name}[/bold]: {ds.num_samples} rows")


@register_app.command("mmc4")
def register_mmc4(
    docs: str = typer.Option(..., help="Glob of MMC4 document files (.jsonl, .jsonl.zip)."),
    name: str = typer.Option("mmc4_docs", help="Catalog dataset name."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Validate MMC4 documents, normalise them to Parquet in the workspace, and record them."""
    from vilactl.pipeline.register import register_mmc4 as run

    ds = run(state.workspace, docs, name, replace=replace)
    console.print(f"registered [bold]{ds.name}[/bold]: {ds.num_samples} documents, "
                  f"{ds.num_images} images, {ds.num_texts} sentences")


@register_app.command("samples")
def register_samples(
    data: str = typer.Option(..., help="Glob of Parquet files in the training-sample schema."),
    name: str = typer.Option(..., help="Catalog dataset name."),
    kind: str = typer.Option("samples", help="Kind recorded in the catalog."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Record Parquet already in the training-sample schema (sample_id, source, segments)."""
    from vilactl.pipeline.register import register_samples as run

    ds = run(state.workspace, data, name, replace=replace, kind=kind)
    console.print(f"registered [bold]{ds.name}[/bold]: {ds.num_samples} samples, "
                  f"{ds.num_images} images")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def score(
    dataset: str = typer.Argument(..., help="A downloaded dataset with images (coyo-images)."),
    model: str = typer.Option("ViT-B-32", help="open_clip model name (vilactl-demo-clip for "
                                               "the demo's own)."),
    pretrained: str | None = typer.Option("openai", help="open_clip weights tag or a local "
                                                         "checkpoint path (.safetensors)."),
    batch_size: int = typer.Option(256, help="Pairs per forward pass."),
    name: str | None = typer.Option(None, help="Output dataset (default <DATASET>_scores)."),
    replace: bool = typer.Option(False, "--replace", help="Recompute all shards."),
) -> None:
    """CLIP image–text similarity per pair (open_clip, Ray Data actor pool), resumable."""
    from vilactl.curation.clip_scorer import ScorerSpec
    from vilactl.pipeline.score import ScoreRequest
    from vilactl.pipeline.score import score as run

    req = ScoreRequest(dataset, ScorerSpec(model, pretrained or None), name, batch_size, replace)
    ds = run(state.workspace, req, state.ray_address, console)
    console.print(f"scored [bold]{ds.name}[/bold]: {ds.num_samples} pairs")


@app.command()
def curate(
    corpus: str = typer.Argument("coyo", help="coyo (image-text pairs)."),
    top_k: int = typer.Option(..., "--top-k", help="Keep exactly this many pairs."),
    dataset: str = typer.Option("coyo", help="Dataset to select from (metadata or images)."),
    score: str | None = typer.Option(None, help="Expression over its columns, e.g. "
                                                "'clip_similarity_vitb32 + clip_similarity_vitl14'"
                                                "; default: the scores of `vilactl score`."),
    dedup: str = typer.Option("", help="Comma list: url, phash (keep the best of each group)."),
    name: str | None = typer.Option(None, help="Output dataset (default <DATASET>_top<K>)."),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing output."),
) -> None:
    """Exact global top-K by (score desc, id asc), O(K + one shard) memory, on Ray."""
    from vilactl.pipeline.curate import CurateRequest
    from vilactl.pipeline.curate import curate as run

    if corpus != "coyo":
        raise VilactlError(f"curate supports coyo, not {corpus!r}")
    req = CurateRequest(top_k, dataset, score, [f for f in dedup.split(",") if f], name, replace)
    ds = run(state.workspace, req, state.ray_address, console)
    console.print(f"curated [bold]{ds.name}[/bold]: {ds.num_samples} pairs → {ds.uri}")


@app.command("build")
def build_cmd(
    corpus: str = typer.Argument("mmc4", help="mmc4 (documents)."),
    variant: str = typer.Option(..., help="interleaved (images before their matched sentence, "
                                          "VILA's MMC4) | after | shuffled (a control) | pairs "
                                          "(each image with its sentence)."),
    dataset: str = typer.Option("mmc4", help="Downloaded MMC4 documents (mmc4-images)."),
    max_images: int = typer.Option(6, help="Images KEPT per document in the output (VILA: 6; "
                                           "which ones: --image-order)."),
    image_order: str = typer.Option("page", help="page: the first --max-images images in page "
                                                 "order (VILA); sentence: those matched to the "
                                                 "earliest sentences."),
    seed: int = typer.Option(0, help="Seed of the shuffled variant."),
    min_sentences: int = typer.Option(4, help="Filter: drop documents with fewer sentences."),
    max_sentences: int = typer.Option(40, help="Filter: drop documents with more sentences."),
    min_images: int = typer.Option(2, help="Filter: drop documents with fewer images."),
    max_images_per_doc: int = typer.Option(15, help="Filter: drop documents with MORE images "
                                                    "than this (mmc4-core); unlike "
                                                    "--max-images, which trims the kept ones."),
    min_strong_share: float = typer.Option(0.75, help="Filter: share of a document's image "
                                                      "assignments that must have similarity "
                                                      "> 0.25."),
    min_side: int = typer.Option(0, help="Filter: smallest image side in pixels (0: any)."),
    max_aspect: float = typer.Option(0.0, help="Filter: largest aspect ratio (0: any)."),
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
    from vilactl.pipeline.build import BuildRequest, build_variant

    if corpus != "mmc4":
        raise VilactlError(f"build supports mmc4, not {corpus!r}")
    core = CoreFilter(min_sentences, max_sentences, min_images, max_images_per_doc,
                      min_strong_share=min_strong_share, min_side=min_side,
                      max_aspect=max_aspect)
    spec = ScorerSpec(model, pretrained or None) if rescore else None
    req = BuildRequest(variant, dataset, max_images, seed, name, replace, core, spec,
                       image_order)
    ds = build_variant(state.workspace, req, state.ray_address, console,
                       quiet=not console.is_terminal)
    console.print(f"built [bold]{ds.name}[/bold]: {ds.num_samples} samples, "
                  f"{ds.num_images} images → {ds.uri}")


@app.command()
def sql(
    query: str = typer.Argument(..., help="Read-only SQL: SELECT, WITH, FROM, DESCRIBE, SHOW, "
                                          "SUMMARIZE, VALUES."),
    format: Format = typer.Option(Format.table, "--format", "-f",
                                  help="table (for people), csv, json or parquet."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the result here."),
    explain: bool = typer.Option(False, "--explain", help="Show DuckDB's plan of the SELECT "
                                                          "instead of running it."),
) -> None:
    """Query the catalog read-only. Tables: datasets, shards, runs, selections, blends,
    blend_components, checkpoints, evals; views: lineage and samples_<dataset>. Queries read
    only the catalog's own data (no other files, no URLs, no extensions)."""
    from vilactl.catalog.query import run_sql

    output.emit(console, run_sql(state.workspace, query, explain), format.value, out)


@app.command()
def catalog() -> None:
    """Print a human summary of what the catalog records."""
    output.print_summary(console, state.workspace)


@mirror_app.command("serve")
def mirror_serve(
    root: Path = typer.Option(None, help="Folder to serve (default: <workspace>/world)."),
    port: int = typer.Option(0, help="Port on 127.0.0.1 (0 picks a free one)."),
    slow_seconds: float = typer.Option(3.0, help="Delay of the /fault/slow/ URLs."),
) -> None:
    """Serve a folder on 127.0.0.1 with the demo's fault URLs, until Ctrl-C."""
    import time

    from vilactl.pipeline.mirror import FAULT_KINDS, Mirror

    root = root or state.workspace / "world"
    if not root.is_dir():
        raise VilactlError(f"{root}: no such folder to serve (run `vilactl demo` first?)")
    with Mirror(root, port=port, slow_s=slow_seconds) as m:
        console.print(f"serving {root} at [bold]{m.url}[/bold] "
                      f"(faults: {m.url}/fault/<{'|'.join(FAULT_KINDS)}>/<path>); Ctrl-C stops")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def main() -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        app()
    except VilactlError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
