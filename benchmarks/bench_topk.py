"""Exact global top-K: vilactl's streaming selector vs a bare read and vs DuckDB, one run.

N synthetic scores (float32, rounded to 3 decimals: heavy ties) with int64 ids in many Parquet
files. Side by side, on the same files:
  read     pyarrow reads the score column of every file (the floor for any exact method)
  vilactl  curation.topk.TopK over (id, score), file by file — exact, O(K + one file) memory
  duckdb   SELECT id FROM read_parquet(...) ORDER BY score DESC, id LIMIT K
Goals: vilactl ≤ 1.5× read, and not slower than DuckDB. Then the peak RSS of the vilactl
selector (in a fresh process each) at K = 1% for N = 5M and 20M: it should follow K, not N.

    python benchmarks/bench_topk.py [N_MILLIONS]
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_FILE = 200_000


def make(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for k, start in enumerate(range(0, n, ROWS_PER_FILE)):
        m = min(ROWS_PER_FILE, n - start)
        ids = np.arange(start, start + m, dtype=np.int64) * 7919 % (2**40)
        scores = np.round(rng.normal(0.3, 0.05, m), 3).astype(np.float32)
        path = folder / f"part-{k:05d}.parquet"
        pq.write_table(pa.table({"id": ids, "score": scores}), path)
        files.append(path)
    return files


def vilactl_topk(files: list[Path], k: int, workers: int = 2) -> np.ndarray:
    """Files are read and pre-filtered in a thread pool (pyarrow and numpy release the GIL);
    each file's selector starts at the running threshold; the merge is exact."""
    from concurrent.futures import ThreadPoolExecutor

    from vilactl.curation.topk import TopK

    total = TopK(k)

    def one(f: Path) -> TopK:
        t = pq.read_table(f, columns=["id", "score"])
        part = TopK(k, threshold=total.threshold)
        part.add(t.column("score").to_numpy(), t.column("id").to_numpy())
        return part

    with ThreadPoolExecutor(workers) as pool:
        for part in pool.map(one, files):
            total.merge(part)
    return total.result()[1]


def bare_read_both(files: list[Path]) -> int:
    return sum(pq.read_table(f, columns=["id", "score"]).num_rows for f in files)


def bare_read(files: list[Path]) -> int:
    return sum(pq.read_table(f, columns=["score"]).num_rows for f in files)


def duckdb_topk(files: list[Path], k: int) -> np.ndarray:
    import duckdb

    listing = ", ".join(f"'{f}'" for f in files)
    con = duckdb.connect()
    rows = con.sql(f"SELECT id FROM read_parquet([{listing}]) ORDER BY score DESC, id "
                   f"LIMIT {k}").fetchall()
    return np.array([r[0] for r in rows])


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def child(folder: str, k: int) -> None:
    """Run only the selector (k > 0) or only the reads (k == 0); report this process's peak RSS."""
    files = sorted(Path(folder).glob("part-*.parquet"))
    ids = vilactl_topk(files, k, workers=1) if k else np.empty(bare_read_both(files))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent.
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    print(json.dumps({"selected": len(ids), "peak_rss_mb": int(hwm.split()[1]) / 1024}))


def peak_rss(folder: Path, k: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(k)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["peak_rss_mb"]


def main() -> None:
    n = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 20_000_000
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big"
        big.mkdir()
        files = make(big, n)
        print(f"N = {n:,} scores in {len(files)} files (3-decimal ties)")
        _, t_read = timed(bare_read, files)
        _, t_read2 = timed(bare_read_both, files)
        print(f"bare read: score column {t_read:.2f} s, (id, score) columns {t_read2:.2f} s")
        for frac in (0.01, 0.10):
            k = int(n * frac)
            ours, t_ours = timed(vilactl_topk, files, k)
            theirs, t_duck = timed(duckdb_topk, files, k)
            assert ours.tolist() == theirs.tolist(), "selections differ"
            print(f"K = {frac:.0%} ({k:,}): read {t_read:.2f} s | vilactl {t_ours:.2f} s "
                  f"({t_ours / t_read:.2f}x score read, {t_ours / t_read2:.2f}x (id, score) read;"
                  f" goal <= 1.5x) | duckdb {t_duck:.2f} s "
                  f"(vilactl {t_duck / t_ours:.2f}x faster; goal >= 1x) | identical ids")
        small = Path(tmp) / "small"
        small.mkdir()
        make(small, n // 4, seed=1)
        base = peak_rss(small, 0)
        print(f"peak RSS of reading alone (baseline): {base:.0f} MB")
        rss_small = peak_rss(small, n // 4 // 100)
        rss_big = peak_rss(big, n // 100)
        print(f"peak RSS at K = 1%: N = {n // 4:,} -> {rss_small:.0f} MB, "
              f"N = {n:,} -> {rss_big:.0f} MB (x{rss_big / rss_small:.2f} for 4x N and 4x K)")
        rss_fixed_k = peak_rss(big, n // 4 // 100)
        print(f"peak RSS at fixed K = {n // 400:,}: N = {n // 4:,} -> {rss_small:.0f} MB, "
              f"N = {n:,} -> {rss_fixed_k:.0f} MB (grows with K, not N)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
