"""Evaluation of a VLM on held-out samples: VQA exact match, caption CIDEr, text-only accuracy,
0-shot and k-shot with interleaved demonstrations.

A held-out sample is [(image), user question, assistant answer] (VQA / text) or [user image,
assistant caption] (captioning). Prompts are the SFT conversation the model was trained on
("USER: <image> q ASSISTANT:"); k-shot prepends k demonstrations (context and answer) drawn,
seeded, from the same set, never the query itself. Answers are greedy decodes up to end of turn,
compared after lower-casing and stripping punctuation (`accuracy`); VQA sets also get the VQAv2
metric (`vqa_accuracy`, train/vqa_metric.py: VQAv2 answer normalisation, soft accuracy when a
sample lists several reference answers in an `answers` column). CIDEr is pycocoevalcap's.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from vilactl.train import vqa_metric
from vilactl.train.generate import Decoding, VilaGenerator


@dataclass
class Item:
    sample_id: str
    kind: str                          # question type (from `source`, e.g. eval_vqa:color)
    context: list[dict]                # segments before the answer
    answer: str
    references: tuple[str, ...] = ()   # several reference answers (VQAv2's ten), if the set has


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()


def items(rows: list[dict]) -> list[Item]:
    out = []
    for r in rows:
        segs = r["segments"]
        if not segs or segs[-1]["text"] is None:
            continue
        kind = r["source"].split(":", 1)[1] if ":" in (r["source"] or "") else "all"
        refs = r.get("answers")
        refs = tuple(a for a in refs if isinstance(a, str)) if isinstance(refs, list) else ()
        out.append(Item(r["sample_id"], kind, segs[:-1], segs[-1]["text"], refs))
    return out


def task_of(its: list[Item]) -> str:
    has_image = any(s["image"] is not None for it in its for s in it.context)
    has_question = any(s["text"] for it in its for s in it.context)
    return ("vqa" if has_question else "caption") if has_image else "text"


class Evaluator:
    def __init__(self, model, tokenizer, preprocess, max_new_tokens: int = 12, seed: int = 0):
        self.max_new_tokens, self.seed = max_new_tokens, seed
        # the decoding `vilactl generate` uses too (train/generate.py): same prompts, same answers
        self.generator = VilaGenerator(model, tokenizer, preprocess)

    def answers(self, prompts: list[list[dict]], caption: bool = False, blank: bool = False,
                batch_size: int = 32) -> list[str]:
        """Greedy answers to many prompts, batched with left padding (KV-cached generate)."""
        decoding = Decoding(max_new_tokens=self.max_new_tokens * (3 if caption else 1))
        return self.generator.answers(prompts, decoding, blank=blank, batch_size=batch_size)

    def _shots(self, its: list[Item], i: int, k: int) -> list[dict]:
        if k == 0:
            return []
        rng = np.random.default_rng([self.seed, i])
        pool = [j for j in range(len(its)) if j != i]
        segs = []
        for j in rng.choice(pool, size=min(k, len(pool)), replace=False):
            segs += its[j].context + [{"role": "assistant", "text": its[j].answer,
                                       "image": None}]
        return segs

    def run(self, its: list[Item], task: str, shots: int, blank: bool = False) -> dict:
        caption = task == "caption"
        preds = self.answers([self._shots(its, i, shots) + it.context
                              for i, it in enumerate(its)], caption, blank)
        if caption:
            from pycocoevalcap.cider.cider import Cider

            score, _ = Cider().compute_score(
                {i: [normalise(it.answer)] for i, it in enumerate(its)},
                {i: [normalise(p) or "empty"] for i, p in enumerate(preds)})
            return {"metric": "cider", "value": float(score), "n": len(its), "by_kind": {},
                    "predictions": preds}
        hits = [normalise(p) == normalise(it.answer) for p, it in zip(preds, its)]
        out = {"metric": "accuracy", **_by_kind(hits, its), "n": len(its), "predictions": preds}
        if task == "vqa":
            soft = [vqa_metric.score(p, it.references or [it.answer])
                    for p, it in zip(preds, its)]
            out["also"] = {"vqa_accuracy": _by_kind(soft, its)}
        return out


def _by_kind(scores: list[float], its: list[Item]) -> dict:
    """{"value": mean, "by_kind": {question type: mean}}."""
    by = defaultdict(list)
    for s, it in zip(scores, its):
        by[it.kind].append(s)
    return {"value": float(np.mean(scores)),
            "by_kind": {k: float(np.mean(v)) for k, v in sorted(by.items())}}


def qa_turns(rows: list[dict], test: list[Item]) -> list[Item]:
    """Every (question, answer) turn of training rows, single questions and conversations alike,
    as Items typed like the test set: a row whose source names a type (`vqa:count`) gives it;
    a conversation's turns take the type of the identical question in the test set (untyped
    questions are left out)."""
    kind_of = {}
    for it in test:
        question = next((s["text"] for s in reversed(it.context) if s["text"]), None)
        kind_of.setdefault(question, it.kind)
    out = []
    for r in rows:
        typed = r["source"].split(":", 1)[1] if ":" in (r["source"] or "") else None
        question = None
        for seg in r["segments"]:
            if seg["text"] is None:
                continue
            if seg["role"] != "assistant":
                question = seg["text"]
            elif question is not None and (kind := typed or kind_of.get(question)):
                out.append(Item(r["sample_id"], kind, [], seg["text"]))
    return out


def majority_baseline(train: list[Item], test: list[Item]) -> dict:
    """Image-blind: the most common training answer per question type."""
    by = defaultdict(Counter)
    for it in train:
        by[it.kind][normalise(it.answer)] += 1
    overall = Counter(normalise(it.answer) for it in train).most_common(1)
    fallback = overall[0][0] if overall else ""
    hits = defaultdict(list)
    for it in test:
        guess = by[it.kind].most_common(1)[0][0] if by[it.kind] else fallback
        hits[it.kind].append(guess == normalise(it.answer))
    allhits = [h for v in hits.values() for h in v]
    return {"value": float(np.mean(allhits)) if allhits else 0.0,
            "by_kind": {k: float(np.mean(v)) for k, v in sorted(hits.items())}}
