"""GPU scoring: vilactl's scorer path vs the bare forward, and bf16 vs fp32 scores, one run.

The GPU half of `vilactl score` without Ray's plumbing (Ray is not on the GPU machine we
measured on): CPU worker processes decode JPEGs, run the model's per-image preprocessing
(SplitPreprocess.pil) and tokenise, as vilactl's decode actors do; the main process moves uint8
batches to the GPU, normalises them there and runs the forward under bf16 autocast
(ClipScorer.score_tokens), as the scoring actor does. "bare" runs the same forward on batches
already on the GPU. Also printed: the largest |bf16 − fp32| score difference, since a score's
precision is part of what makes it reproducible. Random weights; nothing is downloaded.

    python benchmarks/bench_score_gpu.py [N] [WORKERS]
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import sys
import time

import numpy as np

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else max(1, (os.cpu_count() or 2) - 1)
BATCH = 512
_STATE: dict = {}


def make_images(seed: int, n: int) -> list[tuple[bytes, str]]:
    """Demo-world scenes as 256-px JPEGs (quality 90), like img2dataset's resized downloads."""
    from PIL import Image

    from vilactl.curation.shapes import random_scene, render

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        buf = io.BytesIO()
        Image.open(io.BytesIO(render(scene, size=256))).convert("RGB").save(buf, "JPEG",
                                                                            quality=90)
        out.append((buf.getvalue(), scene.caption()))
    return out


def _init(split, model: str) -> None:
    import open_clip
    import torch

    from vilactl.curation.clip_scorer import ensure_model_config

    torch.set_num_threads(1)
    ensure_model_config(model)
    _STATE["split"], _STATE["tok"] = split, open_clip.get_tokenizer(model)


def _decode(chunk: list[tuple[bytes, str]]):
    from PIL import Image

    split = _STATE["split"]
    pixels = np.stack([split.pil(Image.open(io.BytesIO(b)).convert("RGB")) for b, _ in chunk])
    return pixels, _STATE["tok"]([t for _, t in chunk]).numpy()


def _decode_only(chunk: list[tuple[bytes, str]]) -> int:
    """The decode work of a chunk without sending the pixels back (separates the two costs)."""
    pixels, tokens = _decode(chunk)
    return int(pixels[:, 0, 0, 0].sum()) + int(tokens[:, 0].sum())


def run(model: str, data: list[tuple[bytes, str]], pool_ctx) -> None:
    import torch

    from vilactl.curation.clip_scorer import ClipScorer, ScorerSpec

    scorer = ClipScorer(ScorerSpec(model), device="cuda")
    chunks = [data[s:s + BATCH] for s in range(0, len(data), BATCH)]
    # bare: the same batches, decoded and on the GPU beforehand; the forward alone.
    _init(scorer.split, model)
    t0 = time.perf_counter()
    _decode(chunks[0])
    per_core = len(chunks[0]) / (time.perf_counter() - t0)
    with pool_ctx.Pool(WORKERS, _init, (scorer.split, model)) as pool:
        decoded = pool.map(_decode, chunks[:8])
        t0 = time.perf_counter()
        pool.map(_decode_only, chunks)
        pool_only = len(data) / (time.perf_counter() - t0)
    gpu = [(scorer.split.tensor(p, "cuda"), torch.as_tensor(t).cuda()) for p, t in decoded]
    scorer.score_tokens(*gpu[0])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(len(chunks)):
        scorer.score_tokens(*gpu[i % len(gpu)])
    torch.cuda.synchronize()
    bare = len(data) / (time.perf_counter() - t0)
    # vilactl's path: decode in worker processes, stream uint8 to the GPU, score.
    with pool_ctx.Pool(WORKERS, _init, (scorer.split, model)) as pool:
        pool.map(_decode, chunks[:WORKERS])  # workers up and warm, as Ray's actors would be
        t0 = time.perf_counter()
        scores = [scorer.score_tokens(scorer.split.tensor(p, "cuda"), t)
                  for p, t in pool.imap(_decode, chunks)]
        ours = len(data) / (time.perf_counter() - t0)
    assert sum(len(s) for s in scores) == len(data)
    # bf16 (what score uses on a GPU) vs fp32 on the same pixels and texts.
    p, t = gpu[0]
    bf16 = scorer.score_tokens(p, t)
    with torch.autocast("cuda", enabled=False):
        scorer.device = "cuda-fp32"  # any name but "cuda" skips the autocast in score_tokens
        try:
            fp32 = _fp32_scores(scorer, p, t)
        finally:
            scorer.device = "cuda"
    print(f"{model:>9} on {torch.cuda.get_device_name()}: {len(data):,} pairs | bare forward "
          f"{bare:8.0f} pairs/s | decode+score {ours:8.0f} pairs/s ({ours / bare:.2f}x) with "
          f"{WORKERS} decode workers (decode alone: {per_core:.0f} pairs/s per core, "
          f"{pool_only:.0f} on the pool without sending pixels back) | "
          f"max |bf16 - fp32| = {np.abs(bf16 - fp32).max():.4f}", flush=True)


def _fp32_scores(scorer, pixels, tokens) -> np.ndarray:
    import torch

    with torch.inference_mode():
        img = scorer.model.encode_image(pixels.float(), normalize=True).float()
        txt = scorer.model.encode_text(tokens, normalize=True).float()
    return (img * txt).sum(-1).cpu().numpy()


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        print("bench_score_gpu: no CUDA device here; skipped")  # `make bench` goes on
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(WORKERS) as pool:
        parts = pool.starmap(make_images, [(s, N // WORKERS + 1) for s in range(WORKERS)])
    data = [x for part in parts for x in part][:N]
    for model in ("ViT-B-32", "ViT-L-14"):
        run(model, data, ctx)


if __name__ == "__main__":
    main()
