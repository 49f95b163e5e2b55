"""Shared fixtures: the real-format samples in ../shared/data, a tiny world, and a CLI runner.

Everything is generated or read from shared/; nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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


def run_cli(*args: str, workspace: Path | None = None, env: dict | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vilactl.pipeline.cli"]
    if workspace is not None:
        cmd += ["--workspace", str(workspace)]
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, env=full_env,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"vilactl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def catalog_snapshot(workspace: Path) -> dict:
    """Every row of every catalog table, for 'the catalog is unchanged' assertions."""
    import duckdb

    con = duckdb.connect(str(workspace / "catalog.duckdb"), read_only=True)
    try:
        tables = [r[0] for r in con.sql("SELECT table_name FROM information_schema.tables "
                                        "ORDER BY 1").fetchall()]
        return {t: sorted(map(repr, con.sql(f'SELECT * FROM "{t}"').fetchall())) for t in tables}
    finally:
        con.close()
