"""Hostile names and paths: an output name never reaches outside the workspace (or removes the
workspace), views never collide, LLaVA images stay inside --images, concurrent writers of one
name cannot mix their outputs, and a failed lock wait leaves nothing. Every refusal is one
line, exit 1, with the workspace, the catalog and a sentinel folder beside them untouched."""
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Untouched, failed_runs, one_line_error, run_cli, sql

from vilactl.base import locks
from vilactl.curation.records import sample_table, segment


@pytest.fixture
def hostile(tmp_path, coyo_rows, shared_data):
    """Inputs of every register kind, and a workspace holding one registered dataset."""
    inputs = tmp_path / "inputs"
    (inputs / "img").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(coyo_rows), inputs / "coyo.parquet")
    (inputs / "docs.jsonl").write_text((shared_data / "mmc4_v1.1_doc.jsonl").read_text())
    pq.write_table(sample_table([{"sample_id": "s1", "source": "t", "segments": [
        segment("user", text="hi"), segment("assistant", text="ho")]}]), inputs / "s.parquet")
    (inputs / "flan.jsonl").write_text(json.dumps({"inputs": "a", "targets": "b"}) + "\n")
    (inputs / "llava.json").write_text(json.dumps([{"id": "1", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "ho"}]}]))
    guard = Untouched(tmp_path)
    run_cli("register", "coyo", "--metadata", str(inputs / "coyo.parquet"), "--name", "meta",
            workspace=guard.ws, check=True)
    guard.snap()
    return guard, inputs


def commands(inputs):
    """Every command that takes an output name."""
    return {
        "register coyo": ["register", "coyo", "--metadata", str(inputs / "coyo.parquet")],
        "register mmc4": ["register", "mmc4", "--docs", str(inputs / "docs.jsonl")],
        "register samples": ["register", "samples", "--data", str(inputs / "s.parquet")],
        "register llava": ["register", "llava", "--json", str(inputs / "llava.json"),
                           "--images", str(inputs / "img")],
        "register text-instruct": ["register", "text-instruct", "--data",
                                   str(inputs / "flan.jsonl")],
        "download": ["download", "coyo", "--metadata", str(inputs / "coyo.parquet")],
        "score": ["score", "meta"],
        "curate": ["curate", "coyo", "--top-k", "2", "--dataset", "meta"],
        "build": ["build", "mmc4", "--variant", "interleaved"],
        "blend": ["blend", "--coyo", "1", "--coyo-dataset", "meta"],
        "train": ["train", "--stage", "projector"],
    }


def test_every_command_refuses_names_that_escape(hostile):
    guard, inputs = hostile
    for cmd, args in commands(inputs).items():
        for name in ("../../sentinel", str(guard.sentinel)):
            proc = run_cli(*args, "--name", name, workspace=guard.ws)
            one_line_error(proc, "--name", "is not allowed")
            guard.check()
        assert cmd


@pytest.mark.parametrize("name", ["..", ".", "a/b", "ok..x", ".hidden", "x" * 256,
                                  "bad\nname", "é", ""])
def test_register_mmc4_refuses_every_bad_name(hostile, name):
    guard, inputs = hostile
    proc = run_cli(*commands(inputs)["register mmc4"], "--name", name, workspace=guard.ws)
    line = one_line_error(proc, "is not allowed")
    assert len(line) < 300                   # a 256-character name is shown shortened
    guard.check()


def test_view_names_never_collide(hostile):
    guard, inputs = hostile
    run_cli("register", "coyo", "--metadata", str(inputs / "coyo.parquet"), "--name", "col_x",
            workspace=guard.ws, check=True)
    guard.snap()
    for clash in ("col-x", "col.x", "COL_X"):
        proc = run_cli("register", "coyo", "--metadata", str(inputs / "coyo.parquet"), "--name",
                       clash, workspace=guard.ws)
        one_line_error(proc, "would share the view samples_col_x with dataset 'col_x'")
        guard.check()


def test_world_out_never_replaces_a_foreign_folder(hostile):
    guard, _ = hostile
    proc = run_cli("world", "--out", str(guard.sentinel), "--size", "tiny", workspace=guard.ws)
    one_line_error(proc, "exists and is not a demo world")
    guard.check()


def test_sql_out_to_a_folder_is_refused(hostile):
    guard, _ = hostile
    proc = run_cli("sql", "SELECT 1", "--format", "csv", "--out", str(guard.sentinel),
                   workspace=guard.ws)
    one_line_error(proc, "is a folder")
    guard.check()


def png(size=(8, 8)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("image, needle", [
    ("../outside.png", "is outside the images folder"),
    ("{abs}", "is outside the images folder"),
    ("link.png", "is outside the images folder"),       # a symlink out of DIR
    ("/proc/self/environ", "is outside the images folder"),
    ("notimage.png", "not a decodable image"),
    ("huge.png", "image too large"),
])
def test_llava_images_stay_inside_their_folder(hostile, image, needle):
    guard, inputs = hostile
    outside = inputs / "outside.png"
    outside.write_bytes(png())
    (inputs / "img" / "link.png").symlink_to(outside)
    (inputs / "img" / "notimage.png").write_text("secret=1\n")
    (inputs / "img" / "huge.png").write_bytes(png((9000, 8000)))   # 72 Mpx > the 64 Mpx limit
    rec = {"id": "r1", "image": image.format(abs=outside), "conversations": [
        {"from": "human", "value": "<image> what?"}, {"from": "gpt", "value": "red"}]}
    (inputs / "one.json").write_text(json.dumps([rec]))
    guard.snap()
    proc = run_cli("register", "llava", "--json", str(inputs / "one.json"), "--images",
                   str(inputs / "img"), "--name", "lv", workspace=guard.ws)
    one_line_error(proc, "record r1", needle)
    guard.check()
    assert failed_runs(guard.ws)[-1]["target"] == "datasets/lv"


def test_concurrent_registers_of_one_name_never_mix(hostile):
    guard, inputs = hostile
    docs = [inputs / f"docs{i}.jsonl" for i in range(2)]
    doc = json.loads((inputs / "docs.jsonl").read_text().splitlines()[0])
    for i, path in enumerate(docs):     # different content, so a mix would show
        path.write_text("".join(json.dumps({**doc, "url": f"http://x/{i}/{n}"}) + "\n"
                                for n in range(200 * (i + 1))))
    for attempt in range(3):
        name = f"race{attempt}"
        with locks.hold(guard.ws, f"datasets/{name}", "test"):   # both start, then contend
            procs = [subprocess.Popen(
                [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace", str(guard.ws),
                 "register", "mmc4", "--docs", str(p), "--name", name],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "VILACTL_LOCK_WAIT": "300"}) for p in docs]
            lock = guard.ws / ".locks" / f"datasets--{name}.lock"
            _wait_for_waiters(lock, 2)
        results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
        assert sorted(rc for *_, rc in results) == [0, 1], results
        loser = next(err for _, err, rc in results if rc == 1)
        assert "already in the catalog" in loser, loser
        shard = sql(guard.ws, f"SELECT s.path, s.checksum, d.num_samples FROM shards s JOIN "
                              f"datasets d ON d.name = s.dataset WHERE d.name = '{name}'")
        assert len(shard) == 1
        import hashlib

        on_disk = hashlib.sha256(open(shard[0]["path"], "rb").read()).hexdigest()
        assert on_disk == shard[0]["checksum"]
        assert pq.read_metadata(shard[0]["path"]).num_rows == shard[0]["num_samples"]


def _wait_for_waiters(lock, n: int) -> None:
    """Until n other processes have the lock file open (they are waiting for it)."""
    import time

    deadline = time.monotonic() + 120
    while _openers(lock) < n:
        assert time.monotonic() < deadline, "the registers never reached the lock"
        time.sleep(0.05)


def _openers(path) -> int:
    target = os.path.realpath(path)
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == target
            except OSError:
                pass
    return count


def test_outputs_have_the_umasks_permissions(hostile):
    guard, inputs = hostile
    run_cli(*commands(inputs)["register mmc4"], "--name", "shared", workspace=guard.ws,
            check=True)
    umask = os.umask(0)
    os.umask(umask)
    folder = guard.ws / "datasets" / "shared"
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask           # not mkdtemp's 0700
    part = next(folder.glob("part-*.parquet"))
    assert part.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_lock_wait_leaves_nothing(hostile):
    guard, inputs = hostile
    args = commands(inputs)["register mmc4"]
    with locks.hold(guard.ws, "datasets/held", "test"):
        proc = run_cli(*args, "--name", "held", workspace=guard.ws,
                       env={"VILACTL_LOCK_WAIT": "1"})
    one_line_error(proc, "datasets/held is being written by another vilactl process",
                   f"PID {os.getpid()}")
    guard.check()
    assert failed_runs(guard.ws) == []
