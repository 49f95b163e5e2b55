"""`vilactl report`: one self-contained HTML file, the dashboard of a workspace's run.

Datasets; every run with its status and the counts it recorded, download failures by reason
and what the MMC4 build dropped (report_stages); every CLIP selection with its score histogram
and image grids (report_curation); MMC4 variants rendered as documents; blend composition; one
loss chart per training stage (report_train); eval grids with controls and example predictions
(report_eval); each ablation study as the paper's table with our direction against
the paper's (report_ablate). Page and chart primitives live in report_html, the SQL in
catalog/report_data. Plots are matplotlib PNGs and images are inlined as data URIs, so the
file opens anywhere without the workspace.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from vilactl.base import atomic
from vilactl.base.paths import check_workspace
from vilactl.catalog import db, report_data
from vilactl.pipeline.jobs import (
    report_ablate,
    report_curation,
    report_eval,
    report_stages,
    report_train,
)
from vilactl.pipeline.jobs.report_html import HEAD, PALETTE, chart, esc, muted, page, table, thumb


def _documents(docs: list[dict]) -> str:
    out = ""
    for d in docs:
        body = "".join(thumb(s["image"]) if s["image"] is not None else
                       f"<span> {esc(s['text'] or '')} </span>" for s in d["segments"])
        out += (f'<div class="doc"><b>{esc(d["dataset"])}</b> '
                f'<span class="muted">{esc(d["sample_id"])}</span><br>{body}</div>')
    return out or muted("no MMC4 variants yet")


def _blends(components: list[dict]) -> str:
    """One stacked bar per blend, one colour per component dataset (legend under the plot)."""
    if not components:
        return muted("no blends yet")
    blends = list(dict.fromkeys(c["blend"] for c in components))
    datasets = list(dict.fromkeys(c["dataset"] for c in components))
    color = dict(zip(datasets, PALETTE * (len(datasets) // len(PALETTE) + 1)))

    def draw(ax):
        left = {b: 0.0 for b in blends}
        for c in components:
            ax.barh(c["blend"], c["achieved_share"], left=left[c["blend"]],
                    color=color[c["dataset"]], edgecolor="white")
            left[c["blend"]] += c["achieved_share"]
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("achieved share")
    items = [(d, color[d]) for d in datasets]
    return (chart("blends", "blend composition (share of images; of samples for text-only "
                  "components)", draw, items, len(components), height=0.9 + 0.5 * len(blends))
            + table(components))


def _sections(con, workspace: Path) -> list[tuple[str, str]]:
    return [
        ("Datasets", table(report_data.datasets(con))),
        ("Runs: status and counts per stage", report_stages.section(
            report_data.stage_counts(con))),
        ("CLIP curation", report_curation.section(con)),
        ("MMC4 variants (first document of each)", _documents(report_data.first_samples(con))),
        ("Blends", _blends(report_data.blend_components(con))),
        ("Training loss per stage", report_train.section(report_data.training_runs(con))),
        ("Evaluation", report_eval.section(con, workspace)),
        ("Ablations (mean ± std over seeds, against the paper)", report_ablate.section(con)),
    ]


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
        sections = _sections(con, Path(workspace))
    text = page(str(Path(workspace).resolve()), f"{datetime.now():%Y-%m-%d %H:%M}", sections)
    if out == workspace / "report.html":     # one line if the workspace is read-only
        check_workspace(workspace, write=True)
    with write_errors(out):
        atomic.write_text(out, text)
    return out
