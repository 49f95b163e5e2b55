"""The VQA metric users compare against: VQAv2 answer normalisation and soft accuracy.

Exact match after lower-casing (train/evaluate.py `normalise`) calls "two" wrong for "2" and
"a red circle" wrong for "red circle"; published VQA numbers are not computed that way. The
VQAv2 evaluation normalises both sides first — punctuation dropped (or turned into a space
where it separates words), periods kept inside numbers, number words up to ten written as
digits, the articles a/an/the removed, common contractions restored — and then scores a
prediction against the set's reference answers with soft accuracy: a prediction is fully right
when at least 3 of the human answers say it, averaged over every leave-one-out subset of
the references (VQAv2 has 10 per question).

A set with one reference answer per question (the demo's, most instruction-style sets) has no
"3 of 10" to count: there the score is the normalised exact match, 1 or 0.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
           "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
# Apostrophe-less spellings an answer (or a model) writes, mapped back so that both sides agree.
CONTRACTIONS = {
    "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't",
    "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
    "havent": "haven't", "isnt": "isn't", "its": "it's", "shouldnt": "shouldn't",
    "thats": "that's", "theres": "there's", "theyre": "they're", "wasnt": "wasn't",
    "werent": "weren't", "whats": "what's", "wont": "won't", "wouldnt": "wouldn't",
    "youre": "you're", "im": "i'm", "ive": "i've", "lets": "let's",
}
# The marks VQAv2 strips (the apostrophe stays: "don't"; the period is handled apart)
PUNCTUATION = set(";/[]\"{}()=+\\_-><@`,?!")
# a period goes unless it sits between two digits ("10.5" keeps it, "left." loses it)
_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")
_NUMBER_COMMA = re.compile(r"(\d)(,)(\d)")
AGREE = 3             # human answers that make a prediction fully right (VQAv2)


def _punctuation(text: str) -> str:
    out = text
    for p in PUNCTUATION:
        # A mark touching a space, or a thousands comma, is dropped; inside a word ("t-shirt")
        # it becomes a space, so the parts still compare as words.
        if (p + " " in text or " " + p in text) or _NUMBER_COMMA.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def normalise(answer: str) -> str:
    """An answer as VQAv2 compares it: `"Two."` → `"2"`, `"the red-circle"` → `"red circle"`."""
    text = " ".join(answer.replace("\n", " ").replace("\t", " ").strip().lower().split())
    words = []
    for word in _punctuation(text).split():
        word = NUMBERS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def score(prediction: str, references: Sequence[str]) -> float:
    """Soft accuracy of one prediction: with n ≥ 2 references, the mean over the n subsets that
    leave one reference out of min(1, matches / 3); with one reference, its exact match."""
    if not references:
        raise ValueError("a VQA question needs at least one reference answer")
    pred = normalise(prediction)
    refs = [normalise(r) for r in references]
    if len(refs) == 1:
        return float(pred == refs[0])
    hits = [r == pred for r in refs]
    total = sum(hits)
    return sum(min(1.0, (total - h) / AGREE) for h in hits) / len(refs)
