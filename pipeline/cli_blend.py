"""`vilactl blend`: the command-line face of pipeline/blend.py."""
from __future__ import annotations

from pathlib import Path

import typer

from vilactl.base.errors import VilactlError


def _components(mmc4: float | None, mmc4_variant: str, coyo: float | None, coyo_dataset: str,
                component: list[str]) -> dict[str, float]:
    weights: dict[str, float] = {}

    def add(name: str, w: float, what: str) -> None:
        if name in weights:
            raise VilactlError(f"dataset {name!r} is named twice ({what})")
        weights[name] = w

    if mmc4 is not None:
        add(f"mmc4_{mmc4_variant}", mmc4, "--mmc4")
    if coyo is not None:
        add(coyo_dataset, coyo, "--coyo")
    for c in component:
        name, sep, w = c.rpartition("=")
        try:
            value = float(w)
        except ValueError:
            value = None
        if not sep or not name or value is None:
            raise VilactlError(f"--component takes DATASET=WEIGHT, got {c!r}")
        add(name, value, "--component")
    return weights


def blend(
    mmc4: float | None = typer.Option(None, help="Image share of MMC4 samples (the dataset "
                                                 "mmc4_<variant> made by `vilactl build`)."),
    mmc4_variant: str = typer.Option("interleaved", help="Which MMC4 variant --mmc4 takes."),
    coyo: float | None = typer.Option(None, help="Image share of COYO pairs."),
    coyo_dataset: str = typer.Option("coyo_curated", help="The COYO dataset --coyo takes."),
    component: list[str] = typer.Option(
        [], "--component", help="DATASET=WEIGHT, repeatable: any catalog dataset in the "
                                "training-sample schema (or downloaded COYO pairs)."),
    images: int | None = typer.Option(
        None, help="Images in the blend (default: the most reachable at these shares without "
                   "repeating a sample)."),
    seed: int = typer.Option(0, help="Seed for the draws and the global shuffle."),
    name: str | None = typer.Option(None, help="Blend name (also its catalog dataset)."),
    coyo_group: int = typer.Option(1, help="Concatenate G COYO pairs into one sample (VILA: 4)."),
    allow_upsample: bool = typer.Option(False, "--allow-upsample",
                                        help="Allow repeating samples to reach --images; "
                                             "repeats are counted and recorded."),
    normalize: bool = typer.Option(False, "--normalize", help="Rescale weights to sum to 1."),
    shard_size: int = typer.Option(4096, help="Samples per output Parquet shard."),
    row_group_size: int = typer.Option(256, help="Samples per Parquet row group (the unit "
                                                 "a streaming reader fetches)."),
    memory_gb: float = typer.Option(2.0, help="Scatter buffer before spilling to disk."),
    replace: bool = typer.Option(False, "--replace", help="Make the blend again."),
) -> None:
    """Mix catalog datasets by share of IMAGES into shuffled Parquet shards for the trainer.

    Weights are shares of images; a text-only component (e.g. text instructions for joint SFT)
    counts samples instead. Draws are without replacement and deterministic in --seed; every
    sample keeps its source, sample id and component. Writes Parquet shards, manifest.json and
    catalog rows (blends, blend_components, and a dataset of kind `blend`)."""
    from vilactl.pipeline.blend import BlendRequest
    from vilactl.pipeline.blend import blend as run
    from vilactl.pipeline.context import console, state

    weights = _components(mmc4, mmc4_variant, coyo, coyo_dataset, component)
    req = BlendRequest(weights=weights, images=images, seed=seed, name=name,
                       coyo_group=coyo_group, allow_upsample=allow_upsample, normalize=normalize,
                       shard_size=shard_size, row_group_size=row_group_size,
                       memory_bytes=int(memory_gb * (1 << 30)), replace=replace)
    m = run(Path(state.workspace), req, quiet=not console.is_terminal)
    console.print(f"blend [bold]{m['name']}[/bold]: {m['num_samples']} samples, "
                  f"{m['num_images']} images, {m['num_text_tokens']} text tokens, "
                  f"{len(m['shards'])} shard(s)")
    for c in m["components"]:
        console.print(f"  {c['dataset']:<24} asked {c['weight']:.3f}  got "
                      f"{c['achieved_share']:.4f} of {c['unit']}  ({c['num_samples']} samples, "
                      f"{c['num_images']} images, {c['repeats']} repeats)")
