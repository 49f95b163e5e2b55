"""The modality projector: vision features [B, N, Dv] → LLM embeddings [B, N', D].

- linear       one Linear (LLaVA-1's form; VILA's Table 1 finds it generalises better).
- mlp2x_gelu   Linear → GELU → Linear (LLaVA-1.5; the same layout as
               transformers' LlavaMultiModalProjector, so weights map one to one).
- mlp_downsample  VILA's token-saving form: pad the patch grid to even sides, concatenate each
               2×2 block of tokens (N' = N/4), then LayerNorm → Linear → GELU → Linear.
"""
from __future__ import annotations

import math

import torch
from torch import nn

PROJECTORS = ("linear", "mlp2x_gelu", "mlp_downsample")


class DownsampleProjector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * vision_dim)
        self.linear_1 = nn.Linear(4 * vision_dim, llm_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(llm_dim, llm_dim)

    @staticmethod
    def merge_2x2(x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"mlp_downsample needs a square patch grid, got {n} tokens")
        grid = x.view(b, side, side, d)
        if side % 2:   # pad the grid to even sides (zeros) so every token lands in a 2×2 block
            grid = nn.functional.pad(grid, (0, 0, 0, 1, 0, 1))
            side += 1
        grid = grid.view(b, side // 2, 2, side // 2, 2, d).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(b, (side // 2) ** 2, 4 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(self.norm(self.merge_2x2(x)))))


class MlpProjector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, llm_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def build_projector(kind: str, vision_dim: int, llm_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(vision_dim, llm_dim)
    if kind == "mlp2x_gelu":
        return MlpProjector(vision_dim, llm_dim)
    if kind == "mlp_downsample":
        return DownsampleProjector(vision_dim, llm_dim)
    raise ValueError(f"unknown projector {kind!r}; choose one of {', '.join(PROJECTORS)}")


def tokens_per_image(kind: str, patches: int) -> int:
    """How many LLM tokens one image becomes."""
    if kind == "mlp_downsample":
        return math.ceil(math.isqrt(patches) / 2) ** 2
    return patches
