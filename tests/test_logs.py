"""The demo as a log reader sees it: tests/conftest.py runs `vilactl demo --size tiny` with its
output captured (no terminal, no COLUMNS) and VILACTL_PROGRESS_SECONDS=0, in a workspace whose
paths are longer than a terminal line. Every path, dataset name and suggested command must be
on one line (greppable, pasteable), and the long phases must print progress lines."""
import re

import pytest
from conftest import assert_whole, sql


def demo_log(demo_ws) -> str:
    return (demo_ws.parent / "demo.log").read_text()


def test_demo_log_keeps_paths_names_and_commands_whole(demo_ws):
    log = demo_log(demo_ws)
    # what the demo made (other tests add datasets and checkpoints to this workspace later)
    before = ("created_at <= (SELECT min(finished_at) FROM runs "
              "WHERE command = 'vilactl demo:report')")
    names = [r["name"] for r in sql(demo_ws, f"SELECT name FROM datasets WHERE {before}")]
    ckpts = sql(demo_ws, f"SELECT id, path FROM checkpoints WHERE stage <> 'clip' AND {before}")
    assert len(names) >= 19
    hint = log.split("ask the demo model about an image:\n", 1)[1].splitlines()[0]
    assert hint.startswith("vilactl --workspace ") and " generate --checkpoint sft@" in hint
    ws = demo_ws.resolve()
    saved = [f"checkpoint {c['id']} at {c['path']}" for c in ckpts]
    assert len(saved) == 3 and all(len(line) > 80 for line in saved)   # a wrap would show
    assert_whole(log, [*names, *saved, f"report: {ws / 'report.html'}",
                       str(ws / "catalog.duckdb"), hint])
    table = [line for line in log.splitlines() if line.startswith("│ blend_pretrain ")]
    assert len(table) == 1 and "mmc4_interleaved,coyo_curated" in table[0]


def test_assert_whole_catches_a_path_broken_by_a_wrap():
    text = "checkpoint sft@6 at /tmp/some/long/workspace/check\npoints/sft/step-000006\n"
    with pytest.raises(AssertionError, match="split across lines"):
        assert_whole(text, ["/tmp/some/long/workspace/checkpoints/sft/step-000006"])
    with pytest.raises(AssertionError, match="not printed"):
        assert_whole(text, ["blend_sft"])


def test_long_phases_print_progress_lines_in_a_log(demo_ws):
    log = demo_log(demo_ws)
    clip = re.findall(r"^demo CLIP: (\d+)/(\d+) steps, \S+ steps/s, (eta \S+, )?loss [\d.]+, "
                      r"\S+$", log, re.M)
    total = int(clip[-1][1])
    assert [int(done) for done, *_ in clip] == list(range(1, total + 1))   # one per step
    assert all(eta for _, _, eta in clip[:-1]) and not clip[-1][2]        # ETA until the end
    passes = [int(d) for d in re.findall(r"^eval: (\d+)/7 passes, ", log, re.M)]
    assert passes == list(range(1, 8))
    assert re.search(r"^score: 3/3 shards, \d+ rows, \S+ rows/s, ", log, re.M)
    for stage in ("projector", "pretrain", "sft"):
        steps = sql(demo_ws, f"SELECT step FROM checkpoints WHERE stage = '{stage}'")[0]["step"]
        assert re.search(rf"^  step +{steps}/{steps}  loss [\d.]+  lr ", log, re.M), stage
