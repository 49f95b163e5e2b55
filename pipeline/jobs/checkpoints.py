"""A trained checkpoint by the reference a user gives (`sft@120`, a run or stage name for its
newest final checkpoint, or a checkpoint folder), loaded as the model it was trained as.

Shared by `vilactl eval`, `export` and `generate`. The model is rebuilt from the config and
tokenizer saved in the checkpoint's meta.json; a LoRA run's adapters are loaded onto it and,
with `merge_lora`, merged into the LLM's weights (what export writes).
"""
from __future__ import annotations

from pathlib import Path

from vilactl.base import json_bounds
from vilactl.base.errors import VilactlError
from vilactl.base.paths import shown
from vilactl.catalog.rows import find_checkpoint, resolve
from vilactl.pipeline.jobs import train_setup
from vilactl.train import checkpoint, config
from vilactl.train.stages import STAGES, add_lora
from vilactl.train.tokenizer import load_tokenizer


def _by_path(workspace: Path, ref: str) -> tuple[dict | None, Path] | None:
    folder = Path(ref)
    if not (folder / "meta.json").is_file():
        return None
    from vilactl.catalog import db

    row = None
    if db.catalog_path(workspace).exists():
        with db.reader(workspace) as con:
            rel = con.sql("SELECT * FROM checkpoints WHERE path = ? ORDER BY created_at DESC "
                          "LIMIT 1", params=[resolve(folder)])
            rows, cols = rel.fetchall(), rel.columns
        row = dict(zip(cols, rows[0])) if rows else None
    return row, folder.resolve()


def find(workspace: Path, ref: str | None) -> tuple[dict | None, Path]:
    """(catalog row or None for an unrecorded folder, checkpoint folder)."""
    if ref is None:
        row = find_checkpoint(workspace, stage="sft")
        if row is None:
            raise VilactlError("no SFT checkpoint in the catalog: run `vilactl train --stage sft` "
                               "(or pass --checkpoint)")
        return row, Path(row["path"])
    row = find_checkpoint(workspace, ref)
    if row is None and ref in STAGES:
        row = find_checkpoint(workspace, stage=ref)
    if row is not None:
        return row, Path(row["path"])
    found = _by_path(workspace, ref) if "\0" not in ref else None
    if found is None:
        raise VilactlError(f"checkpoint {shown(ref)}: not in the catalog (an id like sft@120, a "
                           "run or stage name) nor a checkpoint folder with meta.json")
    return found


def load(workspace: Path, ref: str | None, merge_lora: bool = False):
    """(catalog row or None, folder, model, tokenizer, meta) of a checkpoint reference."""
    row, folder = find(workspace, ref)
    checkpoint.check_present(folder, "meta.json", "model.safetensors")
    try:
        meta = json_bounds.load_file(folder / "meta.json")
        cfg = config.from_dict(meta["config"], str(folder / "meta.json"))
        tok_path = meta["tokenizer"]
    except (ValueError, KeyError, TypeError) as e:
        raise VilactlError(f"{folder / 'meta.json'}: not a vilactl checkpoint's meta "
                           f"({type(e).__name__}: {e})") from e
    tok = load_tokenizer(tok_path)
    model = train_setup.build_model(workspace, cfg, tok)
    if meta.get("lora"):
        add_lora(model, meta["lora"])
    checkpoint.load_model(folder, model)
    if meta.get("lora") and merge_lora:
        model.llm = model.llm.merge_and_unload()
    return row, folder, model.eval(), tok, meta
