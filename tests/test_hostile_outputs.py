"""Hostile outputs and unbounded queries: `vilactl sql --out` and `vilactl report --out` never
write onto the catalog, a file it records or into the workspace's own folders, replace an
existing file only with --force, and a write that fails (a full device, a file-size limit, a
closed pipe) is one line and no partial file. `vilactl sql` stops at --timeout and
--memory-gb, Ctrl-C stops it at once, and a writer never waits for it. JSON output is strict
(null for NaN and infinities). Every refusal is one line, exit 1, with the workspace, the
catalog and a sentinel folder beside them untouched."""
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Untouched, one_line_error, run_cli, sql

from vilactl.base.errors import VilactlError
from vilactl.pipeline.jobs.out_paths import check_file

LONG = "SELECT count(*) FROM range(1000000000000)"      # hours of work without a limit
CLI = [sys.executable, "-m", "vilactl.pipeline.cli"]


def _workspace(root: Path, coyo_rows, shared_data) -> Untouched:
    """A workspace with a registered file outside it (meta) and a dataset written inside it
    (docs, under datasets/), and a sentinel folder beside it."""
    inputs = root / "inputs"
    inputs.mkdir()
    pq.write_table(pa.Table.from_pylist(coyo_rows), inputs / "coyo.parquet")
    (inputs / "docs.jsonl").write_text((shared_data / "mmc4_v1.1_doc.jsonl").read_text())
    g = Untouched(root)
    run_cli("register", "coyo", "--metadata", str(inputs / "coyo.parquet"), "--name", "meta",
            workspace=g.ws, check=True)
    run_cli("register", "mmc4", "--docs", str(inputs / "docs.jsonl"), "--name", "docs",
            workspace=g.ws, check=True)
    (g.ws / "exports").mkdir()
    g.inputs = inputs
    g.snap()
    return g


@pytest.fixture
def guard(tmp_path, coyo_rows, shared_data):
    """A workspace of its own, for tests that change it."""
    return _workspace(tmp_path, coyo_rows, shared_data)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, coyo_rows, shared_data):
    """One workspace for the tests that must leave it unchanged (each checks that it did)."""
    return _workspace(tmp_path_factory.mktemp("outputs"), coyo_rows, shared_data)


def targets(g) -> list[tuple[Path, str]]:
    """Output paths that must be refused, and what the one line says."""
    ws = g.ws
    shard = Path(sql(ws, "SELECT path FROM shards WHERE dataset = 'docs'")[0]["path"])
    (g.root / "link.csv").symlink_to(g.sentinel / "keep.txt")
    return [(ws / "catalog.duckdb", "would write onto the catalog"),
            (ws / "catalog.duckdb.wal", "write-ahead log"),
            (g.inputs / "coyo.parquet", "would write onto dataset meta"),
            (shard, "would write onto"),
            (shard.parent / "new.parquet", "would write onto dataset docs"),
            (ws / "datasets" / "new.csv", "which vilactl manages"),
            (ws / "exports" / "x.csv", "which vilactl manages"),
            (ws / ".locks" / "x.csv", "which vilactl manages"),
            (ws / ".tmp" / "x.csv", "which vilactl manages"),
            (ws / "checkpoints", "belongs to vilactl"),          # would block the folder
            (ws / ".hidden", "belongs to vilactl"),
            (ws / "datasets", "is a folder"),
            (g.root / "link.csv", "is a symlink"),
            (Path("/dev/full"), "not a regular file"),
            (g.sentinel / "keep.txt", "exists; pass --force"),
            (g.root / "no" / "such.csv", "does not exist")]


def test_outputs_never_land_on_what_the_catalog_or_the_workspace_owns(guard):
    cases = targets(guard)
    guard.snap()
    for target, needle in cases:           # the check itself, every case (fast)
        with pytest.raises(VilactlError, match=needle.replace("?", r"\?")):
            check_file(guard.ws, target)
    # and the commands, one case of each kind (a CLI run costs seconds)
    picks = {0, 1, 2, 3, 5, 7, 10, 13, 14}
    for i, (target, needle) in enumerate(cases):
        runs = [["sql", "SELECT 1 AS a", "--format", "csv", "--out", str(target)],
                ["report", "--out", str(target)]]
        if i in picks:
            for args in runs if i in (0, 3, 7) else runs[:1]:
                one_line_error(run_cli(*args, workspace=guard.ws), str(target.name), needle)
                guard.check()
    one_line_error(run_cli("sql", "SELECT 1 AS a", "-f", "parquet", "--out",
                           str(guard.ws / "catalog.duckdb"), workspace=guard.ws), "the catalog")
    guard.check()
    assert sql(guard.ws, "SELECT count(*) AS n FROM samples_meta") == [{"n": 9}]


def test_an_existing_file_is_replaced_only_with_force(guard):
    out = guard.root / "result.csv"
    out.write_text("mine\n")
    guard.snap()
    one_line_error(run_cli("sql", "SELECT 7 AS a", "-f", "csv", "--out", str(out),
                           workspace=guard.ws), "exists; pass --force")
    one_line_error(run_cli("report", "--out", str(out), workspace=guard.ws), "--force")
    guard.check()
    run_cli("sql", "SELECT 7 AS a", "-f", "csv", "--out", str(out), "--force",
            workspace=guard.ws, check=True)
    assert out.read_text() == '"a"\n7\n'
    run_cli("report", "--out", str(out), "--force", workspace=guard.ws, check=True)
    assert out.read_text().startswith("<!doctype html>")


def test_files_directly_in_the_workspace_are_allowed(guard):
    run_cli("sql", "SELECT 7 AS a", "-f", "json", "--out", str(guard.ws / "r.json"),
            workspace=guard.ws, check=True)
    assert json.loads((guard.ws / "r.json").read_text()) == [{"a": 7}]


def test_the_default_report_is_replaced_while_it_is_vilactls_own(guard):
    report = guard.ws / "report.html"
    for _ in range(2):                     # the second run replaces vilactl's own report
        run_cli("report", workspace=guard.ws, check=True)
        assert report.read_text().startswith("<!doctype html>")
    report.write_text("my notes\n")        # someone else's file under that name
    one_line_error(run_cli("report", workspace=guard.ws), "report.html: exists; pass --force")
    assert report.read_text() == "my notes\n"
    run_cli("report", "--force", workspace=guard.ws, check=True)
    assert "vilactl report" in report.read_text()


def test_check_file_serves_generate_too(guard):
    """generate --out goes through the same check (its --input is never the output)."""
    q = guard.root / "q.jsonl"
    q.write_text("{}\n")
    for target, needle in [(q, "input of this command"), (guard.ws / "catalog.duckdb",
                                                          "the catalog")]:
        with pytest.raises(VilactlError, match=needle):
            check_file(guard.ws, target, inputs=(q,))
    with pytest.raises(VilactlError, match="--force"):
        check_file(guard.ws, guard.sentinel / "keep.txt")
    assert check_file(guard.ws, guard.sentinel / "keep.txt", force=True) == \
        guard.sentinel / "keep.txt"


def _capped(*args: str, fsize: int, workspace: Path) -> subprocess.CompletedProcess:
    """vilactl with files limited to `fsize` bytes (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a
    write past it fails with EFBIG as a full disk would with ENOSPC)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([*CLI, "--workspace", str(workspace), *args], capture_output=True,
                          text=True, timeout=120, preexec_fn=limit,
                          env={**os.environ, "COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.mark.parametrize("args", [["sql", "SELECT * FROM range(100000)", "-f", "csv"],
                                  ["sql", "SELECT * FROM range(100000)", "-f", "json"],
                                  ["sql", "SELECT range::VARCHAR || 'x' AS s FROM "
                                          "range(100000)", "-f", "parquet"],
                                  ["report"]])
def test_a_failed_write_is_one_line_and_leaves_no_file(shared, args):
    out = shared.sentinel / "out.file"
    proc = _capped(*args, "--out", str(out), fsize=1024, workspace=shared.ws)
    one_line_error(proc, f"{out}: cannot write: File too large")
    shared.check()                          # no out.file, no temp beside it


@pytest.mark.parametrize("args", [["sql", "SELECT 1 AS a", "-f", "csv"],
                                  ["sql", "SELECT 1 AS a", "-f", "json"],
                                  ["sql", "SELECT 1 AS a"],
                                  ["catalog"]])
def test_stdout_on_a_full_device_is_one_line(shared, args):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*CLI, "--workspace", str(shared.ws), *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    one_line_error(proc, "No space left on device")
    shared.check()


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_a_closed_stdout_is_one_line(shared, fmt):
    """Started with file descriptor 1 closed (`>&-`): Python's sys.stdout is None."""
    proc = subprocess.run([*CLI, "--workspace", str(shared.ws), "sql", "SELECT 1", "-f", fmt],
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=lambda: os.close(1))
    one_line_error(proc, "standard output is closed")


@pytest.mark.parametrize("fmt, rows", [("csv", 300000), ("table", 5000)])   # ≫ a pipe's 64 KB
def test_a_closed_pipe_ends_quietly(shared, fmt, rows):
    """`vilactl sql … | head -1`: exit 1 with nothing on stderr (no traceback)."""
    proc = subprocess.Popen([*CLI, "--workspace", str(shared.ws), "sql",
                             f"SELECT * FROM range({rows})", "-f", fmt],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()                    # the reader leaves, as head does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and err == "", err


def test_json_is_strict_and_csv_keeps_non_finite_floats(shared):
    q = ("SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::FLOAT AS c, 2.5 AS d, "
         "[1.5, 'nan'::DOUBLE] AS l, {'x': 'inf'::DOUBLE} AS s")

    def refuse(constant):
        raise AssertionError(f"bare {constant} in JSON")
    proc = run_cli("sql", q, "-f", "json", workspace=shared.ws, check=True)
    assert json.loads(proc.stdout, parse_constant=refuse) == [
        {"a": None, "b": None, "c": None, "d": 2.5, "l": [1.5, None], "s": {"x": None}}]
    lines = run_cli("sql", "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::DOUBLE AS c",
                    "-f", "csv", workspace=shared.ws, check=True).stdout.splitlines()
    a, b, c = map(float, lines[1].split(","))
    assert math.isnan(a) and b == math.inf and c == -math.inf


@pytest.mark.parametrize("flag, value", [("--timeout", "0"), ("--timeout", "-1"),
                                         ("--timeout", "nan"), ("--timeout", "inf"),
                                         ("--memory-gb", "0"), ("--memory-gb", "nan"),
                                         ("--memory-gb", "-2"), ("--memory-gb", "1e9")])
def test_sql_limits_are_checked(shared, flag, value):
    one_line_error(run_cli("sql", "SELECT 1", flag, value, workspace=shared.ws), flag)
    shared.check()


def test_sql_stops_at_its_timeout(shared):
    start = time.monotonic()
    proc = run_cli("sql", LONG, "--timeout", "1", workspace=shared.ws, timeout=60)
    one_line_error(proc, "stopped after --timeout 1 s", "raise it with --timeout")
    assert time.monotonic() - start < 20   # 1 s of query plus the interpreter's start
    shared.check()


@pytest.mark.parametrize("query, needle", [
    ("SELECT list(range) FROM range(50000000)", "needs more than --memory-gb 0.05"),
    ("SELECT * FROM range(10000000)", "result is larger than --memory-gb 0.05"),
])
def test_sql_stays_within_its_memory(shared, query, needle):
    proc = run_cli("sql", query, "--memory-gb", "0.05", "-f", "csv", workspace=shared.ws)
    one_line_error(proc, needle)
    shared.check()


def _threads(pid: int) -> list[str]:
    names = []
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            names.append(comm.read_text().strip())
        except OSError:                    # a thread that just ended
            pass
    return names


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_stops_a_long_query_and_writers_never_wait_for_it(guard):
    # SIGINT back to its default in the child: a shell's background job (CI run with `&`)
    # inherits it ignored, and Python then never turns it into KeyboardInterrupt
    proc = subprocess.Popen([*CLI, "--workspace", str(guard.ws), "sql", LONG],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while "vilactl-sql" not in _threads(proc.pid):      # the query's thread is running
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        # a writer runs while the query does: the query holds a copy, not the catalog file
        run_cli("register", "coyo", "--metadata", str(guard.inputs / "coyo.parquet"),
                "--name", "meta2", workspace=guard.ws, check=True,
                env={"VILACTL_LOCK_WAIT": "5"})
        assert proc.poll() is None         # … and the query is still going
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # out == "": DuckDB's progress bar (drawn on stdout after 2 s) stays off
    assert proc.returncode == 130 and err == "interrupted\n" and out == "", (err, out)
    assert time.monotonic() - start < 5
    assert sql(guard.ws, "SELECT count(*) AS n FROM samples_meta2") == [{"n": 9}]


def test_world_out_never_lands_on_what_the_catalog_or_the_workspace_owns(shared):
    """`vilactl world --out` replaces a folder whole: never a registered one, a managed one or
    one holding the workspace (it would have rewritten the registered world)."""
    ws = shared.ws
    shard = Path(sql(ws, "SELECT path FROM shards WHERE dataset = 'docs'")[0]["path"])
    for target, needle in [(ws / "datasets" / "w", "which vilactl manages"),
                           (shard.parent, "would write onto dataset docs"),
                           (shared.inputs, "would write onto dataset meta"),
                           (ws, "would write onto the catalog")]:
        one_line_error(run_cli("world", "--size", "tiny", "--out", str(target), workspace=ws),
                       needle)
        shared.check()
