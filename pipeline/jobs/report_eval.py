"""The report's evaluation section: per checkpoint and eval set, a grid of question type (rows)
× shots (columns) with the image-blind controls (the same model on a blank image, the majority
answer) beside the accuracies, the set's size, and a bounded number of example predictions
with their images (small thumbnails inlined as data URIs)."""
from __future__ import annotations

import json
from pathlib import Path

from vilactl.catalog import report_data
from vilactl.pipeline.jobs.report_html import esc, muted, table, thumb

CONTROLS = {"accuracy_blank_image": "blank image (0-shot)",
            "majority_baseline": "majority answer"}
EXAMPLES = 6            # example predictions per checkpoint and set
EXAMPLE_GRIDS = 6       # sets (of the newest checkpoints) that show examples
THUMB = 64


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["checkpoint"], r["dataset"]), []).append(r)
    return out


def _cell(v: float | None, cls: str = "acc") -> str:
    return f'<td class="num {cls}">{"" if v is None else f"{v:.3f}"}</td>'


def _grid(ck: str, ds: str, rows: list[dict]) -> str:
    """Rows: all questions, then each question type; columns: each metric (VQA: exact match,
    then the VQAv2 metric) at each shot count, then the controls."""
    mains = list(dict.fromkeys(r["metric"] for r in rows if ":" not in r["metric"]
                               and r["metric"] not in CONTROLS))
    if not mains:                        # only controls recorded: show the rows as they are
        return f"<h3>{esc(ck)} on {esc(ds)}</h3>" + table(rows)
    val = {(r["metric"], r["shots"]): r["value"] for r in rows}
    cols = [(m, s) for m in mains for s in sorted({s for (x, s) in val if x == m})]
    kinds = sorted({m.split(":", 1)[1] for (m, _) in val
                    if m.split(":", 1)[0] in mains and ":" in m})
    controls = [c for c in CONTROLS if (c, 0) in val]
    head = ("<tr><th>question type</th>"
            + "".join(f'<th data-shots="{s}" data-metric="{esc(m)}">{s}-shot {esc(m)}</th>'
                      for m, s in cols)
            + "".join(f'<th class="ctl" data-control="{c}">{esc(CONTROLS[c])}</th>'
                      for c in controls) + "</tr>")
    body = ""
    for kind in ["all", *kinds]:
        suffix = "" if kind == "all" else f":{kind}"
        body += (f"<tr><td>{esc(kind)}</td>"
                 + "".join(_cell(val.get((m + suffix, s))) for m, s in cols)
                 + "".join(_cell(val.get((c + suffix, 0)), "ctl") for c in controls) + "</tr>")
    flags = _flags(val, mains[0], kinds)
    size, task = rows[0]["num_examples"], rows[0]["task"]
    noun = {"caption": "images to caption"}.get(task, "questions")
    why = (" The controls read no image: when an accuracy is not above them, the model is "
           "not using the picture." if controls else "")
    return (f'<h3 data-eval="{esc(ck)}:{esc(ds)}">{esc(ck)} on {esc(ds)}</h3>'
            f"<p>{esc(task)} set of {esc(size)} {noun} (each shot count is "
            f"evaluated on all of them).{why}</p>"
            f'<div class="scroll"><table class="evalgrid">{head}{body}</table></div>{flags}')


READS_IMAGE_MARGIN = 0.15    # 0-shot over the blank-image control that counts as reading it


def _flags(val: dict, metric: str, kinds: list[str]) -> str:
    """What the grid says that a reader could miss: question types the model answers no
    better than without the image, and shot counts that score below 0-shot."""
    out = []
    for kind in ["all", *kinds]:
        suffix = "" if kind == "all" else f":{kind}"
        zero = val.get((metric + suffix, 0))
        blank = val.get(("accuracy_blank_image" + suffix, 0))
        if zero is not None and blank is not None and zero < blank + READS_IMAGE_MARGIN:
            out.append(f"{kind}: 0-shot {zero:.3f} is less than {READS_IMAGE_MARGIN:.2f} over "
                       f"the blank image's {blank:.3f} — the model barely reads the image here")
        for (m, s), v in sorted(val.items()):
            if m == metric + suffix and s > 0 and zero is not None and v < zero:
                out.append(f"{kind}: {s}-shot {v:.3f} is below 0-shot {zero:.3f} — the "
                           "demonstrations hurt instead of helping (docs/eval.md, k-shot)")
    if not out:
        return ""
    return ('<ul class="flags">' + "".join(f"<li>{esc(x)}</li>" for x in out) + "</ul>")


def _predictions(workspace: Path, ck: str, ds: str) -> list[dict]:
    folder = Path(workspace) / "evals" / ck.replace("@", "-")
    files = sorted(folder.glob(f"{ds}-*shot.json"),
                   key=lambda p: int(p.name[len(ds) + 1:-len("shot.json")] or 0))
    if not files:
        return []
    try:
        preds = json.loads(files[0].read_text())
    except (OSError, ValueError):
        return []
    return preds if isinstance(preds, list) else []


def _short(text: str, n: int = 80) -> str:
    text = text.strip()
    return "(empty)" if not text else text if len(text) <= n else text[:n] + " …"


def _examples(con, workspace: Path, ck: str, ds: str) -> str:
    """Some right and some wrong 0-shot answers (the lowest shot count written)."""
    preds = _predictions(workspace, ck, ds)
    if not preds:
        return ""
    from vilactl.train.evaluate import normalise

    ok = [p for p in preds if normalise(p["prediction"]) == normalise(p["answer"])]
    bad = [p for p in preds if p not in ok]
    pick = (ok[:EXAMPLES // 2] + bad + ok[EXAMPLES // 2:])[:EXAMPLES]
    segs = report_data.eval_samples(con, ds, [p["sample_id"] for p in pick])
    cards = ""
    for p in pick:
        s = segs.get(p["sample_id"], [])
        img = next((thumb(x["image"], THUMB) for x in s if x["image"] is not None), "")
        question = " ".join(x["text"] for x in s[:-1] if x["text"])[:160]
        right = p in ok
        cards += (f'<div class="ex" data-example="{esc(p["sample_id"])}">{img}<div>'
                  f'<span class="muted">{esc(p["kind"])}</span> {esc(question)}<br>'
                  f'answer: <b>{esc(p["answer"])}</b><br>model: <span class="'
                  f'{"right" if right else "wrong"}">{esc(_short(p["prediction"]))}</span>'
                  f"{' ✓' if right else ' ✗'}</div></div>")
    return (f"<p>Example predictions ({len(pick)} of {len(preds)}, lowest shot count):</p>"
            f'<div class="grid examples">{cards}</div>')


def section(con, workspace: Path) -> str:
    groups = _groups(report_data.evals(con))
    if not groups:
        return muted("no evaluations yet")
    with_examples = set(list(groups)[-EXAMPLE_GRIDS:])
    out = ""
    for (ck, ds), rows in groups.items():
        out += _grid(ck, ds, rows)
        if (ck, ds) in with_examples:
            out += _examples(con, workspace, ck, ds)
    return out
