"""The default demo's eval holds a floor, so that a recipe change that costs accuracy fails CI.

The default `vilactl demo` is deterministic (same seed, same numbers on this kind of machine:
two runs of main gave identical per-type numbers), so its eval is a regression test of the
whole recipe: world, download, CLIP curation, blends and the three training stages. Issue 24
asks every question type to be read from the image — at least twice the majority answer and 15
points over the same model shown a blank image. `colour` meets that; the others do not yet
(docs/train.md, "What the demo model learns"), so for them the floor is what the recipe
reaches today, a few points under the measured margin over the blank image: a change that
loses it fails here, and a change that meets the goal should move the type to READ_FROM_IMAGE.
"""
from __future__ import annotations

import duckdb
import pytest
from conftest import run_cli

QUESTION_TYPES = ("color", "shape", "position", "count")
READ_FROM_IMAGE = ("color",)               # issue 24's bar: ≥ 2× majority and ≥ blank + 0.15
# the 0-shot margin over the blank-image control each other type must keep (measured, minus
# a few points: docs/train.md)
MARGIN_OVER_BLANK = {"count": 0.14, "shape": 0.13, "position": 0.07}   # measured .162/.150/.087
OVERALL_FLOOR_0SHOT = 0.44                                            # measured 0.458
DEMO_LIMIT_S = 2400


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    ws = tmp_path_factory.mktemp("default-demo") / "ws"
    run_cli("demo", workspace=ws, check=True, timeout=DEMO_LIMIT_S,
            env={"COLUMNS": None, "VILACTL_PROGRESS_SECONDS": "60"})
    con = duckdb.connect(str(ws / "catalog.duckdb"), read_only=True)
    rows = con.execute("SELECT metric, shots, value FROM evals WHERE dataset = 'eval_vqa' "
                       "AND checkpoint = 'sft@120'").fetchall()
    con.close()
    return {(metric, shots): value for metric, shots, value in rows}


@pytest.mark.timeout(DEMO_LIMIT_S + 300)
@pytest.mark.parametrize("kind", QUESTION_TYPES)
def test_every_question_type_is_read_from_the_image(default_demo, kind):
    acc = default_demo[(f"accuracy:{kind}", 0)]
    blank = default_demo[(f"accuracy_blank_image:{kind}", 0)]
    majority = default_demo[(f"majority_baseline:{kind}", 0)]
    numbers = f"{kind}: 0-shot {acc:.3f}, blank image {blank:.3f}, majority {majority:.3f}"
    if kind in READ_FROM_IMAGE:
        assert acc >= 2 * majority, numbers
        assert acc >= blank + 0.15, numbers
    else:
        assert acc >= blank + MARGIN_OVER_BLANK[kind], numbers


@pytest.mark.timeout(DEMO_LIMIT_S + 300)
def test_overall_vqa_floor(default_demo):
    assert default_demo[("accuracy", 0)] >= OVERALL_FLOOR_0SHOT, default_demo[("accuracy", 0)]
