"""Names that become paths, and the one check that every written or removed path stays inside
the workspace.

A user-given output name (`--name`, a dataset, blend or run name) is a single path component:
1–100 characters of `A–Z a–z 0–9 _ . -`, starting with a letter or digit, never containing
`..`. It is checked before it is joined to a folder. Whatever vilactl then writes or removes
under `<workspace>/` goes through `contained`, which resolves symlinks: a path must land inside
the workspace, or inside the real folder that one of the workspace's top-level folders
(`datasets/`, `blends/`, …) links to — so an administrator may put `datasets/` on another disk,
but a name, a symlink inside it or a `..` can never reach outside.

The workspace itself is checked where it is first used (`check_workspace`: by the catalog's
connections and the output locks), so that a workspace that is a file, a symlink loop, under a
file, missing its parent folder, or read-only when a command must write is one line, not a
traceback from whichever write came first.
"""
from __future__ import annotations

import errno
import os
import re
import stat
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
    check_workspace(workspace)
    ws = Path(os.path.abspath(workspace))
    p = Path(os.path.abspath(path))
    if p == ws or not p.is_relative_to(ws):
        raise VilactlError(f"{path}: refused, not inside the workspace {ws}")
    top = ws / p.relative_to(ws).parts[0]
    try:
        real, root, top_real = p.resolve(), ws.resolve(), top.resolve()
    except (OSError, RuntimeError) as e:     # RuntimeError: Python 3.11's symlink loop
        raise VilactlError(f"{path}: refused, cannot resolve it ({e})") from None
    inside_root = real.is_relative_to(root) and real != root
    # a top-level folder may link elsewhere (another disk); what lies under it stays under it
    inside_top = real.is_relative_to(top_real) and (real != top_real or p == top)
    if not (inside_root or inside_top):
        raise VilactlError(f"{path}: refused, resolves to {real}, outside the workspace {ws}")
    return p


def output_dir(workspace: str | Path, area: str, name: str, what: str = "--name") -> Path:
    """`<workspace>/<area>/<name>` for a valid `name`, checked to stay inside the workspace."""
    return contained(workspace, Path(workspace) / area / check_name(name, what))


def check_workspace(workspace: str | Path, write: bool = False) -> Path:
    """`workspace` once it is checked usable: an existing folder (a symlink to one is fine);
    with `write`, one this process may write into, created if missing when its parent folder
    exists. Anything else is one line. Without `write`, a missing workspace is left to the
    caller (which says there is no catalog)."""
    ws = Path(workspace)
    what = f"workspace {ws}"
    try:
        st = os.stat(ws)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise VilactlError(f"{what}{_unusable(ws, e)}") from None
        if not write:
            return ws
        return _create(ws)
    if not stat.S_ISDIR(st.st_mode):
        raise VilactlError(f"{what} is not a folder; pass --workspace a folder (it is created "
                           "if missing)")
    if write:
        _check_writable(ws)
    return ws


def _unusable(ws: Path, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return " is a symlink loop (or a chain of too many symlinks); point it at a folder"
    if e.errno == errno.ENOTDIR:
        files = [p for p in reversed(Path(os.path.abspath(ws)).parents)
                 if p.exists() and not p.is_dir()]
        where = files[0] if files else "a parent"
        return f": {where} is a file, not a folder"
    return f": cannot use it: {e.strerror or e}"


def _create(ws: Path) -> Path:
    if os.path.lexists(ws):
        raise VilactlError(f"workspace {ws} is a symlink to {os.readlink(ws)}, which does not "
                           "exist")
    parent = Path(os.path.abspath(ws)).parent
    if not parent.is_dir():
        raise VilactlError(f"workspace {ws}: its parent folder {parent} does not exist; create "
                           "it first (vilactl creates the workspace folder only)")
    try:
        ws.mkdir()
    except FileExistsError:        # created by another vilactl process meanwhile
        pass
    except OSError as e:
        raise VilactlError(f"workspace {ws}: cannot create it in {parent}: "
                           f"{e.strerror or e}") from None
    return ws


def _check_writable(ws: Path) -> None:
    if not os.access(ws, os.W_OK | os.X_OK):
        raise VilactlError(f"workspace {ws} is read-only for this user; vilactl writes its "
                           "catalog, locks and outputs there (read-only commands such as "
                           "`vilactl sql` and `vilactl catalog` still work)")
    catalog = ws / "catalog.duckdb"
    if catalog.exists() and not os.access(catalog, os.R_OK | os.W_OK):
        raise VilactlError(f"{catalog} is read-only for this user; this command must write "
                           "the catalog")
