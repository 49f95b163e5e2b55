"""`vilactl register llava` and `vilactl register text-instruct` (pipeline/register_instruct.py)."""
from __future__ import annotations

from pathlib import Path

import typer


def _report(ds, counts, skipped) -> None:
    from vilactl.pipeline.context import console

    console.print(f"registered [bold]{ds.name}[/bold]: {counts['samples']} samples, "
                  f"{counts['images']} images, {counts['turns']} turns, "
                  f"{counts['text_words']} text words"
                  + (f"; skipped {sum(skipped.values())} ({dict(skipped)})" if skipped else ""))


def register_llava(
    json_file: str = typer.Option(..., "--json", help="LLaVA-1.5 / ShareGPT conversations: a "
                                                      "JSON array (streamed) or JSON Lines."),
    images: str = typer.Option(..., help="Folder the records' `image` paths are relative to."),
    name: str = typer.Option("llava", help="Catalog dataset name."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count bad records "
                                                             "instead of stopping."),
    shard_size: int = typer.Option(1000, help="Samples per Parquet shard."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Convert LLaVA-format conversations (human/gpt turns, <image> marks) into training
    samples with the image bytes embedded where each <image> stands; multi-turn kept."""
    from vilactl.pipeline.context import state
    from vilactl.pipeline.register_instruct import register_llava as run

    _report(*run(Path(state.workspace), json_file, images, name, replace, skip_bad, shard_size))


def register_text_instruct(
    data: str = typer.Option(..., help="Glob of JSONL or Parquet files."),
    input_field: str = typer.Option("inputs", help="Field holding the instruction."),
    target_field: str = typer.Option("targets", help="Field holding the answer."),
    sample: int | None = typer.Option(None, help="Keep N rows: evenly spaced, or a seeded "
                                                 "sample with --seed (VILA took 1M of FLAN)."),
    seed: int | None = typer.Option(None, help="Seed for --sample (default: evenly spaced)."),
    name: str = typer.Option("text_instruct", help="Catalog dataset name."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count bad rows."),
    shard_size: int = typer.Option(10_000, help="Samples per Parquet shard."),
    replace: bool = typer.Option(False, "--replace", help="Replace a dataset of that name."),
) -> None:
    """Convert FLAN-style input/target rows into user → assistant text-only samples."""
    from vilactl.pipeline.context import state
    from vilactl.pipeline.register_instruct import register_text_instruct as run

    _report(*run(Path(state.workspace), data, name, input_field, target_field, sample, seed,
                 replace, skip_bad, shard_size))
