"""`vilactl report`: one self-contained HTML file about a workspace.

Counts and failure reasons per stage, the CLIP score histogram (kept vs dropped, the cutoff),
image grids (top, bottom, around the cutoff, with captions), MMC4 variants rendered as
documents, blend composition, loss curves per stage and the eval table. Plots are matplotlib
PNGs and images are inlined as data URIs, so the file opens anywhere without the workspace. A
small script marks `<body data-images="loaded/total">` once the page has loaded (the test
checks it in headless Chromium).
"""
from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime
from pathlib import Path

from vilactl.base import atomic
from vilactl.base.paths import check_workspace
from vilactl.catalog import db, report_data

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f4f4f4}.grid{display:flex;flex-wrap:wrap;gap:8px}
.card{width:128px;font-size:11px}.card img{width:128px;height:128px;image-rendering:pixelated}
.kept{border:3px solid #2a2}.dropped{border:3px solid #c33}.doc{border:1px solid #ddd;
padding:8px;margin:8px 0}.doc img{width:64px;height:64px;vertical-align:middle;margin:2px}
.muted{color:#888}"""
SCRIPT = """window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
document.body.setAttribute('data-images',ok+'/'+im.length);});"""


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _thumb(data: bytes | None) -> str:
    from vilactl.curation.images import ImageProblem, open_image

    if not data:
        return ""
    buf = io.BytesIO()
    try:
        open_image(data).save(buf, "PNG")
    except ImageProblem:
        return '<span class="muted">(undecodable image)</span>'
    return f'<img src="{_uri(buf.getvalue())}" alt="">'


def _plot(draw, width: float = 7, height: float = 3.2) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    draw(ax)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f'<img src="{_uri(buf.getvalue())}" alt="plot">'


def _table(rows: list[dict], cols: list[str] | None = None) -> str:
    if not rows:
        return '<p class="muted">nothing recorded yet</p>'
    cols = cols or list(rows[0])

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(", ".join(map(str, v)) if isinstance(v, list) else str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _stages(runs: list[dict]) -> str:
    rows, reasons = [], {}
    for r in runs:
        c = r["counts"]
        keys = ("samples", "rows", "attempted", "succeeded", "images", "selected")
        rows.append({"command": r["command"], "status": r["status"],
                     **{k: c[k] for k in keys if isinstance(c.get(k), int | float)}})
        if isinstance(c.get("failed"), dict):
            reasons[r["command"].split(" --")[0]] = c["failed"]
    cols = ["command", "status", "attempted", "succeeded", "samples", "images"]
    out = _table(rows, cols)
    if reasons:
        def draw(ax):
            names = sorted({k for v in reasons.values() for k in v})
            for cmd, f in reasons.items():
                ax.barh([n + f" ({cmd.split()[-1]})" for n in names],
                        [f.get(n, 0) for n in names], label=cmd)
            ax.set_xlabel("failed URLs")
            ax.set_title("download failures by reason")
        out += _plot(draw, height=3.5)
    return out


def _curation(con) -> str:
    sel = report_data.selection(con)
    if sel is None:
        return '<p class="muted">no CLIP selection yet</p>'
    scores = report_data.scores_with_kept(con, sel)

    def draw(ax):
        kept = [s for s, k in scores if k]
        dropped = [s for s, k in scores if not k]
        ax.hist([dropped, kept], bins=40, stacked=True, color=["#c33", "#2a2"],
                label=[f"dropped ({len(dropped)})", f"kept ({len(kept)})"])
        if sel["cutoff"] is not None:
            ax.axvline(sel["cutoff"], color="k", ls="--", label=f"cutoff {sel['cutoff']:.3f}")
        ax.set_xlabel("CLIP score")
        ax.legend()
    e = {k: html.escape(str(sel[k])) for k in ("name", "k", "num_candidates", "dataset",
                                                "scores")}
    out = (f"<p>{e['name']}: top {e['k']} of {e['num_candidates']} pairs of {e['dataset']} "
           f"by CLIP score ({e['scores']})</p>" + _plot(draw))
    for where, title in (("top", "highest scores"), ("cutoff", "around the cutoff"),
                         ("bottom", "lowest scores")):
        cards = "".join(
            f'<div class="card"><div class="{"kept" if p["kept"] else "dropped"}">'
            f'{_thumb(p["image"])}</div>{p["score"]:.3f} · {html.escape(p["text"] or "")}</div>'
            for p in report_data.pairs_by_score(con, sel, where))
        out += f"<h3>{title}</h3><div class='grid'>{cards}</div>"
    return out


def _documents(docs: list[dict]) -> str:
    out = ""
    for d in docs:
        body = "".join(_thumb(s["image"]) if s["image"] is not None else
                       f"<span> {html.escape(s['text'] or '')} </span>" for s in d["segments"])
        out += (f'<div class="doc"><b>{html.escape(d["dataset"])}</b> '
                f'<span class="muted">{html.escape(d["sample_id"])}</span><br>{body}</div>')
    return out or '<p class="muted">no MMC4 variants yet</p>'


def _blends(components: list[dict]) -> str:
    if not components:
        return '<p class="muted">no blends yet</p>'

    def draw(ax):
        blends = sorted({c["blend"] for c in components})
        left = {b: 0.0 for b in blends}
        for c in components:
            ax.barh(c["blend"], c["achieved_share"], left=left[c["blend"]],
                    label=f"{c['blend']}: {c['dataset']}")
            left[c["blend"]] += c["achieved_share"]
        ax.set_xlabel("achieved share (of images; of samples for text-only components)")
        ax.legend(fontsize=7, loc="lower right")
    return _plot(draw) + _table(components)


def _losses(runs: list[dict]) -> str:
    curves = []
    for r in runs:
        path = Path(r["path"]).parent / "metrics.jsonl"
        if path.exists():
            recs = [json.loads(line) for line in path.read_text().splitlines()]
            curves.append((f"{r['id']} ({r['stage']})", [x["step"] for x in recs],
                           [x["loss"] for x in recs]))
    if not curves:
        return '<p class="muted">no training runs yet</p>'

    def draw(ax):
        for label, steps, losses in curves:
            ax.plot(steps, losses, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    return _plot(draw, height=3.6)


HEAD = "<!doctype html><html><head><meta charset='utf-8'><title>vilactl report</title>"


def _ours(path: Path) -> bool:
    """Whether `path` is a report vilactl wrote (it begins with the report's own head)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(HEAD)) == HEAD.encode()
    except OSError:
        return False


def build(workspace: Path, out: Path | None = None, force: bool = False) -> Path:
    """Write the report to `out` (checked by out_paths.check_file: never onto the catalog or
    what it records, an existing file only with `force`). The default
    `<workspace>/report.html` is replaced without `force` while it is vilactl's own report."""
    from vilactl.pipeline.jobs.out_paths import check_file, write_errors

    default = Path(workspace) / "report.html"
    out = Path(out or default)
    if db.catalog_path(workspace).exists():          # else db.reader says "no catalog here"
        mine = out.resolve() == default.resolve() and _ours(out)
        out = check_file(Path(workspace), out, "--out", force=force or mine)
    with db.reader(workspace) as con:
        sections = [
            ("Datasets", _table(report_data.datasets(con))),
            ("Counts and failures per stage", _stages(report_data.stage_counts(con))),
            ("CLIP curation", _curation(con)),
            ("MMC4 variants (first document of each)",
             _documents(report_data.first_samples(con))),
            ("Blends", _blends(report_data.blend_components(con))),
            ("Training loss per stage", _losses(report_data.training_runs(con))),
            ("Evaluation", _table(report_data.evals(con))),
        ]
    body = "".join(f"<h2>{html.escape(t)}</h2>{s}" for t, s in sections)
    page = (f"{HEAD}<style>{CSS}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>vilactl report</h1><p class='muted'>{html.escape(str(workspace.resolve()))}"
            f" · {datetime.now():%Y-%m-%d %H:%M}</p>{body}</body></html>")
    if out == workspace / "report.html":     # one line if the workspace is read-only
        check_workspace(workspace, write=True)
    with write_errors(out):
        atomic.write_text(out, page)
    return out
