"""`vilactl download coyo|mmc4`: Ray tasks over img2dataset, resumable and exactly-once.

The driver validates the input, splits it into units (row ranges of the input Parquet, at most
`--shard-size` rows each), runs one Ray task per unfinished unit (curation/download_unit.py),
retries failed units, and records the dataset, one shard row per unit with its counts, and the
run in the catalog. Only the driver writes the catalog. A killed download leaves its run marked
`running` (the next run marks it `incomplete`) and its finished units on disk; a rerun with the
same options skips them.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.paths import check_name, contained
from vilactl.base.vocab import DOWNLOAD_FORMATS, RESIZE_MODES
from vilactl.catalog import db, jobs
from vilactl.catalog.rows import (
    Dataset,
    Shard,
    dataset_row,
    dataset_shards,
    now,
    resolve,
)
from vilactl.curation import download_unit as units_mod
from vilactl.curation.download_unit import Unit
from vilactl.curation.fetch import FetchOptions
from vilactl.curation.readers import expand, parquet_rows, scan_coyo
from vilactl.pipeline.jobs.register import check_unique, normalise_mmc4
from vilactl.pipeline.services.ray_runtime import Rate, call, ray_session, run_tasks

INPUT_KINDS = {"coyo": (Kind.COYO_METADATA, Kind.COYO_IMAGES),
               "mmc4": (Kind.MMC4_DOCS, Kind.MMC4_IMAGES)}


@dataclass
class DownloadRequest:
    kind: str                              # coyo | mmc4
    name: str
    pattern: str | None = None             # --metadata / --docs
    from_dataset: str | None = None
    fmt: str = "parquet"                   # parquet | webdataset (COYO only)
    shard_size: int = 10_000
    shard_retries: int = 2
    retry_failed: bool = False
    require_all: bool = True               # MMC4 document policy
    replace: bool = False
    opts: FetchOptions = field(default_factory=FetchOptions)

    def identity(self, inputs: list[str]) -> dict:
        """What defines the output: a rerun must match it to resume."""
        o = self.opts
        return {"kind": self.kind, "inputs": inputs, "from_dataset": self.from_dataset,
                "format": self.fmt, "shard_size": self.shard_size,
                "require_all_images": self.require_all if self.kind == "mmc4" else None,
                "image_size": o.image_size, "resize_mode": o.resize_mode,
                "resize_only_if_bigger": o.resize_only_if_bigger,
                "encode_format": o.encode_format, "encode_quality": o.encode_quality,
                "respect_opt_outs": o.respect_opt_outs,
                "allow_private_network": o.allow_private_network,
                "allow_hosts": list(o.allow_hosts), "max_pixels": o.max_pixels}


def _check_request(req: DownloadRequest) -> None:
    if (req.pattern is None) == (req.from_dataset is None):
        flag = "--metadata" if req.kind == "coyo" else "--docs"
        raise VilactlError(f"give exactly one of {flag} GLOB or --from-dataset NAME")
    if req.shard_size <= 0:
        raise VilactlError(f"--shard-size must be positive, got {req.shard_size}")
    if req.fmt not in DOWNLOAD_FORMATS:
        raise VilactlError(f"--format must be {' or '.join(DOWNLOAD_FORMATS)}, got {req.fmt!r}")
    if req.opts.resize_mode not in RESIZE_MODES:
        raise VilactlError(f"--resize-mode must be one of {', '.join(RESIZE_MODES)}, got "
                           f"{req.opts.resize_mode!r}")
    if req.kind == "mmc4" and req.fmt != "parquet":
        raise VilactlError("MMC4 documents are written as Parquet only")
    if req.retry_failed and req.fmt != "parquet":
        raise VilactlError("--retry-failed needs --format parquet")


def _dataset_inputs(workspace: Path, req: DownloadRequest) -> tuple[list[Path], list[str]]:
    row, found = dataset_shards(workspace, req.from_dataset)
    paths = [Path(p) for p in found]
    want = INPUT_KINDS[req.kind][0]
    if req.kind == "mmc4" and row["kind"] != want:
        raise VilactlError(f"dataset {req.from_dataset!r} is {row['kind']}, expected {want}")
    return paths, [req.from_dataset]


def resolve_inputs(workspace: Path, req: DownloadRequest, out: Path
                   ) -> tuple[list[Path], list[str], list[str]]:
    """(input Parquet files, parent datasets, source paths that identify the input).

    Validates everything before writing anything; raw MMC4 documents are validated and staged
    as Parquet under <out>/_input (once per set of sources)."""
    if req.from_dataset:
        paths, parents = _dataset_inputs(workspace, req)
    else:
        what = "COYO Parquet files" if req.kind == "coyo" else "MMC4 document files"
        paths, parents = expand(req.pattern, what), []
    sources = [resolve(p) for p in paths]
    if req.kind == "coyo":
        if not req.from_dataset:        # a registered dataset was checked when registered
            for p in paths:
                scan_coyo(p)
            check_unique(paths, "id", "COYO id", spill_in=Path(workspace) / ".tmp")
        return paths, parents, sources
    if req.from_dataset:
        return paths, parents, sources
    staged = out / "_input"
    marker = staged / "sources.json"
    if not (marker.exists() and json.loads(marker.read_text()) == sources):
        with atomic.atomic_dir(staged) as tmp:
            normalise_mmc4(paths, tmp)
            atomic.write_text(tmp / "sources.json", json.dumps(sources))
    return sorted(staged.glob("part-*.parquet")), parents, sources


def plan(paths: list[Path], shard_size: int) -> list[Unit]:
    out = []
    for fi, path in enumerate(paths):
        n = parquet_rows(path)
        for ci, start in enumerate(range(0, n, shard_size)):
            out.append(Unit(f"{fi:05d}-{ci:05d}", resolve(path), start, min(start + shard_size, n)))
    return out


def _prepare_out(workspace: Path, out: Path, identity: dict, replace: bool, name: str) -> None:
    marker = out / "download.json"
    if marker.exists():
        if json.loads(marker.read_text()) != identity:
            if not replace:
                raise VilactlError(
                    f"dataset {name!r} was started with other inputs or options "
                    f"({marker}); pass --replace to start over, or choose another --name")
            for child in out.iterdir():  # keep staged input, drop everything made from it
                if child.name != "_input":
                    atomic.remove(contained(workspace, child))
    for tmp in [*out.glob(".*.tmp"), out / "_work"]:  # leftovers of a killed run
        atomic.remove(contained(workspace, tmp))
    atomic.write_text(marker, json.dumps(identity, sort_keys=True, indent=1))


def _check_name(workspace: Path, req: DownloadRequest, out: Path) -> None:
    """A download resumes into its own folder only: one made by another command (a curated
    selection, a build) is never written into, even with --replace."""
    foreign = out.is_dir() and any(out.iterdir()) and not (out / "download.json").exists()
    row = None
    if db.catalog_path(workspace).exists():
        with db.reader(workspace) as con:
            row = dataset_row(con, req.name)
    if foreign or (row is not None and row["uri"] != resolve(out)):
        raise VilactlError(f"dataset {req.name!r} is already in the catalog and was not made "
                           "by `vilactl download`; choose another --name")


def download(workspace: Path, req: DownloadRequest, ray_address: str | None,
             console: Console, quiet: bool = False) -> Dataset:
    check_name(req.name)
    _check_request(req)
    command = f"vilactl download {req.kind} --name {req.name}"
    # Written in place, unit by unit, so that a rerun resumes: the job holds the name's lock
    # (one download into a folder at a time) and records the run; the name check is ours.
    with jobs.dataset_job(workspace, command, {"name": req.name}, req.name,
                          INPUT_KINDS[req.kind][1], req.replace, fresh=False) as job:
        out = job.folder
        _check_name(workspace, req, out)
        paths, parents, sources = resolve_inputs(workspace, req, out)
        identity = req.identity(sources)
        job.run.args = {**identity, "name": req.name}
        _prepare_out(workspace, out, identity, req.replace, req.name)
        units = plan(paths, req.shard_size)
        stats = _run_units(req, units, out, ray_address, quiet)
        ds = _dataset(job, req, units, stats, out, identity, parents)
    if not ds.num_images and stats and totals(stats)["failed"].get("rejected_url"):
        console.print("[yellow]warning:[/yellow] every URL was refused; private or loopback "
                      "hosts need --allow-private-network (or --allow-host HOST:PORT)")
    return ds


def _run_units(req: DownloadRequest, units: list[Unit], out: Path, ray_address: str | None,
               quiet: bool) -> dict[str, dict]:
    work = out / "_work"
    todo = [u for u in units if not units_mod.is_done(u, out)]
    retry = [u for u in units if req.retry_failed and units_mod.is_done(u, out)
             and units_mod.has_transient_failures(u, out)]
    if req.kind == "coyo":
        calls = [(u.id, (units_mod.coyo_unit, u, out, req.opts, req.fmt, work)) for u in todo]
        calls += [(u.id, (units_mod.coyo_retry, u, out, req.opts, req.fmt, work)) for u in retry]
    else:
        calls = [(u.id, (units_mod.mmc4_unit, u, out, req.opts, req.require_all, work, False))
                 for u in todo]
        calls += [(u.id, (units_mod.mmc4_unit, u, out, req.opts, req.require_all, work, True))
                  for u in retry]
    if calls:
        rate = Rate()
        with ray_session(ray_address):
            _, errors = run_tasks(call, calls, num_cpus=0.5, retries=req.shard_retries,
                                  describe=f"download {req.kind}",
                                  on_done=lambda _n, s: rate.add(s), quiet=quiet)
        if errors:
            name, err = sorted(errors.items())[0]
            raise VilactlError(
                f"{len(errors)} of {len(units)} shards failed after {req.shard_retries} "
                f"retries (first: shard {name}: {err}); rerun the same command to resume")
    atomic.remove(work)
    return {u.id: units_mod.read_stats(u, out) for u in units}


def totals(stats: dict[str, dict]) -> dict:
    failed, docs = Counter(), Counter()
    for s in stats.values():
        failed.update(s["failed"])
        docs.update(s.get("documents", {}))
    t = {k: sum(s[k] for s in stats.values()) for k in ("attempted", "succeeded", "bytes", "rows")}
    t["failed"] = dict(sorted(failed.items()))
    if docs:
        t["documents"] = dict(sorted(docs.items()))
    return t


def _dataset(job: jobs.Job, req: DownloadRequest, units: list[Unit], stats: dict[str, dict],
             out: Path, identity: dict, parents: list) -> Dataset:
    t = totals(stats)
    shards = [Shard(path=resolve(u.data_path(out, req.fmt)), rows=stats[u.id]["rows"],
                    bytes=stats[u.id]["file_bytes"], checksum=stats[u.id]["checksum"],
                    source=u.source, counts={k: v for k, v in stats[u.id].items()
                                             if k not in ("checksum", "source", "unit")})
              for u in units]
    images = t["succeeded"] if req.kind == "coyo" else t["documents"].get("images_kept", 0)
    ds = Dataset(name=req.name, kind=INPUT_KINDS[req.kind][1], format=req.fmt, uri=resolve(out),
                 num_samples=t["rows"], num_images=images,
                 num_texts=t["rows"] if req.kind == "coyo" else sum(
                     s.get("texts", 0) for s in stats.values()),
                 num_bytes=sum(s.bytes for s in shards), parents=parents, params=identity)
    seconds = (now() - job.run.started_at).total_seconds()
    job.counts.update({**t, "units": len(units), "seconds": round(seconds, 2),
                       "images_per_s": round(t["succeeded"] / seconds, 1) if seconds else None})
    job.dataset(ds, shards)
    return ds
