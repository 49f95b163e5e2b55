"""`vilactl ablate --study sft-text --seeds 2` and `--study freeze --seeds 1` on a copy of the
tiny demo (the recorded rows and their mean ± std, the frozen LLM, the linear projector, the
report's study tables), and the report's comparison of our direction with the paper's claims."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, sql, workspace_copy
from safetensors.numpy import load_file

from vilactl.pipeline.jobs.ablate import summarize
from vilactl.pipeline.jobs.ablate_plans import KEYS, VISUAL_SFT, run_name, variants
from vilactl.pipeline.jobs.report_ablate import CLAIMS, compare, direction_lines


def _s(mean: float, std: float) -> dict:
    return {"mean": mean, "std": std, "n": 3}


def test_compare_orders_with_noise():
    assert compare(_s(0.31, 0.02), _s(0.22, 0.03)) == "reproduces"
    assert compare(_s(0.22, 0.03), _s(0.31, 0.02)) == "opposite"
    assert compare(_s(0.30, 0.05), _s(0.27, 0.01)) == "within noise"    # |Δ| 0.03 < 0.05
    assert compare(_s(0.30, 0.0), _s(0.30, 0.0)) == "within noise"      # a tie, one seed
    assert compare(_s(0.30, 0.01), _s(0.29, 0.02), same=True) == "reproduces (within noise)"
    assert compare(_s(0.40, 0.01), _s(0.20, 0.02), same=True) == "differs"


def test_direction_lines_one_per_column_at_least():
    summary = {"trained-llm-mlp2x_gelu": {k: _s(0.5, 0.01) for k in KEYS},
               "frozen-llm-mlp2x_gelu": {k: _s(0.2, 0.01) for k in KEYS},
               "trained-llm-linear": {k: _s(0.4, 0.01) for k in KEYS}}
    lines = direction_lines("freeze", summary)
    assert {k for k, _ in lines} == set(KEYS)
    assert ("VQA 4-shot: paper — LLM trained in pretraining > frozen (in-context "
            "learning); here trained-llm-mlp2x_gelu 0.500 ± 0.010 > "
            "frozen-llm-mlp2x_gelu 0.200 ± 0.010: reproduces") in [t for k, t in lines
                                                                  if k == KEYS[1]]
    assert any(line.endswith("differs") for k, line in lines if k == KEYS[0])   # 0-shot ≈ claim
    assert any("linear projector" in line and line.endswith("opposite") for _, line in lines)
    assert [t for k, t in lines if k == KEYS[4]] == [
        "text 0-shot: paper — no claim (Table 1 has no text-only column)"]
    for study, claims in CLAIMS.items():      # every claim names variants the study trains
        keys = {v.key for v in variants(study)}
        assert all(c.better in keys and c.worse in keys for c in claims), study


def test_summarize_is_numpy_mean_and_sample_std():
    rows = [{"variant": "a", "seed": s, **{k: v + i for i, k in enumerate(KEYS)}}
            for s, v in enumerate([0.1, 0.4, 0.25])]
    rows.append({"variant": "b", "seed": 0, **{k: 0.5 for k in KEYS}, KEYS[0]: None})
    got = summarize(rows)
    vals = np.array([0.1, 0.4, 0.25]) + 2
    assert got["a"][KEYS[2]] == {"mean": vals.mean(), "std": vals.std(ddof=1), "n": 3}
    assert got["b"][KEYS[1]] == {"mean": 0.5, "std": 0.0, "n": 1}
    assert got["b"][KEYS[0]] == {"mean": None, "std": None, "n": 0}


def test_visual_only_sft_keeps_the_visual_proportions():
    assert VISUAL_SFT == pytest.approx({"vqa": 0.8, "caption_instruct": 0.2})


def _counts(ws: Path, study: str) -> dict:
    runs = sql(ws, "SELECT counts FROM runs WHERE command = 'vilactl ablate' AND status = 'ok' "
                   f"AND json_extract_string(counts, '$.study') = '{study}'")
    assert len(runs) == 1
    return json.loads(runs[0]["counts"])


def _check_counts(counts: dict, study: str, seeds: list[int]) -> None:
    keys = [v.key for v in variants(study)]
    rows = counts["rows"]
    assert sorted((r["variant"], r["seed"]) for r in rows) == sorted(
        (k, s) for k in keys for s in seeds)
    assert all(r[k] is not None for r in rows for k in KEYS)
    for v in keys:
        for k in KEYS:
            vals = np.array([r[k] for r in rows if r["variant"] == v])
            got = counts["summary"][v][k]
            assert got["n"] == len(seeds)
            assert got["mean"] == pytest.approx(vals.mean(), abs=1e-12)
            std = vals.std(ddof=1) if len(vals) > 1 else 0.0    # one seed: no spread
            assert got["std"] == pytest.approx(std, abs=1e-12)


def _tensors(ws: Path, ck: str) -> dict:
    path = sql(ws, f"SELECT path FROM checkpoints WHERE id = '{ck}'")[0]["path"]
    return load_file(str(Path(path) / "model.safetensors"))


def _check_frozen(ws: Path, seed: int) -> None:
    """Frozen variants' pretrain LLM equals its projector checkpoint's; trained ones differ."""
    for proj in ("linear", "mlp2x_gelu"):
        start = _tensors(ws, f"{run_name('freeze', proj, seed)}-projector@2")
        for frozen, name in ((True, "frozen_llm"), (False, "trained_llm")):
            ck = f"{run_name('freeze', f'{name}_{proj}', seed)}-pretrain@2"
            got = _tensors(ws, ck)
            llm = [k for k in got if k.startswith("llm.")]
            assert llm and all(k in start for k in llm)
            same = all(np.array_equal(got[k], start[k]) for k in llm)
            assert same is frozen, ck
            assert not all(np.array_equal(got[k], start[k])
                           for k in got if k.startswith("projector."))   # the projector learnt
            counts = json.loads(sql(ws, "SELECT counts FROM runs WHERE target = "
                                        f"'checkpoints/{ck.split('@')[0]}'")[0]["counts"])
            assert (counts["trainable"]["llm"]["trainable"] == 0) is frozen
    linear = _tensors(ws, f"{run_name('freeze', 'linear', seed)}-projector@2")
    assert sorted(k for k in linear if k.startswith("projector.")) == [
        "projector.bias", "projector.weight"]
    assert linear["projector.weight"].ndim == 2


def test_ablate_sft_text_and_freeze_with_seeds(demo_ws, tmp_path):
    ws = workspace_copy(demo_ws, tmp_path / "ws")
    demo_cks = sql(ws, "SELECT id, path FROM checkpoints ORDER BY id")
    quick = ["--sft-steps", "2", "--eval-limit", "5"]       # 5: room for 4 shots
    out = run_cli("ablate", "--study", "sft-text", "--seeds", "2", *quick,
                  workspace=ws, check=True, timeout=900)
    assert "ablation took" in out.stdout and " ± " in out.stdout
    _check_counts(_counts(ws, "sft-text"), "sft-text", [0, 1])
    args = json.loads(sql(ws, "SELECT args FROM runs WHERE command = 'vilactl ablate'")[0]["args"])
    assert args["start"] in {r["id"] for r in demo_cks if r["id"].startswith("pretrain@")}
    assert {r["num_examples"] for r in sql(ws, "SELECT DISTINCT num_examples FROM evals WHERE "
                                               "checkpoint LIKE 'ablate_%'")} == {5}
    # freeze: one seed (its four variants and two projectors are the cost; seeds are tested
    # above)
    out = run_cli("ablate", "--study", "freeze", "--seeds", "1", "--seed", "3",
                  "--projector-steps", "2", "--pretrain-steps", "2", *quick, workspace=ws,
                  check=True, timeout=900)
    assert "stages.pretrain.freeze_llm=true" in out.stdout
    assert re.search(r"llm frozen \(0/[\d,]+\)", out.stdout)
    _check_counts(_counts(ws, "freeze"), "freeze", [3])
    _check_frozen(ws, 3)
    now = {r["id"]: r["path"] for r in sql(ws, "SELECT id, path FROM checkpoints")}
    assert all(now.get(r["id"]) == r["path"] for r in demo_cks)     # the demo's runs untouched
    run_cli("report", workspace=ws, check=True)
    html = (ws / "report.html").read_text()
    for study, seeds in (("sft-text", "2 seeds"), ("freeze", "1 seed")):
        part = html.split(f'data-study="{study}"')[1].split("<h3")[0]
        n = len(variants(study))
        assert len(re.findall(r'<tr data-variant="', part)) == n
        assert len(re.findall(rf"<td class=\"num\">[\d.]+ ± [\d.]+ \({seeds}\)</td>", part)) \
            == n * len(KEYS)
        cols = re.findall(r'<li data-direction="([^"]+)">', part)
        assert set(cols) == set(KEYS)


def test_freeze_llm_is_a_stage_option_honoured_by_apply_freeze():
    from torch import nn

    from vilactl.base.errors import VilactlError
    from vilactl.train import config
    from vilactl.train.stages import STAGES, apply_freeze, describe

    cfg = config.load(None, ["stages.pretrain.freeze_llm=true"])
    assert cfg.stages["pretrain"].freeze_llm and not cfg.stages["sft"].freeze_llm
    with pytest.raises(VilactlError, match="freeze_llm and lora exclude each other"):
        config.load(None, ["stages.pretrain.freeze_llm=true", "stages.pretrain.lora=4"])
    with pytest.raises(VilactlError, match="freeze_llm must be true or false"):
        config.load(None, ["stages.pretrain.freeze_llm=3"])
    model = nn.Module()
    model.vision, model.projector, model.llm = nn.Linear(2, 3), nn.Linear(3, 4), nn.Linear(4, 5)
    counts = apply_freeze(model, STAGES["pretrain"], freeze_llm=True)
    assert counts["llm"] == {"trainable": 0, "total": 25}
    assert counts["projector"] == {"trainable": 16, "total": 16}
    assert "llm frozen (0/25)" in describe(counts)
    assert apply_freeze(model, STAGES["pretrain"])["llm"]["trainable"] == 25
