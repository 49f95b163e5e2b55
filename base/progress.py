"""Progress of long phases: a live bar on a terminal, plain lines everywhere else.

A rich bar is transient terminal art: in a log file, CI output or under nohup it prints nothing
until the phase ends, so a 9-minute curate or a 15-minute demo CLIP looked hung. Off a
terminal a phase prints one plain, unwrapped line at most every VILACTL_PROGRESS_SECONDS
(default 10 s) and one when it ends:

    demo CLIP: 40/200 steps, 0.8 steps/s, eta 3m20s, loss 2.913, 50 s

units done of the total, their rate (or rows and rows/s when the phase counts rows), the time
left at the rate so far, the phase's own status, and the time spent — which a log reader (or
`grep`) can follow.
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
    TimeRemainingColumn,
)

from vilactl.base.ranges import env_number

EVERY_ENV = "VILACTL_PROGRESS_SECONDS"


def every_seconds() -> float:
    """Seconds between two progress lines off a terminal (0: a line at every update)."""
    return env_number(EVERY_ENV, 10.0, 0, 86_400)


def count(n: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return f"{n:.0f}" if n >= 10 or n == int(n) else f"{n:.2g}"


def duration(s: float) -> str:
    """`42s`, `3m20s`, `1h05m`: short enough for a progress line."""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Phase:
    """`with Phase(console, "curate: select", total=32, unit="files") as p: p.advance(rows=…)`.

    `advance(n)` marks n more units done; `update(done)` sets the count (a training loop's
    step). `status` is the phase's own last word (a loss, a share of failures)."""

    def __init__(self, console: Console | None, what: str, total: int, unit: str = "files",
                 every: float | None = None, quiet: bool = False):
        from vilactl.base.console import new_console

        self.console = console or new_console()
        self.what, self.total, self.unit = what, total, unit
        self.every = every_seconds() if every is None else every
        self.quiet, self.done, self.rows, self.status = quiet, 0, 0, ""
        self._shown: tuple | None = None     # the state the last plain line showed
        self.live = self.console.is_terminal and not quiet
        self._bar: Progress | None = None

    def __enter__(self) -> Phase:
        self.t0 = self._last = time.monotonic()
        if self.live:
            self._bar = Progress(TextColumn(f"[bold]{self.what}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=self.total, status="")
        return self

    def advance(self, n: int = 1, rows: int = 0, status: str = "") -> None:
        self.update(self.done + n, rows=rows, status=status)

    def update(self, done: int, rows: int = 0, status: str = "") -> None:
        self.done, self.rows = done, self.rows + rows
        self.status = status or self.status
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=self.line_status())
        elif not self.quiet and time.monotonic() - self._last >= self.every:
            self._print()

    def line_status(self, eta: bool = False) -> str:
        dt = max(time.monotonic() - self.t0, 1e-9)
        if self.rows:
            parts = [f"{count(self.rows)} rows, {count(self.rows / dt)} rows/s"]
        else:
            parts = [f"{count(self.done / dt)} {self.unit}/s"] if self.done else []
        if eta and 0 < self.done < self.total:
            parts.append(f"eta {duration(dt * (self.total - self.done) / self.done)}")
        return ", ".join(parts + ([self.status] if self.status else []))

    def _print(self) -> None:
        self._last, self._shown = time.monotonic(), (self.done, self.rows, self.status)
        status = self.line_status(eta=True)
        self.console.print(f"{self.what}: {self.done}/{self.total} {self.unit}"
                           f"{', ' + status if status else ''}, "
                           f"{duration(self._last - self.t0)}", markup=False, highlight=False,
                           soft_wrap=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif not self.quiet and exc[0] is None and self._shown != (self.done, self.rows,
                                                                     self.status):
            self._print()        # the closing line, unless the last line already said it


def tracked(items, what: str, total: int, unit: str = "files", quiet: bool = False,
            console: Console | None = None):
    """`items`, one Phase unit per item: `for t in tracked(tables, "blend: reading", n): …`."""
    with Phase(console, what, total, unit, quiet=quiet) as phase:
        for item in items:
            yield item
            phase.advance()
