"""How fast `vilactl register coyo` validates COYO metadata: Arrow batches vs a row loop.

Prints rows/s of vilactl's columnar validator (pyarrow compute over record batches, as
`curation.readers.scan_coyo` runs it) beside a plain-Python per-row check of the same rules,
in one run so the ratio is fair on a noisy machine. Real COYO is 747M rows in 128 files.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vilactl.curation.readers import scan_coyo

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000


def make(path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(10**12, 10**13, ROWS)
    table = pa.table({"id": ids,
                      "url": pa.array([f"https://img.example.com/{i}.jpg" for i in ids]),
                      "text": pa.array(["a small red circle at the top left"] * ROWS)})
    pq.write_table(table, path, row_group_size=131072)


def python_loop(path: Path) -> int:
    n = 0
    for row in pq.read_table(path, columns=["id", "url"]).to_pylist():
        if row["id"] is None or row["url"] is None or not row["url"].startswith(("http://",
                                                                                 "https://")):
            raise ValueError(n)
        n += 1
    return n


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "coyo.parquet"
        make(path)
        stats, t_arrow = timed(scan_coyo, path)
        n, t_py = timed(python_loop, path)
        assert stats.rows == n == ROWS
        print(f"rows: {ROWS:,}")
        print(f"vilactl scan_coyo (arrow, incl. sha256): {ROWS / t_arrow:>12,.0f} rows/s")
        print(f"python per-row loop (no checksum):       {ROWS / t_py:>12,.0f} rows/s")
        print(f"ratio arrow / python: {t_py / t_arrow:.1f}x")


if __name__ == "__main__":
    main()
