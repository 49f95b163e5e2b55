"""The three stages of the VILA recipe and what each one trains (logged, counted).

- projector  stage 0: only the projector learns, on caption pairs; vision tower and LLM frozen.
- pretrain   stage 1: projector + LLM learn on interleaved + pair data (VILA §3.1: updating the
             LLM during pretraining is essential for in-context learning).
- sft        stage 2: projector + LLM learn on visual + text-only instructions, loss on
             assistant turns only (joint SFT, §3.3).
The vision tower stays frozen throughout, as in the paper. `lora > 0` trains low-rank adapters
on the LLM instead of its full weights (the paper's Table 9 comparison). A stage's config
`freeze_llm: true` keeps the LLM frozen where the stage would train it (the paper's Table 1:
pretraining with the LLM frozen, only the projector learning; `vilactl ablate --study freeze`).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Stage:
    name: str
    trains: tuple[str, ...]            # parts of the VLM: vision, projector, llm
    sft: bool                          # loss on assistant turns only
    parent: str | None                 # the stage whose checkpoint this one starts from


STAGES = {
    "projector": Stage("projector", ("projector",), sft=False, parent=None),
    "pretrain": Stage("pretrain", ("projector", "llm"), sft=False, parent="projector"),
    "sft": Stage("sft", ("projector", "llm"), sft=True, parent="pretrain"),
}


def add_lora(model, rank: int) -> None:
    """Wrap the LLM with peft LoRA adapters on its attention and MLP projections."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model.llm = get_peft_model(model.llm, LoraConfig(r=rank, lora_alpha=2 * rank,
                                                     target_modules=targets, lora_dropout=0.0))


def apply_freeze(model: nn.Module, stage: Stage, lora: int = 0,
                 freeze_llm: bool = False) -> dict[str, dict[str, int]]:
    """Set requires_grad per the stage (the LLM too kept frozen with `freeze_llm`); returns
    {part: {trainable, total}} parameter counts, which the log line and the run record show."""
    for part in ("vision", "projector", "llm"):
        module = getattr(model, part)
        on = part in stage.trains and not (freeze_llm and part == "llm")
        for name, p in module.named_parameters():
            p.requires_grad = on and (not lora or part != "llm" or "lora_" in name)
    return {part: {"trainable": sum(p.numel() for p in getattr(model, part).parameters()
                                    if p.requires_grad),
                   "total": sum(p.numel() for p in getattr(model, part).parameters())}
            for part in ("vision", "projector", "llm")}


def describe(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{part} {'TRAINED' if c['trainable'] else 'frozen'} "
                     f"({c['trainable']:,}/{c['total']:,})" for part, c in counts.items())
