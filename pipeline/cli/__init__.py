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
from rich.markup import escape

from vilactl.base.errors import VilactlError
from vilactl.catalog import db
from vilactl.pipeline.cli import output
from vilactl.pipeline.cli.blend import blend as blend_cmd
from vilactl.pipeline.cli.context import COUNT, SEED, console, err_console, in_range, state
from vilactl.pipeline.cli.curation import build, curate, score
from vilactl.pipeline.cli.download import download as download_cmd
from vilactl.pipeline.cli.eval import eval_cmd
from vilactl.pipeline.cli.models import export as export_cmd
from vilactl.pipeline.cli.models import generate as generate_cmd
from vilactl.pipeline.cli.register import register_app
from vilactl.pipeline.cli.train import train as train_cmd


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
mirror_app = typer.Typer(help="The loopback image mirror used by the demo and the tests.",
                         no_args_is_help=True)
app.add_typer(register_app, name="register")
app.command("download")(download_cmd)
for command in (score, curate, build):
    app.command(command.__name__)(command)
app.command("blend")(blend_cmd)
app.command("train")(train_cmd)
app.command("eval")(eval_cmd)
app.command("export")(export_cmd)
app.command("generate")(generate_cmd)
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
    from vilactl.pipeline.jobs.report import build

    path = build(state.workspace, out)
    console.print(f"report written to [bold]{escape(str(path))}[/bold]")


@app.command()
def ablate(
    pretrain_steps: int = typer.Option(80, callback=COUNT, help="Pretraining steps of each run."),
    sft_steps: int = typer.Option(80, callback=COUNT,
                                  help="SFT steps of each run (identical for all)."),
    config: str | None = typer.Option(None, help="Training config (default: debug)."),
    seed: int = typer.Option(0, callback=SEED, help="Seed of the ablation blends."),
) -> None:
    """The paper's pretraining-data ablation on the demo world: COYO, MMC4-pairs, MMC4,
    MMC4+COYO at equal image counts, then identical SFT and evaluation; prints the table."""
    from vilactl.pipeline.jobs.ablate import ablate as run

    run(state.workspace, console, pretrain_steps, sft_steps, config, seed)


@app.command()
def init() -> None:
    """Create the workspace and its catalog (idempotent; migrates an older catalog)."""
    path = db.init(state.workspace)
    console.print(f"catalog ready at [bold]{escape(str(path))}[/bold]")


@app.command()
def demo(
    seed: int = typer.Option(0, callback=SEED,
                             help="Seed of the embedded world (same seed, same bytes)."),
    size: str = typer.Option("demo", help="World size preset: demo or tiny."),
    force: bool = typer.Option(False, "--force", help="Redo steps that finished earlier."),
    until: str | None = typer.Option(None, help="Stop after this step (e.g. blends)."),
) -> None:
    """Run the whole pipeline on the embedded demo world, resuming finished steps."""
    from vilactl.pipeline.jobs.demo import run_demo

    run_demo(state.workspace, seed, size, force, console, state.ray_address, until=until)
    output.print_summary(console, state.workspace)
    report = state.workspace / "report.html"
    if report.exists():
        console.print(f"report: [bold]{escape(str(report.resolve()))}[/bold]")
    from vilactl.pipeline.jobs.demo_train import generate_hint

    hint = generate_hint(state.workspace)
    if hint:         # one line, unwrapped, so that it pastes as is
        console.print("ask the demo model about an image:")
        console.print(hint, markup=False, highlight=False, soft_wrap=True)


@app.command()
def world(
    out: Path = typer.Option(..., "--out", help="Folder to write the world to."),
    seed: int = typer.Option(0, callback=SEED, help="Seed of the world (same seed, same bytes)."),
    size: str = typer.Option("demo", help="demo or tiny."),
) -> None:
    """Write the embedded demo world (COYO/MMC4/instruction/eval files) without a catalog."""
    from vilactl.base import atomic
    from vilactl.curation.world import generate
    from vilactl.pipeline.jobs.demo import _config, refuse_foreign

    refuse_foreign(out, "--out")
    with atomic.atomic_dir(out) as tmp:
        manifest = generate(tmp, _config(seed, size))
    for name, c in manifest["counts"].items():
        console.print(f"{name:>14}: {c['samples']} samples, {c['images']} images")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


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
    blend_components, checkpoints, evals, exports; views: lineage and samples_<dataset>.
    Queries read only the catalog's own data (no other files, no URLs, no extensions)."""
    from vilactl.catalog.query import run_sql

    output.emit(console, run_sql(state.workspace, query, explain), format.value, out)


@app.command()
def catalog() -> None:
    """Print a human summary of what the catalog records."""
    output.print_summary(console, state.workspace)


@mirror_app.command("serve")
def mirror_serve(
    root: Path = typer.Option(None, help="Folder to serve (default: <workspace>/world)."),
    port: int = typer.Option(0, callback=in_range(0, 65535),
                             help="Port on 127.0.0.1 (0 picks a free one)."),
    slow_seconds: float = typer.Option(3.0, callback=in_range(0, 3600),
                                       help="Delay of the /fault/slow/ URLs."),
) -> None:
    """Serve a folder on 127.0.0.1 with the demo's fault URLs, until Ctrl-C."""
    import time

    from vilactl.pipeline.services.mirror import FAULT_KINDS, Mirror

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
        err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:
        # Ray's errors (a task killed for memory, a lost node, Ray Data's executor) carry
        # dozens of lines of diagnostics and a remote traceback: the user gets one line.
        if not any(c.__module__.startswith("ray.") for c in type(e).__mro__):
            raise
        from vilactl.pipeline.services.ray_runtime import error_line

        err_console.print(f"[red]error:[/red] {escape(error_line(e))}", highlight=False,
                          soft_wrap=True)
        sys.exit(1)

