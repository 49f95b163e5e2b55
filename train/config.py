"""Training configs: YAML → dataclasses, with unknown keys refused (all of them listed) and
every value's type checked (one line naming the key).

Stage defaults are the paper-era recipe (projector 1e-3, pretrain 5e-5, SFT 2e-5; warmup then
cosine; AdamW(0.9, 0.999) as HF Trainer, which VILA trains with); a config's `stages:` section
overrides them per stage, including the batch layout: `global_batch`, `micro_batch_size` and
`max_length` per stage fall back to `train.global_batch` / `train.micro_batch_size` /
`data.max_length`. Gradient accumulation is derived: global_batch / (micro_batch_size × world).
"""
from __future__ import annotations

import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from vilactl.base.errors import VilactlError
from vilactl.base.vocab import STAGE_NAMES as STAGES

CONFIG_DIR = Path(__file__).parent / "configs"


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
    workers: int = 4                   # image-decoding DataLoader processes per rank (0: inline)


@dataclass
class LoopCfg:
    seed: int = 0
    micro_batch_size: int = 8          # rows (packed sequences) per forward, per rank
    grad_accum: int | None = None      # used only when no global_batch is set (default 1)
    global_batch: int | None = None    # rows per optimizer step over all ranks
    log_every: int = 10
    save_every: int = 0                # 0: only at the end
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    gradient_checkpointing: bool = False
    strategy: str = "auto"             # auto (ddp under torchrun) | ddp | fsdp


@dataclass
class StageCfg:
    lr: float
    blend: str | None = None
    steps: int = 100
    lora: int = 0                      # LoRA rank for the LLM (0 = full fine-tuning)
    freeze_llm: bool = False           # keep the LLM frozen in a stage that trains it
    global_batch: int | None = None    # these three: None = the top-level value
    micro_batch_size: int | None = None
    max_length: int | None = None


DEFAULT_LR = {"projector": 1e-3, "pretrain": 5e-5, "sft": 2e-5}
POSITIVE = {"max_length", "buffer", "micro_batch_size", "grad_accum", "global_batch", "steps",
            "log_every"}
# numbers with a range beyond their type (every float must be finite, every integer fit int64)
RANGES = {"lr": (0, None, "> 0"), "weight_decay": (0, None, "≥ 0"),
          "warmup_ratio": (0, 1, "in [0, 1]"), "max_grad_norm": (0, None, "> 0"),
          "save_every": (0, None, "≥ 0"), "seed": (0, None, "≥ 0"), "lora": (0, None, "≥ 0")}
INT64 = 2 ** 63 - 1


@dataclass
class TrainConfig:
    model: ModelCfg
    data: DataCfg
    train: LoopCfg
    stages: dict[str, StageCfg]
    source: str = ""
    overrides: list[str] = field(default_factory=list)   # the `--set KEY=VALUE`s applied

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"model": asdict(self.model), "data": asdict(self.data),
                "train": asdict(self.train),
                "stages": {k: asdict(v) for k, v in self.stages.items()}}


@dataclass(frozen=True)
class Layout:
    """One stage's batch layout on a given world size."""
    micro_batch_size: int
    grad_accum: int
    world: int
    max_length: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.world


def layout(cfg: TrainConfig, stage: str, world: int) -> Layout:
    """Per-stage micro batch, accumulation and length; one line if global_batch won't split."""
    s, t = cfg.stages[stage], cfg.train
    micro = s.micro_batch_size or t.micro_batch_size
    length = s.max_length or cfg.data.max_length
    total = s.global_batch or t.global_batch
    if total is None:
        return Layout(micro, t.grad_accum or 1, world, length)
    where = f"stages.{stage}.global_batch" if s.global_batch else "train.global_batch"
    if total % (micro * world):
        raise VilactlError(f"{cfg.source}: {where} {total} is not a multiple of micro_batch_size "
                           f"{micro} × {world} rank(s); change one of them")
    return Layout(micro, total // (micro * world), world, length)


def _type_problem(value, hint) -> str | None:
    """What is wrong with `value` for the annotation `hint`, or None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        probs = [_type_problem(value, a) for a in args]
        return None if any(p is None for p in probs) else probs[0]
    if hint is type(None):
        return None if value is None else "null"
    if origin is list:
        if not isinstance(value, list):
            return "a list"
        bad = next((p for v in value if (p := _type_problem(v, args[0]))), None)
        return bad and f"a list of items that are each {bad}"
    want = origin or hint
    if want is float:           # YAML: an int is a fine float; bool is not a number
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else "a number"
    if want is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    names = {bool: "true or false", str: "a string", dict: "a mapping"}
    return None if isinstance(value, want) else names.get(want, want.__name__)


def _coerce(raw: dict, hints: dict) -> dict:
    # PyYAML reads `1e-3` (no dot) as a string: take it as the number the user wrote
    out = dict(raw)
    for k, v in raw.items():
        if isinstance(v, str) and float in typing.get_args(hints[k]) + (hints[k],):
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def _section(cls, raw, where: str, src: str):
    raw = raw or {}
    if not isinstance(raw, dict):
        raise VilactlError(f"{src}: {where} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise VilactlError(f"{src}: unknown keys in {where}: {', '.join(unknown)} "
                           f"(known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    raw = _coerce(raw, hints)
    for k, v in raw.items():
        problem = _type_problem(v, hints[k]) or _range_problem(k, v)
        if problem:
            raise VilactlError(f"{src}: {where}.{k} must be {problem}, got {v!r}")
    return cls(**raw)


def _range_problem(key: str, value) -> str | None:
    """What is wrong with a well-typed value's range, or None (lists: each item)."""
    if isinstance(value, list):
        bad = next((p for v in value if (p := _range_problem("", v))), None)
        return bad and f"a list of {bad.removeprefix('a ')}s"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    if isinstance(value, int) and abs(value) > INT64:
        return "an integer within int64"
    if key in POSITIVE and value < 1:
        return "a positive integer"
    lo, hi, rule = RANGES.get(key, (None, None, ""))
    strict = rule.startswith(">")
    if (lo is not None and (value <= lo if strict else value < lo)) or \
            (hi is not None and value > hi):
        return f"a number {rule}"
    return None


# The bundled configs are ~2 KB; a bound keeps a wrong path (a dataset, a log) from being
# parsed as YAML into memory.
MAX_CONFIG_BYTES = 1 << 20


def load(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a config (default: the debug model), then apply `--set KEY=VALUE` overrides in
    order (train/overrides.py); one clear line for any problem."""
    path = Path(path) if path else CONFIG_DIR / "debug.yaml"
    if not path.exists() and (CONFIG_DIR / f"{path}.yaml").exists():
        path = CONFIG_DIR / f"{path}.yaml"          # `--config vila-7b`
    if not path.exists():
        raise VilactlError(f"config {path} not found")
    if not path.is_file():             # /dev/zero or a FIFO would be read forever
        raise VilactlError(f"config {path}: not a regular file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise VilactlError(f"config {path}: {path.stat().st_size} bytes; a config is at most "
                           f"{MAX_CONFIG_BYTES} bytes")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as e:
        raise VilactlError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, dict):
        raise VilactlError(f"{path}: a config is a mapping of model, data, train, stages")
    cfg = from_dict(raw, str(path))
    if not overrides:
        return cfg
    from vilactl.train.overrides import apply_all

    apply_all(raw, overrides, from_dict)
    cfg = from_dict(raw, str(path))
    cfg.overrides = list(overrides)
    return cfg


def from_dict(raw: dict, src: str) -> TrainConfig:
    """A config from its mapping (a YAML file's, or one saved in a checkpoint's meta.json)."""
    unknown = sorted(set(raw) - {"model", "data", "train", "stages"})
    if unknown:
        raise VilactlError(f"{src}: unknown keys: {', '.join(unknown)} "
                           "(known: data, model, stages, train)")
    stages_raw = raw.get("stages") or {}
    if not isinstance(stages_raw, dict):
        raise VilactlError(f"{src}: stages must be a mapping")
    bad = sorted(set(stages_raw) - set(STAGES))
    if bad:
        raise VilactlError(f"{src}: unknown stages: {', '.join(bad)} (known: {', '.join(STAGES)})")
    for s in STAGES:
        if not isinstance(stages_raw.get(s) or {}, dict):
            raise VilactlError(f"{src}: stages.{s} must be a mapping")
    stages = {s: _section(StageCfg, {"lr": DEFAULT_LR[s], **(stages_raw.get(s) or {})},
                          f"stages.{s}", src) for s in STAGES}
    cfg = TrainConfig(_section(ModelCfg, raw.get("model"), "model", src),
                      _section(DataCfg, raw.get("data"), "data", src),
                      _section(LoopCfg, raw.get("train"), "train", src), stages, src)
    _check(cfg, src)
    return cfg


def _check(cfg: TrainConfig, src: str) -> None:
    if (cfg.model.llm is None) == (cfg.model.llm_config is None):
        raise VilactlError(f"{src}: model needs exactly one of llm (name/path) or llm_config")
    if cfg.data.overflow not in ("truncate", "error"):
        raise VilactlError(f"{src}: data.overflow must be truncate or error")
    if cfg.data.workers < 0:
        raise VilactlError(f"{src}: data.workers must be ≥ 0, got {cfg.data.workers}")
    if cfg.train.strategy not in ("auto", "ddp", "fsdp"):
        raise VilactlError(f"{src}: train.strategy must be auto, ddp or fsdp, "
                           f"got {cfg.train.strategy!r}")
    if len(cfg.train.betas) != 2 or not all(0 <= b < 1 for b in cfg.train.betas):
        raise VilactlError(f"{src}: train.betas must be two numbers in [0, 1), "
                           f"got {cfg.train.betas}")
    for name, s in cfg.stages.items():
        if s.freeze_llm and s.lora:     # adapters on a frozen LLM would train nothing of it
            raise VilactlError(f"{src}: stages.{name}: freeze_llm and lora exclude each other "
                               "(freeze_llm keeps the LLM, adapters included, frozen)")
    if cfg.train.global_batch is not None and cfg.train.grad_accum is not None:
        raise VilactlError(f"{src}: set train.global_batch or train.grad_accum, not both "
                           "(accumulation is derived from the global batch)")
