"""A COYO-700M-shaped corpus of any size, for the scale benchmarks (not used by vilactl itself).

Every file has COYO's exact 17-column schema (curation/records.COYO_SCHEMA) and pyarrow's default
row groups, like a shard a user downloads. The values are shaped like COYO's where it matters:
  * ids are unique 13-digit integers in no order (a bijection of the row number, so no set of
    N ids is ever held in memory to make them unique),
  * both CLIP similarities are rounded to 4 decimals, so sums tie often (COYO's are fp16),
  * ~0.1% of the similarities are NaN or null (both must be excluded, not selected),
  * url and text are strings of COYO's typical lengths (~90 and ~60 bytes) that compress about
    as poorly as real ones.
Files are written by `workers` processes; each file depends only on (seed, its index).

    python benchmarks/coyo_corpus.py DIR N_MILLIONS [FILES]
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ID_SPACE = 9 * 10**12                # 13-digit ids: 10^12 … 10^13 - 1
ID_MULT = 2_223_846_793_007       # coprime to ID_SPACE (odd, not a multiple of 3 or 5)
WORDS = ("red blue green small large photo of a the with on in and for sale art print vintage "
         "house garden dog cat woman man street city night light summer winter wedding dress "
         "table chair kitchen design modern logo vector icon background pattern texture").split()
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _ids(start: int, n: int) -> np.ndarray:
    # (i * a + b) mod M is a bijection of [0, M) when gcd(a, M) = 1: unique, scattered ids.
    rows = np.arange(start, start + n, dtype=object)  # exact big-int products, then back
    return (10**12 + (rows * ID_MULT + 12345) % ID_SPACE).astype(np.int64)


def _hex_strings(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    """n random lowercase hex strings of 2·nbytes characters, built without a Python loop."""
    raw = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    chars = np.empty((n, 2 * nbytes), np.uint8)
    chars[:, 0::2], chars[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 15]
    offsets = np.arange(0, (n + 1) * 2 * nbytes, 2 * nbytes, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _similarity(rng: np.random.Generator, n: int, mean: float) -> pa.Array:
    values = np.round(rng.normal(mean, 0.04, n), 4).astype(np.float32)
    values[rng.random(n) < 0.0005] = np.nan
    return pa.array(values, mask=rng.random(n) < 0.0005)  # and as many nulls


def _text(rng: np.random.Generator, n: int) -> pa.Array:
    words = pa.array(WORDS)
    parts = [pc.take(words, pa.array(rng.integers(0, len(WORDS), n))) for _ in range(6)]
    tail = _hex_strings(rng, n, 6)  # captions rarely repeat: keep them from compressing away
    return pc.binary_join_element_wise(*parts, tail, " ")


def table(seed: int, index: int, start: int, n: int) -> pa.Table:
    rng = np.random.default_rng([seed, index])
    ids = _ids(start, n)
    host = pc.take(pa.array([f"https://cdn{i}.example-images.com/files" for i in range(500)]),
                   pa.array(rng.integers(0, 500, n)))
    name = pc.binary_join_element_wise(_hex_strings(rng, n, 8), pa.scalar("jpg"), ".")
    url = pc.binary_join_element_wise(host, _hex_strings(rng, n, 12), name, "/")
    text = _text(rng, n)
    i32 = lambda lo, hi: pa.array(rng.integers(lo, hi, n).astype(np.int32))  # noqa: E731
    f32 = lambda: pa.array(rng.random(n).astype(np.float32))  # noqa: E731
    from vilactl.curation.records import COYO_SCHEMA

    return pa.table({
        "id": ids, "url": url, "text": text, "width": i32(256, 2048), "height": i32(256, 2048),
        "image_phash": _hex_strings(rng, n, 8), "text_length": pc.cast(pc.utf8_length(text),
                                                                      pa.int32()),
        "word_count": i32(3, 30), "num_tokens_bert": i32(5, 60), "num_tokens_gpt": i32(5, 60),
        "num_faces": i32(0, 3), "clip_similarity_vitb32": _similarity(rng, n, 0.30),
        "clip_similarity_vitl14": _similarity(rng, n, 0.25), "nsfw_score_opennsfw2": f32(),
        "nsfw_score_gantman": f32(), "watermark_score": f32(), "aesthetic_score_laion_v2": f32(),
    }, schema=COYO_SCHEMA)


def _write(args) -> int:
    folder, seed, index, start, n = args
    path = Path(folder) / f"part-{index:05d}.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == n:
        return n                                  # reruns keep finished files
    tmp = path.with_suffix(".tmp")
    writer = None
    for off in range(0, n, 1 << 20):              # build in slices: memory stays ~1 slice
        part = table(seed, index * 1000 + off, start + off, min(1 << 20, n - off))
        writer = writer or pq.ParquetWriter(tmp, part.schema)
        writer.write_table(part)                  # one row group per slice, pyarrow's default
    writer.close()
    tmp.rename(path)
    return n


def make(folder: Path, n: int, files: int, seed: int = 0, workers: int = 2) -> list[Path]:
    """Write (or keep, when present) `files` Parquet files holding `n` rows in all."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, files + 1).astype(np.int64)
    jobs = [(str(folder), seed, i, int(bounds[i]), int(bounds[i + 1] - bounds[i]))
            for i in range(files)]
    with ProcessPoolExecutor(workers) as pool:
        done = 0
        t0 = time.monotonic()
        for rows in pool.map(_write, jobs):
            done += rows
            print(f"corpus: {done:,}/{n:,} rows ({time.monotonic() - t0:.0f} s)", flush=True)
    return [folder / f"part-{i:05d}.parquet" for i in range(files)]


if __name__ == "__main__":
    out, millions = Path(sys.argv[1]), float(sys.argv[2])
    make(out, int(millions * 1e6), int(sys.argv[3]) if len(sys.argv) > 3 else 32)
