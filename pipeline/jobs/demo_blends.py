"""The demo's blends, one per training stage (names are what `vilactl train` looks for).

- blend_projector: curated COYO caption pairs only (stage 0 trains the projector on pairs).
- blend_pretrain: interleaved MMC4 and curated COYO at 1:1 image shares, pairs grouped 4 to a
  sample as VILA does (stage 1).
- blend_sft: VQA and caption instructions with text-only instructions (stage 2, the paper's
  joint SFT; captions keep the model describing images, text keeps its text skills).
"""
from __future__ import annotations

from vilactl.pipeline.jobs.blend import BlendRequest, blend

DEMO_BLENDS: dict[str, dict] = {
    "blend_projector": {"weights": {"coyo_curated": 1.0}},
    "blend_pretrain": {"weights": {"mmc4_interleaved": 0.5, "coyo_curated": 0.5},
                       "coyo_group": 4},
    "blend_sft": {"weights": {"vqa": 0.6, "caption_instruct": 0.15, "text_instruct": 0.25}},
}


def step_blends(ctx) -> dict:
    counts = {}
    for name, spec in DEMO_BLENDS.items():
        req = BlendRequest(name=name, seed=ctx.config.seed, replace=True, shard_size=1024, **spec)
        m = blend(ctx.workspace, req, quiet=True)
        counts[name] = f"{m['num_samples']} samples/{m['num_images']} images"
    return counts
