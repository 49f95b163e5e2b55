"""`vilactl report` as a dashboard, opened in headless Chromium at desktop (1400 px) and phone
(390 px) width: every CLIP selection listed, a legend on every chart and no empty chart, one loss
chart per training stage, running runs marked, the eval grid (0-shot/4-shot columns, the
controls beside them) with example predictions and their images, and no sideways scrolling of
the text on a phone. Set REPORT_SHOTS to a folder to keep the two screenshots."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import run_cli, sql, workspace_copy
from PIL import Image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


VOID = ("img", "br", "meta", "link", "input", "hr", "source", "wbr")    # elements never closed


class Page(HTMLParser):
    """The charts of a page (their data attributes, legend entries and images) and every
    element's attributes, from the DOM Chromium dumps."""

    def __init__(self, text: str):
        super().__init__()
        self.charts: list[dict] = []
        self.elements: list[tuple[str, dict]] = []
        self._open: list[dict | None] = []        # the chart each open element belongs to
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        chart = self._open[-1] if self._open else None
        if tag == "figure" and "chart" in a.get("class", "").split():
            chart = {**a, "legend_items": 0, "images": 0}
            self.charts.append(chart)
        if chart is not None and tag == "li":
            chart["legend_items"] += 1
        if chart is not None and tag == "img" and a.get("src", "").startswith("data:image/"):
            chart["images"] += 1
        if tag not in VOID:
            self._open.append(chart)

    def handle_endtag(self, tag):
        if tag not in VOID and self._open:
            self._open.pop()

    def having(self, attr: str) -> list[tuple[str, dict]]:
        return [(t, a) for t, a in self.elements if attr in a]


def chart_problems(page: Page) -> list[str]:
    """What is wrong with the page's charts: no legend, a legend that does not match the series,
    nothing drawn, no image."""
    out = []
    for c in page.charts:
        name = c.get("data-chart", "?")
        labels = [x for x in c.get("data-legend", "").split("|") if x]
        series = int(c.get("data-series") or 0)
        if not labels or c["legend_items"] == 0:
            out.append(f"{name}: no legend")
        elif not (len(labels) == c["legend_items"] == series):
            out.append(f"{name}: {series} series, {len(labels)} labels, "
                       f"{c['legend_items']} legend entries")
        if int(c.get("data-points") or 0) <= 0:
            out.append(f"{name}: empty chart")
        if c["images"] != 1:
            out.append(f"{name}: {c['images']} plot images")
    return out


def test_chart_checker_flags_a_chart_without_legend_and_an_empty_one():
    good = ('<figure class="chart" data-chart="a" data-series="1" data-points="3" '
            'data-legend="x"><img src="data:image/png;base64,AA"><ul class="legend"><li>x</li>'
            "</ul></figure>")
    no_legend = ('<figure class="chart" data-chart="b" data-series="1" data-points="3" '
                 'data-legend=""><img src="data:image/png;base64,AA"></figure>')
    empty = good.replace('"a"', '"c"').replace('data-points="3"', 'data-points="0"')
    assert chart_problems(Page(good)) == []
    assert chart_problems(Page(good + no_legend + empty)) == ["b: no legend", "c: empty chart"]


# Headless Chromium will not make a window narrower than 500 px, so the phone view is the
# report in a 390 px iframe; the harness copies what the report's load script measured (and
# any element outside a table's scroller that sticks out past the right edge) onto its body.
PHONE = """<!doctype html><html><body style="margin:0">
<iframe id="f" src="REPORT" style="width:390px;height:16000px;border:0"></iframe><script>
document.getElementById('f').addEventListener('load', function () {
  var d = this.contentDocument, w = d.documentElement.clientWidth, wide = [];
  d.querySelectorAll('body *').forEach(function (e) {
    if (!e.closest('.scroll') && e.getBoundingClientRect().right > w + 0.5)
      wide.push(e.tagName.toLowerCase() + '.' + e.className);
  });
  document.body.setAttribute('data-width', d.body.getAttribute('data-width'));
  document.body.setAttribute('data-images', d.body.getAttribute('data-images'));
  document.body.setAttribute('data-wide', wide.slice(0, 20).join(' '));
});</script></body></html>"""


def _chromium(url: str, tmp: Path, window: int, shot: Path) -> str:
    """The DOM of `url` after its scripts ran, and a screenshot."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is needed (make test installs it)"
    flags = [*FLAGS, f"--user-data-dir={tmp}/ud-{window}", f"--window-size={window},16000",
             "--allow-file-access-from-files"]       # the harness reads its iframe's page
    subprocess.run([chromium, *flags, f"--screenshot={shot}", url], capture_output=True,
                   timeout=180, check=True)
    return subprocess.run([chromium, *flags, "--virtual-time-budget=8000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180, check=True).stdout


def _phone(page: Path, tmp: Path, shot: Path) -> str:
    """The phone harness's DOM for `page` (its body carries the measurements)."""
    phone = tmp / f"phone-{page.stem}.html"
    phone.write_text(PHONE.replace("REPORT", page.name))
    dom = _chromium(phone.as_uri(), tmp, 500, shot)
    with Image.open(shot) as im:                                  # the iframe's 390 px
        im.crop((0, 0, 390, im.height)).save(shot)
    return dom


def test_phone_check_flags_a_page_wider_than_a_phone(tmp_path):
    from vilactl.pipeline.jobs.report_html import page

    wide = tmp_path / "wide.html"
    wide.write_text(page("ws", "now", [("A section", '<div class="wide" style="width:600px">'
                                                     "a line of text too wide</div>")]))
    dom = _phone(wide, tmp_path, tmp_path / "wide.png")
    scroll, client = map(int, dom.split('data-width="')[1].split('"')[0].split("/"))
    assert client == 390 and scroll > client, (scroll, client)
    assert "div.wide" in dom.split('data-wide="')[1].split('"')[0]


@pytest.fixture(scope="module")
def report(demo_ws, tmp_path_factory):
    """A copy of the demo with a second selection (a user's top-20) and a run left `running`
    (as a killed command leaves it), its report, and the report's DOM at both widths."""
    tmp = tmp_path_factory.mktemp("report")
    ws = workspace_copy(demo_ws, tmp / "ws")
    shutil.copytree(demo_ws / "evals", ws / "evals")          # the predictions files
    source = sql(ws, "SELECT dataset FROM selections")[0]["dataset"]
    run_cli("curate", "coyo", "--top-k", "20", "--dataset", source, "--name", "user_top20",
            workspace=ws, check=True, timeout=600)
    con = duckdb.connect(str(ws / "catalog.duckdb"))
    con.sql("INSERT INTO runs SELECT * REPLACE (id || '-killed' AS id, 'running' AS status, "
            "NULL AS finished_at) FROM runs WHERE command LIKE 'vilactl curate%' LIMIT 1")
    con.close()
    out = tmp / "report.html"
    run_cli("report", "--out", str(out), workspace=ws, check=True, timeout=600)
    shots = Path(os.environ["REPORT_SHOTS"]) if os.environ.get("REPORT_SHOTS") else tmp
    shots.mkdir(parents=True, exist_ok=True)
    doms = {1400: _chromium(out.as_uri(), tmp, 1400, shots / "report-1400px.png"),
            390: _phone(out, tmp, shots / "report-390px.png")}
    return {"ws": ws, "html": out.read_text(), "dom": doms, "shots": shots}


def test_page_loads_with_every_image_and_is_not_blank(report):
    for width, dom in report["dom"].items():
        loaded, total = map(int, dom.split('data-images="')[1].split('"')[0].split("/"))
        assert loaded == total >= 24 + 6, (width, loaded, total)
        pixels = np.asarray(Image.open(report["shots"] / f"report-{width}px.png").convert("L"),
                            dtype=float)
        assert pixels.std() > 20 and (pixels < 128).mean() > 0.01, width
    for section in ("Runs: status and counts", "CLIP curation", "MMC4 variants", "Blends",
                    "Training loss per stage", "Evaluation"):
        assert section in report["dom"][1400], section


def test_every_chart_has_a_legend_and_data(report):
    page = Page(report["dom"][1400])
    assert chart_problems(page) == []
    names = {c["data-chart"] for c in page.charts}
    assert {"download-failures", "blends", "loss:projector", "loss:pretrain",
            "loss:sft"} <= names, names
    blends = next(c for c in page.charts if c["data-chart"] == "blends")
    components = sql(report["ws"], "SELECT DISTINCT dataset FROM blend_components")
    assert int(blends["data-series"]) == len(components)


def test_every_selection_is_listed_with_its_histogram(report):
    page = Page(report["dom"][1400])
    sels = sql(report["ws"], "SELECT name, num_selected FROM selections ORDER BY created_at")
    assert len(sels) == 2 and sels[1] == {"name": "user_top20", "num_selected": 20}
    listed = [a["data-selection"] for _, a in page.having("data-selection")]
    assert listed == [s["name"] for s in reversed(sels)]        # newest first
    for s in sels:
        chart = next(c for c in page.charts if c["data-chart"] == f"clip-scores:{s['name']}")
        assert f"kept ({s['num_selected']})" in chart["data-legend"]


def test_runs_show_their_counts_and_a_running_run_is_marked(report):
    page = Page(report["dom"][1400])
    rows = page.having("data-status")
    statuses = [a["data-status"] for _, a in rows]
    assert statuses.count("running") == 1 and "run-running" in dict(
        (a["data-status"], a["class"]) for _, a in rows)["running"]
    assert len(rows) == sql(report["ws"], "SELECT count(*) AS n FROM runs WHERE command NOT "
                                          "LIKE 'vilactl demo:%'")[0]["n"]
    assert "<b>selected</b> 20" in report["html"]      # the top-20 curate's own count
    run = sql(report["ws"], "SELECT counts FROM runs WHERE command LIKE 'vilactl download mmc4%' "
                            "AND status = 'ok'")
    counts = json.loads(run[0]["counts"])
    lost = counts["succeeded"] - counts["documents"]["images_kept"]
    assert lost > 0 and f'data-dropped-images="{lost}"' in report["html"]   # explained


def test_eval_grid_has_shots_controls_and_example_predictions(report):
    page = Page(report["dom"][1400])
    dom = report["dom"][1400]
    grid = dom.split('data-eval="sft@6:eval_vqa"')[1].split("</table>")[0]
    assert 'data-shots="0"' in grid and 'data-shots="4"' in grid
    assert 'data-metric="accuracy"' in grid and 'data-metric="vqa_accuracy"' in grid
    assert 'data-control="accuracy_blank_image"' in grid
    assert 'data-control="majority_baseline"' in grid
    for kind in ("color", "shape", "count", "position"):
        assert f"<td>{kind}</td>" in grid
    acc = sql(report["ws"], "SELECT value FROM evals WHERE checkpoint = 'sft@6' AND dataset = "
                            "'eval_vqa' AND metric = 'accuracy' AND shots = 4")[0]["value"]
    assert f"{acc:.3f}" in grid
    assert "set of 45 questions" in dom
    examples = dom.split('data-eval="sft@6:eval_vqa"')[1].split("data-eval=")[0]
    cards = examples.split('data-example="')[1:]
    assert 1 <= len(cards) <= 6 and all('src="data:image/png' in c for c in cards)
    assert len(page.having("data-example")) <= 6 * len(page.having("data-eval"))


def test_no_sideways_scrolling_on_a_phone(report):
    for width in (1400, 390):
        dom = report["dom"][width]
        scroll, client = map(int, dom.split('data-width="')[1].split('"')[0].split("/"))
        assert client == width and scroll <= client, (width, scroll, client)
    assert 'data-wide=""' in report["dom"][390], report["dom"][390][-600:]
