"""The VLM: vision tower → projector → causal LM, with image tokens expanded in the sequence.

Pure model code (no data, no parallelism). A sequence holds `image_token_id` placeholders, one
per projected image token, in order; `forward` scatters the projected features of `pixels`
(all images of the batch, in sequence order) into those positions of the LLM's input embeddings
— the same merge transformers' LLaVA does, so with the same weights the logits agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vilactl.train.projector import build_projector, tokens_per_image
from vilactl.train.vision_tower import TowerSpec, VisionTower


@dataclass
class ModelSpec:
    tower: TowerSpec
    projector: str = "mlp_downsample"
    llm: str | None = None             # AutoModelForCausalLM name / local path
    llm_config: dict | None = None     # or a config (the demo's tiny Llama)
    attn_implementation: str = "sdpa"  # or flash_attention_2 on GPU (packed rows go varlen)


def build_llm(spec: ModelSpec) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    if spec.llm_config is not None:
        cfg = dict(spec.llm_config)
        config = AutoConfig.for_model(cfg.pop("model_type", "llama"), **cfg)
        return AutoModelForCausalLM.from_config(config,
                                                attn_implementation=spec.attn_implementation)
    return AutoModelForCausalLM.from_pretrained(spec.llm,
                                                attn_implementation=spec.attn_implementation)


class VLM(nn.Module):
    def __init__(self, spec: ModelSpec, image_token_id: int, llm: nn.Module | None = None,
                 tower: VisionTower | None = None):
        super().__init__()
        self.spec = spec
        self.image_token_id = image_token_id
        self.vision = tower if tower is not None else VisionTower(spec.tower)
        self.llm = llm if llm is not None else build_llm(spec)
        self.projector = build_projector(spec.projector, self.vision.dim,
                                         self.llm.config.hidden_size)
        self.tokens_per_image = tokens_per_image(spec.projector, self.vision.patches)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[n_images, tokens_per_image, hidden]; no graph through a frozen tower."""
        trainable = any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            feats = self.vision(pixels)
        return self.projector(feats)

    def embed(self, input_ids: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        embeds = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.image_token_id
        n_slots = int(slots.sum())
        if pixels is None or len(pixels) == 0:
            if n_slots:
                raise ValueError(f"{n_slots} image tokens but no images")
            return embeds
        feats = self.image_features(pixels.to(embeds.dtype))
        if feats.shape[0] * feats.shape[1] != n_slots:
            raise ValueError(f"{n_slots} image tokens for {feats.shape[0]} images of "
                             f"{feats.shape[1]} tokens")
        return embeds.masked_scatter(slots.unsqueeze(-1), feats.to(embeds.dtype))

    def forward(self, input_ids: torch.Tensor, pixels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, L, vocab]. `attention_mask` may be 2D (padding) or 4D (packed rows)."""
        embeds = self.embed(input_ids, pixels)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask,
                       position_ids=position_ids, use_cache=False)
        return out.logits


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross entropy of next-token prediction ([B, L-1], 0 where label is -100)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                       shift_labels.reshape(-1), ignore_index=-100,
                                       reduction="none")
    return loss.view(shift_labels.shape)
