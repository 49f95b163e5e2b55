"""`vilactl register …`: validate real-format corpora and record them, downloading nothing.

Every file is validated before anything is written; MMC4 documents are normalised to Parquet
(MMC4_SCHEMA, one shard per input file) in a temporary folder that is renamed into place only
when all files passed, and the catalog rows land in one transaction. Bad input therefore leaves
neither files nor rows behind.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.progress import track

from vilactl.base import atomic
from vilactl.catalog.register import (
    Dataset,
    Run,
    Shard,
    ensure_name_free,
    record_output,
    resolve,
)
from vilactl.curation.readers import FileStats, expand, read_mmc4, scan_coyo, scan_samples
from vilactl.curation.records import mmc4_table


def _scan_all(paths: list[Path], scan: Callable[[Path], FileStats], label: str,
              quiet: bool) -> list[FileStats]:
    it = paths if quiet or len(paths) < 4 else track(paths, description=label, transient=True)
    return [scan(p) for p in it]


def _check_name_free(workspace: Path, name: str, replace: bool) -> None:
    if not replace:
        ensure_name_free(workspace, name)


def _record(workspace: Path, ds: Dataset, stats: list[FileStats], command: str, args: dict,
            replace: bool, sources: list[Path] | None = None) -> Dataset:
    run = Run(command=command, args=args)
    shards = [Shard(path=resolve(s.path), rows=s.rows, bytes=s.bytes, checksum=s.checksum,
                    source=resolve(sources[i]) if sources else None)
              for i, s in enumerate(stats)]
    run.counts = {"files": len(stats), "samples": ds.num_samples, "images": ds.num_images}
    record_output(workspace, run, ds, shards, replace=replace)
    return ds


def register_coyo(workspace: Path, pattern: str, name: str, replace: bool = False,
                  quiet: bool = False) -> Dataset:
    paths = expand(pattern, "COYO Parquet files")
    _check_name_free(workspace, name, replace)
    stats = _scan_all(paths, scan_coyo, "validating COYO", quiet)
    rows = sum(s.rows for s in stats)
    ds = Dataset(name=name, kind="coyo-metadata", format="parquet", uri=resolve(pattern),
                 num_samples=rows, num_images=rows, num_texts=rows,
                 num_bytes=sum(s.bytes for s in stats), params={"glob": pattern})
    return _record(workspace, ds, stats, f"vilactl register coyo --metadata {pattern}",
                   {"metadata": pattern, "name": name}, replace)


def normalise_mmc4(paths: list[Path], dest: Path, quiet: bool = False) -> list[FileStats]:
    """Validate MMC4 files and write them as MMC4_SCHEMA Parquet, one part per input file.

    The folder is renamed into place only after every file validated, so bad input leaves no
    folder behind. (The catalog transaction follows; a failure in between leaves a folder no
    dataset points at, which the next register of this name replaces.)"""
    stats: list[FileStats] = []
    try:
        with atomic.atomic_dir(dest) as tmp:
            it = paths if quiet else track(paths, description="validating MMC4", transient=True)
            for k, src in enumerate(it):
                docs = list(read_mmc4(src))
                out = tmp / f"part-{k:05d}.parquet"
                atomic.write_parquet(out, mmc4_table(docs), row_group_size=1024)
                stats.append(FileStats(dest / out.name, len(docs), out.stat().st_size,
                                       atomic.sha256_file(out),
                                       images=sum(len(d["image_info"]) for d in docs),
                                       texts=sum(len(d["text_list"]) for d in docs)))
    except BaseException:
        _remove_if_empty(dest.parent)
        raise
    return stats


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def register_mmc4(workspace: Path, pattern: str, name: str, replace: bool = False,
                  quiet: bool = False) -> Dataset:
    paths = expand(pattern, "MMC4 document files")
    _check_name_free(workspace, name, replace)
    dest = workspace / "datasets" / name
    stats = normalise_mmc4(paths, dest, quiet)
    ds = Dataset(name=name, kind="mmc4-docs", format="parquet", uri=resolve(dest),
                 num_samples=sum(s.rows for s in stats), num_images=sum(s.images for s in stats),
                 num_texts=sum(s.texts for s in stats), num_bytes=sum(s.bytes for s in stats),
                 params={"glob": pattern, "sources": [resolve(p) for p in paths]})
    return _record(workspace, ds, stats, f"vilactl register mmc4 --docs {pattern}",
                   {"docs": pattern, "name": name}, replace, sources=paths)


def register_samples(workspace: Path, pattern: str, name: str, replace: bool = False,
                     quiet: bool = False, kind: str = "samples",
                     parents: list[str] | None = None) -> Dataset:
    """Register Parquet files already in the training-sample schema (instruction, eval sets)."""
    paths = expand(pattern, "sample Parquet files")
    _check_name_free(workspace, name, replace)
    stats = _scan_all(paths, scan_samples, "validating samples", quiet)
    ds = Dataset(name=name, kind=kind, format="parquet", uri=resolve(pattern),
                 num_samples=sum(s.rows for s in stats), num_images=sum(s.images for s in stats),
                 num_texts=sum(s.texts for s in stats), num_bytes=sum(s.bytes for s in stats),
                 parents=parents or [], params={"glob": pattern})
    return _record(workspace, ds, stats, f"vilactl register samples --data {pattern}",
                   {"data": pattern, "name": name, "kind": kind}, replace)
