"""`vilactl verify`: the command-line face of pipeline/jobs/verify.py."""
from __future__ import annotations

import typer

from vilactl.pipeline.cli.context import console, state


def verify(datasets: list[str] | None = typer.Argument(
        None, help="Datasets to check (default: every dataset in the catalog).")) -> None:
    """Reread every file the catalog records (sha256, size, Parquet rows) and say, per
    dataset, ok or which files changed since they were recorded; exit 1 if any did."""
    from vilactl.pipeline.jobs.verify import verify as run

    run(state.workspace, list(datasets or []), console)
