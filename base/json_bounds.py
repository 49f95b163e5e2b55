"""Bounds on JSON that users hand in: nesting depth and bytes per record, memory kept flat.

Every reader of user JSON (LLaVA arrays, MMC4 / FLAN / `generate --input` JSON Lines) goes
through here, because the plain parsers have no such limits: `ijson.items` keeps a prefix
string per nesting level (`item.item.item…`), so a 200 KB file of 100 000 nested brackets grew
`register llava` to 17.6 GB, and `json.loads` of a deep line dies in a RecursionError.

- `lines(stream, where)` reads JSON Lines with `readline(limit)`: a line over the record budget
  is refused after reading `limit` characters, never held whole; each line's depth is checked
  on its text (a regex scan, no recursion) before `json.loads` sees it.
- `array_items(file, where)` streams a top-level JSON array with ijson's prefix-free
  `basic_parse` events, building one record at a time with an explicit stack; the file is read
  through a counter so one record (even a single huge string) stops at the byte budget (give
  or take ijson's 64 KiB read-ahead).

Errors are one line, `FILE line N: …` / `FILE: record N: …`. Limits (environment overrides,
read at each call so tests and users can raise them):
  VILACTL_JSON_MAX_DEPTH         nesting levels of one record (default 64)
  VILACTL_JSON_MAX_RECORD_BYTES  bytes of one record or line (default 64 MiB)
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

from vilactl.base.errors import VilactlError
from vilactl.base.ranges import env_number

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_RECORD_BYTES = 64 << 20

# A JSON string (escapes included): removed before brackets are counted, so a `[` inside a
# caption does not count as nesting.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _env_int(name: str, default: int) -> int:
    return env_number(name, default, 1, None, integer=True)


def max_depth() -> int:
    return _env_int("VILACTL_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH)


def max_record_bytes() -> int:
    return _env_int("VILACTL_JSON_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def too_big(where: str, limit: int) -> VilactlError:
    return VilactlError(f"{where}: record larger than {_mib(limit)} (raise "
                        "VILACTL_JSON_MAX_RECORD_BYTES to allow it)")


def too_deep(where: str, limit: int) -> VilactlError:
    return VilactlError(f"{where}: JSON nested deeper than {limit} levels (raise "
                        "VILACTL_JSON_MAX_DEPTH to allow it)")


def check_depth(text: str, where: str, limit: int | None = None) -> None:
    """Refuse text whose brackets nest deeper than `limit`, without parsing or recursing."""
    limit = max_depth() if limit is None else limit
    if text.count("[") + text.count("{") <= limit:
        return                                   # cannot be deeper: the common case, fast
    # Strings out, then everything but brackets; each pass of _INNERMOST removes exactly one
    # level (its matches never overlap), all at C speed and without recursion.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        brackets = _INNERMOST.sub("", brackets)
        if not brackets:
            return
    # Still nested after `limit` levels, or unbalanced with more openers than the limit (which
    # json.loads would recurse into before finding the syntax error): too deep. A short
    # unbalanced rest is left to the parser's syntax error.
    if _INNERMOST.search(brackets) or brackets.count("[") + brackets.count("{") > limit:
        raise too_deep(where, limit)

def loads(text: str | bytes, where: str) -> Any:
    """json.loads within the bounds; a syntax error is a one-line VilactlError too."""
    limit = max_record_bytes()
    if len(text) > limit:
        raise too_big(where, limit)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VilactlError(f"{where}: not UTF-8 text ({e.reason})") from e
    check_depth(text, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise VilactlError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from e
    except RecursionError:                       # only with a limit above Python's stack
        raise too_deep(where, max_depth()) from None


def load_file(path, what: str = "") -> Any:
    """One JSON document from a file (a checkpoint's meta.json a user may point at), read no
    further than the record budget."""
    limit = max_record_bytes()
    where = f"{what}{path}"
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise VilactlError(f"{where}: cannot read ({e.strerror})") from e
    return loads(data, where)


def lines(stream: IO, where: str, at: str = "{where}:{n}") -> Iterator[tuple[int, str | bytes]]:
    """(line number, line) of a JSON Lines stream, blank lines skipped; a line longer than the
    record budget is refused after reading that much of it (`at` names the line in errors)."""
    limit = max_record_bytes()
    n = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        n += 1
        if len(line) > limit:
            raise too_big(at.format(where=where, n=n), limit)
        if line.strip():
            yield n, line


class _Counted:
    """A binary file whose reads are counted, stopping a record past its byte budget."""

    def __init__(self, f: IO[bytes], limit: int):
        self.f, self.limit, self.count, self.start = f, limit, 0, None

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n is not None and n >= 0 else 1 << 16)
        self.count += len(data)
        if self.start is not None and self.count - self.start > self.limit + (1 << 17):
            raise _Overflow
        return data


class _Overflow(Exception):
    pass


class _Deep(Exception):
    pass


_OPEN = {"start_map": dict, "start_array": list}
_CLOSE = {"end_map", "end_array"}


def _values(events: Iterator, limit: int, src: _Counted) -> Iterator[Any]:
    """Top-level array items built from ijson's basic_parse events with an explicit stack (no
    recursion, no per-level prefix strings); `src.start` marks where each item began. Hot
    loop: plain locals, one dict lookup per event."""
    stack: list = []
    keys: list = []
    for event, value in events:
        if event == "map_key":
            keys[-1] = value
            continue
        if not stack:
            if event == "end_array":             # the end of the top-level array
                return
            src.start = src.count
        make = _OPEN.get(event)
        if make is not None:
            if len(stack) >= limit:
                raise _Deep
            stack.append(make())
            keys.append(None)
            continue
        if event in _CLOSE:
            value = stack.pop()
            keys.pop()
        if not stack:
            src.start = None
            yield value
        elif keys[-1] is None:
            stack[-1].append(value)
        else:
            stack[-1][keys[-1]] = value


def array_items(f: IO[bytes], where: str) -> Iterator[Any]:
    """The items of a top-level JSON array, one at a time, each within depth and byte bounds.
    `f` is a binary file positioned at the array."""
    import ijson

    depth_limit, byte_limit = max_depth(), max_record_bytes()
    src = _Counted(f, byte_limit)
    events = ijson.basic_parse(src, use_float=True)
    index = 0
    try:
        first = next(events, (None, None))[0]
        if first != "start_array":
            raise VilactlError(f"{where}: expected a JSON array of records")
        for value in _values(events, depth_limit, src):
            index += 1
            yield value
    except _Deep:                                # in the record after the last one yielded
        raise too_deep(f"{where}: record {index + 1}", depth_limit) from None
    except _Overflow:
        raise too_big(f"{where}: record {index + 1}", byte_limit) from None
    except ijson.JSONError as e:
        raise VilactlError(f"{where}: not valid JSON near record {index + 1} "
                           f"({str(e).splitlines()[0][:200]})") from None
