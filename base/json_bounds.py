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
import os
import re
from collections.abc import Iterator
from typing import IO, Any

from vilactl.base.errors import VilactlError

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_RECORD_BYTES = 64 << 20

# A JSON string (escapes included): removed before brackets are counted, so a `[` inside a
# caption does not count as nesting.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise VilactlError(f"{name}={raw!r}: expected a positive integer") from None
    if value <= 0:
        raise VilactlError(f"{name}={raw!r}: expected a positive integer")
    return value


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


class _Builder:
    """Builds one value from ijson's basic_parse events with an explicit stack (no recursion,
    no per-level prefix strings); `feed` returns True when the value is complete."""

    def __init__(self, depth_limit: int):
        self.limit, self.stack, self.keys, self.value = depth_limit, [], [], None

    @property
    def empty(self) -> bool:
        return not self.stack

    def feed(self, event: str, value: Any) -> bool:
        if event in ("start_map", "start_array"):
            if len(self.stack) >= self.limit:
                raise _Deep
            self.stack.append({} if event == "start_map" else [])
            self.keys.append(None)
            return False
        if event == "map_key":
            self.keys[-1] = value
            return False
        if event in ("end_map", "end_array"):
            value = self.stack.pop()
            self.keys.pop()
        if not self.stack:
            self.value = value
            return True
        parent = self.stack[-1]
        if isinstance(parent, list):
            parent.append(value)
        else:
            parent[self.keys[-1]] = value
        return False


class _Deep(Exception):
    pass


def array_items(f: IO[bytes], where: str) -> Iterator[Any]:
    """The items of a top-level JSON array, one at a time, each within depth and byte bounds.
    `f` is a binary file positioned at the array."""
    import ijson

    depth_limit, byte_limit = max_depth(), max_record_bytes()
    src = _Counted(f, byte_limit)
    events = ijson.basic_parse(src, use_float=True)
    record, index = _Builder(depth_limit), 0
    try:
        first = next(events, (None, None))[0]
        if first != "start_array":
            raise VilactlError(f"{where}: expected a JSON array of records")
        for event, value in events:
            if record.empty:
                if event == "end_array":         # the end of the top-level array
                    return
                index += 1
                src.start = src.count
            if record.feed(event, value):
                src.start = None
                yield record.value
    except _Deep:
        raise too_deep(f"{where}: record {index}", depth_limit) from None
    except _Overflow:
        raise too_big(f"{where}: record {index}", byte_limit) from None
    except ijson.JSONError as e:
        raise VilactlError(f"{where}: not valid JSON near record {index + 1} "
                           f"({str(e).splitlines()[0][:200]})") from None
