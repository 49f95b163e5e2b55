"""`vilactl register …`: real-format corpora and published instruction data into the catalog
(pipeline/jobs/register.py, pipeline/jobs/register_instruct.py)."""
from __future__ import annotations

from pathlib import Path

import typer

from vilactl.pipeline.cli.choices import DatasetKind
from vilactl.pipeline.cli.context import COUNT, SEED, console, state

register_app = typer.Typer(help="Validate real-format corpora and record them in the catalog "
                                "(nothing is downloaded).", no_args_is_help=True)


@register_app.command("coyo")
def register_coyo(
    metadata: str = typer.Option(..., help="Glob of COYO-700M metadata Parquet files."),
    name: str = typer.Option("coyo_meta", help="Catalog dataset name."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Validate COYO-700M metadata Parquet (id, url, text required) and record it."""
    from vilactl.pipeline.jobs.register import register_coyo as run

    ds = run(state.workspace, metadata, name, replace=replace)
    console.print(f"registered [bold]{ds.name}[/bold]: {ds.num_samples} rows")


@register_app.command("mmc4")
def register_mmc4(
    docs: str = typer.Option(..., help="Glob of MMC4 document files (.jsonl, .jsonl.zip)."),
    name: str = typer.Option("mmc4_docs", help="Catalog dataset name."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Validate MMC4 documents, normalise them to Parquet in the workspace, and record them."""
    from vilactl.pipeline.jobs.register import register_mmc4 as run

    ds = run(state.workspace, docs, name, replace=replace)
    console.print(f"registered [bold]{ds.name}[/bold]: {ds.num_samples} documents, "
                  f"{ds.num_images} images, {ds.num_texts} sentences")


@register_app.command("samples")
def register_samples(
    data: str = typer.Option(..., help="Glob of Parquet files in the training-sample schema."),
    name: str = typer.Option(..., help="Catalog dataset name."),
    kind: DatasetKind = typer.Option("samples", help="Kind recorded in the catalog."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Record Parquet already in the training-sample schema (sample_id, source, segments)."""
    from vilactl.pipeline.jobs.register import register_samples as run

    ds = run(state.workspace, data, name, replace=replace, kind=kind.value)
    console.print(f"registered [bold]{ds.name}[/bold]: {ds.num_samples} samples, "
                  f"{ds.num_images} images")


def _report(ds, counts, skipped) -> None:
    console.print(f"registered [bold]{ds.name}[/bold]: {counts['samples']} samples, "
                  f"{counts['images']} images, {counts['turns']} turns, "
                  f"{counts['text_words']} text words"
                  + (f"; skipped {sum(skipped.values())} ({dict(skipped)})" if skipped else ""))


@register_app.command("llava")
def register_llava(
    json_file: str = typer.Option(..., "--json", help="LLaVA-1.5 / ShareGPT conversations: a "
                                                      "JSON array (streamed) or JSON Lines."),
    images: str = typer.Option(..., help="Folder the records' `image` paths are relative to."),
    name: str = typer.Option("llava", help="Catalog dataset name."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count bad records "
                                                             "instead of stopping."),
    shard_size: int = typer.Option(1000, callback=COUNT, help="Samples per Parquet shard."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Convert LLaVA-format conversations (human/gpt turns, <image> marks) into training
    samples with the image bytes embedded where each <image> stands; multi-turn kept."""
    from vilactl.pipeline.jobs.register_instruct import register_llava as run

    _report(*run(Path(state.workspace), json_file, images, name, replace, skip_bad, shard_size))


@register_app.command("text-instruct")
def register_text_instruct(
    data: str = typer.Option(..., help="Glob of JSONL or Parquet files."),
    input_field: str = typer.Option("inputs", help="Field holding the instruction."),
    target_field: str = typer.Option("targets", help="Field holding the answer."),
    sample: int | None = typer.Option(None, callback=COUNT,
                                      help="Keep N rows: evenly spaced, or a seeded sample with "
                                           "--seed (VILA took 1M of FLAN; default: all)."),
    seed: int | None = typer.Option(None, callback=SEED,
                                    help="Seed for --sample (default: evenly spaced)."),
    name: str = typer.Option("text_instruct", help="Catalog dataset name."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count bad rows."),
    shard_size: int = typer.Option(10_000, callback=COUNT, help="Samples per Parquet shard."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Convert FLAN-style input/target rows into user → assistant text-only samples."""
    from vilactl.pipeline.jobs.register_instruct import register_text_instruct as run

    _report(*run(Path(state.workspace), data, name, input_field, target_field, sample, seed,
                 replace, skip_bad, shard_size))
