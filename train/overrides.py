"""`vilactl train --set KEY=VALUE`: one config value changed on the command line, as HF-Trainer
and LLaVA users change theirs, without writing a YAML file.

KEY is the value's dotted path in the YAML (`train.warmup_ratio`, `data.max_length`,
`stages.sft.lr`, `model.llm_config.hidden_size`); VALUE is read as YAML (`1e-4`, `true`,
`[0.9, 0.95]`, `null`). Each override is applied to the config's mapping and the result is
validated exactly as a YAML file is — unknown keys refused with the known ones listed, types and
bounds checked — with the error naming the `--set` that broke it.
"""
from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import fields

import yaml

from vilactl.base.errors import VilactlError

EXAMPLE = "e.g. stages.sft.lr=1e-5 or train.warmup_ratio=0.1"


def parse(item: str) -> tuple[list[str], object]:
    """(KEY's path, VALUE read as YAML) of one `--set KEY=VALUE`."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise VilactlError(f"--set takes KEY=VALUE ({EXAMPLE}), got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except (yaml.YAMLError, RecursionError) as e:
        raise VilactlError(f"--set {item[:80]}: VALUE is not a YAML value "
                           f"({(str(e).splitlines() or ['too deeply nested'])[0]})") from e
    return [p.strip() for p in parts], value


def _schema(parts: list[str], item: str) -> None:
    """Refuse a KEY that names no config value, listing the keys known where it went wrong."""
    from vilactl.train import config as c

    sections = {"model": c.ModelCfg, "data": c.DataCfg, "train": c.LoopCfg}
    top = parts[0]
    if top != "stages" and top not in sections:
        raise VilactlError(f"--set {item}: unknown key {top!r} (known: data, model, stages, "
                           f"train)")
    if top == "stages":
        if len(parts) < 3 or parts[1] not in c.STAGES:
            raise VilactlError(f"--set {item}: per-stage keys are stages.<stage>.<key> with a "
                               f"stage of {', '.join(c.STAGES)}")
        cls, at = c.StageCfg, 2
    else:
        if len(parts) < 2:
            raise VilactlError(f"--set {item}: name a key inside {top} ({EXAMPLE})")
        cls, at = sections[top], 1
    known = sorted(f.name for f in fields(cls))
    name, where = parts[at], ".".join(parts[:at])
    if name not in known:
        staged = sorted(f.name for f in fields(c.StageCfg))
        hint = f"; {name} is per stage: stages.<stage>.{name}" if name in staged else ""
        raise VilactlError(f"--set {item}: unknown key {where}.{name} (known in {where}: "
                           f"{', '.join(known)}){hint}")
    hint = typing.get_type_hints(cls)[name]
    if len(parts) > at + 1 and dict not in (hint, *typing.get_args(hint)):
        raise VilactlError(f"--set {item}: {where}.{name} is not a mapping; drop what follows it")


def apply(raw: dict, parts: list[str], value, item: str) -> None:
    """Set `value` at `parts` in the config mapping `raw` (made where absent)."""
    _schema(parts, item)
    node = raw
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise VilactlError(f"--set {item}: {'.'.join(parts[:i + 1])} in the config is not "
                               "a mapping")
        node = child
    node[parts[-1]] = value


def apply_all(raw: dict, overrides: Sequence[str], validate: Callable[[dict, str], object]
              ) -> None:
    """Apply each override in order, validating the whole config after each one (`validate` is
    config.from_dict), so that a problem names the `--set` that caused it."""
    for item in overrides:
        parts, value = parse(item)
        apply(raw, parts, value, item)
        validate(raw, f"--set {item}")
