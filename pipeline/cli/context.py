"""State shared by the CLI's command modules: global options and the consoles.

Kept apart from the app (cli/__init__.py) so that every command module imports the same state
without importing the app that imports them.
"""
from __future__ import annotations

from pathlib import Path

from vilactl.base.console import new_console

# Never wrapping a line; tables at their natural width off a terminal (base/console.py).
console = new_console()
err_console = new_console(stderr=True)


class State:
    workspace: Path = Path("workspace")
    ray_address: str | None = None


state = State()


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """A typer option callback: the value (each value of a list option) checked with
    base/ranges.check_range against these bounds, so that an out-of-range number is one
    `error:` line (exit 1) before the command starts. Used by every numeric option."""
    from vilactl.base.ranges import check_range

    def callback(ctx, param, value):
        if ctx.resilient_parsing or value is None:
            return value
        flag = max(param.opts, key=len) if param.opts else param.name
        for v in value if isinstance(value, (list, tuple)) else (value,):
            check_range(v, flag, lo, hi, lo_open=lo_open)
        return value
    return callback


# The usual ranges. Integers are also kept within int64 and floats finite by check_range.
COUNT = in_range(1)                 # sizes, steps, batch sizes, limits: at least 1
NON_NEGATIVE = in_range(0)          # retries, filters where 0 means "none"
SEED = in_range(0)                  # numpy's generators take seeds ≥ 0
POSITIVE = in_range(0, lo_open=True)   # seconds, gigabytes, weights
