"""`vilactl train` on the tiny demo's blends: the demo stages, exact resume after SIGKILL,
torchrun with 2 CPU processes against one (each decoding half the images), and one clear line
for each kind of bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, sql, workspace_copy

DEBUG = Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml"


@pytest.fixture(scope="module")
def ws(demo_ws, tmp_path_factory):
    return workspace_copy(demo_ws, tmp_path_factory.mktemp("train") / "ws")


def small_config(tmp_path, name="cfg.yaml", **train) -> Path:
    cfg = yaml.safe_load(DEBUG.read_text())
    cfg["data"]["max_length"] = 192
    cfg["train"].update({"micro_batch_size": 2, "log_every": 1, "save_every": 2, **train})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def losses(ws, name):
    lines = (ws / "checkpoints" / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln)["loss"] for ln in lines]


def test_demo_trained_three_stages_in_order(demo_ws):
    rows = sql(demo_ws, "SELECT id, stage, parent, blend FROM checkpoints WHERE stage <> 'clip' "
                        "ORDER BY created_at")
    assert [(r["id"], r["parent"], r["blend"]) for r in rows] == [
        ("projector@6", None, "blend_projector"), ("pretrain@6", "projector@6", "blend_pretrain"),
        ("sft@6", "pretrain@6", "blend_sft")]
    for stage in ("projector", "pretrain", "sft"):
        ckpt = demo_ws / "checkpoints" / stage / "step-000006"
        assert {p.name for p in ckpt.iterdir()} >= {"model.safetensors", "optimizer.safetensors",
                                                     "rng.safetensors", "state.json"}
        assert list((demo_ws / "checkpoints" / stage / "tensorboard").iterdir())


def test_sigkill_then_resume_equals_uninterrupted(ws, tmp_path):
    cfg = small_config(tmp_path)
    base = ["train", "--stage", "pretrain", "--config", str(cfg), "--steps", "8"]
    run_cli(*base, "--name", "ref", workspace=ws, check=True)
    cmd = [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace", str(ws), *base,
           "--name", "cut"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not (ws / "checkpoints" / "cut" / "step-000004").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "finished before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (ws / "checkpoints" / "cut").glob("step-*"))
    assert "step-000008" not in done
    out = run_cli(*base, "--name", "cut", "--resume", workspace=ws, check=True)
    assert "step     8" in out.stdout
    assert losses(ws, "cut") == losses(ws, "ref") and len(losses(ws, "ref")) == 8


def test_torchrun_two_processes_match_one(ws, tmp_path):
    one = small_config(tmp_path, "one.yaml", grad_accum=2, save_every=0)
    two = small_config(tmp_path, "two.yaml", grad_accum=1, save_every=0)
    args = ["train", "--stage", "pretrain", "--steps", "4"]
    run_cli(*args, "--config", str(one), "--name", "single", workspace=ws, check=True)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                           "--master_port", str(_port()), "-m", "vilactl.pipeline.cli",
                           "--workspace", str(ws), *args, "--config", str(two), "--name", "ddp"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    single, ddp = losses(ws, "single"), losses(ws, "ddp")
    assert len(single) == len(ddp) == 4
    # Same global batch, same data: only the order of float sums differs.
    assert all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(single, ddp)), (single, ddp)
    run = json.loads(sql(ws, "SELECT counts FROM runs WHERE args->>'name' = 'ddp'")[0]["counts"])
    assert run["world"] == 2
    # each rank decoded the images of its own micro-batches only: about half each
    whole = json.loads(sql(ws, "SELECT counts FROM runs WHERE args->>'name' = 'single'")[0]
                       ["counts"])["images_decoded"]
    per_rank = run["images_decoded"]
    assert len(per_rank) == 2 and sum(per_rank) == whole[0] > 0, (per_rank, whole)
    assert all(0.3 < n / whole[0] < 0.7 for n in per_rank), per_rank


def _port():
    from conftest import free_port

    return free_port()


def test_bad_input_one_line(ws, tmp_path):
    bad_keys = small_config(tmp_path, "bad.yaml")
    raw = yaml.safe_load(bad_keys.read_text())
    raw["train"]["learning_rate"] = 1
    raw["train"]["epochs"] = 2
    bad_keys.write_text(yaml.safe_dump(raw))
    strict = small_config(tmp_path, "strict.yaml")
    raw = yaml.safe_load(strict.read_text())
    raw["data"].update(max_length=70, overflow="error")
    strict.write_text(yaml.safe_dump(raw))
    wide = small_config(tmp_path, "wide.yaml")
    raw = yaml.safe_load(wide.read_text())
    raw["model"]["llm_config"]["hidden_size"] = 96
    wide.write_text(yaml.safe_dump(raw))
    typed = small_config(tmp_path, "typed.yaml")
    raw = yaml.safe_load(typed.read_text())
    raw["stages"] = {"pretrain": {"global_batch": "256"}}
    typed.write_text(yaml.safe_dump(raw))
    odd = small_config(tmp_path, "odd.yaml", grad_accum=None, global_batch=5)
    cases = [
        (["--blend", "nope"], "unknown dataset 'nope'"),
        (["--config", str(typed)], "stages.pretrain.global_batch must be an integer, got '256'"),
        (["--config", str(odd)], "train.global_batch 5 is not a multiple of micro_batch_size 2"),
        (["--config", str(bad_keys)], "unknown keys in train: epochs, learning_rate"),
        (["--config", str(strict)], "longer than max_length 70"),
        (["--config", str(wide), "--init", "pretrain@6"], "is from another model shape"),
        (["--set", "stages.pretrain.lr=0"], "--set stages.pretrain.lr=0: stages.pretrain.lr "
                                            "must be a number > 0, got 0"),
    ]
    for extra, message in cases:
        args = ["train", "--stage", "pretrain", "--steps", "1", "--name", "bad", *extra]
        proc = run_cli(*args, workspace=ws)
        assert proc.returncode == 1 and message in proc.stderr, (extra, proc.stderr[-500:])
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_set_overrides_are_applied_recorded_and_kept_on_resume(ws, tmp_path):
    """`--set` changes the config of the run (its checkpoint's meta and the run's recorded
    args say so); --resume with a --set that changes the batch layout is refused in one line,
    as an edited config file is."""
    cfg = small_config(tmp_path)
    sets = ["--set", "stages.pretrain.lr=3e-4", "--set", "train.warmup_ratio=0"]
    out = run_cli("train", "--stage", "pretrain", "--config", str(cfg), "--steps", "2",
                  "--name", "setrun", *sets, workspace=ws, check=True)
    assert f"config: {cfg} with --set stages.pretrain.lr=3e-4 --set train.warmup_ratio=0" \
        in out.stdout
    meta = json.loads((ws / "checkpoints" / "setrun" / "step-000002" / "meta.json").read_text())
    assert meta["set"] == ["stages.pretrain.lr=3e-4", "train.warmup_ratio=0"]
    assert meta["config"]["stages"]["pretrain"]["lr"] == 3e-4
    assert meta["config"]["train"]["warmup_ratio"] == 0
    lines = (ws / "checkpoints" / "setrun" / "metrics.jsonl").read_text().splitlines()
    # no warmup: after step 1 of 2 the cosine is halfway down from the overridden peak
    assert json.loads(lines[0])["lr"] == pytest.approx(1.5e-4)
    [run] = sql(ws, "SELECT args FROM runs WHERE command LIKE 'vilactl train%' AND "
                    "json_extract_string(args, '$.name') = 'setrun'")
    assert json.loads(run["args"])["set"] == ["stages.pretrain.lr=3e-4", "train.warmup_ratio=0"]
    proc = run_cli("train", "--stage", "pretrain", "--config", str(cfg), "--steps", "2",
                   "--name", "setrun", "--resume", *sets, "--set", "train.micro_batch_size=1",
                   workspace=ws)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "the batch layout changed (micro_batch_size 2 → 1)" in proc.stderr, proc.stderr
