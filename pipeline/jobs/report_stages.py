"""The report's run sections: every pipeline run with its status and the counts it recorded,
download failures by reason, and what the MMC4 build dropped with incomplete documents."""
from __future__ import annotations

from vilactl.pipeline.jobs.report_html import PALETTE, chart, esc, muted

STATUS = {"ok": "ok", "running": "running", "failed": "failed"}
SHOWN = 12             # counts shown per run before the rest folds away


def _short(command: str) -> str:
    """`vilactl download coyo --name …` → `download coyo` (the stage and its corpus, for
    labels)."""
    words = command.split()[1:3]
    return " ".join(w for w in words if not w.startswith("-")) or command


def _count(k: str, v) -> str:
    if isinstance(v, dict):
        inner = ", ".join(f"{a} {b if not isinstance(b, dict | list) else '…'}"
                          for a, b in v.items())
        return f"<b>{esc(k)}</b>: {esc(inner) or '—'}"
    if isinstance(v, list):
        return f"<b>{esc(k)}</b>: {esc(', '.join(map(str, v[:8])))}{' …' * (len(v) > 8)}"
    return f"<b>{esc(k)}</b> {f'{v:.4g}' if isinstance(v, float) else esc(v)}"


def _counts(c: dict) -> str:
    """Every count a run recorded, on a few lines: scalars as `name value`, nested ones as
    `name: a 1, b 2`; past SHOWN of them the rest folds into a <details>."""
    items = [_count(k, v) for k, v in c.items()]
    if not items:
        return '<span class="muted">no counts recorded</span>'
    head = " · ".join(items[:SHOWN])
    if len(items) > SHOWN:
        head += (f"<details><summary>{len(items) - SHOWN} more counts</summary>"
                 f"{' · '.join(items[SHOWN:])}</details>")
    return f'<div class="counts">{head}</div>'


def _row(r: dict) -> str:
    status = STATUS.get(r["status"], "failed")
    note = ""
    if r["status"] == "running":
        note = '<br><span class="muted">still running or killed: counts may be partial</span>'
    elif r["error"]:
        note = f'<br><span class="muted">{esc(r["error"][:300])}</span>'
    started = r["started_at"].strftime("%m-%d %H:%M:%S") if r["started_at"] else ""
    return (f'<tr class="run-{status}" data-status="{esc(r["status"])}">'
            f'<td><span class="badge {status}">{esc(r["status"])}</span></td>'
            f"<td>{esc(r['command'])}{note}</td><td>{esc(started)}</td>"
            f"<td>{_counts(r['counts'])}</td></tr>")


def runs_table(runs: list[dict]) -> str:
    if not runs:
        return muted("no runs yet")
    n = {s: sum(r["status"] == s for r in runs) for s in ("running", "failed")}
    summary = (f"<p>{len(runs)} runs: {len(runs) - n['running'] - n['failed']} ok, "
               f"{n['running']} running (or killed), {n['failed']} failed. Running runs are "
               "marked yellow, failed ones red.</p>")
    body = "".join(_row(r) for r in runs)
    return (summary + '<div class="scroll"><table class="runs"><tr><th>status</th>'
            f"<th>command</th><th>started</th><th>counts recorded</th></tr>{body}</table></div>")


def _failures(runs: list[dict]) -> str:
    """One bar group per failure reason, one colour per download run that had failures."""
    series = [(_short(r["command"]), r["counts"]["failed"]) for r in runs
              if r["status"] == "ok" and isinstance(r["counts"].get("failed"), dict)
              and r["counts"]["failed"]]
    if not series:
        return muted("no download failures recorded")
    reasons = sorted({k for _, f in series for k in f})
    colors = PALETTE[:len(series)]
    height = 1.0 + 0.22 * len(reasons) * len(series)

    def draw(ax):
        bar = 0.8 / len(series)
        for i, ((_label, f), c) in enumerate(zip(series, colors)):
            ys = [j + i * bar for j in range(len(reasons))]
            ax.barh(ys, [f.get(k, 0) for k in reasons], height=bar, color=c)
        ax.set_yticks([j + bar * (len(series) - 1) / 2 for j in range(len(reasons))], reasons)
        ax.invert_yaxis()
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("failed URLs")
    items = [(f"{label} ({sum(f.values())} failed)", c) for (label, f), c in zip(series, colors)]
    return chart("download-failures", "download failures by reason", draw, items,
                 sum(len(f) for _, f in series), height=min(height, 6))


def _incomplete(runs: list[dict]) -> str:
    """Images an MMC4 download fetched but dropped with their documents: a document keeps its
    images only when every one downloaded (VILA's rule), so one failed URL costs the others."""
    out = ""
    for r in runs:
        c, docs = r["counts"], r["counts"].get("documents")
        if r["status"] != "ok" or not isinstance(docs, dict) or "succeeded" not in c:
            continue
        lost = int(c["succeeded"]) - int(docs.get("images_kept", 0))
        dropped = docs.get("docs_dropped_missing_images", 0) + docs.get("docs_dropped_no_images", 0)
        out += (f'<p class="note" data-dropped-images="{lost}"><b>{esc(_short(r["command"]))}'
                f"</b>: {c['succeeded']} of {c.get('attempted', '?')} images downloaded, "
                f"{docs.get('images_kept', 0)} kept. The other <b>{lost}</b> downloaded fine but "
                f"were dropped with the {dropped} of {docs.get('docs_in', '?')} documents that "
                "lost at least one image: a document is kept only when all its images "
                "downloaded (VILA's rule), so they are not download failures and are not in "
                "the chart.</p>")
    return out


def section(runs: list[dict]) -> str:
    return runs_table(runs) + _failures(runs) + _incomplete(runs)
