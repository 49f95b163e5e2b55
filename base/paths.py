"""Names that become paths, and the one check that every written or removed path stays inside
the workspace.

A user-given output name (`--name`, a dataset, blend or run name) is a single path component:
1–100 characters of `A–Z a–z 0–9 _ . -`, starting with a letter or digit, never containing
`..`. It is checked before it is joined to a folder. Whatever vilactl then writes or removes
under `<workspace>/` goes through `contained`, which resolves symlinks: a path must land inside
the workspace, or inside the real folder that one of the workspace's top-level folders
(`datasets/`, `blends/`, …) links to — so an administrator may put `datasets/` on another disk,
but a name, a symlink inside it or a `..` can never reach outside.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from vilactl.base.errors import VilactlError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = ("1-100 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit, "
             "without '..'")


def shown(value: object, limit: int = 60) -> str:
    """A user-given value for an error line: repr'd (no newlines) and shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "…" + text[-3:]


def check_name(name: object, what: str = "--name") -> str:
    """`name` if it is a valid output name; otherwise one line saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise VilactlError(f"{what} {shown(name)} is not allowed: use {NAME_RULE}")
    return name


def contained(workspace: str | Path, path: str | Path) -> Path:
    """`path` (absolute, or relative to the current directory) as an absolute path, after
    checking that it lies strictly inside the workspace, symlinks resolved."""
    ws = Path(os.path.abspath(workspace))
    p = Path(os.path.abspath(path))
    if p == ws or not p.is_relative_to(ws):
        raise VilactlError(f"{path}: refused, not inside the workspace {ws}")
    top = ws / p.relative_to(ws).parts[0]
    real, root, top_real = p.resolve(), ws.resolve(), top.resolve()
    inside_root = real.is_relative_to(root) and real != root
    # a top-level folder may link elsewhere (another disk); what lies under it stays under it
    inside_top = real.is_relative_to(top_real) and (real != top_real or p == top)
    if not (inside_root or inside_top):
        raise VilactlError(f"{path}: refused, resolves to {real}, outside the workspace {ws}")
    return p


def output_dir(workspace: str | Path, area: str, name: str, what: str = "--name") -> Path:
    """`<workspace>/<area>/<name>` for a valid `name`, checked to stay inside the workspace."""
    return contained(workspace, Path(workspace) / area / check_name(name, what))
