"""The report's ablation section: the newest `vilactl ablate` run of each study, laid out as the
paper's table (rows: variants; columns: VQA 0/4-shot, CIDEr 0/4-shot, text 0-shot; cells
`mean ± std (n seeds)`), and under it one line per column comparing our direction with the
paper's claim.

The paper's claims are data (CLAIMS): which variant it found better than which, in which
columns, or (`same`) that a change did not matter. A comparison is "within noise" when the
difference of the means is smaller than the larger of the two standard deviations.
"""
from __future__ import annotations

from dataclasses import dataclass

from vilactl.catalog import report_data
from vilactl.pipeline.jobs.ablate_plans import FIRST_COLUMN, HEADS, KEYS, TITLES, cell
from vilactl.pipeline.jobs.report_html import esc, muted

VQA0, VQA4, CIDER0, CIDER4, TEXT0 = KEYS
VISUAL = (VQA0, VQA4, CIDER0, CIDER4)


@dataclass(frozen=True)
class Claim:
    better: str                        # variant the paper found better (or equal, `same`)
    worse: str
    columns: tuple[str, ...]
    words: str                         # the claim as the paper puts it, briefly
    same: bool = False                 # the paper found no difference


CLAIMS: dict[str, list[Claim]] = {
    "data": [   # Table 3
        Claim("mmc4", "coyo", (*VISUAL, TEXT0), "interleaved MMC4 > COYO pairs"),
        Claim("mmc4", "mmc4-pairs", (*VISUAL, TEXT0),
              "MMC4 > MMC4-pairs (the interleaving helps, not the text)"),
        Claim("mmc4+coyo", "mmc4", VISUAL, "MMC4+COYO > MMC4 alone"),
    ],
    "freeze": [  # Table 1, settings b/c (frozen vs trained, same projector) and c/d
        Claim("trained-llm-mlp2x_gelu", "frozen-llm-mlp2x_gelu", (VQA4, CIDER4),
              "LLM trained in pretraining > frozen (in-context learning)"),
        Claim("trained-llm-mlp2x_gelu", "frozen-llm-mlp2x_gelu", (VQA0, CIDER0),
              "freezing the LLM does not change 0-shot accuracy", same=True),
        Claim("trained-llm-linear", "trained-llm-mlp2x_gelu", VISUAL,
              "linear projector ≥ MLP projector (the LLM learns more)"),
    ],
    "sft-text": [  # Table 4
        Claim("visual+text", "visual", (*VISUAL, TEXT0),
              "joint SFT (visual + text) > visual-only SFT"),
    ],
}
NO_CLAIM = {"freeze": "Table 1 has no text-only column"}


def compare(better: dict, worse: dict, same: bool = False) -> str:
    """The verdict on one claim from two {mean, std} cells: "reproduces", "opposite" or
    "within noise" for an ordering; "reproduces" or "differs" for a `same` claim."""
    delta = better["mean"] - worse["mean"]
    noise = max(better["std"], worse["std"])
    quiet = abs(delta) < noise or delta == 0
    if same:
        return "reproduces (within noise)" if quiet else "differs"
    if quiet:
        return "within noise"
    return "reproduces" if delta > 0 else "opposite"


def _stat(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def direction_lines(study: str, summary: dict) -> list[tuple[str, str]]:
    """(column key, one line in words) for every column: each claim on it compared."""
    out = []
    for key, head in zip(KEYS, HEADS):
        claims = [c for c in CLAIMS.get(study, []) if key in c.columns]
        if not claims:
            why = NO_CLAIM.get(study, "no claim on this column")
            out.append((key, f"{head}: paper — no claim ({why})"))
            continue
        for c in claims:
            a, b = summary.get(c.better, {}).get(key), summary.get(c.worse, {}).get(key)
            if not a or not b or a.get("mean") is None or b.get("mean") is None:
                out.append((key, f"{head}: paper — {c.words}; here not measured"))
                continue
            d = a["mean"] - b["mean"]
            op = ">" if d > 0 else "<" if d < 0 else "="
            out.append((key, f"{head}: paper — {c.words}; here {c.better} {_stat(a)} {op} "
                             f"{c.worse} {_stat(b)}: {compare(a, b, c.same)}"))
    return out


def _table(study: str, summary: dict) -> str:
    head = f"<th>{esc(FIRST_COLUMN.get(study, 'variant'))}</th>" + "".join(
        f'<th data-column="{esc(k)}">{esc(h)}</th>' for k, h in zip(KEYS, HEADS))
    body = "".join(
        f'<tr data-variant="{esc(v)}"><td>{esc(v)}</td>'
        + "".join(f'<td class="num">{esc(cell(cols.get(k, {})))}</td>' for k in KEYS)
        + "</tr>" for v, cols in summary.items())
    return (f'<div class="scroll"><table data-ablate="{esc(study)}"><tr>{head}</tr>{body}'
            "</table></div>")


def _study(run: dict) -> str:
    study, summary = run["study"], run["summary"]
    seeds = run.get("seeds") or []
    lines = "".join(f'<li data-direction="{esc(k)}">{esc(line)}</li>'
                    for k, line in direction_lines(study, summary))
    return (f'<h3 data-study="{esc(study)}">ablate --study {esc(study)}: '
            f"{esc(TITLES.get(study, study))}</h3>"
            f"<p>run {esc(run['id'])}, seeds {esc(', '.join(map(str, seeds)))}; cells are "
            "mean ± sample std over the seeds. Our direction against the paper's (within "
            "noise: the difference is smaller than the larger std):</p>"
            + _table(study, summary) + f'<ul class="directions">{lines}</ul>')


def section(con) -> str:
    runs = report_data.ablate_runs(con)
    if not runs:
        return muted("no ablation yet (`vilactl ablate --study data|freeze|sft-text`)")
    return "".join(_study(r) for r in runs)
