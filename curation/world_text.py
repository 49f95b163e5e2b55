"""Text for the demo world: unrelated prose for MMC4 documents and text-only instructions.

Prose gives MMC4 documents sentences that do not describe any image (as real web pages have),
so image↔sentence matching has something to get wrong. Text-only instructions (arithmetic and
word tasks with one exact answer) are the joint-SFT text set and its held-out eval split.
"""
from __future__ import annotations

import numpy as np

from vilactl.curation.records import segment

SUBJECTS = ("the market", "our team", "the old library", "a local baker", "the river town",
            "the committee", "my neighbour", "the night train", "the museum", "a small school")
VERBS = ("opened", "visited", "planned", "described", "repaired", "celebrated", "discussed",
         "painted", "measured", "announced")
OBJECTS = ("a new schedule", "the spring festival", "an old bridge", "the garden path",
           "a quiet weekend", "the annual report", "a long journey", "the harbour lights",
           "a simple recipe", "the winter sale")
TAILS = ("last week", "after many delays", "with great care", "before the rain came",
         "to everyone's surprise", "on a sunny morning", "for the first time", "at short notice")
WORDS = ("apple", "river", "garden", "pencil", "window", "planet", "butter", "candle", "forest",
         "yellow", "bridge", "silver", "rocket", "ladder", "marble", "tunnel", "violin", "shadow")


def prose_sentence(rng: np.random.Generator) -> str:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    s = f"{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)} {pick(TAILS)}."
    return s[0].upper() + s[1:]


def instruction(rng: np.random.Generator) -> tuple[str, str, str]:
    """(task type, prompt, answer) with exactly one correct answer."""
    kind = ("add", "sub", "mul", "reverse", "first", "upper", "length")[int(rng.integers(7))]
    a, b = int(rng.integers(2, 50)), int(rng.integers(2, 50))
    w = WORDS[int(rng.integers(len(WORDS)))]
    if kind == "add":
        return kind, f"What is {a} plus {b}?", str(a + b)
    if kind == "sub":
        a, b = max(a, b), min(a, b)
        return kind, f"What is {a} minus {b}?", str(a - b)
    if kind == "mul":
        a, b = a % 12 + 1, b % 12 + 1
        return kind, f"What is {a} times {b}?", str(a * b)
    if kind == "reverse":
        return kind, f"Write the word '{w}' backwards.", w[::-1]
    if kind == "first":
        return kind, f"What is the first letter of '{w}'?", w[0]
    if kind == "upper":
        return kind, f"Write '{w}' in capital letters.", w.upper()
    return kind, f"How many letters are in '{w}'?", str(len(w))


def text_instructions(rng: np.random.Generator, name: str, n: int) -> list[dict]:
    """[user prompt, assistant answer] samples in the training-sample shape."""
    out = []
    for i in range(n):
        kind, prompt, answer = instruction(rng)
        out.append({"sample_id": f"{name}-{i:05d}", "source": f"{name}:{kind}",
                    "segments": [segment("user", prompt), segment("assistant", answer)]})
    return out
