"""Hostile inputs, round 2: workspaces that cannot be used (a file, a symlink loop, under a
file, a missing parent, read-only), numbers out of range on every command, and a task that fails
on a full disk during curate (images: tests/test_hostile_images.py). Every refusal is one
`error:` line, exit 1, with the workspace, the catalog and a sentinel folder beside them
untouched."""
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Untouched, failed_runs, one_line_error, run_cli

DOCS = "mmc4_v1.1_doc.jsonl"


# ------------------------------------------------------------------ workspaces
@pytest.fixture
def root(tmp_path):
    return tmp_path


def refused_everywhere(ws, needle, env=None, commands=None):
    """Every kind of command — creating, writing, reading — refuses `ws` with one line."""
    from conftest import REPO

    docs = REPO.parent / "shared" / "data" / DOCS
    commands = commands or [["init"], ["register", "mmc4", "--docs", str(docs), "--name", "m"],
                            ["catalog"], ["sql", "SELECT 1"], ["report"]]
    for args in commands:
        proc = run_cli(*args, workspace=ws, env=env)
        one_line_error(proc, needle)


def test_a_workspace_that_is_a_file(root):
    guard = Untouched(root)
    guard.ws.write_text("not a folder")
    guard.snap()
    refused_everywhere(guard.ws, "is not a folder")
    assert guard.ws.read_text() == "not a folder"
    guard.check()


def test_a_workspace_under_a_file(root):
    guard = Untouched(root)
    (root / "afile").write_text("x")
    guard.snap()
    refused_everywhere(root / "afile" / "ws", f"{root / 'afile'} is a file, not a folder")
    guard.check()


def test_vilactl_workspace_a_symlink_loop(root, shared_data):
    guard = Untouched(root)
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    guard.snap()
    env = {"VILACTL_WORKSPACE": str(root / "loop_a")}
    for args in (["init"], ["catalog"], ["sql", "SELECT 1"],
                 ["register", "mmc4", "--docs", str(shared_data / DOCS), "--name", "m"]):
        cmd = [sys.executable, "-m", "vilactl.pipeline.cli", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "200", **env})
        one_line_error(proc, "is a symlink loop")
    guard.check()


def test_a_symlink_loop_inside_the_workspace(root, shared_data):
    guard = Untouched(root)
    run_cli("init", workspace=guard.ws, check=True)
    (guard.ws / "datasets").symlink_to(guard.ws / "datasets")
    guard.snap()
    proc = run_cli("register", "mmc4", "--docs", str(shared_data / DOCS), "--name", "m",
                   workspace=guard.ws)
    one_line_error(proc, "refused, cannot resolve it")
    guard.check()


@pytest.mark.parametrize("create", ["init", "register"])
def test_a_workspace_whose_parent_is_missing_is_not_created(root, shared_data, create):
    guard = Untouched(root)
    ws = root / "typo" / "deeper" / "ws"
    args = ["init"] if create == "init" else ["register", "mmc4", "--docs",
                                              str(shared_data / DOCS), "--name", "m"]
    one_line_error(run_cli(*args, workspace=ws), f"its parent folder {ws.parent} does not exist")
    assert not (root / "typo").exists()
    guard.check()
    # a missing workspace whose parent exists is still created, as before
    run_cli("init", workspace=guard.ws, check=True)
    assert (guard.ws / "catalog.duckdb").is_file()


def test_a_dangling_workspace_symlink(root):
    guard = Untouched(root)
    (root / "ws_link").symlink_to(root / "gone")
    guard.snap()
    one_line_error(run_cli("init", workspace=root / "ws_link"), "which does not exist")
    assert not (root / "gone").exists()
    guard.check()


def unprivileged() -> list[str]:
    """A command prefix under which file modes bind: none for a normal user; for root, the
    capabilities that bypass them dropped (setpriv), since chmod does not stop root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be simulated")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable"]


def run_unprivileged(ws, *args):
    cmd = unprivileged() + [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace",
                            str(ws), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def read_only_ws(root, shared_data):
    guard = Untouched(root)
    run_cli("register", "mmc4", "--docs", str(shared_data / DOCS), "--name", "m",
            workspace=guard.ws, check=True)
    guard.snap()
    mode = guard.ws.stat().st_mode
    guard.ws.chmod(0o555)
    try:
        yield guard
    finally:
        guard.ws.chmod(mode)
        (guard.ws / "catalog.duckdb").chmod(0o644)


def test_a_read_only_workspace_refuses_writers_and_serves_readers(read_only_ws, shared_data):
    guard = read_only_ws
    for args in (["init"], ["register", "mmc4", "--docs", str(shared_data / DOCS), "--name",
                            "m2"],
                 ["blend", "--component", "m=1"], ["report"]):
        one_line_error(run_unprivileged(guard.ws, *args), "is read-only for this user")
    out = run_unprivileged(guard.ws, "sql", "SELECT name FROM datasets", "--format", "csv")
    assert out.returncode == 0 and out.stdout.split() == ['"name"', '"m"'], out.stderr
    assert run_unprivileged(guard.ws, "catalog").returncode == 0
    guard.check()


def test_a_read_only_catalog_file(read_only_ws, shared_data):
    guard = read_only_ws
    guard.ws.chmod(0o755)
    (guard.ws / "catalog.duckdb").chmod(0o444)
    proc = run_unprivileged(guard.ws, "register", "mmc4", "--docs", str(shared_data / DOCS),
                            "--name", "m2")
    one_line_error(proc, "catalog.duckdb is read-only for this user")
    guard.check()


def test_a_read_only_managed_folder(read_only_ws, shared_data):
    guard = read_only_ws
    guard.ws.chmod(0o755)
    (guard.ws / "datasets").chmod(0o555)
    try:
        proc = run_unprivileged(guard.ws, "register", "mmc4", "--docs",
                                str(shared_data / DOCS), "--name", "m2")
    finally:
        (guard.ws / "datasets").chmod(0o755)
    one_line_error(proc, f"{guard.ws / 'datasets'}: cannot write here: Permission denied")
    guard.check()


# ------------------------------------------------------------------ numeric options
@pytest.fixture(scope="module")
def numbers(tmp_path_factory, coyo_rows, shared_data):
    root = tmp_path_factory.mktemp("numbers")
    pq.write_table(pa.Table.from_pylist(coyo_rows), root / "coyo.parquet")
    ws = root / "ws"
    run_cli("register", "coyo", "--metadata", str(root / "coyo.parquet"), "--name", "meta",
            workspace=ws, check=True)
    return root


def out_of_range(root):
    meta, docs = str(root / "coyo.parquet"), str(root / "nothing.jsonl")
    big = str(2**63)
    return [
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--seed", "-1"],
         "--seed must be a non-negative integer below 2^63, got -1"),
        (["blend", "--coyo", "nan", "--coyo-dataset", "meta"], "--coyo must be a finite number"),
        (["blend", "--mmc4", "inf"], "--mmc4 must be a finite number"),
        (["blend", "--component", "meta=nan"], "--component meta's weight must be a finite"),
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--memory-gb", "0"],
         "--memory-gb must be a number in (0, 8000000000], got 0.0"),
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--images", "0"], "--images must"),
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--coyo-group", big],
         "--coyo-group must be a positive integer below 2^63"),
        (["download", "coyo", "--metadata", meta, "--retries", "-1"],
         "--retries must be an integer from 0 to 100, got -1"),
        (["download", "coyo", "--metadata", meta, "--shard-retries", "-1"], "--shard-retries"),
        (["download", "coyo", "--metadata", meta, "--timeout", "nan"], "--timeout must be"),
        (["download", "coyo", "--metadata", meta, "--timeout", "10", "--deadline", "5"],
         "--deadline must be ≥ --timeout (10), got 5.0"),
        (["download", "coyo", "--metadata", meta, "--threads", "0"], "--threads must be"),
        (["download", "coyo", "--metadata", meta, "--image-size", "100000"], "--image-size"),
        (["download", "coyo", "--metadata", meta, "--max-pixels", big], "--max-pixels must"),
        (["score", "meta", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["curate", "coyo", "--top-k", big], "--top-k must be a positive integer below 2^63"),
        (["build", "mmc4", "--variant", "pairs", "--seed", "-3"], "--seed must be"),
        (["build", "mmc4", "--variant", "pairs", "--min-sentences", "5", "--max-sentences", "4"],
         "--max-sentences must be ≥ --min-sentences (5), got 4"),
        (["build", "mmc4", "--variant", "pairs", "--min-strong-share", "1.5"],
         "--min-strong-share must be a number in [0, 1], got 1.5"),
        (["build", "mmc4", "--variant", "pairs", "--max-aspect", "0.5"],
         "--max-aspect must be 0 (any) or ≥ 1"),
        (["train", "--stage", "sft", "--steps", "0"], "--steps must be a positive integer"),
        (["train", "--stage", "sft", "--lora", "-1"], "--lora must be a non-negative integer"),
        (["eval", "--limit", "-3"], "--limit must be a positive integer"),
        (["eval", "--shots", f"0,{big}"], "--shots must be a non-negative integer below 2^63"),
        (["generate", "--prompt", "hi", "--temperature", "nan"], "--temperature must be"),
        (["generate", "--prompt", "hi", "--top-p", "0"], "--top-p must be a number in (0, 1]"),
        (["generate", "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be"),
        (["ablate", "--sft-steps", "0"], "--sft-steps must be"),
        (["ablate", "--seeds", "0"], "--seeds must be a positive integer below 2^63, got 0"),
        (["ablate", "--projector-steps", "0"], "--projector-steps must be"),
        (["demo", "--seed", "-1"], "--seed must be"),
        (["world", "--out", str(root / "w"), "--seed", big], "--seed must be"),
        (["mirror", "serve", "--port", "70000"], "--port must be an integer from 0 to 65535"),
        (["register", "llava", "--json", docs, "--images", str(root), "--shard-size", "0"],
         "--shard-size must be"),
        (["register", "text-instruct", "--data", docs, "--sample", "0"], "--sample must be"),
        (["register", "text-instruct", "--data", docs, "--sample", "5", "--seed", "-1"],
         "--seed must be"),
    ]


def test_every_numeric_option_is_range_checked(numbers):
    guard = Untouched(numbers)
    for args, needle in out_of_range(numbers):
        one_line_error(run_cli(*args, workspace=guard.ws), needle)
    for env, needle in [({"VILACTL_MAX_PIXELS": "abc"}, "VILACTL_MAX_PIXELS='abc' is not an "),
                        ({"VILACTL_MAX_ASPECT_RATIO": "0.5"}, "VILACTL_MAX_ASPECT_RATIO must be"),
                        ({"VILACTL_LOCK_WAIT": "nan"}, "VILACTL_LOCK_WAIT must be a number"),
                        ({"VILACTL_JSON_MAX_DEPTH": "0"}, "VILACTL_JSON_MAX_DEPTH must be"),
                        ({"VILACTL_CHECK_HASH_BYTES": "-1"},
                         "VILACTL_CHECK_HASH_BYTES must be a non-negative integer")]:
        one_line_error(run_cli("download", "coyo", "--from-dataset", "meta", "--name", "d",
                               workspace=guard.ws, env=env), needle)
    guard.check()
    assert failed_runs(guard.ws) == []         # refused before any run started
    assert not (numbers / "w").exists()


# ------------------------------------------------------------------ a task on a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_full_disk_during_curate_is_the_one_error_line(tmp_path, small_disk, ray_head,
                                                         coyo_rows):
    rows = [{**coyo_rows[i % len(coyo_rows)], "id": 10**12 + i, "url": f"http://x.test/{i}",
             "clip_similarity_vitb32": (i * 7919 % 1000) / 1000.0,
             "clip_similarity_vitl14": (i * 104729 % 1000) / 1000.0} for i in range(20_000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "meta.parquet")
    guard = Untouched(tmp_path)
    run_cli("register", "coyo", "--metadata", str(tmp_path / "meta.parquet"), "--name", "meta",
            workspace=guard.ws, check=True)
    (guard.ws / "datasets").symlink_to(small_disk)   # an administrator's other disk, full
    guard.snap()
    proc = run_cli("--ray-address", ray_head, "curate", "coyo", "--dataset", "meta", "--top-k",
                   "15000", "--name", "top", workspace=guard.ws)
    one_line_error(proc, "curate failed (write) on part 0", "No space left on device")
    assert "Traceback" not in proc.stdout and "Ray:" not in proc.stdout, proc.stdout
    assert "retr" not in proc.stdout.lower(), proc.stdout
    guard.check()
    assert list(small_disk.iterdir()) == []          # the temp output is gone
    assert failed_runs(guard.ws)[-1]["target"] == "datasets/top"
