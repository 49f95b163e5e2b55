"""Page and chart primitives of `vilactl report`: escaping, tables, matplotlib charts with an
HTML legend, image thumbnails as data URIs, the page shell (CSS and the load script).

Every chart is a `<figure class="chart">` carrying data attributes that say what it shows
(`data-chart` its name, `data-series` how many series, `data-points` how many values were drawn,
`data-legend` the legend's labels joined by `|`), so a test can check that no chart is empty
and every chart has its legend. The legend is HTML under the plot, not drawn into it, so it
never covers bars and wraps on a narrow screen.
"""
from __future__ import annotations

import base64
import html
import io

CSS = """*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;padding:0 12px 3em;max-width:1100px;
color:#222;overflow-wrap:anywhere}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top;overflow-wrap:normal}th{background:#f4f4f4}
td.num{text-align:right}
figure.chart{margin:1em 0;max-width:720px}figure.chart img{width:100%;height:auto;display:block}
figure.chart figcaption{font-weight:600;margin-bottom:.3em}
ul.legend{list-style:none;padding:0;margin:.3em 0;display:flex;flex-wrap:wrap;gap:4px 14px}
ul.legend li{display:flex;align-items:center;gap:5px;font-size:13px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;flex:none}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.card{width:124px;font-size:12px}.card img{width:118px;height:118px;image-rendering:pixelated;
display:block}.card .cap{display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;
overflow:hidden}
.kept{border:3px solid #2a2}.dropped{border:3px solid #c33}
.doc{border:1px solid #ddd;padding:8px;margin:8px 0}
.doc img{width:64px;height:64px;vertical-align:middle;margin:2px}
.muted{color:#777}.note{background:#f7f7ef;border-left:4px solid #cc9;padding:6px 10px}
tr.run-running td{background:#fff6d6}tr.run-failed td{background:#fde2e2}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;font-weight:600}
.badge.ok{background:#dfd;color:#161}.badge.running{background:#fd6;color:#640}
.badge.failed{background:#c33;color:#fff}
.counts{font-size:13px;min-width:18em;max-width:40em}.counts summary{color:#555;cursor:pointer}
.evalgrid td.acc{font-weight:600}.ctl{font-weight:400;color:#666;font-size:12px}
.ex{display:flex;gap:8px;align-items:flex-start;border:1px solid #ddd;padding:6px;width:300px;
max-width:100%}.ex img{width:64px;height:64px;image-rendering:pixelated;flex:none}
.ex .right{color:#161}.ex .wrong{color:#a11}
.charts{display:flex;flex-wrap:wrap;gap:0 24px}.charts figure.chart{max-width:540px;flex:1 1 460px}
@media (max-width:600px){table.runs,table.runs tbody,table.runs tr,table.runs td{display:block}
table.runs tr:first-child{display:none}table.runs tr{border:1px solid #ddd;margin:6px 0}
table.runs td{border:0;overflow-wrap:anywhere}}"""

# Marks the body once the page has loaded: images decoded (`data-images="loaded/total"`) and the
# page's layout width against the viewport (`data-width="scrollWidth/clientWidth"`), which
# shows whether the text scrolls sideways on a narrow screen.
SCRIPT = """window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
var d=document.documentElement,b=document.body;
b.setAttribute('data-images',ok+'/'+im.length);
b.setAttribute('data-width',d.scrollWidth+'/'+d.clientWidth);});"""

HEAD = "<!doctype html><html><head><meta charset='utf-8'><title>vilactl report</title>"
VIEWPORT = "<meta name='viewport' content='width=device-width,initial-scale=1'>"

# Colour-blind-safe qualitative palette (Okabe–Ito) for series.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000"]
KEPT, DROPPED = "#2a2", "#c33"
NARROW = 3.7            # inches (at 100 dpi) of a chart's phone rendering


def esc(v) -> str:
    return html.escape(str(v))


def muted(text: str) -> str:
    return f'<p class="muted">{esc(text)}</p>'


def uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def thumb(data: bytes | None, size: int | None = None) -> str:
    """An image as an inline PNG (`size`: shrunk to fit size×size pixels, for small pages)."""
    from vilactl.curation.images import ImageProblem, open_image

    if not data:
        return ""
    buf = io.BytesIO()
    try:
        img = open_image(data)
        if size:
            img.thumbnail((size, size))
        img.save(buf, "PNG")
    except ImageProblem:
        return '<span class="muted">(undecodable image)</span>'
    return f'<img src="{uri(buf.getvalue())}" alt="">'


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return esc(", ".join(map(str, v)))
    return esc(v)


def table(rows: list[dict], cols: list[str] | None = None, cls: str = "") -> str:
    """Rows as a table inside its own horizontal scroller (a wide table never widens the page)."""
    if not rows:
        return muted("nothing recorded yet")
    cols = cols or list(rows[0])
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if isinstance(r.get(c), int | float) else ''}>"
                         f"{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><tr>{head}</tr>{body}</table></div>'


def legend(items: list[tuple[str, str]]) -> str:
    lis = "".join(f'<li><span class="swatch" style="background:{c}"></span>{esc(label)}</li>'
                  for label, c in items)
    return f'<ul class="legend">{lis}</ul>'


def _png(draw, width: float, height: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11}):
        fig, ax = plt.subplots(figsize=(width, height))
        draw(ax)
        ax.grid(alpha=.3)
        buf = io.BytesIO()
        # bbox "tight" grows the canvas to fit long tick labels (blend names were cut off).
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    return buf.getvalue()


def chart(name: str, title: str, draw, items: list[tuple[str, str]], points: int,
          width: float = 6.4, height: float = 3.2) -> str:
    """A matplotlib plot (draw(ax) draws it, in the colours of `items`) as an inline PNG in a
    figure with its HTML legend; `points` is how many values the plot shows. A second, narrow
    rendering serves phones, so their axis labels are not shrunk to illegible."""
    wide, narrow = _png(draw, width, height), _png(draw, NARROW, height * 0.9 + 0.3)
    labels = "|".join(label for label, _ in items)
    return (f'<figure class="chart" data-chart="{esc(name)}" data-series="{len(items)}" '
            f'data-points="{int(points)}" data-legend="{esc(labels)}">'
            f"<figcaption>{esc(title)}</figcaption><picture>"
            f'<source media="(max-width: 600px)" srcset="{uri(narrow)}">'
            f'<img src="{uri(wide)}" alt="{esc(title)}"></picture>{legend(items)}</figure>')


def page(workspace: str, when: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{esc(t)}</h2>{s}" for t, s in sections)
    return (f"{HEAD}{VIEWPORT}<style>{CSS}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>vilactl report</h1><p class='muted'>{esc(workspace)} · {esc(when)}</p>"
            f"{body}</body></html>")
