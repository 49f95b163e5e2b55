"""The report's training section: one loss chart per stage (projector, pretrain, sft), each run
of the stage a line against the trained tokens it had seen, on a y axis fitted to the losses
(stages differ by an order of magnitude; one shared 0-based axis flattened them)."""
from __future__ import annotations

import json
from pathlib import Path

from vilactl.pipeline.jobs.report_html import PALETTE, chart, muted

STAGES = ("projector", "pretrain", "sft")


def _curve(run: dict) -> tuple[list[int], list[float], bool] | None:
    """(tokens seen, loss, whether x is tokens) from a run's metrics.jsonl; logs written
    before target_tokens was recorded fall back to steps."""
    path = Path(run["path"]).parent / "metrics.jsonl"
    if not path.exists():
        return None
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not recs:
        return None
    if all("target_tokens" in r for r in recs):
        seen, xs = 0, []
        for r in recs:
            seen += int(r["target_tokens"])
            xs.append(seen)
        return xs, [r["loss"] for r in recs], True
    return [r["step"] for r in recs], [r["loss"] for r in recs], False


def _stage_chart(stage: str, curves: list[tuple[str, list, list, bool]]) -> str:
    colors = PALETTE[:len(curves)]
    tokens = all(c[3] for c in curves)

    def draw(ax):
        for (_, xs, ys, _), c in zip(curves, colors):
            ax.plot(xs, ys, color=c, lw=1.6, marker="." if len(xs) < 30 else None)
        ax.set_xlabel("trained (target) tokens seen" if tokens else "step")
        ax.set_ylabel("loss")
        ax.margins(y=0.08)              # the axis fits the losses, not 0
    items = [(f"{label}: {ys[0]:.3f} → {ys[-1]:.3f} over {len(ys)} steps", c)
             for (label, _, ys, _), c in zip(curves, colors)]
    return chart(f"loss:{stage}", f"{stage}: training loss", draw, items,
                 sum(len(c[2]) for c in curves), width=5.2, height=3.0)


def section(runs: list[dict]) -> str:
    by_stage: dict[str, list] = {}
    for r in runs:
        got = _curve(r)
        if got:
            by_stage.setdefault(r["stage"], []).append((str(r["id"]), *got))
    if not by_stage:
        return muted("no training runs yet")
    order = [s for s in STAGES if s in by_stage] + sorted(set(by_stage) - set(STAGES))
    return ("<p>One chart per stage; each line is a run's loss per optimizer step.</p>"
            + '<div class="charts">' + "".join(_stage_chart(s, by_stage[s]) for s in order)
            + "</div>")
