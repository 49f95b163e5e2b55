"""The user's commands as written, in order, on the tiny demo's data: curate, blend (which takes
what was just curated), the pretrain stage as `make pretrain` runs it (training the projector
first when the catalog has none), each saying what it used and where its output went; and the
same work from another working directory with a relative --workspace. The commands run as in
a log (no terminal, no COLUMNS) in a workspace whose path is longer than a terminal line, and
every path, dataset name and suggested command they print must stay on one line."""
import json
import os
import re
import shutil
from pathlib import Path

import duckdb
import yaml
from conftest import REPO, assert_whole, run_cli, sql, workspace_copy

from vilactl.train.config import CONFIG_DIR


def small_config(path: Path) -> Path:
    cfg = yaml.safe_load((CONFIG_DIR / "debug.yaml").read_text())
    cfg["data"]["max_length"] = 192
    cfg["train"].update(micro_batch_size=2, log_every=1)
    for stage in cfg["stages"].values():
        stage["steps"] = 2
    path.write_text(yaml.safe_dump(cfg))
    return path


def make_pretrain_command(config: Path, blend: str) -> list[str]:
    """What `make pretrain CONFIG=… BLEND=…` runs (checked against the Makefile's recipe): the
    run is named `pretrain-<blend>`."""
    recipe = (REPO / "Makefile").read_text()
    assert "vilactl train --stage $@ --config $(CONFIG) --parents" in recipe
    assert "--name $(or $(NAME),$@$(if $(BLEND),-$(BLEND)))" in recipe
    return ["train", "--stage", "pretrain", "--config", str(config), "--parents",
            "--blend", blend, "--name", f"pretrain-{blend}"]


LOG = {"COLUMNS": None}     # run_cli's env: unset COLUMNS, as under nohup or in CI


def test_curate_blend_pretrain_as_a_user_types_them(demo_ws, tmp_path):
    ws = workspace_copy(demo_ws, tmp_path / "a-folder-name-long-enough-to-wrap-at-80-cols" / "ws")
    con = duckdb.connect(str(ws / "catalog.duckdb"))    # a workspace with no stage trained yet
    con.execute("DELETE FROM checkpoints WHERE stage <> 'clip'")
    con.close()
    out = run_cli("curate", "coyo", "--top-k", "20", workspace=ws, check=True, env=LOG)
    assert "curated coyo_top20: 20 pairs" in out.stdout
    assert_whole(out.stdout, [f"coyo_top20: 20 pairs → {(ws / 'datasets/coyo_top20').resolve()}"])
    out = run_cli("blend", "--mmc4", "0.5", "--coyo", "0.5", workspace=ws, check=True, env=LOG)
    assert "the newest curated COYO selection" in out.stdout
    assert "the newest built MMC4 interleaved dataset" in out.stdout
    name = re.search(r"^blend (\S+):", out.stdout, re.M).group(1)
    assert name.startswith("blend_mmc4_interleaved")
    comps = sql(ws, f"SELECT dataset FROM blend_components WHERE blend = '{name}' ORDER BY 1")
    assert [c["dataset"] for c in comps] == ["coyo_top20", "mmc4_interleaved"]
    assert_whole(out.stdout, [str((ws / "blends" / name).resolve()),
                              f"vilactl train --stage pretrain --blend {name}"])
    out = run_cli(*make_pretrain_command(small_config(tmp_path / "cfg.yaml"), name),
                  workspace=ws, check=True, timeout=900, env=LOG)
    assert "training projector first" in out.stdout
    rows = sql(ws, "SELECT id, stage, path, blend, parent FROM checkpoints WHERE stage <> 'clip' "
                   "ORDER BY created_at")
    assert [(r["id"], r["blend"], r["parent"]) for r in rows] == [
        ("projector@2", "blend_projector", None), (f"pretrain-{name}@2", name, "projector@2")]
    for r in rows:
        assert Path(r["path"]).is_absolute() and (Path(r["path"]) / "model.safetensors").exists()
    assert_whole(out.stdout, [f"checkpoint projector@2 at {rows[0]['path']}",
                              f"checkpoint pretrain-{name}@2 at {rows[1]['path']}"])
    assert re.search(r"^  step +2/2  loss [\d.]+  lr ", out.stdout, re.M), out.stdout
    out = run_cli("catalog", workspace=ws, check=True, env=LOG)
    assert_whole(out.stdout, [name, "coyo_top20", "mmc4_interleaved", "eval_caption",
                              str((ws / "catalog.duckdb").resolve())])


def test_a_relative_workspace_works_from_any_directory(demo_ws, tmp_path):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    elsewhere.mkdir()
    workspace_copy(demo_ws, here / "ws")
    shutil.copytree(demo_ws / "models", here / "ws" / "models")
    cfg = small_config(tmp_path / "cfg.yaml")
    run_cli("train", "--stage", "sft", "--config", str(cfg), "--name", "rel", "--steps", "1",
            workspace="ws", cwd=here, check=True)
    row = sql(here / "ws", "SELECT path FROM checkpoints WHERE id = 'rel@1'")[0]
    meta = json.loads((Path(row["path"]) / "meta.json").read_text())
    assert Path(row["path"]).is_absolute() and Path(meta["tokenizer"]).is_absolute()
    clip = sql(here / "ws", "SELECT path FROM checkpoints WHERE id = 'demo-clip'")[0]["path"]
    assert Path(clip).is_absolute()
    out = run_cli("eval", "--checkpoint", "rel@1", "--dataset", "eval_text", "--shots", "0",
                  "--limit", "3", workspace=os.path.relpath(here / "ws", elsewhere),
                  cwd=elsewhere, check=True)
    assert "eval of rel@1" in out.stdout
    shutil.rmtree(Path(row["path"]))
    proc = run_cli("eval", "--checkpoint", "rel@1", "--dataset", "eval_text", "--limit", "3",
                   workspace=here / "ws")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "model.safetensors is missing" in proc.stderr or "meta.json is missing" in proc.stderr
