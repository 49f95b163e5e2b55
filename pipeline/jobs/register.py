"""`vilactl register …`: validate real-format corpora and record them, downloading nothing.

Every file is validated before anything is recorded; MMC4 documents are normalised to Parquet
(MMC4_SCHEMA, one shard per input file) in the job's temporary folder, renamed into place with
the catalog commit (catalog/jobs.py). Keys must be unique (COYO ids, MMC4 doc_ids: they key the
downloads). Bad input therefore leaves neither files nor datasets behind — only the run, failed.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.paths import check_name
from vilactl.base.progress import Phase, tracked
from vilactl.catalog import jobs
from vilactl.catalog.checks import duplicates_problem
from vilactl.catalog.rows import Dataset, resolve
from vilactl.curation.readers import FileStats, expand, read_mmc4, scan_coyo, scan_samples
from vilactl.curation.records import mmc4_table


def _scan_all(paths: list[Path], scan: Callable[[Path], FileStats], label: str,
              quiet: bool) -> list[FileStats]:
    """Validate and checksum every file, two at a time: pyarrow's decoding and sha256 both
    release the GIL, so one file's hashing overlaps another's validation. Results (and the
    first error) come in file order; memory is a record batch per thread."""
    stats: list[FileStats] = []
    with Phase(None, label, len(paths), "files", quiet=quiet) as progress, \
            ThreadPoolExecutor(2) as pool:
        for s in pool.map(scan, paths):
            stats.append(s)
            progress.advance(rows=s.rows)
    return stats


def check_unique(paths: list[Path], column: str, what: str,
                 names: dict[str, str] | None = None, spill_in: Path | None = None,
                 quiet: bool = True) -> None:
    """Refuse duplicate keys; DuckDB spills into a temp folder made (and removed) in
    `spill_in` — a folder of the workspace, never the current directory."""
    temp = atomic.temp_dir(Path(spill_in) / "dup-check") if spill_in else None
    with Phase(None, f"checking {what}s are unique", 100, "%", quiet=quiet) as progress:
        def report(done: float) -> None:
            progress.advance(int(done) - progress.done)

        problem = duplicates_problem(paths, column, what, names, temp, report)
        progress.advance(100 - progress.done)
    if problem:
        raise VilactlError(problem)


def _in_place(workspace: Path, name: str, kind: str, replace: bool, command: str, args: dict,
              ds: Callable[[], tuple[Dataset, list[FileStats]]]) -> Dataset:
    """Register files where they are (COYO metadata, sample Parquet): a job with no folder."""
    with jobs.job(workspace, command, args, target=f"datasets/{name}", dataset=name, kind=kind,
                  replace=replace) as job:
        made, stats = ds()
        shards = [job.shard(s.path, s.rows) for s in stats]
        job.counts.update(files=len(stats), samples=made.num_samples, images=made.num_images)
        job.dataset(made, shards)
    return made


def register_coyo(workspace: Path, pattern: str, name: str, replace: bool = False,
                  quiet: bool = False) -> Dataset:
    check_name(name)
    paths = expand(pattern, "COYO Parquet files")

    def made():
        stats = _scan_all(paths, scan_coyo, "register: validating COYO", quiet)
        check_unique(paths, "id", "COYO id", spill_in=Path(workspace) / ".tmp", quiet=quiet)
        rows = sum(s.rows for s in stats)
        if rows == 0:           # a wrong glob or an export that failed, not a dataset
            raise VilactlError(f"{pattern}: {len(stats)} file(s) with no rows; nothing to "
                               "register")
        return Dataset(name=name, kind=Kind.COYO_METADATA, format="parquet", uri=resolve(pattern),
                       num_samples=rows, num_images=rows, num_texts=rows,
                       num_bytes=sum(s.bytes for s in stats), params={"glob": pattern}), stats
    return _in_place(workspace, name, Kind.COYO_METADATA, replace,
                     f"vilactl register coyo --metadata {pattern}",
                     {"metadata": pattern, "name": name}, made)


def register_samples(workspace: Path, pattern: str, name: str, replace: bool = False,
                     quiet: bool = False, kind: str = Kind.SAMPLES,
                     parents: list[str] | None = None) -> Dataset:
    """Register Parquet files already in the training-sample schema (instruction, eval sets)."""
    check_name(name)
    kinds = [str(k) for k in Kind]
    if kind not in kinds:
        raise VilactlError(f"--kind {kind!r} is not a dataset kind ({', '.join(kinds)})")
    paths = expand(pattern, "sample Parquet files")

    def made():
        stats = _scan_all(paths, scan_samples, "validating samples", quiet)
        return Dataset(name=name, kind=kind, format="parquet", uri=resolve(pattern),
                       num_samples=sum(s.rows for s in stats),
                       num_images=sum(s.images for s in stats),
                       num_texts=sum(s.texts for s in stats),
                       num_bytes=sum(s.bytes for s in stats), parents=parents or [],
                       params={"glob": pattern}), stats
    return _in_place(workspace, name, kind, replace, f"vilactl register samples --data {pattern}",
                     {"data": pattern, "name": name, "kind": kind}, made)


def normalise_mmc4(paths: list[Path], folder: Path, quiet: bool = False) -> list[FileStats]:
    """Validate MMC4 files and write them as MMC4_SCHEMA Parquet into `folder`, one part per
    input file; doc_ids must be unique across all of them. (Stats name the files in `folder`;
    callers write into a temp folder that is renamed into place.)"""
    stats: list[FileStats] = []
    it = tracked(paths, "validating MMC4", len(paths), "files", quiet)
    for k, src in enumerate(it):
        docs = list(read_mmc4(src))
        out = folder / f"part-{k:05d}.parquet"
        atomic.write_parquet(out, mmc4_table(docs), row_group_size=1024)
        stats.append(FileStats(out, len(docs), out.stat().st_size, atomic.sha256_file(out),
                               images=sum(len(d["image_info"]) for d in docs),
                               texts=sum(len(d["text_list"]) for d in docs)))
    if not any(s.rows for s in stats):
        raise VilactlError(f"no MMC4 documents in {len(paths)} file(s) (first: {paths[0]})")
    check_unique([s.path for s in stats], "doc_id", "MMC4 doc_id",
                 {str(s.path): str(src) for s, src in zip(stats, paths)},
                 spill_in=folder)   # the job's temp folder: gone before it is renamed
    return stats


def register_mmc4(workspace: Path, pattern: str, name: str, replace: bool = False,
                  quiet: bool = False) -> Dataset:
    check_name(name)
    paths = expand(pattern, "MMC4 document files")
    with jobs.dataset_job(workspace, f"vilactl register mmc4 --docs {pattern}",
                          {"docs": pattern, "name": name}, name, Kind.MMC4_DOCS,
                          replace) as job:
        stats = normalise_mmc4(paths, job.dir, quiet)
        ds = Dataset(name=name, kind=Kind.MMC4_DOCS, format="parquet", uri=resolve(job.folder),
                     num_samples=sum(s.rows for s in stats),
                     num_images=sum(s.images for s in stats),
                     num_texts=sum(s.texts for s in stats), num_bytes=sum(s.bytes for s in stats),
                     params={"glob": pattern, "sources": [resolve(p) for p in paths]})
        shards = [job.shard(s.path, s.rows, source=resolve(src)) for s, src in zip(stats, paths)]
        job.counts.update(files=len(stats), samples=ds.num_samples, images=ds.num_images)
        job.dataset(ds, shards)
    return ds
