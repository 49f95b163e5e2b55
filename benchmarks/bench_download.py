"""vilactl download vs bare img2dataset: same mirror, same URLs, same machine, one run.

Both fetch the same healthy COYO-format URL list from the loopback mirror (run in its own
process so it does not share the benchmark's GIL), resize with img2dataset's keep_ratio to 64 px
and write Parquet. Bare img2dataset uses its multiprocessing distributor with one process per
core; vilactl runs img2dataset's downloader in Ray tasks. Printed side by side:
  end to end   wall time of the whole command (vilactl includes starting a local Ray)
  warm         vilactl with Ray already running (a cluster, or the demo's shared Ray)
Goal: vilactl ≥ 0.95× bare img2dataset throughput.

    python benchmarks/bench_download.py [N_IMAGES]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

N = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
THREADS, SHARD = 64, 1500


def start_mirror(root: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vilactl.pipeline.cli", "mirror", "serve",
                             "--root", str(root), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            import urllib.request

            urllib.request.urlopen(url + "/health", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mirror did not start")


def bare_img2dataset(urls: Path, out: Path) -> float:
    from img2dataset import download

    t0 = time.perf_counter()
    download(url_list=str(urls), input_format="parquet", url_col="url", caption_col="text",
             output_format="parquet", output_folder=str(out), processes_count=os.cpu_count(),
             thread_count=THREADS, image_size=64, resize_mode="keep_ratio",
             resize_only_if_bigger=True, number_sample_per_shard=SHARD, timeout=10,
             distributor="multiprocessing", extract_exif=False)
    return time.perf_counter() - t0


def vilactl_download(ws: Path, meta: Path, mirror: str, base: str) -> float:
    from rich.console import Console

    from vilactl.curation.fetch import FetchOptions
    from vilactl.pipeline.jobs.download import DownloadRequest, download

    opts = FetchOptions(image_size=64, threads=THREADS, allow_private_network=True,
                        url_map=((base, mirror),))
    req = DownloadRequest(kind="coyo", name="bench", pattern=str(meta), shard_size=SHARD,
                          opts=opts)
    t0 = time.perf_counter()
    ds = download(ws, req, None, Console(quiet=True), quiet=True)
    assert ds.num_images == N, ds.num_images
    return time.perf_counter() - t0


def count_bare(out: Path) -> int:
    return sum(pq.read_table(p, columns=["status"]).column("status").to_pylist().count("success")
               for p in out.glob("*.parquet"))


def main() -> None:
    from vilactl.curation.world import PRESETS, generate
    from vilactl.pipeline.services.ray_runtime import ray_session

    tmp = Path(tempfile.mkdtemp(prefix="bench-dl-"))
    try:
        cfg = replace(PRESETS["tiny"], coyo_rows=N, coyo_shard_rows=N, broken_rate=0.0,
                      duplicate_rate=0.0, mmc4_docs=1)
        generate(tmp / "world", cfg)
        meta = tmp / "world" / "coyo" / "part-00000.parquet"
        mirror, url = start_mirror(tmp / "world")
        try:
            table = pq.read_table(meta)
            mapped = [u.replace(cfg.base_url, url) for u in table.column("url").to_pylist()]
            urls = tmp / "urls.parquet"
            pq.write_table(table.set_column(1, "url", __import__("pyarrow").array(mapped)), urls)
            t_bare = bare_img2dataset(urls, tmp / "bare")
            assert count_bare(tmp / "bare") == N
            t_cold = vilactl_download(tmp / "ws1", meta, url, cfg.base_url)
            with ray_session(None):
                vilactl_download(tmp / "ws0", meta, url, cfg.base_url)  # warm the workers
                t_warm = vilactl_download(tmp / "ws2", meta, url, cfg.base_url)
        finally:
            mirror.terminate()
        print(f"images: {N:,} (64 px, {os.cpu_count()} CPUs, {THREADS} threads per worker)")
        print(f"bare img2dataset (multiprocessing): {N / t_bare:8.0f} img/s  ({t_bare:.1f} s)")
        print(f"vilactl download, end to end:       {N / t_cold:8.0f} img/s  ({t_cold:.1f} s)")
        print(f"vilactl download, Ray warm:         {N / t_warm:8.0f} img/s  ({t_warm:.1f} s)")
        print(f"ratio vilactl/bare: end to end {t_bare / t_cold:.2f}x, warm {t_bare / t_warm:.2f}x"
              " (goal >= 0.95x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # img2dataset spawns workers that re-import this file
    main()
