"""Tokenizers: any HF tokenizer by name/path, or the demo's own, trained here on the demo text.

The demo tokenizer is a byte-level BPE trained with `tokenizers` (no downloads), saved as a
`PreTrainedTokenizerFast` folder. Every tokenizer gets the markers the sequence builder needs:
`<image>` (one placeholder per image token) and a pad token if it has none. Conversation turns
are written LLaVA-1.5 style ("USER: … ASSISTANT: …</s>"), which works with any tokenizer.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

IMAGE_TOKEN = "<image>"
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]


def train_demo_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 2048) -> Path:
    """Byte-level BPE on `texts`, saved (atomically) as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vilactl.base import atomic

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})
    with atomic.atomic_dir(out_dir) as tmp:
        fast.save_pretrained(tmp)
    return out_dir


def load_tokenizer(name_or_path: str | Path):
    """A transformers tokenizer with `<image>` and a pad token added when missing."""
    from transformers import AutoTokenizer

    from vilactl.base.errors import VilactlError

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:     # a missing folder, an unknown name offline
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise VilactlError(f"tokenizer {name_or_path}: cannot load ({first})") from e
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def image_token_id(tok) -> int:
    return tok.convert_tokens_to_ids(IMAGE_TOKEN)
