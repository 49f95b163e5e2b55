"""`vilactl blend`: the command-line face of pipeline/jobs/blend.py."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.ranges import check_range
from vilactl.pipeline.cli.choices import Mmc4Variant
from vilactl.pipeline.cli.context import COUNT, NON_NEGATIVE, SEED, in_range


def _default(workspace: Path, given: str | None, flag: str, kind: str, selected: bool,
             what: str, how: str) -> tuple[str, str]:
    """(dataset, why it was chosen) for --mmc4 / --coyo."""
    from vilactl.catalog.rows import newest_dataset

    if given:
        return given, "given"
    name = newest_dataset(workspace, kind, selected)
    if name is None:
        raise VilactlError(f"{flag} needs {what} and the catalog has none: {how} (or name one "
                           f"with {flag}-dataset)")
    return name, f"the newest {what}"


def _components(workspace: Path, mmc4: float | None, mmc4_variant: str, mmc4_dataset: str | None,
                coyo: float | None, coyo_dataset: str | None,
                component: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """(dataset → weight, dataset → why it was chosen)."""
    weights: dict[str, float] = {}
    why: dict[str, str] = {}

    def add(name: str, w: float, what: str, reason: str = "given") -> None:
        if name in weights:
            raise VilactlError(f"dataset {name!r} is named twice ({what})")
        weights[name], why[name] = w, reason

    if mmc4 is not None:
        from vilactl.curation.mmc4_variants import VARIANTS

        if mmc4_variant not in VARIANTS:
            raise VilactlError(f"--mmc4-variant must be one of {', '.join(VARIANTS)}, got "
                               f"{mmc4_variant!r}")
        name, reason = _default(workspace, mmc4_dataset, "--mmc4",
                                Kind.mmc4_variant(mmc4_variant), False,
                                f"built MMC4 {mmc4_variant} dataset",
                                f"run `vilactl build mmc4 --variant {mmc4_variant}`")
        add(name, mmc4, "--mmc4", reason)
    if coyo is not None:
        name, reason = _default(workspace, coyo_dataset, "--coyo", Kind.COYO_IMAGES, True,
                                "curated COYO selection", "run `vilactl curate coyo --top-k K`")
        add(name, coyo, "--coyo", reason)
    for c in component:
        name, sep, w = c.rpartition("=")
        try:
            value = float(w)
        except ValueError:
            value = None
        if not sep or not name or value is None:
            raise VilactlError(f"--component takes DATASET=WEIGHT, got {c!r}")
        check_range(value, f"--component {name}'s weight", 0)
        add(name, value, "--component")
    return weights, why


def blend(
    mmc4: float | None = typer.Option(None, callback=NON_NEGATIVE,
                                      help="Image share of MMC4 samples: the newest dataset "
                                           "`vilactl build mmc4` made of --mmc4-variant, "
                                           "unless --mmc4-dataset (default: no MMC4)."),
    mmc4_variant: Mmc4Variant = typer.Option("interleaved",
                                           help="Which MMC4 variant --mmc4 takes."),
    mmc4_dataset: str | None = typer.Option(None, help="The MMC4 dataset --mmc4 takes (default: "
                                                         "the newest of --mmc4-variant)."),
    coyo: float | None = typer.Option(None, callback=NON_NEGATIVE,
                                      help="Image share of COYO pairs: the newest selection "
                                           "`vilactl curate coyo` made of downloaded pairs, "
                                           "unless --coyo-dataset (default: no COYO)."),
    coyo_dataset: str | None = typer.Option(None, help="The COYO dataset --coyo takes (default: "
                                                         "the newest curated selection)."),
    component: list[str] = typer.Option(
        [], "--component", help="DATASET=WEIGHT, repeatable: any catalog dataset in the "
                                "training-sample schema (or downloaded COYO pairs)."),
    images: int | None = typer.Option(
        None, callback=COUNT, help="Images in the blend (default: the most reachable at these "
                                   "shares without repeating a sample)."),
    seed: int = typer.Option(0, callback=SEED, help="Seed for the draws and the global shuffle."),
    name: str | None = typer.Option(None, help="Blend name, also its catalog dataset "
                                               "(default: blend_<dataset><percent>_…)."),
    coyo_group: int = typer.Option(1, callback=COUNT,
                                   help="Concatenate G COYO pairs into one sample (VILA: 4)."),
    allow_upsample: bool = typer.Option(False, "--allow-upsample",
                                        help="Allow repeating samples to reach --images; "
                                             "repeats are counted and recorded."),
    normalize: bool = typer.Option(False, "--normalize", help="Rescale weights to sum to 1."),
    shard_size: int = typer.Option(4096, callback=COUNT, help="Samples per output Parquet shard."),
    row_group_size: int = typer.Option(256, callback=COUNT,
                                       help="Samples per Parquet row group (the unit a "
                                            "streaming reader fetches)."),
    memory_gb: float = typer.Option(2.0, callback=in_range(0, 8e9, lo_open=True),
                                    help="Scatter buffer (GiB) before spilling to disk."),
    replace: bool = typer.Option(False, "--replace", help="Make the blend again."),
) -> None:
    """Mix catalog datasets by share of IMAGES into shuffled Parquet shards for the trainer.

    Weights are shares of images; a text-only component (e.g. text instructions for joint SFT)
    counts samples instead. Draws are without replacement and deterministic in --seed; every
    sample keeps its source, sample id and component. Writes Parquet shards, manifest.json and
    catalog rows (blends, blend_components, and a dataset of kind `blend`)."""
    from vilactl.pipeline.cli.context import console, state
    from vilactl.pipeline.jobs.blend import BlendRequest
    from vilactl.pipeline.jobs.blend import blend as run

    weights, why = _components(Path(state.workspace), mmc4, mmc4_variant.value, mmc4_dataset, coyo,
                               coyo_dataset, component)
    req = BlendRequest(weights=weights, images=images, seed=seed, name=name,
                       coyo_group=coyo_group, allow_upsample=allow_upsample, normalize=normalize,
                       shard_size=shard_size, row_group_size=row_group_size,
                       memory_bytes=max(1, int(memory_gb * (1 << 30))), replace=replace)
    m = run(Path(state.workspace), req, quiet=not console.is_terminal)
    console.print(f"blend [bold]{m['name']}[/bold]: {m['num_samples']} samples, "
                  f"{m['num_images']} images, {m['num_text_words']} text words, "
                  f"{len(m['shards'])} shard(s)")
    for c in m["components"]:
        console.print(f"  {c['dataset']:<24} asked {c['weight']:.3f}  got "
                      f"{c['achieved_share']:.4f} of {c['unit']}  ({c['num_samples']} samples, "
                      f"{c['num_images']} images, {c['repeats']} repeats; {why[c['dataset']]})")
    where = escape(str(Path(state.workspace).resolve() / "blends" / m["name"]))
    console.print(f"written to [bold]{where}[/bold]; train on it: vilactl train --stage "
                  f"pretrain --blend {m['name']}")
