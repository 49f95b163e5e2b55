"""The `vilactl` command line (typer + rich).

Global options pick the workspace (where the catalog and all outputs live) and the Ray cluster.
Problems with the user's input raise VilactlError, which `main` prints as one line on stderr
with exit code 1; usage errors (a bad choice, a missing option) are one line too, exit 2
(click's convention); Ctrl-C is `interrupted`, exit 130.
Standard output is flushed inside `main`, so a full device is an error line too, and a closed
pipe a quiet exit 1 (pipeline/cli/output.py).
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import typer
from rich.markup import escape

from vilactl.base.errors import Stopped, VilactlError
from vilactl.catalog import db
from vilactl.pipeline.cli import help_text, output
from vilactl.pipeline.cli.blend import blend as blend_cmd
from vilactl.pipeline.cli.choices import DemoStep, SqlFormat, Study, WorldSize, value
from vilactl.pipeline.cli.context import COUNT, SEED, console, err_console, in_range, state
from vilactl.pipeline.cli.curation import build, curate, score
from vilactl.pipeline.cli.download import download as download_cmd
from vilactl.pipeline.cli.eval import eval_cmd
from vilactl.pipeline.cli.models import export as export_cmd
from vilactl.pipeline.cli.models import generate as generate_cmd
from vilactl.pipeline.cli.register import register_app
from vilactl.pipeline.cli.train import train as train_cmd
from vilactl.pipeline.cli.verify import verify as verify_cmd


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


def _usage_errors_in_one_line() -> None:
    """A usage error (a bad choice, a missing option, a value of the wrong type) is one
    `error:` line naming the command's --help, exit 2 — not typer's boxed panel of four."""
    from typer import rich_utils

    if getattr(rich_utils.rich_format_error, "vilactl", False):
        return
    shown = rich_utils.rich_format_error

    def rich_format_error(self) -> None:
        if type(self).__name__ == "NoArgsIsHelpError":
            return shown(self)
        ctx = getattr(self, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        # typer 0.29 words a bad choice "Value error, 'x' is not one of …"
        message = " ".join(self.format_message().replace("Value error, ", "").split())
        err_console.print(f"[red]error:[/red] {escape(message + where)}", highlight=False,
                          soft_wrap=True)
    rich_format_error.vilactl = True
    rich_utils.rich_format_error = rich_format_error


_flags_without_types()
_usage_errors_in_one_line()
app = typer.Typer(
    name="vilactl",
    help="Curate MMC4 and COYO into CLIP-filtered, catalogued Parquet blends, and train a "
         "VLM with the VILA recipe (projector init → pretraining → joint SFT).",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    cls=help_text.PipelineGroup,
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
app.command("verify")(verify_cmd)
app.add_typer(mirror_app, name="mirror")


@app.callback()
def _global(
    workspace: Path = typer.Option(Path("workspace"), "--workspace", "-w",
                                   envvar="VILACTL_WORKSPACE",
                                   help="Folder holding catalog.duckdb and every output."),
    ray_address: str | None = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                                              help="Ray cluster to run jobs on (default: a "
                                                   "local Ray started for the command)."),
) -> None:
    state.workspace = workspace
    state.ray_address = ray_address
    _check_environment()


def _check_environment() -> None:
    """Every VILACTL_* number is range-checked before a command starts, so that a bad value is
    one line and never a failed run halfway through (docs/security.md, "Limits at a glance")."""
    from vilactl.base import json_bounds, locks, progress
    from vilactl.catalog import integrity
    from vilactl.curation import images  # noqa: F401  (reads its two limits on import)

    locks.lock_wait()
    json_bounds.max_depth()
    json_bounds.max_record_bytes()
    integrity.hash_bytes()
    progress.every_seconds()


@app.command()
def report(out: Path | None = typer.Option(None, "--out", help="HTML file to write (default: "
                                                                "<workspace>/report.html); "
                                                                "outside the workspace or "
                                                                "directly in it."),
           force: bool = typer.Option(False, "--force", help="Replace an existing --out file "
                                                             "(the default report.html is "
                                                             "replaced while it is vilactl's "
                                                             "own report)."),
           ) -> None:
    """One self-contained HTML report: counts, CLIP curation with image grids, MMC4 variants,
    blends, loss curves and evals."""
    from vilactl.pipeline.jobs.report import build

    path = build(state.workspace, out, force=force)
    console.print(f"report written to [bold]{escape(str(path))}[/bold]")


@app.command()
def ablate(
    study: Study = typer.Option("data", help="Which of the paper's ablations: data (Table 3: "
                                "COYO / MMC4-pairs / MMC4 / MMC4+COYO pretraining), freeze "
                                "(Table 1: LLM frozen or trained in pretraining × linear or "
                                "mlp2x_gelu projector), sft-text (Table 4: SFT with or without "
                                "text-only instructions)."),
    seeds: int = typer.Option(3, callback=COUNT, help="Seeds per variant (each draws its own "
                                                       "blends and sets train.seed); the table "
                                                       "shows mean ± std over them."),
    pretrain_steps: int = typer.Option(80, callback=COUNT, help="Pretraining steps of each run."),
    sft_steps: int = typer.Option(80, callback=COUNT,
                                  help="SFT steps of each run (identical for all)."),
    projector_steps: int | None = typer.Option(
        None, callback=COUNT, help="freeze: steps of each projector kind's stage-0 run "
                                   "(default: the config's)."),
    config: str | None = typer.Option(None, help="Training config (default: debug)."),
    seed: int = typer.Option(0, callback=SEED, help="First seed (the others follow it)."),
    eval_limit: int | None = typer.Option(None, callback=COUNT,
                                          help="Evaluate on the first N examples of each set "
                                               "only (quick looks; default: all)."),
) -> None:
    """One of the paper's ablations on the demo world, each variant trained, SFT-ed and
    evaluated once per seed (runs named ablate_<study>_<variant>_s<seed>); prints mean ± std
    per variant; `vilactl report` shows it as the paper's table, with the paper's direction."""
    from vilactl.pipeline.jobs.ablate import AblateRequest
    from vilactl.pipeline.jobs.ablate import ablate as run

    run(state.workspace, console, AblateRequest(value(study), seeds, seed, pretrain_steps,
                                                sft_steps, projector_steps, config,
                                                eval_limit))


@app.command()
def init() -> None:
    """Create the workspace and its catalog (idempotent; migrates an older catalog)."""
    path = db.init(state.workspace)
    console.print(f"catalog ready at [bold]{escape(str(path))}[/bold]")


@app.command()
def demo(
    seed: int = typer.Option(0, callback=SEED,
                             help="Seed of the embedded world (same seed, same bytes)."),
    size: WorldSize = typer.Option("demo", help="World size preset."),
    force: bool = typer.Option(False, "--force", help="Redo steps that finished earlier."),
    until: DemoStep | None = typer.Option(None, help="Stop after this step (default: run "
                                                     "every step)."),
) -> None:
    """Run the whole pipeline on the embedded demo world, resuming finished steps."""
    from vilactl.pipeline.jobs.demo import run_demo

    run_demo(state.workspace, seed, size.value, force, console, state.ray_address,
             until=value(until))
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
    size: WorldSize = typer.Option("demo", help="World size preset."),
) -> None:
    """Write the embedded demo world (COYO/MMC4/instruction/eval files) without a catalog."""
    from vilactl.base import atomic
    from vilactl.curation.world import generate
    from vilactl.pipeline.jobs.demo import _config, refuse_foreign
    from vilactl.pipeline.jobs.out_paths import check_plain_folder

    out = check_plain_folder(state.workspace, out)
    refuse_foreign(out, "--out")
    with atomic.atomic_dir(out) as tmp:
        manifest = generate(tmp, _config(seed, size.value))
    for name, c in manifest["counts"].items():
        console.print(f"{name:>14}: {c['samples']} samples, {c['images']} images")


@app.command()
def sql(
    query: str = typer.Argument(..., help="Read-only SQL: SELECT, WITH, FROM, DESCRIBE, SHOW, "
                                          "SUMMARIZE, VALUES."),
    format: SqlFormat = typer.Option("table", "--format", "-f",
                                     help="table is for people; parquet needs --out."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the result to this file "
                                                              "(outside the workspace or "
                                                              "directly in it; default: "
                                                              "print it)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
    explain: bool = typer.Option(False, "--explain", help="Show DuckDB's plan of the SELECT "
                                                          "instead of running it."),
    timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS",
                                  help="Stop the query after this many seconds."),
    memory_gb: float = typer.Option(2.0, "--memory-gb", metavar="GB",
                                    help="DuckDB memory limit of the query and its result (no "
                                         "spilling to disk)."),
) -> None:
    """Query the catalog read-only. Tables: datasets, shards, runs, selections, blends,
    blend_components, checkpoints, evals, exports; views: lineage and samples_<dataset>.
    Queries read only the catalog's own data (no other files, no URLs, no extensions), run on
    a copy of the catalog (writers never wait for them), stop at --timeout and --memory-gb,
    and Ctrl-C stops them."""
    from vilactl.catalog.query import check_bounds, run_sql
    from vilactl.pipeline.jobs.out_paths import check_file

    check_bounds(timeout, memory_gb)
    output.check_format(format.value, out)
    target = check_file(state.workspace, out, "--out", force=force) if out else None
    table = run_sql(state.workspace, query, explain, timeout_s=timeout, memory_gb=memory_gb)
    output.emit(console, table, format.value, target)


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


help_text.normalise(app)         # every command is registered by now


# A device that fails a write (full disk, quota, I/O error, file-size limit, read-only
# filesystem) is the user's environment, not a bug: one line, not a traceback.
_WRITE_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS}


def _on_sigterm(signum, _frame) -> None:
    """SIGTERM (Slurm's and Kubernetes' preemption) takes Ctrl-C's path: every job's cleanup
    runs (temp removed, run marked failed), then one line and exit 143."""
    raise Stopped(signum)


def _stop_in(e: BaseException) -> Stopped | None:
    """The Stopped behind an exit: typer turns any KeyboardInterrupt into a silent exit 130."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, Stopped):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def main() -> None:
    import signal

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    signal.signal(signal.SIGTERM, _on_sigterm)
    with output.stdout_flushed(err_console):      # a full stdout is an error, at the end too
        _run()


def _run() -> None:
    try:
        try:
            app()
        except SystemExit as e:
            stop = _stop_in(e) if e.code == 130 else None
            if stop is None:
                if e.code == 130:   # typer turns Ctrl-C into a silent exit 130
                    err_console.print("interrupted")
                raise
            raise stop from None
    except Stopped as e:          # SIGTERM, or a train run stopped at a step boundary
        err_console.print(escape(str(e)), highlight=False, soft_wrap=True)
        sys.exit(128 + e.signum)
    except VilactlError as e:
        err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as e:
        if e.errno not in _WRITE_FAULTS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(f"[red]error:[/red] {escape(where + (e.strerror or str(e)))}",
                          highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as e:
        # Ray's errors (a task killed for memory, a lost node, Ray Data's executor) carry
        # dozens of lines of diagnostics and a remote traceback: the user gets one line.
        if not any(c.__module__.startswith("ray.") for c in type(e).__mro__):
            raise
        from vilactl.pipeline.services.ray_runtime import error_line

        err_console.print(f"[red]error:[/red] {escape(error_line(e))}", highlight=False,
                          soft_wrap=True)
        sys.exit(1)

