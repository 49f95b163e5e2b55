"""Rendering results for people (rich tables) and for programs (CSV, JSON, Parquet), and the
last word on standard output: a write that fails (a full disk, an I/O error) is one `error:`
line and exit 1; a reader that went away (`vilactl sql … | head -1`) ends the command quietly
with exit 1, never a traceback.

JSON is strict: NaN and ±Infinity, which JSON has no numbers for, are written as `null`. CSV
keeps them as `nan`, `inf`, `-inf`, which DuckDB, pandas and Arrow read back as those floats.
"""
from __future__ import annotations

import contextlib
import decimal
import errno
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.catalog.query import summary


def _cell(v) -> str:
    if v is None:
        return "∅"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return s if len(s) <= 120 else s[:117] + "…"


def arrow_table(table: pa.Table, title: str | None = None) -> Table:
    t = Table(title=title, show_lines=False)
    for name in table.column_names:
        t.add_column(name, overflow="fold")
    for row in table.to_pylist():         # Text: a caption's "[/url]" is data, not markup
        t.add_row(*(Text(_cell(v)) for v in row.values()))
    return t


def _json_value(v):
    # DuckDB sums BIGINTs to HUGEINT, which Arrow carries as a decimal: give JSON a number.
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return str(v)


def _finite(v):
    """`v` with every non-finite float (at any depth of lists and structs) as None."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def json_bytes(table: pa.Table) -> bytes:
    rows = _finite(table.to_pylist())
    return (json.dumps(rows, default=_json_value, indent=1, allow_nan=False) + "\n").encode()


def check_format(fmt: str, out: Path | None) -> None:
    """Refuse a format and --out that do not go together, before any work."""
    if fmt == "table" and out:
        raise VilactlError("--out needs --format csv, json or parquet")
    if fmt == "parquet" and not out:
        raise VilactlError("--format parquet needs --out FILE")


def emit(console: Console, table: pa.Table, fmt: str, out: Path | None) -> None:
    """Print or write a query result in the chosen format (atomically when written to a file:
    `out` has been checked with pipeline/jobs/out_paths.check_file)."""
    from vilactl.pipeline.jobs.out_paths import write_errors

    check_format(fmt, out)
    if out is None and sys.stdout is None:     # started with file descriptor 1 closed (>&-)
        raise VilactlError("standard output is closed; redirect it or pass --out FILE")
    if fmt == "table":
        with write_errors("standard output"):
            console.print(arrow_table(table))
            console.print(f"[dim]{table.num_rows} row(s)[/dim]")
        return
    if fmt == "parquet":
        with write_errors(out):
            atomic.write_parquet(out, table)
        return
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    else:
        data = json_bytes(table)
    if out:
        with write_errors(out):
            atomic.write_bytes(out, data)
    else:
        write_stdout(data)


def write_stdout(data: bytes) -> None:
    """All of `data` to standard output, or an error: a pipe whose reader leaves mid-write
    takes part of a large write without an error (BufferedWriter returns the short count),
    so the rest is written until the pipe says EPIPE."""
    from vilactl.pipeline.jobs.out_paths import write_errors

    if sys.stdout is None:
        raise VilactlError("standard output is closed; redirect it or pass --out FILE")
    with write_errors("standard output"):
        sys.stdout.flush()                    # what was printed before comes first
        view = memoryview(data)
        while view:
            n = sys.stdout.buffer.write(view)
            if not n:
                raise OSError(errno.EIO, "standard output accepted no more bytes")
            view = view[n:]
        sys.stdout.flush()


def _discard_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that what is still buffered for a full device
    or a closed pipe cannot fail again when Python exits ("Exception ignored …")."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()


@contextlib.contextmanager
def stdout_flushed(err_console: Console) -> Iterator[None]:
    """Around the whole command: flush standard output at the end, while an error can still
    be reported. A full device or I/O error is one line and exit 1 (unless the command has
    already failed, with its own line); a closed pipe is a quiet exit 1 (as click does)."""
    failed = False
    try:
        yield
    except SystemExit as e:
        failed = e.code not in (0, None)
        _flush(err_console, failed)
        raise
    _flush(err_console, failed)


def _flush(err_console: Console, failed: bool) -> None:
    if sys.stdout is None:                    # fd 1 closed at start: rich printed nowhere
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        if not failed:
            sys.exit(1)
    except OSError as e:
        _discard_stdout()
        if not failed:
            err_console.print(f"[red]error:[/red] standard output: cannot write: "
                              f"{e.strerror or e}", highlight=False, soft_wrap=True)
            sys.exit(1)


def _size(n: int | None) -> str:
    if n is None:
        return "∅"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_summary(console: Console, workspace: Path) -> None:
    s = summary(workspace)
    console.print(f"\n[bold]catalog[/bold] {escape(s['path'])} (schema v{s['schema_version']})")
    t = Table(title="datasets")
    for col in ("name", "kind", "samples", "images", "texts", "size", "shards", "parents"):
        t.add_column(col, justify="right" if col in ("samples", "images", "texts", "size",
                                                     "shards") else "left",
                     overflow="fold",
                     no_wrap=col in ("name", "kind", "samples", "images", "texts", "size"))
    for d in s["datasets"]:
        t.add_row(*(Text(v) for v in (d["name"], d["kind"], _cell(d["num_samples"]),
                                       _cell(d["num_images"]), _cell(d["num_texts"]),
                                       _size(d["num_bytes"]), str(d["shards"]),
                                       d["parents"] or "")))
    console.print(t)
    counts = ", ".join(f"{k}: {v}" for k, v in s["tables"].items())
    console.print(f"[dim]{counts}[/dim]")
    failed = [r for r in s["runs"] if r["status"] == "failed"]
    for r in failed[:3]:
        console.print(f"[yellow]failed run[/yellow] {r['id']} "
                      f"{escape(r['command'])}: {escape(r['error'] or '')}")
    console.print("[dim]query it: vilactl sql \"SELECT name, kind, num_samples FROM datasets\""
                  " (README: SQL over the catalog)[/dim]")
