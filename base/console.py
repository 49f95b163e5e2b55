"""Consoles that read as well in a log as on a terminal.

rich lays text out for a terminal: off one (a log file, CI, nohup, a pipe) it assumes 80
columns and breaks every longer line with a hard newline, splitting paths, dataset names and
the commands vilactl suggests mid-word — a log reader can neither grep them nor paste them.
So off a terminal a console here never wraps what it prints and lays tables out at their
natural width; on a terminal text is still not wrapped by vilactl (the terminal folds long
lines itself, and copying them gives the line back whole), while tables fit the window.
"""
from __future__ import annotations

from rich.console import Console

# Off a terminal a table is as wide as its content: cells are already capped (output._cell),
# so this is only an upper bound that no real table reaches.
LOG_WIDTH = 100_000


def new_console(stderr: bool = False, quiet: bool = False) -> Console:
    """The console every command prints through (pipeline/cli/context.py makes two)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, soft_wrap=True, quiet=quiet)
    return Console(stderr=stderr, soft_wrap=True, quiet=quiet, width=LOG_WIDTH)


def heading(console: Console, title: str) -> None:
    """A section heading: a rule across a terminal, one plain line in a log (a rule as wide
    as LOG_WIDTH would be 100,000 dashes)."""
    if console.is_terminal:
        console.rule(title)
    else:
        console.print(f"── {title} ──", markup=False, highlight=False)
