"""Training configs: YAML → dataclasses, with unknown keys refused (all of them listed).

Stage defaults are the paper-era recipe (projector 1e-3, pretrain 5e-5, SFT 2e-5; warmup then
cosine; AdamW); a config's `stages:` section overrides them per stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from vilactl.base.errors import VilactlError

CONFIG_DIR = Path(__file__).parent / "configs"
STAGES = ("projector", "pretrain", "sft")


@dataclass
class ModelCfg:
    vision_tower: dict = field(default_factory=dict)
    projector: str = "mlp_downsample"
    llm: str | None = None
    llm_config: dict | None = None
    tokenizer: str = "demo"
    attn_implementation: str = "sdpa"  # flash_attention_2: packed rows run varlen on GPU


@dataclass
class DataCfg:
    max_length: int = 2048
    packing: bool = True
    overflow: str = "truncate"         # truncate (drop cut images) | error
    buffer: int = 256                  # examples packed (or length-grouped) together


@dataclass
class LoopCfg:
    seed: int = 0
    micro_batch_size: int = 8
    grad_accum: int = 1
    log_every: int = 10
    save_every: int = 0                # 0: only at the end
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    strategy: str = "auto"             # auto | ddp | fsdp (fsdp on GPU only)


@dataclass
class StageCfg:
    lr: float
    blend: str | None = None
    steps: int = 100
    lora: int = 0                      # LoRA rank for the LLM (0 = full fine-tuning)


DEFAULT_LR = {"projector": 1e-3, "pretrain": 5e-5, "sft": 2e-5}


@dataclass
class TrainConfig:
    model: ModelCfg
    data: DataCfg
    train: LoopCfg
    stages: dict[str, StageCfg]
    source: str = ""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"model": asdict(self.model), "data": asdict(self.data),
                "train": asdict(self.train),
                "stages": {k: asdict(v) for k, v in self.stages.items()}}


def _section(cls, raw, where: str, src: str):
    raw = raw or {}
    if not isinstance(raw, dict):
        raise VilactlError(f"{src}: {where} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise VilactlError(f"{src}: unknown keys in {where}: {', '.join(unknown)} "
                           f"(known: {', '.join(sorted(known))})")
    return cls(**raw)


def load(path: str | Path | None = None) -> TrainConfig:
    """Read a config (default: the debug model); one clear line for any problem."""
    path = Path(path) if path else CONFIG_DIR / "debug.yaml"
    if not path.exists() and (CONFIG_DIR / f"{path}.yaml").exists():
        path = CONFIG_DIR / f"{path}.yaml"          # `--config vila-7b`
    if not path.exists():
        raise VilactlError(f"config {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise VilactlError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return from_dict(raw, str(path))


def from_dict(raw: dict, src: str) -> TrainConfig:
    """A config from its mapping (a YAML file's, or one saved in a checkpoint's meta.json)."""
    unknown = sorted(set(raw) - {"model", "data", "train", "stages"})
    if unknown:
        raise VilactlError(f"{src}: unknown keys: {', '.join(unknown)} "
                           "(known: data, model, stages, train)")
    stages_raw = raw.get("stages") or {}
    bad = sorted(set(stages_raw) - set(STAGES))
    if bad:
        raise VilactlError(f"{src}: unknown stages: {', '.join(bad)} (known: {', '.join(STAGES)})")
    stages = {s: _section(StageCfg, {"lr": DEFAULT_LR[s], **(stages_raw.get(s) or {})},
                          f"stages.{s}", src) for s in STAGES}
    cfg = TrainConfig(_section(ModelCfg, raw.get("model"), "model", src),
                      _section(DataCfg, raw.get("data"), "data", src),
                      _section(LoopCfg, raw.get("train"), "train", src), stages, src)
    if (cfg.model.llm is None) == (cfg.model.llm_config is None):
        raise VilactlError(f"{src}: model needs exactly one of llm (name/path) or llm_config")
    if cfg.data.overflow not in ("truncate", "error"):
        raise VilactlError(f"{src}: data.overflow must be truncate or error")
    return cfg
