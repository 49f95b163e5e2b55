"""`vilactl build mmc4` per-shard throughput vs a bare JSON parse + Parquet write, one run.

The same N MMC4 documents with embedded images (the demo world's generator, 2–6 images each):
  bare     read JSONL lines (images base64, as VILA stores them), json.loads, decode base64,
           build an Arrow table and write Parquet
  vilactl  curation.mmc4_build.build_shard on the same documents as Parquet: MMC4 assignment,
           mmc4-core filters, and the variant written in the training-sample schema
Prints documents/s for each and their ratio (one process, no Ray, so the per-shard work is what
is measured).

    python benchmarks/bench_mmc4.py [N_DOCS]
"""
from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def make(folder: Path) -> tuple[Path, Path]:
    from vilactl.curation.records import MMC4_IMAGES_SCHEMA
    from vilactl.curation.world import PRESETS
    from vilactl.curation.world_docs import make_doc

    cfg = replace(PRESETS["tiny"], mmc4_broken_rate=0.0)
    rng = np.random.default_rng(0)
    docs = []
    for d in range(N):
        doc, _ = make_doc(cfg, folder / "world", rng, f"bench:{d}", d)
        for i, info in enumerate(doc["image_info"]):
            rel = f"images/mmc4/{d:06d}-{i}.png"
            info.update(image=(folder / "world" / rel).read_bytes(), width=64, height=64,
                        original_width=64, original_height=64, sha256="x")
        docs.append({"doc_id": f"bench:{d}", **doc})
    parquet = folder / "docs.parquet"
    pq.write_table(pa.Table.from_pylist(docs, schema=MMC4_IMAGES_SCHEMA), parquet)
    jsonl = folder / "docs.jsonl"
    with open(jsonl, "w") as f:
        for doc in docs:
            enc = {**doc, "image_info": [{**i, "image": base64.b64encode(i["image"]).decode()}
                                         for i in doc["image_info"]]}
            f.write(json.dumps(enc) + "\n")
    return parquet, jsonl


def bare(jsonl: Path, out: Path) -> int:
    docs = []
    with open(jsonl) as f:
        for line in f:
            doc = json.loads(line)
            for info in doc["image_info"]:
                info["image"] = base64.b64decode(info["image"])
            docs.append(doc)
    pq.write_table(pa.Table.from_pylist(docs), out)
    return len(docs)


def main() -> None:
    from vilactl.curation.mmc4_build import build_shard
    from vilactl.curation.mmc4_variants import CoreFilter

    with tempfile.TemporaryDirectory() as tmp:
        parquet, jsonl = make(Path(tmp))
        t0 = time.perf_counter()
        bare(jsonl, Path(tmp) / "bare.parquet")
        t_bare = time.perf_counter() - t0
        print(f"documents: {N:,}")
        print(f"bare JSON parse + Parquet write: {N / t_bare:8.0f} docs/s")
        for variant in ("interleaved", "pairs"):
            t0 = time.perf_counter()
            c = build_shard(str(parquet), str(Path(tmp) / f"{variant}.parquet"), variant, 6, 0,
                            CoreFilter())
            t = time.perf_counter() - t0
            print(f"vilactl build {variant:<11}:    {N / t:8.0f} docs/s  ({t_bare / t:.2f}x bare;"
                  f" {c['samples']} samples, dropped {c['dropped']})")


if __name__ == "__main__":
    main()
