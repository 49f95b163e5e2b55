"""Progress of long phases: a live bar on a terminal, plain lines everywhere else.

A rich bar is transient terminal art: in a log file, CI output or under nohup it prints nothing
until the phase ends, so a 9-minute curate looked hung. Off a terminal this prints one plain,
unwrapped line at most every `every` seconds and one when the phase ends — units done of the
total, rows, rows/s and elapsed time — which a log reader (or `grep`) can follow.
"""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


def _count(n: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return f"{n:.0f}"


class Phase:
    """`with Phase(console, "curate: select", total=32, unit="files") as p: p.advance(rows=…)`."""

    def __init__(self, console: Console | None, what: str, total: int, unit: str = "files",
                 every: float = 10.0, quiet: bool = False):
        self.console = console or Console()
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.quiet, self.done, self.rows, self.status = quiet, 0, 0, ""
        self.live = self.console.is_terminal and not quiet
        self._bar: Progress | None = None

    def __enter__(self) -> Phase:
        self.t0 = self._last = time.monotonic()
        if self.live:
            self._bar = Progress(TextColumn(f"[bold]{self.what}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), console=self.console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=self.total, status="")
        return self

    def advance(self, n: int = 1, rows: int = 0, status: str = "") -> None:
        self.done, self.rows = self.done + n, self.rows + rows
        self.status = status or self.status
        if self._bar is not None:
            self._bar.update(self._task, advance=n, status=self.line_status())
        elif not self.quiet and time.monotonic() - self._last >= self.every:
            self._print()

    def line_status(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-9)
        parts = [f"{_count(self.rows)} rows, {_count(self.rows / dt)} rows/s"] if self.rows \
            else []
        return " · ".join(parts + ([self.status] if self.status else []))

    def _print(self) -> None:
        self._last = time.monotonic()
        status = self.line_status()
        self.console.print(f"{self.what}: {self.done}/{self.total} {self.unit}"
                           f"{', ' + status if status else ''}, "
                           f"{self._last - self.t0:.0f} s", markup=False, highlight=False,
                           soft_wrap=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif not self.quiet and exc[0] is None:
            self._print()
