"""`vilactl register llava` on N generated LLaVA-1.5-format records: throughput and peak memory.

Records look like llava_v1_5_mix665k.json: a JSON array; each record has an `image` path (one
of 500 generated 64 px PNGs) and 2–6 human/gpt turns with `<image>` in the first. The converter
streams the array with ijson and writes Parquet shards of 1000 samples, so peak memory should
not grow with N. Prints records/s, MB written and the process's peak RSS (VmHWM) at N/10 and N.

    python benchmarks/bench_register_llava.py [N]
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000

CHILD = """
import sys, time
from pathlib import Path
from vilactl.catalog import db
from vilactl.pipeline.jobs.register_instruct import register_llava
ws = Path(sys.argv[1]); db.init(ws)
t0 = time.perf_counter()
ds, counts, _ = register_llava(ws, sys.argv[2], sys.argv[3], "llava")
dt = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(counts["samples"], dt, ds.num_bytes, int(hwm) // 1024)
"""


def make(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    for i in range(500):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        (folder / "images" / f"{i:04d}.png").write_bytes(buf.getvalue())
    path = folder / f"llava_{n}.json"
    with open(path, "w") as f:
        f.write("[")
        for r in range(n):
            turns = []
            for t in range(int(rng.integers(1, 4))):
                q = ("<image>\n" if t == 0 else "") + f"Question {t} about picture {r}?"
                turns += [{"from": "human", "value": q},
                          {"from": "gpt", "value": f"An answer of a few words, number {r}."}]
            rec = {"id": f"r{r}", "image": f"{r % 500:04d}.png", "conversations": turns}
            f.write(("," if r else "") + json.dumps(rec))
        f.write("]")
    return folder


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n in (N // 10, N):
            root = make(Path(tmp) / f"n{n}", n)
            out = subprocess.run([sys.executable, "-c", CHILD, str(root / "ws"),
                                  str(root / f"llava_{n}.json"), str(root / "images")],
                                 capture_output=True, text=True, check=True).stdout.split()
            samples, dt, nbytes, hwm = int(out[0]), float(out[1]), int(out[2]), int(out[3])
            size = (root / f"llava_{n}.json").stat().st_size
            print(f"{samples:>7} records ({size / 1e6:.0f} MB JSON → {nbytes / 1e6:.0f} MB "
                  f"Parquet): {samples / dt:8.0f} records/s, peak RSS {hwm} MB")


if __name__ == "__main__":
    main()
