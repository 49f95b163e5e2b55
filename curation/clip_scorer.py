"""CLIP image–text scores with open_clip: a model by name, weights by tag or local file.

A score is the cosine similarity of the L2-normalised image and text embeddings of one pair,
computed with the model's own preprocessing and tokenizer. `ScorerSpec.describe()` records
everything that determines a score (model, weights file and its sha256, preprocessing, precision)
so that a score in the catalog can be reproduced. On a GPU the forward pass runs under bf16/fp16
autocast; on the CPU in fp32.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vilactl.base.errors import VilactlError

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


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def random_init_quietly() -> Iterator[None]:
    """open_clip warns "No pretrained weights loaded" for a model built without weights, which
    vilactl does on purpose (the demo CLIP is trained from scratch; a checkpoint's weights are
    loaded right after): keep that one line out of the output."""
    quiet = _NoRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


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
            with random_init_quietly() if pretrained is None else contextlib.nullcontext():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model, pretrained=pretrained, device=device)
        except Exception as e:  # noqa: BLE001 — hub errors, bad files, shape mismatches
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise VilactlError(f"cannot load {self.model} weights {pretrained!r}: {first}") from e
        model.eval()
        return model, preprocess, open_clip.get_tokenizer(self.model), device

    def describe(self, model, preprocess, device: str = "cpu") -> dict:
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(model)
        # On a GPU, bf16 scores differ from fp32 by up to 1.7e-3 (measured, ViT-B-32/L-14 on
        # an H200): enough to move a tie at the cutoff, so the precision is part of a score.
        precision = f"{str(_gpu_dtype()).removeprefix('torch.')} autocast" \
            if device == "cuda" else "fp32"
        return {"model": self.model, "pretrained": self.pretrained, "precision": precision,
                "weights_sha256": weights_sha256(model),
                "preprocess": {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in cfg.items()},
                "transform": str(preprocess).replace("\n", " "),
                "similarity": "cosine of L2-normalised embeddings"}


def _looks_like_path(s: str) -> bool:
    return "/" in s or s.endswith((".safetensors", ".pt", ".bin", ".pth"))


class SplitPreprocess:
    """The model's own preprocessing cut where it leaves PIL.

    `pil(image)` runs the per-image part (resize, crop, RGB) and returns uint8 HWC pixels;
    `tensor(batch)` runs ToTensor + Normalize on a whole uint8 batch at once. The same float32
    operations in the same order, so the same numbers as the full transform (tested), but a
    64-px image costs ~150 µs instead of ~330 µs here (decode included), and uint8 crosses
    processes, not float32 (4x fewer bytes). None from `split` when a transform does not end
    that way."""

    def __init__(self, pil_stage, mean, std):
        self.pil_stage, self.mean, self.std = pil_stage, tuple(mean), tuple(std)

    @classmethod
    def split(cls, preprocess) -> SplitPreprocess | None:
        from torchvision import transforms as T

        steps = list(getattr(preprocess, "transforms", []))
        if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) \
                or not isinstance(steps[-1], T.Normalize) or steps[-1].inplace:
            return None
        return cls(T.Compose(steps[:-2]), steps[-1].mean, steps[-1].std)

    def pil(self, image) -> np.ndarray:
        out = self.pil_stage(image)
        return np.asarray(out.convert("RGB") if out.mode != "RGB" else out, dtype=np.uint8)

    def tensor(self, batch: np.ndarray, device: str = "cpu"):
        """Normalised float32 NCHW pixels; on a GPU the uint8 batch is moved first (4x fewer
        bytes; the element-wise IEEE operations give the same numbers there)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2)
        x = x.contiguous().to(torch.float32).div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device)[None, :, None, None]
        std = torch.tensor(self.std, dtype=torch.float32, device=device)[None, :, None, None]
        return x.sub(mean).div(std)


class ClipScorer:
    """Batched pair scoring. `score(pixel_values, texts)` → float32 cosine similarities."""

    def __init__(self, spec: ScorerSpec, device: str | None = None):
        self.spec = spec
        self.model, self.preprocess, self.tokenizer, self.device = spec.build(device)
        self.split = SplitPreprocess.split(self.preprocess)

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
        return self.score_tokens(pixel_values, self.tokenizer(texts))

    def score_tokens(self, pixel_values, tokens) -> np.ndarray:
        """Scores of preprocessed pixels (float32 array or tensor) and tokenised texts."""
        import torch

        x = torch.as_tensor(np.ascontiguousarray(pixel_values)
                            if isinstance(pixel_values, np.ndarray) else pixel_values)
        x, tokens = x.to(self.device), torch.as_tensor(tokens).to(self.device)
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
