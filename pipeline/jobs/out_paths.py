"""User-given output paths that may lie outside the workspace (`export --out DIR`,
`generate --out FILE`): checked before anything is written.

A path is refused (one line naming it) when it is empty or holds a NUL, when its parent folder
does not exist, when it is a symlink, when it would write onto, into or over anything the
catalog records (the catalog file, dataset folders and registered files, shards, blends,
checkpoints, earlier exports — unless replacing that same export), and, inside the workspace,
anywhere but under `<workspace>/exports/` (the workspace's own folders belong to vilactl). A
folder output must be new or empty, or (with `--replace`) an earlier export, which is then
replaced whole by a temp folder renamed into place.
"""
from __future__ import annotations

import os
from pathlib import Path

from vilactl.base.errors import VilactlError
from vilactl.base.paths import shown
from vilactl.catalog.exports import recorded_paths

EXPORT_MARKER = "vilactl-export.json"      # written into every exported folder


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


def _check_recorded(workspace: Path, p: Path, flag: str, own_export: bool) -> None:
    real = p.parent.resolve() / p.name
    ws = Path(os.path.abspath(workspace)).resolve()
    if ws.is_relative_to(real):
        raise VilactlError(f"{flag} {p}: would hold the workspace {ws}; choose another path")
    if real.is_relative_to(ws) and not real.is_relative_to(ws / "exports"):
        raise VilactlError(f"{flag} {p}: inside the workspace {ws} only exports/ takes outputs "
                           "(e.g. --out " f"{ws / 'exports' / p.name})")
    for what, recorded in recorded_paths(workspace):
        r = Path(recorded)
        if what.startswith("export ") and own_export and r == real:
            continue                      # replacing this very export
        if _overlap(real, r.resolve() if r.exists() else r):
            raise VilactlError(f"{flag} {p}: would write onto {what} ({r}); choose another path")


def check_folder(workspace: Path, raw: str | Path, flag: str = "--out",
                 replace: bool = False) -> Path:
    """An absolute folder path that is safe to (re)place an export at."""
    p = _absolute(raw, flag)
    earlier = p.is_dir() and (p / EXPORT_MARKER).is_file()
    _check_recorded(workspace, p, flag, own_export=earlier)
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


def check_file(workspace: Path, raw: str | Path, flag: str = "--out",
               inputs: tuple[Path, ...] = ()) -> Path:
    """An absolute file path that is safe to write (atomically) — never one of `inputs`."""
    p = _absolute(raw, flag)
    if p.is_dir():
        raise VilactlError(f"{flag} {p}: is a folder; give a file path")
    if any(p.resolve() == Path(i).resolve() for i in inputs):
        raise VilactlError(f"{flag} {p}: is an input of this command; choose another file")
    _check_recorded(workspace, p, flag, own_export=False)
    return p
