"""The embedded demo world: deterministic COYO-, MMC4- and instruction-format corpora.

There is no internet in CI, so the demo and the tests run on a synthetic world that has the real
formats and the real problems: COYO rows whose caption belongs to another image, URLs that fail
in every way the loopback mirror can fail, duplicate images, MMC4 documents that mix sentences
describing their images with unrelated prose. The ground truth (which caption is corrupted,
which URL is broken, which sentence really describes an image) is written under truth/, a
folder the pipeline never reads; tests and the report use it to score curation.

Same seed and config → byte-identical files (see `generate`). Each corpus draws from its own
random stream, so changing one size does not reshuffle the others.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from vilactl.base import atomic
from vilactl.curation.records import COYO_SCHEMA, sample_table, segment
from vilactl.curation.shapes import Scene, object_questions, questions, random_scene, render
from vilactl.curation.world_docs import make_mmc4_docs, write_jsonl_shards
from vilactl.curation.world_text import text_instructions

# Faults the loopback mirror can produce, chosen by URL (see pipeline/services/mirror.py).
# "redirect" and "noai" still carry an image: the first must be followed, the second respected.
FAULTS = ("404", "500", "slow", "truncated", "notimage", "redirect", "noai")
DEFAULT_BASE_URL = "http://mirror.vilactl.test"


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    image_size: int = 64
    coyo_rows: int = 2000
    coyo_shard_rows: int = 500
    corrupt_rate: float = 0.30   # share of COYO captions taken from another image
    broken_rate: float = 0.10    # share of COYO URLs that hit a mirror fault
    duplicate_rate: float = 0.05  # share of COYO rows re-serving an earlier row's image
    mmc4_docs: int = 300
    mmc4_shard_docs: int = 100
    mmc4_broken_rate: float = 0.03
    vqa_images: int = 800
    vqa_turns: int = 0               # >0: training VQA as conversations (docs/train.md: lost)
    questions_per_image: int = 3     # single questions per image (eval_vqa; vqa unless turns)
    text_instructions: int = 1000
    eval_vqa_images: int = 150
    caption_images: int = 600        # caption instructions for SFT: [user image, assistant caption]
    eval_caption_images: int = 150
    eval_text: int = 200
    base_url: str = DEFAULT_BASE_URL
    faults: tuple[str, ...] = field(default=FAULTS)


PRESETS = {
    "demo": WorldConfig(),
    "tiny": WorldConfig(coyo_rows=120, coyo_shard_rows=50, mmc4_docs=24, mmc4_shard_docs=10,
                        vqa_images=40, caption_images=30, text_instructions=40,
                        eval_vqa_images=15,
                        eval_caption_images=15, eval_text=20),
}


def stream(cfg: WorldConfig, name: str) -> np.random.Generator:
    """An independent random stream per corpus, derived from the seed and the corpus name."""
    key = int.from_bytes(name.encode(), "little") % (2**32)
    return np.random.default_rng([cfg.seed, key])


def image_url(cfg: WorldConfig, rel: str, fault: str | None = None) -> str:
    return f"{cfg.base_url}/fault/{fault}/{rel}" if fault else f"{cfg.base_url}/{rel}"


def pick_fault(rng: np.random.Generator, rate: float, faults: tuple[str, ...]) -> str | None:
    if rng.random() >= rate or not faults:
        return None
    return faults[int(rng.integers(len(faults)))]


# ---------------------------------------------------------------- COYO
def make_coyo(cfg: WorldConfig, out: Path) -> tuple[list[dict], list[dict]]:
    """COYO-format rows (metadata only, images written to images/coyo/) and their truth."""
    import io

    import imagehash
    from PIL import Image

    rng = stream(cfg, "coyo")
    scenes: list[Scene] = []
    rows, truth = [], []
    ids = 10**12 + rng.choice(9 * 10**12, size=cfg.coyo_rows, replace=False)
    for i in range(cfg.coyo_rows):
        dup_of = None
        if scenes and rng.random() < cfg.duplicate_rate:
            dup_of = int(rng.integers(len(scenes)))
            scene = scenes[dup_of]
        else:
            scene = random_scene(rng)
        scenes.append(scene)
        png = render(scene, cfg.image_size)
        rel = f"images/coyo/{ids[i]}.png"
        atomic.write_bytes(out / rel, png)
        corrupted = rng.random() < cfg.corrupt_rate
        text = scene.caption()
        if corrupted:
            other = random_scene(rng)
            while other.caption() == text:
                other = random_scene(rng)
            text = other.caption()
        fault = pick_fault(rng, cfg.broken_rate, cfg.faults)
        good = 0.31 if not corrupted else 0.22
        rows.append({
            "id": int(ids[i]), "url": image_url(cfg, rel, fault), "text": text,
            "width": cfg.image_size, "height": cfg.image_size,
            "image_phash": str(imagehash.phash(Image.open(io.BytesIO(png)))),
            "text_length": len(text), "word_count": len(text.split()),
            "num_tokens_bert": None, "num_tokens_gpt": None, "num_faces": 0,
            "clip_similarity_vitb32": float(good + rng.normal(0, 0.03)),
            "clip_similarity_vitl14": float(good - 0.03 + rng.normal(0, 0.03)),
            "nsfw_score_opennsfw2": float(rng.uniform(0, 0.01)),
            "nsfw_score_gantman": float(rng.uniform(0, 0.05)),
            "watermark_score": float(rng.uniform(0, 0.2)),
            "aesthetic_score_laion_v2": float(rng.normal(5.0, 0.5)),
        })
        truth.append({"id": int(ids[i]), "true_caption": scene.caption(), "corrupted": corrupted,
                      "fault": fault or "", "duplicate_of_row": dup_of})
    return rows, truth


def write_coyo(cfg: WorldConfig, out: Path, rows: list[dict]) -> list[Path]:
    paths = []
    for k, start in enumerate(range(0, len(rows), cfg.coyo_shard_rows)):
        table = pa.Table.from_pylist(rows[start:start + cfg.coyo_shard_rows], schema=COYO_SCHEMA)
        path = out / "coyo" / f"part-{k:05d}.parquet"
        atomic.write_parquet(path, table)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- instruction and eval sets
def vqa_samples(cfg: WorldConfig, name: str, n_images: int, per_image: int) -> list[dict]:
    """[user image, user question, assistant answer] samples, question types balanced per image
    (the held-out sets: one question per sample, as a benchmark asks)."""
    rng = stream(cfg, name)
    out = []
    for i in range(n_images):
        scene = random_scene(rng)
        png = render(scene, cfg.image_size)
        qs = questions(scene)
        picks = rng.choice(len(qs), size=min(per_image, len(qs)), replace=False)
        for q in sorted(int(p) for p in picks):
            qtype, question, answer = qs[q]
            out.append({"sample_id": f"{name}-{i:05d}-{q}", "source": f"{name}:{qtype}",
                        "segments": [segment("user", image=png), segment("user", question),
                                     segment("assistant", answer)]})
    return out


def vqa_conversations(cfg: WorldConfig, name: str, n_images: int, turns: int) -> list[dict]:
    """One conversation per image: [user image, question, answer, question, answer, …], one
    question of each type, in a random order, before any type repeats.

    Why conversations for training: an image is 64 tokens and an answer one, so single-question
    samples spend almost all of a step on image tokens that carry no loss, and with one question
    per image only ~40% of images were asked to count (the demo never learned to). Why one
    question per type, each about another object where the scene has one: an earlier answer
    must not give a later one away ("What shape is at the top left?" → circle, then "Where is
    the red circle?"), or the model learns to read the conversation instead of the image."""
    rng = stream(cfg, name)
    out = []
    for i in range(n_images):
        scene = random_scene(rng)
        segs = [segment("user", image=render(scene, cfg.image_size))]
        for _, question, answer, _ in balanced_questions(rng, object_questions(scene), turns):
            segs += [segment("user", question), segment("assistant", answer)]
        out.append({"sample_id": f"{name}-{i:05d}", "source": name, "segments": segs})
    return out


def balanced_questions(rng: np.random.Generator, qs: list[tuple[str, str, str, int]],
                       k: int) -> list[tuple[str, str, str, int]]:
    """Up to k of the (type, question, answer, object) questions: round-robin over the types
    in a random order, each time a question about an object not asked about yet when there is
    one; the result is shuffled."""
    by_type: dict[str, list] = {}
    for q in qs:
        by_type.setdefault(q[0], []).append(q)
    for group in by_type.values():
        rng.shuffle(group)
    order = [by_type[t] for t in rng.permutation(sorted(by_type))]
    picked, used = [], set()
    while len(picked) < k and any(order):
        for group in order:
            if group and len(picked) < k:
                fresh = [q for q in group if q[3] < 0 or q[3] not in used]
                q = fresh[0] if fresh else group[0]
                group.remove(q)
                used.add(q[3])
                picked.append(q)
    return [picked[j] for j in rng.permutation(len(picked))]


def caption_samples(cfg: WorldConfig, name: str, n_images: int) -> list[dict]:
    rng = stream(cfg, name)
    out = []
    for i in range(n_images):
        scene = random_scene(rng)
        out.append({"sample_id": f"{name}-{i:05d}", "source": name,
                    "segments": [segment("user", image=render(scene, cfg.image_size)),
                                 segment("assistant", scene.caption())]})
    return out


# ---------------------------------------------------------------- the whole world
def generate(out: str | Path, cfg: WorldConfig) -> dict:
    """Write the world under `out` and return its manifest (also written as world.json)."""
    out = Path(out)
    coyo_rows, coyo_truth = make_coyo(cfg, out)
    files = {"coyo": write_coyo(cfg, out, coyo_rows)}
    docs, doc_truth = make_mmc4_docs(cfg, out, stream(cfg, "mmc4"))
    files["mmc4"] = write_jsonl_shards(out / "mmc4", docs, cfg.mmc4_shard_docs)
    sets = {
        "vqa": (vqa_conversations(cfg, "vqa", cfg.vqa_images, cfg.vqa_turns) if cfg.vqa_turns
                else vqa_samples(cfg, "vqa", cfg.vqa_images, cfg.questions_per_image)),
        "caption_instruct": caption_samples(cfg, "caption_instruct", cfg.caption_images),
        "text_instruct": text_instructions(stream(cfg, "text"), "text_instruct",
                                           cfg.text_instructions),
        "eval_vqa": vqa_samples(cfg, "eval_vqa", cfg.eval_vqa_images, cfg.questions_per_image),
        "eval_caption": caption_samples(cfg, "eval_caption", cfg.eval_caption_images),
        "eval_text": text_instructions(stream(cfg, "eval_text"), "eval_text", cfg.eval_text),
    }
    for name, rows in sets.items():
        path = out / "instruct" / f"{name}.parquet"
        atomic.write_parquet(path, sample_table(rows))
        files[name] = [path]
    atomic.write_parquet(out / "truth" / "coyo.parquet", pa.Table.from_pylist(coyo_truth))
    atomic.write_parquet(out / "truth" / "mmc4.parquet", pa.Table.from_pylist(doc_truth))
    counts = {
        "coyo": {"samples": len(coyo_rows), "images": len(coyo_rows), "texts": len(coyo_rows),
                 "corrupted": sum(t["corrupted"] for t in coyo_truth),
                 "broken": sum(bool(t["fault"]) for t in coyo_truth)},
        "mmc4": {"samples": len(docs), "images": sum(len(d["image_info"]) for d in docs),
                 "texts": sum(len(d["text_list"]) for d in docs)},
    }
    for name, rows in sets.items():
        n_img = sum(s["image"] is not None for r in rows for s in r["segments"])
        counts[name] = {"samples": len(rows), "images": n_img,
                        "texts": sum(s["text"] is not None for r in rows for s in r["segments"])}
    manifest = {
        "config": asdict(cfg),
        "counts": counts,
        "files": {k: [str(p.relative_to(out)) for p in v] for k, v in files.items()},
    }
    atomic.write_text(out / "world.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
