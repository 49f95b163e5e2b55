"""`vilactl blend` write throughput vs a pyarrow copy of the same bytes, one run.

Two synthetic components in the training-sample schema, sized so that a 0.5/0.5 image blend
takes every sample of both (so both sides move exactly the same rows):
  docs   documents of 1–6 images (random 12 KB "images", incompressible like real JPEG/PNG)
  pairs  one image + a caption
  copy     pyarrow: read every source shard, write it again (zstd, same row-group size)
  vilactl  pipeline.blend.blend: plan, scatter (each source read once), global shuffle,
           gather, write shards + manifest (catalog writes included)
Prints MB/s of each and their ratio (goal ≥ 0.7×).

    python benchmarks/bench_blend.py [PAIRS]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

PAIRS = int(sys.argv[1]) if len(sys.argv) > 1 else 24_000
IMAGE_BYTES = 12_000
SHARD = 2000


def make(folder: Path) -> None:
    from vilactl.curation.records import sample_table, segment

    rng = np.random.default_rng(0)
    pairs = [[segment("user", image=rng.bytes(IMAGE_BYTES)), segment("user", text=f"a pair {i}")]
             for i in range(PAIRS)]
    docs, images = [], 0
    while images < PAIRS:
        k = min(int(rng.integers(1, 7)), PAIRS - images)
        segs = []
        for j in range(k):
            segs += [segment("user", text=f"sentence {j} of document {len(docs)}"),
                     segment("user", image=rng.bytes(IMAGE_BYTES))]
        docs.append(segs)
        images += k
    for name, rows in (("pairs", pairs), ("docs", docs)):
        (folder / name).mkdir(parents=True)
        for s in range(0, len(rows), SHARD):
            table = sample_table({"sample_id": f"{name}-{i}", "source": name, "segments": segs}
                                 for i, segs in enumerate(rows[s:s + SHARD], start=s))
            pq.write_table(table, folder / name / f"part-{s // SHARD:05d}.parquet",
                           compression="zstd")


def copy(folder: Path, out: Path) -> int:
    out.mkdir()
    n = 0
    for p in sorted(folder.glob("*/part-*.parquet")):
        dest = out / f"{p.parent.name}-{p.name}"
        pq.write_table(pq.read_table(p), dest, compression="zstd", row_group_size=256)
        n += dest.stat().st_size
    return n


def main() -> None:
    from vilactl.catalog import db
    from vilactl.pipeline.jobs.blend import BlendRequest, blend
    from vilactl.pipeline.jobs.register import register_samples

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make(tmp / "src")
        ws = tmp / "ws"
        db.init(ws)
        for name in ("pairs", "docs"):
            register_samples(ws, str(tmp / "src" / name / "*.parquet"), name, quiet=True)
        t0 = time.perf_counter()
        copied = copy(tmp / "src", tmp / "copy")
        t_copy = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = blend(ws, BlendRequest({"docs": 0.5, "pairs": 0.5}, name="bench", shard_size=SHARD),
                  quiet=True)
        t_blend = time.perf_counter() - t0
    written = sum(s["bytes"] for s in m["shards"])
    print(f"{m['num_samples']} samples, {m['num_images']} images "
          f"({written / 1e6:.0f} MB blended, {copied / 1e6:.0f} MB copied)")
    print(f"pyarrow copy   {copied / 1e6 / t_copy:8.1f} MB/s  ({t_copy:.2f} s)")
    print(f"vilactl blend  {written / 1e6 / t_blend:8.1f} MB/s  ({t_blend:.2f} s)")
    print(f"ratio blend/copy: {written / t_blend / (copied / t_copy):.2f}x  (goal >= 0.7x)")


if __name__ == "__main__":
    main()
