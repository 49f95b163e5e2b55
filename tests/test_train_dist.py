"""`vilactl train` under torchrun (2 CPU processes, gloo): a rank whose micro-batch is text-only
(DDP and FSDP), FSDP checkpoints that hold the whole model and resume exactly, refusal to resume
with another batch layout. Run as a script by torchrun, this file is the FSDP gather worker."""
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import free_port, run_cli, sql, workspace_copy

DEBUG = Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml"
WORDS = "red blue green circle square triangle left right top bottom small large two".split()
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.fixture(scope="module")
def ws(demo_ws, tmp_path_factory):
    return workspace_copy(demo_ws, tmp_path_factory.mktemp("dist") / "ws")


def _png(i: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 48), ((70 * i) % 256, 200, (40 * i) % 256)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mixed(ws, tmp_path_factory):
    """8 samples longer than max_length, so each is cut to exactly one packed row and the rows
    keep the data order: image, text, text, image, image, text, text, image. With one row per
    micro-batch on 2 ranks, step 1 gives rank 0 an image and rank 1 text only; step 2 the
    reverse. Every caption spells <image> and </s> literally."""
    from vilactl.curation.records import sample_table, segment

    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        text = "the tag <image> and the marker </s> appear here: " + " ".join(
            rng.choice(WORDS, 400))
        segs = [segment("user", text)]
        if i % 4 in (0, 3):
            segs.insert(0, segment("user", image=_png(i)))
        rows.append({"sample_id": f"m{i}", "source": "test", "segments": segs})
    path = tmp_path_factory.mktemp("mixed") / "part-00000.parquet"
    pq.write_table(sample_table(rows), path)
    run_cli("register", "samples", "--data", str(path), "--name", "mixed", workspace=ws,
            check=True)
    return "mixed"


def config(tmp_path, name, **train) -> Path:
    cfg = yaml.safe_load(DEBUG.read_text())
    cfg["data"].update(max_length=96)
    cfg["train"].update({"micro_batch_size": 1, "log_every": 1, "save_every": 0, **train})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def torchrun(ws, *args, nproc=2) -> subprocess.CompletedProcess:
    return subprocess.run([TORCHRUN, "--nproc_per_node", str(nproc), "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()),
                           "-m", "vilactl.pipeline.cli", "--workspace", str(ws), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})


def records(ws, name) -> list[dict]:
    lines = (ws / "checkpoints" / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines]


def counts(ws, name) -> dict:
    rows = sql(ws, f"SELECT counts FROM runs WHERE args->>'name' = '{name}' AND status = 'ok'")
    return json.loads(rows[-1]["counts"])


def close(a: list[float], b: list[float], rel=1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * abs(x) for x, y in zip(a, b))


def test_text_only_micro_batch_on_one_rank(ws, mixed, tmp_path):
    args = ["train", "--stage", "pretrain", "--blend", mixed, "--steps", "4"]
    one = config(tmp_path, "one.yaml", grad_accum=2)
    run_cli(*args, "--config", str(one), "--name", "mixed1", workspace=ws, check=True)
    two = config(tmp_path, "two.yaml", grad_accum=1)
    proc = torchrun(ws, *args, "--config", str(two), "--name", "mixed2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = records(ws, "mixed1"), records(ws, "mixed2")
    # same global batches (one with an image, one text-only), float-sum order apart
    assert close([r["loss"] for r in single], [r["loss"] for r in ddp]), (single, ddp)
    assert [r["target_tokens"] for r in single] == [r["target_tokens"] for r in ddp]
    # 4 images in 8 micro-batches: each rank decoded its own 2, the single process all 4
    assert counts(ws, "mixed1")["images_decoded"] == [4]
    assert counts(ws, "mixed2")["images_decoded"] == [2, 2]


def test_fsdp_checkpoint_is_whole_and_resume_is_exact(ws, mixed, tmp_path):
    from vilactl.train import checkpoint

    args = ["train", "--stage", "pretrain", "--blend", mixed, "--steps", "4"]
    cfg = config(tmp_path, "fsdp.yaml", grad_accum=1, save_every=2, strategy="fsdp")
    proc = torchrun(ws, *args, "--config", str(cfg), "--name", "fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = ws / "checkpoints" / "fsdp"
    # resume from step 2 (a copy, as if the run had been killed after saving it)
    shutil.copytree(out / "step-000002", ws / "checkpoints" / "fsdp_cut" / "step-000002")
    proc = torchrun(ws, *args, "--config", str(cfg), "--name", "fsdp_cut", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    full, cut = records(ws, "fsdp"), records(ws, "fsdp_cut")
    assert [r["step"] for r in cut] == [3, 4]
    assert [r["loss"] for r in cut] == [r["loss"] for r in full[2:]]
    assert [r["grad_norm"] for r in cut] == [r["grad_norm"] for r in full[2:]]
    # whole tensors, in the unwrapped model's names and shapes: a single process loads them
    meta = json.loads((out / "step-000004" / "meta.json").read_text())
    model = _model(ws, meta)
    checkpoint.load_model(out / "step-000004", model)
    from safetensors.torch import load_file

    again = load_file(str(ws / "checkpoints" / "fsdp_cut" / "step-000004" / "model.safetensors"))
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())
    opt = load_file(str(out / "step-000004" / "optimizer.safetensors"))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert opt and all(v.shape == shapes[k.rsplit("/", 1)[0]] for k, v in opt.items()
                       if not k.endswith("/step"))
    # a single process may not resume it: another world size means other data per step
    before = sorted(p.name for p in out.iterdir())
    solo = run_cli(*args, "--config", str(cfg), "--name", "fsdp", "--resume", workspace=ws)
    assert solo.returncode == 1 and len(solo.stderr.strip().splitlines()) == 1, solo.stderr
    assert "batch layout changed (world 2 → 1)" in solo.stderr
    assert sorted(p.name for p in out.iterdir()) == before and len(records(ws, "fsdp")) == 4


def _model(ws, meta):
    from vilactl.pipeline.jobs import train_setup
    from vilactl.train import config as train_config
    from vilactl.train.tokenizer import load_tokenizer

    cfg = train_config.from_dict(meta["config"], "meta.json")
    return train_setup.build_model(ws, cfg, load_tokenizer(meta["tokenizer"]))


def test_resume_refuses_another_accumulation(ws, tmp_path):
    args = ["train", "--stage", "pretrain", "--name", "accum"]
    cfg = config(tmp_path, "a1.yaml", grad_accum=1, save_every=2, micro_batch_size=2)
    run_cli(*args, "--config", str(cfg), "--steps", "2", workspace=ws, check=True)
    other = config(tmp_path, "a2.yaml", grad_accum=2, save_every=2, micro_batch_size=2)
    proc = run_cli(*args, "--config", str(other), "--steps", "4", "--resume", workspace=ws)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "batch layout changed (grad_accum 1 → 2)" in proc.stderr
    assert len(records(ws, "accum")) == 2


def _tiny_batches(model):
    """6 one-row micro-batches; with 2 ranks step 1 gives rank 1 a text-only one."""
    from test_train_model import example

    from vilactl.train.packing import collate_packed

    rng = np.random.default_rng(7)
    shapes = [(8, 1), (10, 0), (6, 0), (5, 2), (9, 1), (7, 0)]     # (text tokens, images)
    return [collate_packed([[example(rng, n, k, model.tokens_per_image, f"t{i}")]], 96, 0)
            for i, (n, k) in enumerate(shapes)]


def _gather_worker(out: Path) -> None:
    """3 steps of a tiny VLM: FSDP under torchrun (2 ranks × accumulation 1), or one process
    × accumulation 2; then, independently of checkpoint.py, each parameter gathered whole."""
    from safetensors.torch import save_file
    from test_train_model import tiny_vlm

    from vilactl.train import distributed
    from vilactl.train.loop import LoopArgs, train_loop
    from vilactl.train.stages import STAGES, apply_freeze

    d = distributed.setup()
    model = tiny_vlm("mlp_downsample").train()
    apply_freeze(model, STAGES["pretrain"])
    batches = _tiny_batches(model)
    par = distributed.wrap(model, d, "fsdp")
    args = LoopArgs(steps=3, lr=1e-2, grad_accum=2 // d.world, save_every=3)
    train_loop(par, lambda pos: iter(batches[pos + d.rank::d.world]), args, d, out)
    whole = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
             for n, p in model.named_parameters()}
    if d.main:
        save_file(whole, str(out / "gather.safetensors"))
    distributed.teardown()


def test_fsdp_checkpoint_reloads_to_the_gathered_weights(tmp_path):
    from safetensors.torch import load_file
    from test_train_model import tiny_vlm

    from vilactl.train import checkpoint

    proc = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                           "--master_port", str(free_port()), __file__, str(tmp_path / "fsdp")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    gathered = load_file(str(tmp_path / "fsdp" / "gather.safetensors"))
    model = tiny_vlm("mlp_downsample", seed=1)           # other initial weights
    checkpoint.load_model(tmp_path / "fsdp" / "step-000003", model)
    params = dict(model.named_parameters())
    assert set(params) == set(gathered)
    assert max(float((params[k].detach() - v).abs().max()) for k, v in gathered.items()) == 0.0
    # and FSDP trained what one process with the same global batch trains
    _gather_worker(tmp_path / "one")
    one = load_file(str(tmp_path / "one" / "gather.safetensors"))
    assert max(float((one[k] - v).abs().max()) for k, v in gathered.items()) < 1e-4
    losses = [[json.loads(ln)["loss"] for ln in (tmp_path / n / "metrics.jsonl").open()]
              for n in ("one", "fsdp")]
    assert close(*losses), losses


if __name__ == "__main__":       # under torchrun: python tests/test_train_dist.py OUT
    _gather_worker(Path(sys.argv[1]))
