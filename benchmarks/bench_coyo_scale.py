"""The headline command at COYO scale, end to end: `register coyo`, then `curate coyo --top-k K`.

Measures the *commands* as a user runs them (fresh processes, a local Ray each), beside the
lower bounds of the same work, in one run (this machine is noisy):
  register          vilactl register coyo --metadata 'DIR/*.parquet'
  register floor    pyarrow reads id + url of every file, and sha256 of every file
  curate K          vilactl curate coyo --top-k K (VILA's default score, the similarity sum)
  scan floor        pyarrow reads id + the two similarity columns of every file
  copy floor        pyarrow reads every column and writes the selected rows (knowing them)
  duckdb K          COPY (SELECT *, a + b AS score … ORDER BY score DESC, id LIMIT K) TO …
                    (memory_limit 12 GB, spilling to the temp folder)
Memory is the peak of the whole process tree — the command, the Ray it starts, every worker —
sampled from /proc every 0.2 s (RSS summed, and PSS, which counts shared pages once);
/usr/bin/time would see the driver only. Exactness: vilactl's id set equals DuckDB's (count,
the K-th score and id, an order-independent fingerprint of the ids).

    python benchmarks/bench_coyo_scale.py N_MILLIONS [--dir DIR] [--files F] [--k K,K]
Defaults: N = 10, 32 files, K = 1M (capped at N/10) and N/4; the corpus is kept in DIR.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from coyo_corpus import make  # noqa: E402

VILACTL = [sys.executable, "-m", "vilactl.pipeline.cli"]
EXPR = "CAST(clip_similarity_vitb32 AS DOUBLE) + CAST(clip_similarity_vitl14 AS DOUBLE)"


# ---------------------------------------------------------------- process-tree memory
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(p))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over `pid` and all its descendants."""
    kids, todo, rss, pss = _children(), [pid], 0, 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd in its own session; wall time, peak tree RSS/PSS, exit code and output."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    peak = [0, 0]

    def sample():
        while proc.poll() is None:
            rss, pss = tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.monotonic() - t0
    sampler.join()
    if proc.returncode:
        print(f"FAILED: {' '.join(cmd)}\n{out}\n{err}", file=sys.stderr)
    return {"wall": wall, "rss": peak[0], "pss": peak[1], "rc": proc.returncode, "out": out,
            "err": err}


def python(code: str, *args: str) -> dict:
    return measured([sys.executable, "-c", code, *args])


# ---------------------------------------------------------------- the floors
REGISTER_FLOOR = """
import hashlib, sys, pyarrow.parquet as pq
rows = 0
for f in sys.argv[1:]:
    for b in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=["id", "url"]):
        rows += b.num_rows
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
print(rows)
"""
SCAN_FLOOR = """
import sys, pyarrow.parquet as pq
cols = ["id", "clip_similarity_vitb32", "clip_similarity_vitl14"]
print(sum(b.num_rows for f in sys.argv[1:] for b in pq.ParquetFile(f).iter_batches(
    batch_size=65536, columns=cols)))
"""
COPY_FLOOR = """
import sys, numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
score, tie, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
writer, n = None, 0
for f in sys.argv[4:]:
    for b in pq.ParquetFile(f).iter_batches(batch_size=65536):
        s = pc.add(pc.cast(b.column("clip_similarity_vitb32"), pa.float64()),
                   pc.cast(b.column("clip_similarity_vitl14"), pa.float64()))
        keep = pc.or_(pc.greater(s, score), pc.and_(pc.equal(s, score),
                                                    pc.less_equal(b.column("id"), tie)))
        kept = b.append_column("score", s).filter(pc.fill_null(keep, False))
        writer = writer or pq.ParquetWriter(out, kept.schema)
        writer.write_batch(kept, row_group_size=131072)
        n += kept.num_rows
writer.close()
print(n)
"""
DUCKDB = """
import sys, duckdb
k, out, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
expr = "{expr}"
con = duckdb.connect()
con.execute(f"SET memory_limit = '12GB'")     # DuckDB's default (80% of RAM) risks the OOM killer
con.execute(f"SET temp_directory = '{{out}}.spill'")
con.sql(f"COPY (SELECT *, {{expr}} AS score FROM read_parquet({{files!r}}) WHERE "
        f"isfinite({{expr}}) ORDER BY score DESC, id ASC LIMIT {{k}}) TO '{{out}}' "
        "(FORMAT parquet)")
"""


# ---------------------------------------------------------------- the run
def selection(workspace: Path, name: str) -> tuple[float, int]:
    import duckdb

    con = duckdb.connect(str(workspace / "catalog.duckdb"), read_only=True)
    cutoff, params = con.sql("SELECT cutoff, params FROM selections WHERE name = ?",
                             params=[name]).fetchall()[0]
    import json

    return cutoff, json.loads(params)["tie_id"]


def id_summary(pattern: str) -> tuple[int, float, int, int]:
    """(rows, K-th score, K-th id, fingerprint) of a selection's Parquet files."""
    import duckdb

    con = duckdb.connect()
    n, fp = con.sql(f"SELECT count(*), bit_xor(hash(id)) FROM read_parquet('{pattern}')"
                    ).fetchall()[0]
    score, last = con.sql(f"SELECT score, id FROM read_parquet('{pattern}') ORDER BY score, "
                          "id DESC LIMIT 1").fetchall()[0]
    return n, score, last, fp


def gb(b: int) -> str:
    return f"{b / 1e9:5.2f}"


def row(label: str, r: dict, base: float | None = None) -> str:
    ratio = f"{r['wall'] / base:6.2f}x" if base else "       "
    return f"  {label:<34} {r['wall']:8.1f} s  {ratio}  rss {gb(r['rss'])} GB  pss " \
           f"{gb(r['pss'])} GB"


def run(n: int, folder: Path, files_count: int, ks: list[int], duck: bool = True) -> None:
    files = [str(f) for f in make(folder, n, files_count)]  # keeps files already made
    size = sum(os.path.getsize(f) for f in files)
    print(f"\n== N = {n:,} rows in {len(files)} files ({size / 1e9:.1f} GB), K = {ks}")
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        ws = Path(tmp) / "ws"
        env = {"VILACTL_WORKSPACE": str(ws), "RAY_USAGE_STATS_ENABLED": "0"}
        reg = measured(VILACTL + ["register", "coyo", "--metadata", f"{folder}/*.parquet"], env)
        reg_floor = python(REGISTER_FLOOR, *files)
        print("register")
        print(row("vilactl register coyo", reg, reg_floor["wall"]))
        print(row("floor: read id+url, sha256", reg_floor))
        scan = python(SCAN_FLOOR, *files)
        for k in ks:
            cur = measured(VILACTL + ["curate", "coyo", "--top-k", str(k)], env)
            name = f"coyo_meta_top{k}"
            cutoff, tie = selection(ws, name)
            copy = python(COPY_FLOOR, repr(cutoff), str(tie), str(Path(tmp) / f"copy{k}.parquet"),
                          *files)
            ours = id_summary(str(ws / "datasets" / name / "*.parquet"))
            if duck:
                db = python(DUCKDB.format(expr=EXPR), str(k), str(Path(tmp) / f"duck{k}.parquet"),
                            *files)
                theirs = id_summary(str(Path(tmp) / f"duck{k}.parquet"))
            floor = scan["wall"] + copy["wall"]
            kills = cur["err"].count("killed a worker")
            groups = _row_groups(str(ws / "datasets" / name / "*.parquet"))
            exact = ours == theirs if duck else "(not checked)"
            print(f"curate K = {k:,}: exact = {exact} (rows {ours[0]:,}, K-th score "
                  f"{ours[1]!r} id {ours[2]}), Ray OOM kills {kills}, output row groups "
                  f"{min(groups):,}–{max(groups):,} rows")
            print(row("vilactl curate coyo", cur, floor))
            print(row("floor: scan id+scores + copy", {**copy, "wall": floor}))
            print(row("  scan id+scores", scan))
            print(row("  copy selected rows", copy))
            if duck:
                print(row("duckdb COPY … ORDER BY … LIMIT K", db, floor))
                print(f"  curate / duckdb = {cur['wall'] / db['wall']:.2f}")
            shutil.rmtree(ws / "datasets" / name, ignore_errors=True)


def _row_groups(pattern: str) -> list[int]:
    import pyarrow.parquet as pq

    out = []
    for f in glob.glob(pattern):
        meta = pq.read_metadata(f)
        out += [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return out or [0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("millions", type=float, nargs="?", default=10.0)
    ap.add_argument("--dir", type=Path, default=None, help="corpus folder (kept)")
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--k", default=None, help="comma list of K (default 1M and N/4)")
    ap.add_argument("--no-duckdb", action="store_true", help="skip DuckDB (and the exactness "
                    "check against it)")
    a = ap.parse_args()
    n = int(a.millions * 1e6)
    folder = a.dir or Path(tempfile.gettempdir()) / f"coyo_bench_{n}"
    ks = [int(k) for k in a.k.split(",")] if a.k else [min(1_000_000, n // 10), n // 4]
    run(n, folder, a.files, ks, duck=not a.no_duckdb)


if __name__ == "__main__":
    main()
