"""The report's CLIP curation section: every selection in the catalog (a later `curate --top-k`
does not hide an earlier one), each with its score histogram (kept vs dropped, the cutoff) and
image grids (highest, around the cutoff, lowest; green = kept, red = dropped)."""
from __future__ import annotations

from vilactl.catalog import report_data
from vilactl.pipeline.jobs.report_html import DROPPED, KEPT, chart, esc, muted, table, thumb

CUTOFF = "#000000"


def _histogram(sel: dict, scores: list[tuple[float, bool]]) -> str:
    kept = [s for s, k in scores if k]
    dropped = [s for s, k in scores if not k]

    def draw(ax):
        import numpy as np

        bins = np.histogram_bin_edges([s for s, _ in scores], bins=40)
        # Drawn side by side on a log count axis: a top-20 selection of 900 pairs would be an
        # invisible sliver stacked on a linear axis.
        ax.hist([dropped, kept], bins=bins, stacked=True, color=[DROPPED, KEPT], log=True)
        if sel["cutoff"] is not None:
            ax.axvline(sel["cutoff"], color=CUTOFF, ls="--")
        ax.set_xlabel("CLIP score")
        ax.set_ylabel("pairs (log scale)")
    items = [(f"dropped ({len(dropped)})", DROPPED), (f"kept ({len(kept)})", KEPT)]
    if sel["cutoff"] is not None:
        items.append((f"cutoff {sel['cutoff']:.3f} (dashed)", CUTOFF))
    return chart(f"clip-scores:{sel['name']}", f"{sel['name']}: CLIP scores, kept vs dropped",
                 draw, items, len(scores))


def _grids(con, sel: dict, ends: bool) -> str:
    """Image grids around the cutoff, and (`ends`) of the highest and lowest scores: those are
    the same pairs for every selection by the same scores, so they are shown once."""
    out = ""
    for where, title in (("top", "highest scores"), ("cutoff", "around the cutoff"),
                         ("bottom", "lowest scores")):
        if where != "cutoff" and not ends:
            continue
        cards = "".join(
            f'<div class="card"><div class="{"kept" if p["kept"] else "dropped"}">'
            f'{thumb(p["image"])}</div><div class="cap" title="{esc(p["text"] or "")}">'
            f'{p["score"]:.3f} · {esc(p["text"] or "")}</div></div>'
            for p in report_data.pairs_by_score(con, sel, where))
        out += f"<h4>{esc(sel['name'])}: {title}</h4><div class='grid'>{cards}</div>"
    return out


def _one(con, sel: dict, ends: bool) -> str:
    head = (f'<h3 data-selection="{esc(sel["name"])}">{esc(sel["name"])}</h3>'
            f"<p>top {esc(sel['k'])} of {esc(sel['num_candidates'])} pairs of "
            f"{esc(sel['dataset'])} by {esc(sel['score_expr'] or 'score')}: "
            f"{esc(sel['num_selected'])} kept.</p>")
    if not sel["scores"]:
        return head + muted("no CLIP scores dataset of this source to plot")
    scores = report_data.scores_with_kept(con, sel)
    return head + _histogram(sel, scores) + _grids(con, sel, ends)


def section(con) -> str:
    sels = report_data.selections(con)
    if not sels:
        return muted("no CLIP selection yet")
    first: dict = {}                     # the newest selection of each scores dataset
    for s in sels:
        first[s["scores"]] = s
    cols = ["name", "dataset", "k", "num_candidates", "num_selected", "cutoff", "scores",
            "created_at"]
    return (f"<p>{len(sels)} selection{'s' * (len(sels) != 1)} (table oldest first, charts "
            "newest first; the highest and lowest scores are shown once per scores).</p>"
            + table(sels, cols, cls="selections")
            + "".join(_one(con, s, s is first.get(s["scores"])) for s in reversed(sels)))
