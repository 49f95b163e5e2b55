"""`vilactl score` end to end vs a bare open_clip forward on pre-decoded tensors, one run.

Same model, same images, same machine. "bare" times only encode_image + encode_text + the dot
product over batches of tensors that were decoded and preprocessed beforehand (the ceiling);
"vilactl" times the whole `score` call — Ray Data reading Parquet, decoding, preprocessing,
the actor pool, writing the score files — with Ray already running (warm), and once cold.
Models: the demo CLIP (64 px, 2 layers) and ViT-B-32 with random weights (224 px).
Goal: vilactl ≥ 0.9× bare.

    python benchmarks/bench_score.py [N_DEMO] [N_VITB32]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

N_DEMO = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
N_B32 = int(sys.argv[2]) if len(sys.argv) > 2 else 128
BATCH = 256


def make_dataset(ws: Path, n: int) -> list[dict]:
    """A registered coyo-images dataset of n demo-world pictures with true captions."""
    from vilactl.catalog import db
    from vilactl.catalog.register import Dataset, Shard, record_dataset
    from vilactl.curation import atomic
    from vilactl.curation.records import COYO_IMAGES_SCHEMA
    from vilactl.curation.shapes import random_scene, render

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        scene = random_scene(rng)
        rows.append({"key": str(i), "id": i, "url": f"http://x/{i}.png", "text": scene.caption(),
                     "image": render(scene)})
    shards = []
    for k in range(4):
        path = ws / "datasets" / "bench" / f"part-{k:05d}.parquet"
        atomic.write_parquet(path, pa.Table.from_pylist(rows[k::4], schema=COYO_IMAGES_SCHEMA))
        shards.append(Shard(str(path), len(rows[k::4]), path.stat().st_size, "x"))
    with db.writer(ws) as con:
        record_dataset(con, Dataset("bench", "coyo-images", "parquet", str(ws), n, n, n, 0),
                       shards, "bench")
    return rows


def bare(spec, rows: list[dict]) -> float:
    import io

    import torch
    from PIL import Image

    from vilactl.curation.clip_scorer import ClipScorer

    scorer = ClipScorer(spec, device="cpu")
    pixels = scorer.pixels([Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows])
    tokens = scorer.tokenizer([r["text"] for r in rows])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(rows), BATCH):
            img = scorer.model.encode_image(torch.from_numpy(pixels[s:s + BATCH]), normalize=True)
            txt = scorer.model.encode_text(tokens[s:s + BATCH], normalize=True)
            (img * txt).sum(-1)
    return time.perf_counter() - t0


def vilactl(ws: Path, spec, name: str) -> float:
    from rich.console import Console

    from vilactl.pipeline.score import ScoreRequest, score

    t0 = time.perf_counter()
    score(ws, ScoreRequest("bench", spec, name=name, batch_size=BATCH, replace=True), None,
          Console(quiet=True), quiet=True)
    return time.perf_counter() - t0


def main() -> None:
    from safetensors.torch import save_file

    from vilactl.curation.clip_scorer import DEMO_CLIP, ScorerSpec
    from vilactl.pipeline.ray_runtime import ray_session

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        rows = make_dataset(ws, max(N_DEMO, N_B32))
        for model, n in ((DEMO_CLIP, N_DEMO), ("ViT-B-32", N_B32)):
            # Random weights saved to a file: a local checkpoint, nothing downloaded.
            built = ScorerSpec(model).build("cpu")[0]
            weights = ws / f"{model}.safetensors"
            save_file({k: v.contiguous() for k, v in built.state_dict().items()}, str(weights))
            spec = ScorerSpec(model, str(weights))
            t_bare = bare(spec, rows[:n])
            sub = ws / f"ws-{model}"
            make_dataset(sub, n)
            t_cold = vilactl(sub, spec, "cold")
            with ray_session(None):
                vilactl(sub, spec, "warmup")
                t_warm = vilactl(sub, spec, "warm")
            print(f"{model:>18}: {n:,} pairs | bare forward {n / t_bare:7.0f} pairs/s | "
                  f"vilactl warm {n / t_warm:7.0f} pairs/s ({t_bare / t_warm:.2f}x) | "
                  f"cold {n / t_cold:7.0f} pairs/s ({t_bare / t_cold:.2f}x) | goal >= 0.9x")


if __name__ == "__main__":
    main()
