"""Turning a training config into a model and tokenizer inside a workspace.

Names in a config resolve against the catalog: a vision-tower `checkpoint` may be a catalog
checkpoint id (the demo's `demo-clip`) or a file; `tokenizer: demo` is vilactl's own BPE,
trained once on the text of the config's blends and kept at models/demo-tokenizer. Shared by
`vilactl train` and `vilactl eval`; `data_source` wires a blend to the rank's data loader.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from vilactl.base.errors import VilactlError
from vilactl.catalog.rows import dataset_shards, find_checkpoint
from vilactl.curation.records import sample_schema_problem
from vilactl.train.config import Layout, TrainConfig
from vilactl.train.data import BlendStream
from vilactl.train.distributed import Dist
from vilactl.train.loader import Decoder, rank_batches
from vilactl.train.model import VLM, ModelSpec
from vilactl.train.sequences import SequenceBuilder
from vilactl.train.tokenizer import image_token_id, load_tokenizer, train_demo_tokenizer
from vilactl.train.vision_tower import TowerSpec

DEMO_TOKENIZER = Path("models") / "demo-tokenizer"


def blend_paths(workspace: Path, name: str) -> list[str]:
    """The Parquet shards of a blend (or any dataset in the training-sample schema)."""
    row, paths = dataset_shards(workspace, name)
    if not paths:
        raise VilactlError(f"blend {name!r} has no shards")
    problem = sample_schema_problem(pq.read_schema(paths[0]))
    if problem:
        raise VilactlError(f"{name!r} ({row['kind']}) is not in the training-sample schema: "
                           f"{problem}")
    return paths


def _texts(paths: list[str]):
    for p in paths:
        for batch in pq.ParquetFile(p).iter_batches(columns=["segments"]):
            for segs in batch.column(0).to_pylist():
                for s in segs:
                    if s["text"]:
                        yield s["text"]


def tokenizer_path(workspace: Path, cfg: TrainConfig) -> Path | str:
    """The config's tokenizer: a name or path, or (`demo`) the absolute path of vilactl's own,
    so that a checkpoint's meta.json works from any working directory."""
    if cfg.model.tokenizer == "demo":
        return (Path(workspace) / DEMO_TOKENIZER).resolve()
    return cfg.model.tokenizer


def tokenizer_for(workspace: Path, cfg: TrainConfig):
    if cfg.model.tokenizer != "demo":
        return load_tokenizer(cfg.model.tokenizer)
    import torch.distributed as dist

    folder = tokenizer_path(workspace, cfg)
    several = dist.is_initialized()
    if several and dist.get_rank() != 0:
        dist.barrier()          # under torchrun rank 0 alone trains and writes it; the others
        return load_tokenizer(folder)       # wait, then read it
    _train_demo_tokenizer(workspace, cfg, folder)   # (on error torchrun stops the others)
    if several:
        dist.barrier()
    return load_tokenizer(folder)


def _train_demo_tokenizer(workspace: Path, cfg: TrainConfig, folder: Path) -> None:
    if not (folder / "tokenizer.json").exists():
        blends = [s.blend for s in cfg.stages.values() if s.blend]
        paths = []
        for b in blends:
            try:
                paths += blend_paths(workspace, b)
            except VilactlError:
                continue       # a stage's blend not made yet
        if not paths:
            raise VilactlError("the demo tokenizer is trained on the config's blends, and none "
                               f"exist yet ({', '.join(blends)}): run `vilactl demo` first")
        train_demo_tokenizer(_texts(sorted(set(paths))), folder)


def tower_spec(workspace: Path, raw: dict) -> TowerSpec:
    spec = TowerSpec(**raw)
    ckpt = spec.checkpoint
    if ckpt and not Path(ckpt).exists():
        row = find_checkpoint(workspace, ckpt)
        if row is None:
            raise VilactlError(f"vision tower checkpoint {ckpt!r} is neither a file nor a "
                               "catalog checkpoint (the demo's is made by `vilactl demo`)")
        spec.checkpoint = row["path"]
    if spec.checkpoint and not Path(spec.checkpoint).is_file():
        raise VilactlError(f"vision tower checkpoint {ckpt!r}: file {spec.checkpoint} is "
                           "missing")
    return spec


def build_model(workspace: Path, cfg: TrainConfig, tokenizer) -> VLM:
    llm_config = cfg.model.llm_config
    if llm_config is not None and "vocab_size" not in llm_config:
        llm_config = {**llm_config, "vocab_size": len(tokenizer)}
    spec = ModelSpec(tower_spec(workspace, cfg.model.vision_tower), cfg.model.projector,
                     cfg.model.llm, llm_config, cfg.model.attn_implementation)
    model = VLM(spec, image_token_id(tokenizer))
    if len(tokenizer) > model.llm.get_input_embeddings().num_embeddings:
        model.llm.resize_token_embeddings(len(tokenizer))   # <image> added to a real tokenizer
    return model


def data_source(cfg: TrainConfig, layout: Layout, sft: bool, model: VLM, tokenizer,
                paths: list[str], d: Dist):
    """(stream, data): `data(position)` is this rank's decoded micro-batches from stream
    position `position` (train/loader.py); `stream.skipped` counts samples without targets."""
    builder = SequenceBuilder(tokenizer, model.image_token_id, model.tokens_per_image,
                              layout.max_length, sft=sft, overflow=cfg.data.overflow)
    stream = BlendStream(paths, builder, seed=cfg.train.seed)
    # flash-attention takes packed rows as varlen sequences from the restarting position ids;
    # SDPA (CPU, and GPU without flash) needs the block-diagonal mask
    varlen = cfg.model.attn_implementation == "flash_attention_2"
    decoder = Decoder(model.vision.image_preprocessor, layout.max_length,
                      tokenizer.pad_token_id, cfg.data.packing, with_mask=not varlen)

    def plans():
        return stream.plans(layout.micro_batch_size, layout.max_length, cfg.data.packing,
                            cfg.data.buffer)

    def data(position: int):
        return rank_batches(plans, decoder, position, d.rank, d.world, cfg.data.workers)
    return stream, data
