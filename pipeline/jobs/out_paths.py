"""User-given output paths (`export --out DIR`, `generate --out FILE`, `sql --out FILE`,
`report --out FILE`): checked before anything is written, by this one module.

A path is refused (one line naming it) when it is empty or holds a NUL, when its parent folder
does not exist, when it is a symlink, when it would write onto, into or over anything the
catalog records (the catalog file and its write-ahead log, dataset folders and registered
files, shards, blends, checkpoints, earlier exports — unless replacing that same export), and
when it lies where the workspace keeps its own things:
  * a folder output (export) goes inside the workspace only under `<workspace>/exports/`;
  * a file output goes inside the workspace only directly in it (`<workspace>/report.html`,
    `<workspace>/answers.jsonl`), never into one of its folders (`datasets/`, `blends/`,
    `checkpoints/`, `exports/`, `.locks/`, `.tmp/` …) and never onto a hidden name or the
    catalog's names.
A folder output must be new or empty, or (with `--replace`) an earlier export, which is then
replaced whole by a temp folder renamed into place. A file output must be new, or replaced with
`--force` (the caller may also let a file vilactl itself wrote there be replaced, as `report`
does for its default `<workspace>/report.html`); an existing device, pipe or socket is refused
outright. Files are written to a temp name beside the target and renamed (base/atomic.py), and
`write_errors` turns a failed write (full disk, I/O error, a file-size limit) into one line
naming the target, so a failed write leaves no partial file and no traceback.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from vilactl.base.errors import VilactlError
from vilactl.base.paths import shown
from vilactl.catalog.db import CATALOG_FILE
from vilactl.catalog.exports import recorded_paths

EXPORT_MARKER = "vilactl-export.json"      # written into every exported folder
# The workspace's own top-level folders (README.md, "the workspace"): a file output never goes
# into or onto one, even before it exists (a file named `datasets` would block the folder).
WORKSPACE_FOLDERS = ("datasets", "blends", "checkpoints", "evals", "exports", "models", "world")


def _absolute(raw: str | Path, flag: str) -> Path:
    text = str(raw)
    if not text.strip() or "\0" in text:
        raise VilactlError(f"{flag} {shown(text)} is not a usable path")
    p = Path(os.path.abspath(text))
    if p.is_symlink():
        raise VilactlError(f"{flag} {p}: is a symlink; give the real path")
    if not p.parent.is_dir():
        raise VilactlError(f"{flag} {p}: its folder {p.parent} does not exist (create it first)")
    return p


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _workspace(workspace: Path) -> Path:
    return Path(os.path.abspath(workspace)).resolve()


def _check_catalog_records(workspace: Path, p: Path, flag: str, own_export: bool) -> None:
    real = p.parent.resolve() / p.name
    for what, recorded in recorded_paths(workspace):
        r = Path(recorded)
        if what.startswith("export ") and own_export and r == real:
            continue                      # replacing this very export
        if _overlap(real, r.resolve() if r.exists() else r):
            raise VilactlError(f"{flag} {p}: would write onto {what} ({r}); choose another path")


def _check_folder_place(workspace: Path, p: Path, flag: str) -> None:
    real, ws = p.parent.resolve() / p.name, _workspace(workspace)
    if ws.is_relative_to(real):
        raise VilactlError(f"{flag} {p}: would hold the workspace {ws}; choose another path")
    if real.is_relative_to(ws) and not real.is_relative_to(ws / "exports"):
        raise VilactlError(f"{flag} {p}: inside the workspace {ws} only exports/ takes outputs "
                           "(e.g. --out " f"{ws / 'exports' / p.name})")


def _check_file_place(workspace: Path, p: Path, flag: str) -> None:
    ws = _workspace(workspace)
    # both the path as given and as resolved: a workspace folder may link to another disk
    for path, root in ((p.parent.resolve() / p.name, ws),
                       (p, Path(os.path.abspath(workspace)))):
        if not path.is_relative_to(root):
            continue
        top = path.relative_to(root).parts[0]
        if path.parent != root:
            raise VilactlError(f"{flag} {p}: is inside {root / top}, which vilactl manages; "
                               f"write files directly in the workspace or outside it")
        if top.startswith(".") or top in WORKSPACE_FOLDERS or top.startswith(CATALOG_FILE):
            raise VilactlError(f"{flag} {p}: the name {top} belongs to vilactl's own files in "
                               f"the workspace; choose another name")


def check_folder(workspace: Path, raw: str | Path, flag: str = "--out",
                 replace: bool = False) -> Path:
    """An absolute folder path that is safe to (re)place an export at."""
    p = _absolute(raw, flag)
    earlier = p.is_dir() and (p / EXPORT_MARKER).is_file()
    _check_folder_place(workspace, p, flag)
    _check_catalog_records(workspace, p, flag, own_export=earlier)
    if p.exists() and not p.is_dir():
        raise VilactlError(f"{flag} {p}: is a file; give a folder path")
    if p.is_dir() and any(p.iterdir()):
        if not earlier:
            raise VilactlError(f"{flag} {p}: exists and is not empty (and not a vilactl export); "
                               "give a new or empty folder")
        if not replace:
            raise VilactlError(f"{flag} {p}: holds an earlier export; pass --replace to "
                               "replace it")
    return p


def check_plain_folder(workspace: Path, raw: str | Path, flag: str = "--out") -> Path:
    """An absolute path for a folder that is not an export (`world --out`): never on, in or
    around what the catalog records, and inside the workspace only a new top-level name."""
    p = _absolute(raw, flag)
    _check_catalog_records(workspace, p, flag, own_export=False)
    _check_file_place(workspace, p, flag)
    ws = _workspace(workspace)
    if ws.is_relative_to(p.parent.resolve() / p.name):
        raise VilactlError(f"{flag} {p}: would hold the workspace {ws}; choose another path")
    return p


def check_file(workspace: Path, raw: str | Path, flag: str = "--out",
               inputs: tuple[Path, ...] = (), force: bool = False) -> Path:
    """An absolute file path that is safe to write (atomically) — never one of `inputs`, never
    anything the catalog records or the workspace manages, and an existing file only with
    `force`."""
    p = _absolute(raw, flag)
    if p.is_dir():
        raise VilactlError(f"{flag} {p}: is a folder; give a file path")
    if p.exists() and not p.is_file():
        raise VilactlError(f"{flag} {p}: is not a regular file (a device, pipe or socket); "
                           "give a file path")
    if any(p.resolve() == Path(i).resolve() for i in inputs):
        raise VilactlError(f"{flag} {p}: is an input of this command; choose another file")
    _check_catalog_records(workspace, p, flag, own_export=False)
    _check_file_place(workspace, p, flag)
    if p.exists() and not force:
        raise VilactlError(f"{flag} {p}: exists; pass --force to replace it")
    return p


@contextlib.contextmanager
def write_errors(target: str | Path) -> Iterator[None]:
    """Turn a failed write (ENOSPC, EDQUOT, EIO, EFBIG, EROFS, EACCES …) into one line naming
    the target. A closed pipe (EPIPE) is left to the CLI, which exits quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        # Arrow's writers wrap the system's words ("Error writing bytes to file. Detail:
        # [errno 27] File too large"): the errno says it in the same words as everyone else's
        reason = (os.strerror(e.errno) if e.errno else e.strerror) or \
            " ".join(str(e).split()) or type(e).__name__
        raise VilactlError(f"{target}: cannot write: {reason}") from e
