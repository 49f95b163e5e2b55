"""Train the demo world's tiny CLIP with open_clip's contrastive loss.

No CLIP weights can be downloaded here, so the demo trains its own: 64 px, 2-layer towers
(curation/clip_scorer.py DEMO_CLIP_CONFIG) on freshly drawn scenes with their true captions —
not on the COYO rows it will later curate. A fixed number of steps and seeds make it
deterministic; ~200 steps of 256 pairs (≈2 min on 2 cores) separate true from swapped captions.
Saved as safetensors; the trainer later reuses its image tower as the demo VLM's vision encoder.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vilactl.base import atomic
from vilactl.curation.clip_scorer import DEMO_CLIP, DEMO_CLIP_CONFIG, ScorerSpec, weights_sha256
from vilactl.curation.shapes import random_scene, render

WEIGHTS_FILE = "open_clip_model.safetensors"


def train_demo_clip(out_dir: Path, seed: int = 0, steps: int = 200, pairs: int = 16000,
                    batch_size: int = 256, lr: float = 1e-3,
                    progress: Callable[[int, float], None] | None = None) -> dict:
    """Train, save `<out_dir>/open_clip_model.safetensors` + `meta.json`; return the meta."""
    import open_clip
    import torch
    from PIL import Image

    torch.manual_seed(seed)
    model, preprocess, tokenizer, _ = ScorerSpec(DEMO_CLIP).build("cpu")
    rng = np.random.default_rng([seed, 7])
    scenes = [random_scene(rng) for _ in range(pairs)]
    images = torch.stack([preprocess(Image.open(io.BytesIO(render(s)))) for s in scenes])
    texts = tokenizer([s.caption() for s in scenes])
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = float("nan")
    for step in range(1, steps + 1):
        idx = torch.randint(0, pairs, (batch_size,), generator=gen)
        img_f, txt_f, scale = model(images[idx], texts[idx])[:3]
        loss_t = loss_fn(img_f, txt_f, scale)
        opt.zero_grad()
        loss_t.backward()
        opt.step()
        loss = loss_t.item()
        if progress:
            progress(step, loss)
    model.eval()
    out_dir = Path(out_dir)
    weights = out_dir / WEIGHTS_FILE
    with atomic.atomic_path(weights) as tmp:
        atomic.save_tensors({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    meta = {"model": DEMO_CLIP, "config": DEMO_CLIP_CONFIG, "weights": str(weights),
            "weights_sha256": weights_sha256(model), "seed": seed, "steps": steps,
            "pairs": pairs, "batch_size": batch_size, "final_loss": round(loss, 4)}
    atomic.write_text(out_dir / "meta.json", json.dumps(meta, indent=1, sort_keys=True))
    return meta
