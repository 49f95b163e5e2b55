"""Vision towers: patch features [B, N, D] from a chosen layer, CLS dropped (LLaVA's choice).

Two families, one interface (`forward(pixels)`, `patches`, `dim`, `image_size`, `preprocess`):
- `hf`: transformers `CLIPVisionModel` / `SiglipVisionModel` by name or local path, or built
  from a config dict (tests, meta-device size checks). SigLIP has no CLS token.
- `open_clip`: an open_clip image tower — the demo CLIP from its safetensors checkpoint.
`layer` counts like `hidden_states` in transformers: 0 = embeddings, -1 = last block, -2 = the
one before (LLaVA's default).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

MEAN_STD = {"clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
            "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


@dataclass
class TowerSpec:
    kind: str = "open_clip"            # open_clip | hf
    name: str | None = None            # open_clip model name, or HF name / local path
    checkpoint: str | None = None      # open_clip: a .safetensors file
    config: dict | None = None         # hf: build from this config instead of weights
    layer: int = -2


def image_uint8(image, size: int) -> torch.Tensor:
    """PIL image → [3, size, size] uint8 (RGB, bicubic resize). What DataLoader workers send:
    a quarter of the bytes of float pixels; `Batch.to` makes them floats on the device."""
    from PIL import Image

    image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    # HWC → CHW on the uint8 pixels, contiguous: stacking strided float images into a batch
    # cost more than decoding them
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def preprocess_image(image, size: int) -> torch.Tensor:
    """PIL image → [3, size, size] float in [0, 1] (RGB, bicubic resize), unnormalised."""
    return image_uint8(image, size).float().div_(255.0)


class VisionTower(nn.Module):
    def __init__(self, spec: TowerSpec):
        super().__init__()
        self.spec = spec
        if spec.kind == "hf":
            self.model, self.has_cls, norm = _hf_tower(spec)
            cfg = self.model.config
            self.dim, self.image_size, patch = cfg.hidden_size, cfg.image_size, cfg.patch_size
        elif spec.kind == "open_clip":
            self.model = _open_clip_tower(spec)
            self.has_cls, norm = True, "clip"
            self.dim = self.model.conv1.out_channels
            self.image_size = self.model.image_size[0] if isinstance(self.model.image_size, tuple) \
                else self.model.image_size
            patch = self.model.conv1.kernel_size[0]
        else:
            raise ValueError(f"unknown vision tower kind {spec.kind!r} (open_clip or hf)")
        self.patches = (self.image_size // patch) ** 2
        mean, std = MEAN_STD[norm]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, image) -> torch.Tensor:
        """PIL image → [3, H, W] float, resized to the tower's size (bicubic), unnormalised."""
        return preprocess_image(image, self.image_size)

    @property
    def image_preprocessor(self):
        """For DataLoader workers: a small picklable callable (not the tower's weights) giving
        uint8 pixels; `preprocess`'s floats are these / 255."""
        return functools.partial(image_uint8, size=self.image_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = (pixels - self.mean) / self.std
        if self.spec.kind == "hf":
            out = self.model(pixel_values=pixels, output_hidden_states=True)
            feats = out.hidden_states[self.spec.layer]
        else:
            feats = self._open_clip_hidden(pixels)
        return feats[:, 1:] if self.has_cls else feats

    def _open_clip_hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.model
        hidden = [v._embeds(pixels)]
        blocks = v.transformer.resblocks
        stop = self.spec.layer % (len(blocks) + 1)      # hidden_states index, as in HF
        for block in blocks[:stop]:
            hidden.append(block(hidden[-1]))
        return hidden[stop]


def _hf_tower(spec: TowerSpec):
    from transformers import (
        AutoConfig,
        CLIPVisionConfig,
        CLIPVisionModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    if spec.config is not None:
        cfg = dict(spec.config)
        siglip = "siglip" in cfg.pop("model_type", "clip_vision_model")
        config = (SiglipVisionConfig if siglip else CLIPVisionConfig)(**cfg)
        model = (SiglipVisionModel if siglip else CLIPVisionModel)(config)
    else:
        siglip = "siglip" in AutoConfig.from_pretrained(spec.name).model_type
        model = (SiglipVisionModel if siglip else CLIPVisionModel).from_pretrained(spec.name)
    return model, not siglip, "siglip" if siglip else "clip"


def _open_clip_tower(spec: TowerSpec):

    import open_clip

    from vilactl.curation.clip_scorer import ensure_model_config, random_init_quietly

    ensure_model_config(spec.name)
    with random_init_quietly():           # "no pretrained weights": we load our own below
        model = open_clip.create_model(spec.name, pretrained=None)
    if spec.checkpoint:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(spec.checkpoint))
    return model.visual
