"""Rendering results for people (rich tables) and for programs (CSV, JSON, Parquet)."""
from __future__ import annotations

import decimal
import json
import sys
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


def emit(console: Console, table: pa.Table, fmt: str, out: Path | None) -> None:
    """Print or write a query result in the chosen format (atomically when written to a file)."""
    if fmt == "table":
        if out:
            raise VilactlError("--out needs --format csv, json or parquet")
        console.print(arrow_table(table))
        console.print(f"[dim]{table.num_rows} row(s)[/dim]")
        return
    if fmt == "parquet":
        if not out:
            raise VilactlError("--format parquet needs --out FILE")
        atomic.write_parquet(out, table)
        return
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    else:
        data = (json.dumps(table.to_pylist(), default=_json_value, indent=1) + "\n").encode()
    if out:
        atomic.write_bytes(out, data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


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
                     overflow="fold", no_wrap=col in ("samples", "images", "texts", "size"))
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
    console.print(f"[dim]query it: vilactl sql \"SELECT name, kind, num_samples FROM datasets\""
                  f" or duckdb {s['path']}[/dim]")
