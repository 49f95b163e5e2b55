"""Two measurements of the trainer, one run each.

1. Data path alone, 1 vs 4 decoding workers (train/loader.py): a Parquet blend of JPEG pairs
   shaped like VILA's pretraining data (384 px JPEGs resized to CLIP-L/336, captions of 20-60
   words, 576 tokens per image, rows of 4096 tokens, 4 rows per micro-batch, no mask as with
   flash-attention) read, tokenised, packed and decoded into batches by `rank_batches` with no
   model. Prints samples/s for 1 and 4 workers (and inline, 0) and the ratio 4/1 (goal >= 3x on
   4 cores; on fewer cores the ratio is bounded by the cores, and the machine's count is
   printed with it).
2. Packed training loop vs a padded loop over transformers' LlavaForConditionalGeneration.
   Same tiny model on both sides (HF CLIP vision tower 64 px / patch 8, mlp2x_gelu projector, a
   4-layer Llama; vision frozen, projector + LLM trained with AdamW — the pretraining stage),
   same synthetic documents shaped like the demo's MMC4 samples (1–4 images of 64 tokens, 10–80
   text tokens around each):
     llava    batches in data order padded to their longest (LLaVA's default collator),
              LlavaForConditionalGeneration(labels=…) forward/backward/step
     vilactl  train.packing rows of max_length (block-diagonal mask, restarting positions),
              VLM forward + token-weighted loss, same optimizer
   Both see the same examples at the same tokens per step. Prints real (non-padding) tokens/s,
   padding shares and the ratio (goal ≥ 1.3×).

    python benchmarks/bench_train.py [STEPS] [DATA_BATCHES]
"""
from __future__ import annotations

import functools
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 12
DATA_BATCHES = int(sys.argv[2]) if len(sys.argv) > 2 else 24
MAX_LEN, ROWS = 512, 4
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              image_size=64, patch_size=8, projection_dim=64)
LLAMA = dict(vocab_size=2048, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
             num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024,
             tie_word_embeddings=False)
IMAGE_ID = 2047


def examples(n: int, tokens_per_image: int):
    from vilactl.train.sequences import IGNORE, Example

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ids, images = [1], []
        for _ in range(int(rng.integers(1, 5))):
            ids += list(rng.integers(5, 2000, int(rng.integers(10, 80))))
            ids += [IMAGE_ID] * tokens_per_image
            images.append(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)))
        ids += list(rng.integers(5, 2000, int(rng.integers(10, 80)))) + [2]
        ids = np.asarray(ids[:MAX_LEN], np.int64)
        n_img = int((ids == IMAGE_ID).sum()) // tokens_per_image
        ids = ids[:len(ids) - int((ids == IMAGE_ID).sum()) % tokens_per_image or None]
        labels = np.where(ids == IMAGE_ID, IGNORE, ids)
        labels[0] = IGNORE
        out.append(Example(f"s{i}", ids, labels, images[:n_img]))
    return out


def _blend(folder: Path, n: int = 400) -> tuple[str, list[str]]:
    """n JPEG pairs (384 px, smooth colour fields with noise: JPEG-realistic) as a shard."""
    import pyarrow.parquet as pq
    from PIL import Image

    from vilactl.curation.records import sample_table, segment

    rng = np.random.default_rng(0)
    words = "a red blue green photo of the small large dog cat car tree house on in".split()
    yy, xx = np.mgrid[0:384, 0:384] / 384.0
    rows, captions = [], []
    for i in range(n):
        c = rng.random((3, 3))
        img = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] for k in range(3)], -1)
        img = np.clip(img * 120 + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        text = " ".join(rng.choice(words, int(rng.integers(20, 60))))
        captions.append(text)
        rows.append({"sample_id": f"b{i}", "source": "bench",
                     "segments": [segment("user", image=buf.getvalue()),
                                  segment("user", text)]})
    path = folder / "part-00000.parquet"
    pq.write_table(sample_table(rows), path)
    return str(path), captions


def _rate(stream, decoder, rows: int, length: int, workers: int) -> tuple[float, float]:
    """(samples/s, training-process CPU ms per sample) of `rank_batches` with `workers`."""
    from vilactl.train.loader import rank_batches

    it = rank_batches(lambda: stream.plans(rows, length, True, 256), decoder, 0, 0, 1, workers)
    next(it)                                # worker start-up is not the steady rate
    c0, t0, n = time.process_time(), time.perf_counter(), 0
    for _ in range(DATA_BATCHES):
        n += len(next(it).sample_ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    it.close()
    return n / wall, cpu / n * 1e3


def _decode_cost(stream, decoder, rows: int, length: int) -> float:
    """CPU ms per sample of what a worker does (decode + resize + collate), one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                # as in a DataLoader worker
    plans = stream.plans(rows, length, True, 256)
    work = [next(plans) for _ in range(6)]
    t0 = time.process_time()
    n = sum(len(decoder[p].sample_ids) for p in work)
    torch.set_num_threads(threads)
    return (time.process_time() - t0) / n * 1e3


def data_path() -> None:
    from vilactl.train.data import BlendStream
    from vilactl.train.loader import Decoder
    from vilactl.train.sequences import SequenceBuilder
    from vilactl.train.tokenizer import image_token_id, load_tokenizer, train_demo_tokenizer
    from vilactl.train.vision_tower import image_uint8

    length, rows, per_image = 4096, 4, 576
    with tempfile.TemporaryDirectory() as tmp:
        path, captions = _blend(Path(tmp))
        tok = load_tokenizer(train_demo_tokenizer(captions, Path(tmp) / "tok"))
        stream = BlendStream([path], SequenceBuilder(tok, image_token_id(tok), per_image,
                                                     length))
        decoder = Decoder(functools.partial(image_uint8, size=336), length,
                          tok.pad_token_id, packing=True, with_mask=False)
        worker_ms = _decode_cost(stream, decoder, rows, length)
        rates = {w: _rate(stream, decoder, rows, length, w) for w in (1, 2, 4)}
    cores = len(os.sched_getaffinity(0))
    print(f"data path: {DATA_BATCHES} micro-batches of {rows} rows x {length} tokens "
          f"(image-text pairs, 384 px JPEG -> 336 px uint8), {cores} CPU cores")
    for w, (rate, main_ms) in rates.items():
        print(f"  {w} worker(s) {rate:8.1f} samples/s   training process "
              f"{main_ms:.2f} CPU ms/sample")
    ratio = rates[4][0] / rates[1][0]
    print(f"ratio 4 workers / 1 worker: {ratio:.2f}x measured on {cores} cores "
          "(goal >= 3x on 4 cores)")
    main_ms = rates[1][1]
    print(f"  per sample: worker {worker_ms:.2f} CPU ms (decode, resize, collate), training "
          f"process {main_ms:.2f} (read, tokenise, pack, receive): on 4 free cores 4 workers "
          f"would reach 4 x {worker_ms:.2f} / ({worker_ms:.2f} + {main_ms:.2f}) = "
          f"{4 * worker_ms / (worker_ms + main_ms):.1f}x (a bound from these costs, "
          "not a measurement)")


def ours():
    from vilactl.train.model import VLM, ModelSpec
    from vilactl.train.vision_tower import TowerSpec

    torch.manual_seed(0)
    spec = ModelSpec(TowerSpec(kind="hf", config={"model_type": "clip_vision_model", **VISION},
                               layer=-2), "mlp2x_gelu", llm_config={"model_type": "llama",
                                                                     **LLAMA})
    return VLM(spec, IMAGE_ID)


def llava():
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(0)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=LlamaConfig(**LLAMA),
                      image_token_id=IMAGE_ID, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(cfg)


def run(step_fn, batches, params) -> tuple[float, float]:
    opt = torch.optim.AdamW(params, lr=1e-4)
    real = total = 0
    t0 = None
    for i, b in enumerate(batches):
        if i == 2:                         # two warm-up steps
            t0, real, total = time.perf_counter(), 0, 0
        step_fn(b).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        real, total = real + b.real_tokens, total + b.tokens
    return real / (time.perf_counter() - t0), 1 - real / total


def main() -> None:
    data_path()
    packed_vs_llava()


def packed_vs_llava() -> None:
    from vilactl.train.model import token_losses
    from vilactl.train.packing import collate_padded, packed_batches

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = ours()
    data = examples(4000, model.tokens_per_image)
    packed = list(packed_batches(iter(data), MAX_LEN, ROWS, pad_id=0))[:STEPS + 2]
    used = sum(len(b.sample_ids) for b in packed)
    per_batch = max(1, round(used / len(packed)))   # same examples per step on both sides
    padded = [collate_padded(data[i:i + per_batch], pad_id=0)
              for i in range(0, used, per_batch)][:STEPS + 2]

    for p in model.vision.parameters():
        p.requires_grad = False

    def ours_step(b):
        logits = model(b.input_ids, b.pixels, b.attention_mask, b.position_ids)
        return token_losses(logits, b.labels).sum() / b.target_tokens

    ref = llava()
    for p in ref.model.vision_tower.parameters():
        p.requires_grad = False
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def llava_step(b):
        labels = b.labels.clone()
        return ref(input_ids=b.input_ids, pixel_values=(b.pixels - mean) / std,
                   attention_mask=b.attention_mask, labels=labels).loss

    t_ref, pad_ref = run(llava_step, padded, [p for p in ref.parameters() if p.requires_grad])
    t_ours, pad_ours = run(ours_step, packed, [p for p in model.parameters() if p.requires_grad])
    print(f"{STEPS} steps of ~{per_batch} examples; rows of {MAX_LEN} tokens, "
          f"{model.tokens_per_image} tokens per image")
    print(f"llava padded   {t_ref:8.0f} real tokens/s  padding {pad_ref:.1%}")
    print(f"vilactl packed {t_ours:8.0f} real tokens/s  padding {pad_ours:.1%}")
    print(f"ratio packed/padded: {t_ours / t_ref:.2f}x  (goal >= 1.3x)")


if __name__ == "__main__":
    main()
