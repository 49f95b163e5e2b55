"""A training sample's segments → token ids, labels and its images, ready to pack.

Pretraining (`sft=False`) trains every text token; SFT trains assistant turns only (and the
end-of-turn token), written LLaVA-1.5 style: "USER: … ASSISTANT: …</s>". Image tokens are
never trained. Each image becomes `n_image_tokens` placeholders; a literal "<image>" or "</s>"
in the data's text is encoded as plain text. Past `max_length` the sequence is cut; an image
whose placeholders would be cut is dropped with everything after it, so the image/feature count
always matches (`overflow="error"` refuses such samples instead).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vilactl.base.errors import VilactlError

IGNORE = -100
ROLE_PREFIX = {"user": "USER:", "assistant": "ASSISTANT:", "system": "SYSTEM:"}


@dataclass
class Example:
    sample_id: str
    input_ids: np.ndarray              # int64 [n]
    labels: np.ndarray                 # int64 [n], IGNORE where not trained
    images: list = field(default_factory=list)   # pixel tensors (or bytes before decoding)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class SequenceBuilder:
    tokenizer: object
    image_token_id: int
    n_image_tokens: int
    max_length: int
    sft: bool = False
    overflow: str = "truncate"

    def _text(self, text: str) -> list[int]:
        # Data text is only text: a caption mentioning "<image>" or "</s>" must not turn into an
        # image placeholder (a feature/slot mismatch) or an end of sequence. With special tokens
        # split they are encoded as their characters; text without them encodes as before.
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    def prompt(self, segments: list[dict]) -> Example:
        """A generation prompt: the segments, then the assistant marker (SFT) or nothing
        (pretraining's raw interleaving), without end of sequence."""
        ex = self.build("prompt", segments, prompt=True)
        if self.sft:
            marker = self._text(ROLE_PREFIX["assistant"])
            ex.input_ids = np.concatenate([ex.input_ids, np.asarray(marker, np.int64)])
        return ex

    def build(self, sample_id: str, segments: list[dict], prompt: bool = False) -> Example | None:
        """The example, or None when nothing in it is trained (e.g. cut to images only)."""
        tok = self.tokenizer
        ids, labels, images, spans = [tok.bos_token_id], [IGNORE], [], []
        role = None
        for i, seg in enumerate(segments):
            if self.sft and seg["role"] != role:
                role = seg["role"]
                marker = self._text(ROLE_PREFIX.get(role, role.upper() + ":"))
                ids += marker
                labels += [IGNORE] * len(marker)
            if seg["image"] is not None:
                spans.append(len(ids))
                ids += [self.image_token_id] * self.n_image_tokens
                labels += [IGNORE] * self.n_image_tokens
                images.append(seg["image"])
                continue
            text = self._text(seg["text"])
            trained = not self.sft or seg["role"] == "assistant"
            end_of_turn = self.sft and trained and (
                i + 1 == len(segments) or segments[i + 1]["role"] != "assistant")
            if end_of_turn:
                text = text + [tok.eos_token_id]
            ids += text
            labels += text if trained else [IGNORE] * len(text)
        if prompt:
            return Example(sample_id, np.asarray(ids, np.int64), np.asarray(labels, np.int64),
                           images)
        if not self.sft:
            ids.append(tok.eos_token_id)
            labels.append(tok.eos_token_id)
        if len(ids) > self.max_length:
            ids, labels, images = self._cut(sample_id, ids, labels, images, spans)
        if all(v == IGNORE for v in labels[1:]):
            return None
        return Example(sample_id, np.asarray(ids, np.int64), np.asarray(labels, np.int64), images)

    def _cut(self, sample_id, ids, labels, images, spans):
        if self.overflow == "error":
            raise VilactlError(f"sample {sample_id}: {len(ids)} tokens, longer than max_length "
                               f"{self.max_length} (data.overflow: truncate to cut it)")
        cut = self.max_length
        kept = [s for s in spans if s + self.n_image_tokens <= cut]
        if len(kept) < len(spans):          # an image would be cut: end before it
            cut = min(cut, spans[len(kept)])
        return ids[:cut], labels[:cut], images[:len(kept)]
