"""Shared fixtures: the real-format samples in ../shared/data, a tiny world, and a CLI runner.

Everything is generated or read from shared/; nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("VILACTL_SHARED_DATA", REPO.parent / "shared" / "data"))
    assert (path / "coyo700m_rows.jsonl").exists(), f"real-format samples not found in {path}"
    return path


@pytest.fixture(scope="session")
def coyo_rows(shared_data) -> list[dict]:
    lines = (shared_data / "coyo700m_rows.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture
def coyo_parquet(tmp_path, coyo_rows) -> Path:
    """The 9 real COYO-700M rows as a Parquet file, the format COYO ships in."""
    path = tmp_path / "coyo" / "part-00000.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(coyo_rows), path)
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    from vilactl.curation.world import PRESETS, generate

    out = tmp_path_factory.mktemp("world")
    generate(out, PRESETS["tiny"])
    return out


def run_cli(*args: str, workspace: Path | str | None = None, env: dict | None = None,
            check: bool = False, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vilactl.pipeline.cli"]
    if workspace is not None:
        cmd += ["--workspace", str(workspace)]
    # env values of None unset the variable (COLUMNS=None: rich sees no width, as in a log)
    full_env = {k: v for k, v in {**os.environ, "COLUMNS": "200", **(env or {})}.items()
                if v is not None}
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"vilactl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


# The first test that asks for the demo workspace waits for the tiny demo (~3 min on a quiet
# 2-core machine, 12 min seen under load): give those tests room beyond pytest's 600 s, so
# that the demo's own subprocess limit below is the one that speaks.
DEMO_TIMEOUT = 1500


def pytest_collection_modifyitems(items):
    for item in items:
        if "demo_ws" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
                "timeout"):
            item.add_marker(pytest.mark.timeout(DEMO_TIMEOUT + 300))


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory) -> Path:
    """`vilactl demo --size tiny`, once per session. Tests that write into a workspace copy it
    (`workspace_copy`) so that the demo's own checks see the demo alone. It runs as in a log
    (no terminal, no COLUMNS) with a progress line at every update; its output is kept in
    `demo.log` beside the workspace for tests/test_logs.py."""
    ws = tmp_path_factory.mktemp("demo-workspace-with-paths-longer-than-a-terminal-line") / "ws"
    first = run_cli("demo", "--size", "tiny", workspace=ws, check=True,
                    timeout=DEMO_TIMEOUT, env={"COLUMNS": None, "VILACTL_PROGRESS_SECONDS": "0"})
    assert "mirror serving" in first.stdout and "datasets" in first.stdout
    (ws.parent / "demo.log").write_text(first.stdout + first.stderr)
    return ws


def assert_whole(text: str, tokens: list[str]) -> None:
    """Each token (a path, a dataset name, a suggested command) is printed, and never split
    across lines: joining the lines would otherwise reveal more copies than the text has."""
    joined = text.replace("\n", "")
    for token in tokens:
        assert token in joined, f"{token!r} is not printed"
        assert text.count(token) == joined.count(token), f"{token!r} is split across lines"


def workspace_copy(ws: Path, dest: Path) -> Path:
    """A copy of a workspace's catalog (its shard paths still point at the original data)."""
    import shutil

    dest.mkdir(parents=True)
    shutil.copy(ws / "catalog.duckdb", dest / "catalog.duckdb")
    return dest


def sql(workspace: Path, query: str) -> list[dict]:
    """Rows of a read-only query through `vilactl sql --format json`."""
    return json.loads(run_cli("sql", query, "--format", "json", workspace=workspace,
                              check=True).stdout)


def catalog_snapshot(workspace: Path) -> dict:
    """Every row of every catalog table but failed runs, for 'nothing was recorded but the
    failure' assertions (a command that fails while working records its run as failed)."""
    import duckdb

    con = duckdb.connect(str(workspace / "catalog.duckdb"), read_only=True)
    try:
        tables = [r[0] for r in con.sql("SELECT table_name FROM information_schema.tables "
                                        "ORDER BY 1").fetchall()]
        where = {"runs": " WHERE status <> 'failed'"}
        return {t: sorted(map(repr, con.sql(f'SELECT * FROM "{t}"{where.get(t, "")}')
                              .fetchall())) for t in tables}
    finally:
        con.close()


def failed_runs(workspace: Path) -> list[dict]:
    """(command, error) of the failed runs, oldest first."""
    return sql(workspace, "SELECT command, error, target FROM runs WHERE status = 'failed' "
                          "ORDER BY started_at")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head on 127.0.0.1 for the session (`ray start --head`), stopped at the end.

    Tests pass its address with --ray-address, which also exercises the cluster path."""
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    # Loopback only: Ray would otherwise swap 127.0.0.1 for the machine's network address.
    # `ray start` enables token auth (the token in ~/.ray/auth_token); clients must opt in.
    extra = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
             "RAY_AUTH_MODE": "token"}
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    # A temp dir of its own lets teardown stop this head only: `ray stop` would kill every Ray
    # on the machine, including another checkout's test session.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    subprocess.run([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                    f"--temp-dir={temp_dir}"],
                   check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stop_processes_mentioning(marker: str, wait_s: float = 30.0) -> None:
    """SIGTERM (then SIGKILL) every process whose command line contains marker."""
    import signal
    import time

    def pids() -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if marker.encode() in (d / "cmdline").read_bytes():
                        out.append(int(d.name))
                except OSError:
                    pass
        return out

    for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 5.0)):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        end = time.monotonic() + wait
        while pids() and time.monotonic() < end:
            time.sleep(0.2)
        if not pids():
            return


def file_tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file under root (relative path → sha256), for 'nothing was written' assertions."""
    import hashlib

    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(skip):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The single stderr line of a failed command, checked to contain every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, proc.stderr[-2000:])
    assert lines[0].startswith("error: "), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


class Untouched:
    """A workspace, a sentinel folder beside it and the folder holding both: snapshot them,
    then `check()` that a refused command changed none of it (failed run rows and lock files
    are the only traces a refusal may leave)."""

    def __init__(self, root: Path):
        self.root, self.ws, self.sentinel = root, root / "ws", root / "sentinel"
        self.sentinel.mkdir(exist_ok=True)
        (self.sentinel / "keep.txt").write_text("must survive")
        self.snap()

    def snap(self) -> None:
        self.catalog = catalog_snapshot(self.ws) if (self.ws / "catalog.duckdb").exists() else {}
        self.files = file_tree(self.ws, skip=("catalog.duckdb", ".locks"))
        self.outside = sorted(p.name for p in self.root.iterdir())
        self.kept = file_tree(self.sentinel)

    def check(self) -> None:
        assert (self.sentinel / "keep.txt").read_text() == "must survive"
        assert file_tree(self.sentinel) == self.kept
        assert sorted(p.name for p in self.root.iterdir()) == self.outside
        assert file_tree(self.ws, skip=("catalog.duckdb", ".locks")) == self.files
        if self.catalog:
            assert catalog_snapshot(self.ws) == self.catalog


def run_shape(row: dict) -> dict:
    """What a `runs` row holds, whatever its values: which columns are set, the JSON kinds,
    a `vilactl …` command, and an error exactly when the run failed."""
    shape = {k: v is not None for k, v in row.items() if k not in ("status", "error")}
    for k in ("args", "counts", "versions"):
        shape[k] = type(json.loads(row[k])).__name__ if row[k] is not None else None
    shape["command"] = str(row["command"]).startswith("vilactl ")
    shape["status"] = row["status"] in ("ok", "failed")
    shape["error_iff_failed"] = (row["error"] is not None) == (row["status"] == "failed")
    return shape


@pytest.fixture
def guard(tmp_path) -> Untouched:
    """A new, empty workspace (catalog only) with a sentinel beside it, snapped for checks."""
    g = Untouched(tmp_path)
    run_cli("init", workspace=g.ws, check=True)
    g.snap()
    return g
