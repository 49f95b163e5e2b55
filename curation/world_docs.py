"""MMC4-format documents for the demo world, with similarity matrices and MMC4's assignment.

Each document has 2–6 images and 4–12 sentences: one sentence describing each image, the rest
unrelated prose, in shuffled order. The similarity matrix imitates CLIP: a describing sentence
scores high with its image, a sentence about a similar scene (shared colour or shape) in between,
prose low, all with noise; matched_text_index / matched_sim are then filled by MMC4's own
algorithm (curation/assignment.py), as MMC4 does, so they are sometimes wrong — like MMC4's.
Shards are written as MMC4 ships them: `docs_shard_<k>_v3.jsonl.zip`.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from vilactl.base import atomic
from vilactl.curation.assignment import assign
from vilactl.curation.shapes import Scene, describe_sentence, random_scene, render
from vilactl.curation.world_text import prose_sentence


def _similarity(scenes: list[Scene], owner: list[int | None], rng: np.random.Generator):
    sim = np.empty((len(scenes), len(owner)))
    for i, scene in enumerate(scenes):
        for j, o in enumerate(owner):
            if o is None:
                base = 0.12
            elif o == i:
                base = 0.30
            elif _related(scene, scenes[o]):
                base = 0.22
            else:
                base = 0.17
            sim[i, j] = base + rng.normal(0, 0.035)
    return np.round(sim, 6)


def _related(a: Scene, b: Scene) -> bool:
    return bool({(o.color, o.shape) for o in a.objects} & {(o.color, o.shape) for o in b.objects}
                or {o.color for o in a.objects} & {o.color for o in b.objects})


def make_doc(cfg, out: Path, rng: np.random.Generator, key: str, doc_no: int):
    from vilactl.curation.world import image_url, pick_fault

    n_img = int(rng.integers(2, 7))
    n_sent = max(n_img + 1, int(rng.integers(4, 13)))
    scenes = [random_scene(rng) for _ in range(n_img)]
    slots = rng.permutation(n_sent)[:n_img]          # where each image's describing sentence goes
    owner: list[int | None] = [None] * n_sent
    for i, s in enumerate(slots):
        owner[int(s)] = i
    texts = [describe_sentence(scenes[o], rng) if o is not None else prose_sentence(rng)
             for o in owner]
    sim = _similarity(scenes, owner, rng)
    matched = assign(sim)
    infos, truth = [], []
    for i, scene in enumerate(scenes):
        rel = f"images/mmc4/{doc_no:06d}-{i}.png"
        atomic.write_bytes(out / rel, render(scene, cfg.image_size))
        fault = pick_fault(rng, cfg.mmc4_broken_rate, cfg.faults)
        infos.append({"face_detections": None,
                      "image_name": hashlib.sha1(rel.encode()).hexdigest()[:12] + ".png",
                      "matched_sim": float(sim[i, matched[i]]),
                      "matched_text_index": int(matched[i]),
                      "raw_url": image_url(cfg, rel, fault)})
        truth.append({"doc_id": key, "image_index": i, "true_text_index": int(slots[i]),
                      "matched_text_index": int(matched[i]), "fault": fault or ""})
    doc = {"image_info": infos, "similarity_matrix": sim.tolist(), "text_list": texts,
           "url": f"http://docs.vilactl.test/page/{doc_no}.html", "could_have_url_duplicate": 0}
    return doc, truth


def shard_name(k: int) -> str:
    return f"docs_shard_{k}_v3.jsonl"


def make_mmc4_docs(cfg, out: Path, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    docs, truth = [], []
    for d in range(cfg.mmc4_docs):
        # The key vilactl derives when it registers MMC4: "<shard stem>:<line>".
        stem = shard_name(d // cfg.mmc4_shard_docs).removesuffix(".jsonl")
        key = f"{stem}:{d % cfg.mmc4_shard_docs + 1}"
        doc, t = make_doc(cfg, out, rng, key, d)
        docs.append(doc)
        truth.extend(t)
    return docs, truth


def write_jsonl_shards(folder: Path, docs: list[dict], per_shard: int) -> list[Path]:
    paths = []
    for k, start in enumerate(range(0, len(docs), per_shard)):
        body = "".join(json.dumps(d, sort_keys=True) + "\n" for d in docs[start:start + per_shard])
        path = folder / (shard_name(k) + ".zip")
        with atomic.atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w") as zf:
                # A fixed timestamp keeps the archive byte-identical across runs.
                info = zipfile.ZipInfo(shard_name(k), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, body)
        paths.append(path)
    return paths
