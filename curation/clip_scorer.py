"""CLIP image–text scores with open_clip: a model by name, weights by tag or local file.

A score is the cosine similarity of the L2-normalised image and text embeddings of one pair,
computed with the model's own preprocessing and tokenizer. `ScorerSpec.describe()` records
everything that determines a score (model, weights file and its sha256, preprocessing, precision)
so that a score in the catalog can be reproduced. On a GPU the forward pass runs under bf16/fp16
autocast; on the CPU in fp32.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vilactl.curation.errors import VilactlError

DEMO_CLIP = "vilactl-demo-clip"
# The demo world's CLIP: 64 px, 2-layer towers, 7M parameters; trains in ~2 min on 2 cores.
DEMO_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 8,
                   "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4,
                 "layers": 2},
}


def ensure_model_config(name: str) -> None:
    """Make vilactl's own configs known to open_clip (in every process that builds a model)."""
    import open_clip

    if name == DEMO_CLIP and name not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="vilactl-clip-cfg-"))
        (folder / f"{DEMO_CLIP}.json").write_text(json.dumps(DEMO_CLIP_CONFIG))
        open_clip.add_model_config(folder)


def weights_sha256(model) -> str:
    """Hash of the weights themselves (names, shapes, bytes), whatever file they came from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ScorerSpec:
    model: str
    pretrained: str | None = None   # an open_clip tag, a local .safetensors/.pt path, or None

    def build(self, device: str | None = None):
        """(model, preprocess, tokenizer, device) — eval mode, on the device."""
        import open_clip
        import torch

        ensure_model_config(self.model)
        if self.model not in open_clip.list_models() and ":" not in self.model:
            raise VilactlError(f"unknown open_clip model {self.model!r} "
                               "(see open_clip.list_models())")
        pretrained = self.pretrained
        if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
            raise VilactlError(f"{pretrained}: checkpoint file not found")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model, pretrained=pretrained, device=device)
        except Exception as e:  # noqa: BLE001 — hub errors, bad files, shape mismatches
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise VilactlError(f"cannot load {self.model} weights {pretrained!r}: {first}") from e
        model.eval()
        return model, preprocess, open_clip.get_tokenizer(self.model), device

    def describe(self, model, preprocess) -> dict:
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(model)
        return {"model": self.model, "pretrained": self.pretrained,
                "weights_sha256": weights_sha256(model),
                "preprocess": {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in cfg.items()},
                "transform": str(preprocess).replace("\n", " "),
                "similarity": "cosine of L2-normalised embeddings"}


def _looks_like_path(s: str) -> bool:
    return "/" in s or s.endswith((".safetensors", ".pt", ".bin", ".pth"))


class ClipScorer:
    """Batched pair scoring. `score(pixel_values, texts)` → float32 cosine similarities."""

    def __init__(self, spec: ScorerSpec, device: str | None = None):
        self.spec = spec
        self.model, self.preprocess, self.tokenizer, self.device = spec.build(device)

    def pixels(self, images) -> np.ndarray:
        """Model-preprocessed pixel tensors for PIL images, as one float32 array."""
        import torch

        return torch.stack([self.preprocess(im) for im in images]).numpy()

    def similarity_matrix(self, pixel_values: np.ndarray, texts: list[str]) -> np.ndarray:
        """images × texts cosine similarities (MMC4's similarity_matrix, recomputed)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device)
        with torch.inference_mode():
            img = self.model.encode_image(x, normalize=True).float()
            txt = self.model.encode_text(self.tokenizer(texts).to(self.device),
                                         normalize=True).float()
        return (img @ txt.T).cpu().numpy().astype(np.float64)

    def score(self, pixel_values: np.ndarray, texts: list[str]) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device)
        tokens = self.tokenizer(texts).to(self.device)
        autocast = torch.autocast("cuda", dtype=_gpu_dtype()) if self.device == "cuda" \
            else _null()
        with torch.inference_mode(), autocast:
            img = self.model.encode_image(x, normalize=True).float()
            txt = self.model.encode_text(tokens, normalize=True).float()
        return (img * txt).sum(-1).cpu().numpy().astype(np.float32)


def _gpu_dtype():
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _null():
    import contextlib

    return contextlib.nullcontext()
