"""The README.md model card of an exported folder: what the model is (LLM, vision tower,
projector), how it was trained (the checkpoint chain with blends and their catalog lineage),
how it scores (the checkpoint's evals), how to use it, and the export's own parity check.
Plain Markdown from catalog rows; every value is written as text, never as markup to run.
"""
from __future__ import annotations

import json


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(cols: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return out + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]


def _model(meta: dict) -> list[str]:
    m = meta["config"]["model"]
    llm = m.get("llm") or ("built from config: " + json.dumps(m.get("llm_config"),
                                                              sort_keys=True))
    tower = m.get("vision_tower") or {}
    return ["## Model", "",
            f"- base LLM: {_cell(llm)}",
            f"- vision tower: {_cell(tower.get('kind'))} {_cell(tower.get('name'))}"
            + (f" (weights {_cell(tower['checkpoint'])})" if tower.get("checkpoint") else "")
            + f", features of layer {tower.get('layer', -2)}",
            f"- projector: {_cell(m.get('projector'))}",
            f"- tokenizer: {_cell(meta.get('tokenizer'))}"
            + (f"; LoRA rank {meta['lora']} adapters merged into the LLM" if meta.get("lora")
               else ""), ""]


def _training(lin: dict) -> list[str]:
    if not lin["checkpoints"]:
        return ["## Training", "", "Exported from a checkpoint folder the catalog does not "
                "record: no lineage.", ""]
    rows = [[c["id"], c["stage"], c["step"], c["blend"] or "", c["parent"] or ""]
            for c in lin["checkpoints"]]
    out = ["## Training (VILA recipe, newest stage first)", ""]
    out += _table(["checkpoint", "stage", "step", "blend", "started from"], rows) + [""]
    for blend, info in lin["blends"].items():
        out += [f"### Blend {_cell(blend)}", ""]
        out += _table(["dataset", "unit", "weight", "achieved", "samples", "images", "lineage"],
                      [[c["dataset"], c["unit"], c["weight"],
                        "" if c["achieved_share"] is None else f"{c['achieved_share']:.4f}",
                        c["num_samples"], c["num_images"], c["lineage"]]
                       for c in info["components"]]) + [""]
    return out


def _evals(lin: dict) -> list[str]:
    if not lin["evals"]:
        return ["## Evaluation", "", "No evaluation of this checkpoint in the catalog "
                "(`vilactl eval --checkpoint ID`).", ""]
    rows = [[e["dataset"], e["task"], e["metric"], e["shots"], f"{e['value']:.3f}",
             e["num_examples"]] for e in lin["evals"]]
    return ["## Evaluation (`vilactl eval`)", ""] + _table(
        ["dataset", "task", "metric", "shots", "value", "n"], rows) + [""]


def render(source: str, meta: dict, lin: dict, verify: dict | None) -> str:
    """The card. `source` is the checkpoint id or folder; `verify` the export's self-check."""
    lines = [f"# vilactl model: {_cell(source)}", "",
             "A visual language model trained with vilactl (VILA recipe: projector init → "
             "visual-language pretraining → joint SFT), exported as a transformers LLaVA "
             "folder (`LlavaForConditionalGeneration`, no remote code).", ""]
    lines += _model(meta) + _training(lin) + _evals(lin)
    lines += ["## Use", "", "```python",
              "from transformers import AutoProcessor, LlavaForConditionalGeneration",
              "model = LlavaForConditionalGeneration.from_pretrained(FOLDER)",
              "processor = AutoProcessor.from_pretrained(FOLDER, backend=\"pil\")  "
              "# PIL: resizing exactly as in training",
              "messages = [{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, "
              "{\"type\": \"text\", \"text\": \"What colour is the shape?\"}]}]",
              "text = processor.apply_chat_template(messages, add_generation_prompt=True)",
              "inputs = processor(images=[image], text=[text], return_tensors=\"pt\")",
              "out = model.generate(**inputs, max_new_tokens=32, do_sample=False)",
              "```", "",
              "Prompt format (the chat template): `USER:<image>question ASSISTANT:`; answers end "
              "with the tokenizer's end-of-sequence token. More: vilactl's docs/export.md.", ""]
    if verify:
        lines += ["## Export check", "",
                  f"On a probe image and prompt, this folder's logits differ from vilactl's "
                  f"own forward by at most {verify['max_abs_logit_diff']:.2e}; the chat "
                  f"template {verify['template']}.", ""]
    return "\n".join(lines)
