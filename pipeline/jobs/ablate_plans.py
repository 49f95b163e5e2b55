"""What each `vilactl ablate --study` trains: its variants, their blends, freeze policy and
projector, and the run names of one (study, variant, seed) — plain data, no training here.

- data      (VILA Table 3) pretraining on COYO pairs, MMC4-pairs, interleaved MMC4, MMC4+COYO at
            the same image count, from the same projector checkpoint, then the same joint SFT.
- freeze    (Table 1) pretraining with the LLM frozen (only the projector learns) or trained,
            with a `linear` or an `mlp2x_gelu` projector — each projector kind from a stage-0
            checkpoint of its own (trained per seed) — then the same joint SFT.
- sft-text  (Table 4) SFT from the same pretrain checkpoint on visual instructions only, or
            visual + text-only instructions (joint SFT), at the same steps.
Each seed draws its own blends and sets `train.seed`; run names carry study, variant and seed
under an `ablate_` prefix that the demo's own runs (projector, pretrain, sft) never use.
"""
from __future__ import annotations

from dataclasses import dataclass

from vilactl.pipeline.jobs.demo_blends import DEMO_BLENDS

# (eval set, metric, shots) of each column, and its heading — the paper's table columns
COLUMNS = [("eval_vqa", "accuracy", 0), ("eval_vqa", "accuracy", 4),
           ("eval_caption", "cider", 0), ("eval_caption", "cider", 4),
           ("eval_text", "accuracy", 0)]
HEADS = ["VQA 0-shot", "VQA 4-shot", "CIDEr 0-shot", "CIDEr 4-shot", "text 0-shot"]
KEYS = [f"{d}:{m}:{k}" for d, m, k in COLUMNS]

DATA_BLENDS: dict[str, dict[str, float]] = {
    "coyo": {"coyo_curated": 1.0},
    "mmc4-pairs": {"mmc4_pairs": 1.0},
    "mmc4": {"mmc4_interleaved": 1.0},
    "mmc4+coyo": {"mmc4_interleaved": 0.5, "coyo_curated": 0.5},
}
JOINT_SFT: dict[str, float] = DEMO_BLENDS["blend_sft"]["weights"]
# visual-only SFT: the joint blend without text_instruct, the visual sets' proportions kept
VISUAL_SFT = {d: w / sum(v for k, v in JOINT_SFT.items() if k != "text_instruct")
              for d, w in JOINT_SFT.items() if d != "text_instruct"}
PROJECTORS = ("mlp2x_gelu", "linear")

TITLES = {"data": "pretraining data (VILA Table 3): same images, same steps, same SFT",
          "freeze": "LLM frozen or trained in pretraining × projector (VILA Table 1)",
          "sft-text": "SFT with or without text-only instructions (VILA Table 4)"}
FIRST_COLUMN = {"data": "pretraining data", "freeze": "pretraining", "sft-text": "SFT data"}


@dataclass(frozen=True)
class Variant:
    key: str                           # shown in tables; part of the run names
    sft: dict[str, float]              # SFT blend weights
    pretrain: dict | None = None       # pretraining blend spec; None: no pretraining run
    projector: str | None = None       # a projector kind with its own stage-0 checkpoint
    freeze_llm: bool = False           # pretraining with the LLM frozen


def variants(study: str) -> list[Variant]:
    joint = dict(JOINT_SFT)
    if study == "data":
        return [Variant(k, joint, {"weights": w, "coyo_group": 4})
                for k, w in DATA_BLENDS.items()]
    if study == "freeze":
        pre = DEMO_BLENDS["blend_pretrain"]
        return [Variant(f"{'frozen' if frozen else 'trained'}-llm-{proj}", joint, pre, proj,
                        frozen) for proj in PROJECTORS for frozen in (True, False)]
    if study == "sft-text":
        return [Variant("visual", dict(VISUAL_SFT)), Variant("visual+text", joint)]
    raise ValueError(f"unknown study {study!r}")


def slug(text: str) -> str:
    """A name part from a study or variant key (`+` and `-` are not kept apart in names)."""
    return text.replace("+", "_").replace("-", "_")


def run_name(study: str, part: str, seed: int) -> str:
    """`ablate_<study>_<part>_s<seed>`: a blend or a run of one study, variant (or shared
    part) and seed; the suffixes -projector, -pretrain, -sft name its checkpoints."""
    return f"ablate_{slug(study)}_{slug(part)}_s{seed}"


def cell(stat: dict) -> str:
    """`mean ± std (n seeds)`, as the table and the report show a variant's column."""
    if stat.get("mean") is None:
        return "—"
    n = stat["n"]
    return f"{stat['mean']:.3f} ± {stat['std']:.3f} ({n} seed{'s' if n != 1 else ''})"
