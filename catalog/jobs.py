"""One runner for every command that does work: lock, `runs` rows, output folder, one commit.

    with jobs.dataset_job(workspace, "vilactl curate coyo", args, name, replace) as job:
        ...write files under job.dir...
        job.counts.update(selected=n)
        job.commit(lambda con: record_dataset(con, ds, shards, job.run.id, replace))

What every command gets, in this order:
  1. its output's lock (base/locks.py), before anything is touched: a second writer of the same
     output waits, then stops with one line; a failed wait leaves nothing;
  2. refusal of a taken dataset name (unless replace) — an argument problem, so no run row;
  3. a `running` row in `runs`; an earlier run of the same output still `running` was killed,
     and becomes `incomplete`;
  4. for a fresh output, an empty temp folder beside the final one (`job.dir`; stale temps of
     killed runs are swept first);
  5. on success, one transaction: the temp folder renamed into place (the old one set aside),
     the run `ok` with its counts, and whatever the command committed (datasets, shards,
     selections, blends …); if that fails the rename is undone, and the old folder is removed
     only after the catalog committed;
  6. on failure (an exception, Ctrl-C): the temp folder removed and the run `failed` with the
     error's first line. A SIGKILL leaves `running` (and a temp folder the next run sweeps).
Arguments are checked before the job starts; a refusal there writes nothing at all.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from vilactl.base import atomic, locks
from vilactl.base.errors import VilactlError
from vilactl.base.paths import contained, output_dir
from vilactl.catalog import db
from vilactl.catalog.rows import (
    Dataset,
    Run,
    Shard,
    dataset_row,
    mark_interrupted,
    now,
    record_dataset,
    record_failure,
    record_run,
    resolve,
    view_name,
)


@dataclass
class Job:
    workspace: Path
    run: Run
    folder: Path | None                # the final output folder, if the job writes one
    tmp: Path | None = None            # where a fresh output is written until the commit
    counts: dict[str, Any] = field(default_factory=dict)
    _commits: list[Callable[[duckdb.DuckDBPyConnection], None]] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        """Where to write: the temp folder of a fresh output, else the output folder itself."""
        if self.tmp is not None:
            return self.tmp
        if self.folder is None:
            raise RuntimeError("this job writes no folder")
        return self.folder

    def final(self, path: Path) -> str:
        """The absolute path a file written under `dir` will have once the job commits."""
        if self.tmp is not None and Path(path).is_relative_to(self.tmp):
            return resolve(self.folder / Path(path).relative_to(self.tmp))
        return resolve(path)

    def shard(self, path: Path, rows: int, **kw) -> Shard:
        """A shard row for a file written under `dir` (size and checksum read now)."""
        return Shard(path=self.final(path), rows=rows, bytes=Path(path).stat().st_size,
                     checksum=atomic.sha256_file(path), **kw)

    def commit(self, fn: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """Run fn(con) in the job's final transaction, beside the run's `ok` row."""
        self._commits.append(fn)

    def dataset(self, ds: Dataset, shards: list[Shard], text_words: int | None = None) -> None:
        """Record the dataset this job made (its shards, view and text words) at the commit;
        it replaces one of the same name — the job refused that already unless --replace."""
        self.commit(lambda con: record_dataset(con, ds, shards, self.run.id, replace=True,
                                               text_words=text_words))


@contextlib.contextmanager
def job(workspace: str | Path, command: str, args: dict, *, target: str,
        folder: Path | None = None, fresh: bool = True, dataset: str | None = None,
        kind: str | None = None, replace: bool = False, record: bool = True) -> Iterator[Job]:
    """Run a command's work as a job (see the module docstring). `target` names the output
    (the lock and the runs' `target`); `dataset` (of `kind`) is checked free unless `replace`
    or the output is resumable (`fresh=False`). With `record=False` (the other ranks of a
    torchrun job) nothing is locked or recorded."""
    workspace = Path(workspace)
    if not record:
        yield Job(workspace, Run(command=command, args=args, target=target), folder)
        return
    with locks.hold(workspace, target, target):
        if dataset is not None:
            check_free(workspace, dataset, folder if fresh else None, replace or not fresh, kind)
        run = Run(command=command, args=args, target=target)
        with db.writer(workspace) as con:
            mark_interrupted(con, target, run.id)
            record_run(con, run)
        j = Job(workspace, run, folder)
        try:
            if folder is not None and fresh:
                for stale in atomic.stale_temps(folder):
                    atomic.remove(contained(workspace, stale))
                j.tmp = atomic.temp_dir(folder)
            yield j
            _finish(j)
        except BaseException as e:
            atomic.remove(j.tmp)
            if folder is not None and not fresh:     # a resumable output that got nothing
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(VilactlError):   # the catalog busy: the error matters more
                record_failure(workspace, run, e)
            raise


def dataset_job(workspace: str | Path, command: str, args: dict, name: str, kind: str,
                replace: bool = False, area: str = "datasets",
                fresh: bool = True) -> contextlib.AbstractContextManager[Job]:
    """A job that makes dataset `name` of `kind` in `<workspace>/<area>/<name>/` (`fresh`:
    written in a temp folder, a taken name refused unless `replace`; else resumably in place,
    the command checking that the folder is its own)."""
    folder = output_dir(workspace, area, name)
    return job(workspace, command, args, target=f"datasets/{name}", folder=folder, fresh=fresh,
               dataset=name, kind=kind, replace=replace)


def _finish(j: Job) -> None:
    j.run.status, j.run.finished_at, j.run.counts = "ok", now(), j.counts
    old, swapped = None, False
    try:
        with db.writer(j.workspace) as con:   # the catalog's lock first, then the folder
            if j.tmp is not None:            # in place before the rows: views bind their files
                old, swapped = atomic.swap_in(j.tmp, j.folder), True
            record_run(con, j.run)
            for fn in j._commits:
                fn(con)
    except BaseException:
        if swapped:                          # the commit failed after the rename: undo it
            atomic.remove(j.folder)
            if old is not None:
                os.replace(old, j.folder)
        j.run.status, j.run.finished_at = "running", None
        raise
    j.tmp = None
    atomic.remove(old)


def check_free(workspace: Path, name: str, folder: Path | None, replace: bool,
               kind: str | None = None) -> None:
    """Refuse a dataset name that is taken (unless replace), that holds another kind of
    dataset (replace or not), or whose `samples_<name>` view would be another dataset's (views
    are case-insensitive, and `-` `.` become `_`)."""
    row, clash = None, None
    if db.catalog_path(workspace).exists():
        with db.reader(workspace) as con:
            row = dataset_row(con, name)
            found = con.sql("SELECT name, view_name FROM datasets WHERE lower(view_name) = "
                            "lower(?) AND name <> ?", params=[view_name(name), name]).fetchall()
            clash = found[0] if found else None
    if clash is not None:
        raise VilactlError(f"dataset name {name!r} would share the view {clash[1]} with dataset "
                           f"{clash[0]!r} (view names ignore case, - and .); choose another name")
    if row is not None and kind is not None and row["kind"] != kind:
        raise VilactlError(f"dataset {name!r} is a {row['kind']} dataset, not {kind}; choose "
                           "another --name (--replace only remakes a dataset of the same kind)")
    if not replace and (row is not None or (folder is not None and folder.exists())):
        raise VilactlError(f"dataset {name!r} is already in the catalog "
                           "(pass --replace to make it again, or choose --name)")
