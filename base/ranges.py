"""Range checks for numbers a user hands in (command-line options, request fields).

Every numeric option states its bounds where it is declared (pipeline/cli/context.py wraps
`check_range` as a typer callback), so a value out of range is one line before any work starts:
NaN and infinities are never accepted, integers stay within int64 (DuckDB, Arrow and numpy
store them as such), and a count, size or limit that must be positive is. Relations between
options (`--deadline` ≥ `--timeout`) are checked with the same function, `lo` being the other
option's value.
"""
from __future__ import annotations

import math
import os

from vilactl.base.errors import VilactlError

INT64_MAX = 2**63 - 1


def _bound(x: float) -> str:
    if x == INT64_MAX:
        return "2^63-1"
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)


def rule(lo: float | None, hi: float | None, integer: bool, lo_open: bool = False) -> str:
    """The allowed range in words ("a positive integer below 2^63", "a number in (0, 1]")."""
    if integer:
        hi = INT64_MAX if hi is None else hi
        if hi == INT64_MAX and lo in (0, 1) and not lo_open:
            return f"a {'non-negative' if lo == 0 else 'positive'} integer below 2^63"
        return f"an integer from {_bound(lo if lo is not None else -INT64_MAX)} to {_bound(hi)}"
    if lo is not None and hi is not None:
        return f"a number in {'(' if lo_open else '['}{_bound(lo)}, {_bound(hi)}]"
    if lo is not None:
        return f"a finite number {'>' if lo_open else '≥'} {_bound(lo)}"
    if hi is not None:
        return f"a finite number ≤ {_bound(hi)}"
    return "a finite number"


def check_range(value, what: str, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, integer: bool | None = None, lo_name: str | None = None):
    """`value` if it is a finite number (an integer within int64 when `integer`, by default
    when `value` is an int) with lo ≤ value ≤ hi (lo < value with `lo_open`); otherwise one
    line naming `what` and the allowed range. `lo_name` names another option `lo` came from."""
    if value is None:
        return value
    integer = isinstance(value, int) if integer is None else integer
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and integer:
        ok = isinstance(value, int) and -INT64_MAX <= value <= INT64_MAX
    if ok and not integer:
        ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if ok:
        return value
    shown = repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) \
        else (str(value) if len(str(value)) <= 40 else f"{str(value)[:20]}…")
    if lo_name is not None:
        raise VilactlError(f"{what} must be {'>' if lo_open else '≥'} {lo_name} ({_bound(lo)}), "
                           f"got {shown}")
    raise VilactlError(f"{what} must be {rule(lo, hi, integer, lo_open)}, got {shown}")


def env_number(name: str, default: float, lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False, integer: bool = False):
    """The number in environment variable `name` (`default` when unset), range-checked like an
    option: one line naming the variable when it is not a number or out of range."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise VilactlError(f"{name}={raw[:40]!r} is not {kind}") from None
    return check_range(value, name, lo, hi, lo_open=lo_open, integer=integer)
