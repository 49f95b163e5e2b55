"""`vilactl verify [DATASET…]`: reread every recorded file and compare it with the catalog.

Commands check a dataset's files cheaply before reading them (catalog/integrity.py: size,
mtime, Parquet footer, sha256 of small files) and send the user here when one changed. This
rereads every file of the named datasets (all when none are named) in full, with progress,
prints each dataset `ok` or its changed files, and records the new mtime of files whose bytes
are unchanged (a `touch`), so the cheap check accepts them again. Any changed file: exit 1.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from vilactl.base.errors import VilactlError
from vilactl.base.progress import Phase
from vilactl.catalog import db, integrity


def verify(workspace: Path, datasets: list[str], console: Console) -> dict[str, list]:
    with db.reader(workspace) as con:
        files, size = integrity.total_bytes(con, datasets)
        read = [0]

        def advance(n: int, b: int) -> None:
            read[0] += b
            progress.advance(n, status=f"{read[0] / 1e6:.1f} of {size / 1e6:.1f} MB")

        with Phase(console, "verify: sha256", files, "files") as progress:
            verdicts = integrity.verify(con, list(dict.fromkeys(datasets)), advance)
    changed = {d: [v for v in vs if v.problem] for d, vs in verdicts.items()}
    for name, vs in verdicts.items():
        bad = changed[name]
        if not bad:
            console.print(f"{escape(name)}: ok ({len(vs)} files)", highlight=False)
            continue
        console.print(f"{escape(name)}: [red]{len(bad)} of {len(vs)} files changed[/red]",
                      highlight=False)
        for v in bad:
            console.print(f"  {escape(v.rec.path)}: {escape(v.problem)}", highlight=False,
                          soft_wrap=True)
    fresh = [v for vs in verdicts.values() for v in vs]
    if any(v.problem is None and v.mtime_ns is not None for v in fresh):
        with db.writer(workspace) as con:
            integrity.record_mtimes(con, fresh)
    n = sum(map(len, changed.values()))
    if n:
        names = [d for d, vs in changed.items() if vs]
        raise VilactlError(f"{n} recorded file(s) changed in {len(names)} dataset(s) "
                           f"({', '.join(names[:5])}{', …' if len(names) > 5 else ''}): "
                           "register or remake them (`--replace`)")
    console.print(f"verified {files} files, {size / 1e6:.1f} MB: all match the catalog",
                  highlight=False)
    return verdicts
