"""Answers from a VLM: greedy or sampled decoding of prompts in vilactl's SFT format.

Two backends with one interface (`answers(prompts, decoding)`; a prompt is a list of
training-sample segments ending with the user's turn):
- `VilaGenerator`: vilactl's own model from a checkpoint. Prompts are built by the SFT sequence
  builder ("USER: <image> question ASSISTANT:"), batched with left padding, KV-cached — the code
  `vilactl eval` answers with (train/evaluate.py), so the same prompts give the same answers.
- `HFGenerator`: an exported folder through plain transformers (`LlavaForConditionalGeneration`
  + `AutoProcessor` and the folder's chat template).
Decoding is greedy when `temperature` is 0; otherwise sampling with temperature and top-p from
a generator seeded with `seed`, so a run is repeatable.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vilactl.base.errors import VilactlError
from vilactl.train.sequences import SequenceBuilder


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 32
    temperature: float = 0.0           # 0: greedy
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> Decoding:
        if self.max_new_tokens < 1:
            raise VilactlError(f"--max-new-tokens must be ≥ 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= 100:
            raise VilactlError(f"--temperature must be in [0, 100], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise VilactlError(f"--top-p must be in (0, 1], got {self.top_p}")
        return self

    def kwargs(self) -> dict:
        """transformers `generate` arguments (the seed is set by the caller)."""
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True,
                "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}


def _open(image):
    from vilactl.curation.images import open_image

    return open_image(image) if isinstance(image, (bytes, bytearray)) else image


class VilaGenerator:
    """vilactl's model: `preprocess` turns a PIL image into unnormalised pixels."""

    def __init__(self, model, tokenizer, preprocess):
        self.model, self.tok, self.preprocess = model.eval(), tokenizer, preprocess
        self.sft = SequenceBuilder(tokenizer, model.image_token_id, model.tokens_per_image,
                                   max_length=10**9, sft=True)

    def prompt_ids(self, segments: list[dict]) -> tuple[list[int], list]:
        ex = self.sft.prompt(segments)
        return ex.input_ids.tolist(), ex.images

    def _pixels(self, images: list, blank: bool) -> torch.Tensor | None:
        if not images:
            return None
        pixels = [self.preprocess(_open(b)) for b in images]
        if blank:
            pixels = [torch.full_like(p, 0.5) for p in pixels]
        return torch.stack(pixels)

    @torch.no_grad()
    def answers(self, prompts: list[list[dict]], decoding: Decoding = Decoding(),
                blank: bool = False, batch_size: int = 32, progress=None) -> list[str]:
        """Answers to many prompts, `batch_size` at a time (`progress(n)` after each batch)."""
        torch.manual_seed(decoding.seed)
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            out += self._batch(prompts[i:i + batch_size], decoding, blank)
            if progress is not None:
                progress(len(prompts[i:i + batch_size]))
        return out

    def _batch(self, prompts: list[list[dict]], decoding: Decoding, blank: bool) -> list[str]:
        device = next(self.model.parameters()).device
        built = [self.prompt_ids(p) for p in prompts]
        width = max(len(ids) for ids, _ in built)
        embeds, mask = [], torch.zeros(len(built), width, dtype=torch.long, device=device)
        for r, (ids, images) in enumerate(built):
            pixels = self._pixels(images, blank)
            e = self.model.embed(torch.tensor([ids], device=device),
                                 None if pixels is None else pixels.to(device))[0]
            pad = width - len(ids)
            embeds.append(torch.cat([e.new_zeros(pad, e.shape[-1]), e]))
            mask[r, pad:] = 1
        gen = self.model.llm.generate(
            inputs_embeds=torch.stack(embeds), attention_mask=mask, **decoding.kwargs(),
            eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id)
        return [self.tok.decode(g, skip_special_tokens=True).strip() for g in gen]


class HFGenerator:
    """An exported LLaVA folder, loaded by transformers alone."""

    def __init__(self, folder: str | Path):
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise VilactlError(f"--model {folder}: not a Hugging Face model folder (no "
                               "config.json); make one with `vilactl export`")
        try:
            self.model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
            # the PIL backend resizes exactly as vilactl does (torchvision's antialiased
            # bicubic differs by up to a grey level on resized images)
            self.processor = AutoProcessor.from_pretrained(folder, backend="pil")
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise VilactlError(f"--model {folder}: transformers cannot load it ({first})") from e
        self.processor.tokenizer.padding_side = "left"

    def inputs(self, prompts: list[list[dict]]) -> dict:
        from vilactl.train.hf_processor import messages

        texts, images = [], []
        for segs in prompts:
            msgs, imgs = messages(segs)
            texts.append(self.processor.apply_chat_template(msgs, add_generation_prompt=True,
                                                            tokenize=False))
            images += [_open(i).convert("RGB") for i in imgs]
        return self.processor(text=texts, images=images or None, padding=True,
                              return_tensors="pt")

    @torch.no_grad()
    def answers(self, prompts: list[list[dict]], decoding: Decoding = Decoding(),
                batch_size: int = 32, progress=None) -> list[str]:
        torch.manual_seed(decoding.seed)
        tok, out = self.processor.tokenizer, []
        for i in range(0, len(prompts), batch_size):
            batch = self.inputs(prompts[i:i + batch_size])
            gen = self.model.generate(**batch, **decoding.kwargs(),
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            new = gen[:, batch["input_ids"].shape[1]:]
            out += [tok.decode(g, skip_special_tokens=True).strip() for g in new]
            if progress is not None:
                progress(len(new))
        return out
