"""A training run's life: run names taken like dataset names (refused without --replace, never
replacing what other records were made from), `--parents` picking the parent checkpoint that
fits the model, SIGTERM stopping `train` at a step boundary with a checkpoint `--resume`
continues from exactly (one process, and torchrun where only one rank gets the signal), runs of
dead processes marked `incomplete` by the next writer, and weights that follow the umask."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    catalog_snapshot,
    file_tree,
    free_port,
    one_line_error,
    run_cli,
    sql,
    workspace_copy,
)

DEBUG = Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml"
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.fixture(scope="module")
def ws(demo_ws, tmp_path_factory):
    return workspace_copy(demo_ws, tmp_path_factory.mktemp("life") / "ws")


def small_config(tmp_path, name="cfg.yaml", hidden=None, **train) -> Path:
    cfg = yaml.safe_load(DEBUG.read_text())
    cfg["data"]["max_length"] = 192
    cfg["train"].update({"micro_batch_size": 2, "log_every": 1, "save_every": 0, **train})
    if hidden:
        cfg["model"]["llm_config"]["hidden_size"] = hidden
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def unchanged(ws):
    """(catalog rows but failed runs, files but locks) — what a refusal must leave as it was."""
    return catalog_snapshot(ws), file_tree(ws, skip=("catalog.duckdb", ".locks"))


def test_a_taken_run_name_is_refused_and_replace_spares_what_was_made_from_it(ws, tmp_path):
    before = unchanged(ws)
    one_line_error(run_cli("train", "--stage", "pretrain", "--steps", "1", workspace=ws),
                   "checkpoints of run 'pretrain' exist (pretrain@6): pass --replace",
                   "--name to name another run")
    # the demo's chain: projector@6 → pretrain@6 → sft@6, which has evals
    for stage, why in (("projector", "projector@6 is the parent of checkpoint pretrain@6"),
                       ("pretrain", "pretrain@6 is the parent of checkpoint sft@6"),
                       ("sft", "sft@6 has evals (on eval_")):
        one_line_error(run_cli("train", "--stage", stage, "--steps", "1", "--replace",
                               workspace=ws), f"--replace: {why}", "--name")
    assert unchanged(ws) == before      # logs, checkpoints and rows as they were
    # a run nothing was made from is trained again with --replace, under a new run id
    cfg = small_config(tmp_path)
    args = ["train", "--stage", "projector", "--steps", "1", "--config", str(cfg),
            "--name", "again"]
    run_cli(*args, workspace=ws, check=True)
    first = sql(ws, "SELECT run_id FROM checkpoints WHERE id = 'again@1'")
    one_line_error(run_cli(*args, workspace=ws), "checkpoints of run 'again' exist (again@1)")
    run_cli(*args, "--replace", workspace=ws, check=True)
    assert sql(ws, "SELECT run_id FROM checkpoints WHERE id = 'again@1'") != first


def test_parents_picks_the_checkpoint_of_this_model_shape(ws, tmp_path):
    wide = small_config(tmp_path, "wide.yaml", hidden=96)
    run_cli("train", "--stage", "projector", "--steps", "1", "--config", str(wide), "--name",
            "wide_proj", workspace=ws, check=True)          # newer than projector@6
    # the debug shape: the newest debug-shaped projector (the demo's, or another test's), the
    # wide one skipped and named
    debug = sql(ws, "SELECT id FROM checkpoints WHERE stage = 'projector' AND id <> "
                    "'wide_proj@1' ORDER BY created_at DESC LIMIT 1")[0]["id"]
    out = run_cli("train", "--stage", "pretrain", "--steps", "1", "--parents", "--config",
                  str(small_config(tmp_path)), "--name", "fits", workspace=ws, check=True)
    assert f"starting from {debug} (the newest projector checkpoint of this model shape; " \
           "skipped wide_proj@1: another model shape)" in " ".join(out.stdout.split())
    assert sql(ws, "SELECT parent FROM checkpoints WHERE id = 'fits@1'") == [{"parent": debug}]
    # the wide shape: its own projector
    out = run_cli("train", "--stage", "pretrain", "--steps", "1", "--parents", "--config",
                  str(wide), "--name", "wide_pre", workspace=ws, check=True)
    assert "starting from wide_proj@1" in out.stdout
    # no pretrain checkpoint of another shape, and the name `pretrain` is the demo's: one line
    other = small_config(tmp_path, "other.yaml", hidden=48)
    before = unchanged(ws)
    one_line_error(run_cli("train", "--stage", "sft", "--steps", "1", "--parents", "--config",
                           str(other), "--name", "s48", workspace=ws),
                   "stage sft starts from a pretrain checkpoint of the model shape of",
                   "and the catalog has none", "--init")
    assert unchanged(ws) == before


def _start(ws, *args, umask=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace", str(ws), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def _wait_for(check, proc, what: str, timeout=180):
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _steps_logged(ws, name) -> int:
    path = ws / "checkpoints" / name / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_sigterm_saves_a_checkpoint_that_resume_continues_exactly(ws, tmp_path):
    cfg = small_config(tmp_path)
    base = ["train", "--stage", "pretrain", "--config", str(cfg), "--steps", "8"]
    run_cli(*base, "--name", "whole", workspace=ws, check=True)
    proc = _start(ws, *base, "--name", "term", umask=0o022)
    _wait_for(lambda: _steps_logged(ws, "term") >= 2, proc, "two steps logged")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terminated by SIGTERM after step "), err
    step = int(lines[0].split("after step ")[1].split()[0])
    assert 2 <= step < 8 and f"of 8: checkpoint term@{step} saved; --resume continues" \
        in lines[0], lines
    folder = ws / "checkpoints" / "term" / f"step-{step:06d}"
    assert json.loads((folder / "state.json").read_text())["step"] == step
    assert sorted(p.name for p in folder.parent.glob("step-*")) == [folder.name]
    # weights follow the umask like the JSON beside them (0644 under umask 022)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    assert set(modes.values()) == {"0o644"}, modes
    row = sql(ws, "SELECT c.id, c.metrics, r.status, r.error FROM checkpoints c JOIN runs r ON "
                  "r.id = c.run_id WHERE c.id LIKE 'term@%'")
    assert len(row) == 1 and row[0]["id"] == f"term@{step}", row
    assert json.loads(row[0]["metrics"])["final"] is False
    assert row[0]["status"] == "failed" and row[0]["error"] == lines[0]
    assert not list((ws / "checkpoints").glob(".*tmp"))
    resumed = run_cli(*base, "--name", "term", "--resume", workspace=ws, check=True)
    assert f"resuming from {folder}" in " ".join(resumed.stdout.split())
    last = ws / "checkpoints" / "{}" / "step-000008"
    whole, term = _weights(Path(str(last).format("whole"))), _weights(Path(str(last)
                                                                            .format("term")))
    assert whole.keys() == term.keys() and all(torch.equal(whole[k], term[k]) for k in whole)
    logged = [json.loads(ln)["loss"] for ln in
              (ws / "checkpoints" / "term" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [json.loads(ln)["loss"] for ln in
                      (ws / "checkpoints" / "whole" / "metrics.jsonl").read_text().splitlines()]


def _rank_pid(torchrun_pid: int, rank: str) -> int | None:
    """The worker of torchrun `torchrun_pid` whose environment says RANK=rank."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == torchrun_pid and f"RANK={rank}".encode() in env:
            return int(d.name)
    return None


def test_torchrun_ranks_stop_at_the_same_step_when_one_gets_sigterm(ws, tmp_path):
    cfg = small_config(tmp_path, "dist.yaml", micro_batch_size=1, grad_accum=1)
    proc = subprocess.Popen([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                             "--master_port", str(free_port()), "-m", "vilactl.pipeline.cli",
                             "--workspace", str(ws), "train", "--stage", "pretrain",
                             "--config", str(cfg), "--steps", "40", "--name", "dterm"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait_for(lambda: _steps_logged(ws, "dterm") >= 2, proc, "two steps logged", timeout=300)
    rank1 = _rank_pid(proc.pid, "1")
    assert rank1, "no rank-1 worker found"
    os.kill(rank1, signal.SIGTERM)          # rank 1 alone: rank 0 must stop at the same step
    out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert "terminated by SIGTERM after step" in err, err[-3000:]
    steps = sorted((ws / "checkpoints" / "dterm").glob("step-*"))
    assert len(steps) == 1, steps
    step = json.loads((steps[0] / "state.json").read_text())["step"]
    assert 2 <= step < 40 and _steps_logged(ws, "dterm") == step
    assert sql(ws, "SELECT id FROM checkpoints WHERE id LIKE 'dterm@%'") == \
        [{"id": f"dterm@{step}"}]
    run = sql(ws, "SELECT status, error FROM runs WHERE target = 'checkpoints/dterm'")
    assert run == [{"status": "failed", "error": run[0]["error"]}]
    assert f"checkpoint dterm@{step} saved" in run[0]["error"]


def test_sigterm_ends_any_command_like_ctrl_c(tmp_path):
    """`vilactl demo` stopped while it writes the world: one line, exit 143, its runs marked
    failed, no temp folder left."""
    ws = tmp_path / "ws"
    proc = _start(ws, "demo", "--until", "world")
    _wait_for(lambda: list(ws.glob(".world~*.tmp")) or (ws / "world").exists(), proc,
              "the world's temp folder", timeout=120)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the world was written before the signal arrived")
    assert proc.returncode == 143 and err.strip().splitlines() == ["terminated by SIGTERM"], err
    assert not list(ws.glob(".*.tmp")) and not (ws / "world").exists()
    runs = sql(ws, "SELECT command, status, error FROM runs")
    assert runs and {(r["status"], r["error"]) for r in runs} == {("failed",
                                                                     "terminated by SIGTERM")}


HOLD = """
import sys, time
from vilactl.catalog import jobs
with jobs.job(sys.argv[1], "vilactl test", {}, target=sys.argv[2]):
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_dead_processes_run_is_marked_incomplete_by_the_next_writer(tmp_path):
    from vilactl.catalog import db

    ws = tmp_path / "ws"
    db.init(ws)
    procs = {t: subprocess.Popen([sys.executable, "-c", HOLD, str(ws), t],
                                 stdout=subprocess.PIPE, text=True)
             for t in ("checkpoints/killed", "checkpoints/alive")}
    try:
        for p in procs.values():
            assert p.stdout.readline().strip() == "ready"
        procs["checkpoints/killed"].kill()
        procs["checkpoints/killed"].wait()
        with db.writer(ws):                  # any writer, another output
            pass
        rows = {r["target"]: r for r in sql(ws, "SELECT target, status, error FROM runs")}
        assert rows["checkpoints/killed"]["status"] == "incomplete"
        assert "its process ended" in rows["checkpoints/killed"]["error"]
        assert rows["checkpoints/alive"]["status"] == "running"      # its holder lives
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    # a running row whose lock file was never made (a torchrun rank that died, an older
    # vilactl), and a run in this very process: the first is dead, the second alive
    from vilactl.base import locks
    from vilactl.catalog.rows import Run, record_run

    with db.writer(ws) as con:
        record_run(con, Run(command="vilactl x", target="datasets/nolock"))
    with locks.hold(ws, "datasets/mine", "mine"):
        with db.writer(ws) as con:
            record_run(con, Run(command="vilactl y", target="datasets/mine"))
        with db.writer(ws):
            pass
        rows = {r["target"]: r["status"] for r in sql(ws, "SELECT target, status FROM runs")}
    assert rows["datasets/nolock"] == "incomplete" and rows["datasets/mine"] == "running"
    assert rows["checkpoints/alive"] == "incomplete"          # killed above since


SAVE = """
import sys, torch
from pathlib import Path
from vilactl.base import atomic
out = Path(sys.argv[1])
atomic.save_tensors({"w": torch.zeros(2)}, out / "w.safetensors")
with atomic.atomic_path(out / "c.safetensors") as tmp:          # the demo CLIP's way
    atomic.save_tensors({"w": torch.zeros(2)}, tmp)
"""


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_weights_follow_the_umask(tmp_path, umask, mode):
    subprocess.run([sys.executable, "-c", SAVE, str(tmp_path)], check=True,
                   preexec_fn=lambda: os.umask(umask))
    for name in ("w.safetensors", "c.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


def test_the_loop_stops_at_a_step_boundary_and_resumes_to_the_same_weights(tmp_path):
    """In-process, a tiny VLM: a stop request noted during step 2 ends the loop after step 2
    with step 2's checkpoint; resuming from it gives the uninterrupted run's weights."""
    from test_train_dist import _tiny_batches
    from test_train_model import tiny_vlm

    from vilactl.train import distributed
    from vilactl.train.loop import LoopArgs, StopSignals, train_loop
    from vilactl.train.stages import STAGES, apply_freeze

    d = distributed.Dist()

    def run(out, stop=None, resume_from=None, stop_at=None):
        model = tiny_vlm("mlp_downsample").train()
        apply_freeze(model, STAGES["pretrain"])
        batches = _tiny_batches(model)
        if resume_from is not None:
            from vilactl.train import checkpoint

            checkpoint.load_model(resume_from, model)

        def log(rec):
            if stop is not None and rec["step"] == stop_at:
                stop.signum = signal.SIGTERM           # as the signal handler notes it
        args = LoopArgs(steps=5, lr=1e-2, log_every=1)
        summary = train_loop(distributed.wrap(model, d), lambda pos: iter(batches[pos:] * 2),
                             args, d, out, resume_from, log=log, stop=stop)
        return summary, model

    whole, ref = run(tmp_path / "whole")
    stop = StopSignals()
    summary, _ = run(tmp_path / "cut", stop=stop, stop_at=2)
    assert (summary["stopped_at"], summary["saved_step"]) == (2, 2)
    assert sorted(p.name for p in (tmp_path / "cut").glob("step-*")) == ["step-000002"]
    _, resumed = run(tmp_path / "cut", resume_from=tmp_path / "cut" / "step-000002")
    a, b = ref.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
