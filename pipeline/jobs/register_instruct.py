"""`vilactl register llava|text-instruct`: published instruction data → training samples.

Records stream in (a JSON array is parsed incrementally with ijson; JSONL and Parquet row by
row) and stream out as Parquet shards of `shard_size` samples, so memory holds one shard, not
the file. Shards go to a temp folder renamed into place when every record converted; the
dataset (samples, images, turns, text words) and the run land in one catalog transaction. A bad
record stops everything with `FILE: record ID: problem`, unless --skip-bad skips and counts it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from vilactl.base import atomic, json_bounds
from vilactl.base.errors import RecordError, VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.paths import check_name, shown
from vilactl.catalog import jobs
from vilactl.catalog.rows import Dataset, resolve
from vilactl.curation.instruct_formats import (
    chosen_rows,
    image_reader,
    llava_sample,
    text_sample,
)
from vilactl.curation.readers import expand
from vilactl.curation.records import sample_table


@dataclass
class ShardWriter:
    folder: Path
    shard_size: int = 1000
    rows: list = field(default_factory=list)
    shards: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    shard_counts: Counter = field(default_factory=Counter)

    def add(self, sample: dict) -> None:
        segs = sample["segments"]
        one = Counter(samples=1, images=sum(s["image"] is not None for s in segs),
                      texts=sum(s["text"] is not None for s in segs),
                      turns=sum(1 for i, s in enumerate(segs)
                                if i == 0 or s["role"] != segs[i - 1]["role"]),
                      text_words=sum(len(s["text"].split()) for s in segs if s["text"]))
        self.rows.append(sample)
        self.counts.update(one)
        self.shard_counts.update(one)
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.folder / f"part-{len(self.shards):05d}.parquet"
        atomic.write_parquet(path, sample_table(self.rows), row_group_size=256)
        self.shards.append((path, len(self.rows), dict(self.shard_counts)))
        self.rows, self.shard_counts = [], Counter()


def _records(path: Path) -> Iterator[dict]:
    """A JSON array (streamed record by record) or JSON Lines, within the JSON bounds
    (base/json_bounds.py: nesting depth and bytes per record)."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
        f.seek(0)
        if head.startswith(b"["):
            yield from json_bounds.array_items(f, str(path))
            return
        for n, line in json_bounds.lines(f, str(path)):
            yield json_bounds.loads(line, f"{path}:{n}")


def _convert(records, convert, where: Callable[[], str], skip_bad: bool, writer: ShardWriter,
             skipped: Counter) -> None:
    """convert(record, id) for each (id, record); `where()` names the file being read."""
    for rid, rec in records:
        try:
            sample = convert(rec, rid)
        except RecordError as e:
            if not skip_bad:
                raise VilactlError(f"{where()}: record {rid}: {e}") from e
            skipped[str(e).split(" (")[0][:60]] += 1
            continue
        writer.add(sample)
    writer.flush()


def _dataset(name: str, kind: str, job: jobs.Job, writer: ShardWriter, skipped: Counter,
             args: dict) -> Dataset:
    """Commit the converted shards as dataset `name` (kind `kind`) when the job ends."""
    if not writer.shards:
        raise VilactlError(f"no records converted into {name!r}")
    c = writer.counts
    shards = [job.shard(p, n, counts=counts) for p, n, counts in writer.shards]
    ds = Dataset(name=name, kind=kind, format="parquet", uri=resolve(job.folder),
                 num_samples=c["samples"], num_images=c["images"], num_texts=c["texts"],
                 num_bytes=sum(s.bytes for s in shards), params={**args, "turns": c["turns"]})
    job.counts.update({**c, "skipped": dict(skipped)})
    job.dataset(ds, shards, text_words=c["text_words"])
    return ds


def register_llava(workspace: Path, json_path: str, images: str, name: str,
                   replace: bool = False, skip_bad: bool = False,
                   shard_size: int = 1000) -> tuple[Dataset, Counter, Counter]:
    check_name(name)
    path = Path(json_path)
    if not path.is_file():
        raise VilactlError(f"{path}: no such file")
    if not Path(images).is_dir():
        raise VilactlError(f"--images {images}: no such folder")
    _check_shard_size(shard_size)
    read, skipped = image_reader(Path(images)), Counter()
    args = {"json": resolve(path), "images": resolve(images), "skip_bad": skip_bad, "name": name}
    records = _unique_ids(path, ((_record_id(r, i), r) for i, r in enumerate(_records(path))))
    with jobs.dataset_job(workspace, "vilactl register llava", args, name,
                          Kind.INSTRUCT_LLAVA, replace) as job:
        writer = ShardWriter(job.dir, shard_size)
        _convert(records, lambda rec, _id: llava_sample(rec, read), lambda: str(path),
                 skip_bad, writer, skipped)
        ds = _dataset(name, Kind.INSTRUCT_LLAVA, job, writer, skipped, args)
    return ds, writer.counts, skipped


def _unique_ids(path: Path, records: Iterator[tuple[str, dict]]) -> Iterator[tuple[str, dict]]:
    """The records, then a refusal if any id occurred twice (their count and the first
    examples with record numbers). Two samples of one id would be indistinguishable in blends
    and evals. Memory: one dict entry per record (~100 bytes; 665k LLaVA records ≈ 70 MB)."""
    first: dict[str, int] = {}
    repeats: dict[str, list[int]] = {}
    for i, (rid, rec) in enumerate(records, start=1):
        if isinstance(rec, dict) and rec.get("id") not in (None, ""):   # else fails alone
            if rid in first:
                repeats.setdefault(rid, [first[rid]]).append(i)
            else:
                first[rid] = i
        yield rid, rec
    if repeats:
        examples = "; ".join(f"{rid!r} at records {', '.join(map(str, at[:3]))}"
                             for rid, at in list(repeats.items())[:3])
        raise VilactlError(f"{path}: {len(repeats)} id(s) occur more than once, e.g. "
                           f"{examples}; every LLaVA id must be unique")


def _record_id(record, i: int) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    if rid is None or rid == "":
        return f"#{i}"
    ok = isinstance(rid, str) and rid.isprintable() and len(rid) <= 80
    return rid if ok else shown(rid, 80)          # one line whatever the id holds


def _check_shard_size(n: int) -> None:
    if n <= 0:
        raise VilactlError(f"--shard-size must be positive, got {n}")


def _rows(path: Path) -> Iterator[dict]:
    if path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        yield from _records(path)


def _count(path: Path) -> int:
    """Records, not lines: a JSON array spans many lines per record (and may be one line)."""
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in _records(path))


def register_text_instruct(workspace: Path, pattern: str, name: str,
                           input_field: str = "inputs", target_field: str = "targets",
                           sample: int | None = None, seed: int | None = None,
                           replace: bool = False, skip_bad: bool = False,
                           shard_size: int = 10_000) -> tuple[Dataset, Counter, Counter]:
    check_name(name)
    _check_shard_size(shard_size)
    files = expand(pattern, "instruction files")
    sizes = [_count(p) for p in files]
    keep = chosen_rows(sum(sizes), sample, seed)
    keep_set = None if keep is None else set(keep.tolist())
    args = {"data": pattern, "input_field": input_field, "target_field": target_field,
            "sample": sample, "seed": seed, "skip_bad": skip_bad, "name": name}
    skipped = Counter()
    current = [files[0]]        # the file being read, for error lines

    def rows() -> Iterator[tuple[str, dict]]:
        g = 0
        for path in files:
            current[0] = path
            for n, row in enumerate(_rows(path), start=1):
                if keep_set is None or g in keep_set:
                    if not isinstance(row, dict):
                        raise VilactlError(f"{path}: record {n}: not an object")
                    yield str(row.get("id", f"{path.name}:{n}")), row
                g += 1

    with jobs.dataset_job(workspace, "vilactl register text-instruct", args, name,
                          Kind.INSTRUCT_TEXT, replace) as job:
        writer = ShardWriter(job.dir, shard_size)
        _convert(rows(), lambda row, rid: text_sample(row, rid, input_field, target_field),
                 lambda: str(current[0]), skip_bad, writer, skipped)
        ds = _dataset(name, Kind.INSTRUCT_TEXT, job, writer, skipped, args)
    return ds, writer.counts, skipped
