"""The text and image side of an exported LLaVA folder: the chat template vilactl trains with,
the tokenizer, and an image processor whose preprocessing is vilactl's.

vilactl builds a prompt segment by segment (train/sequences.py): BOS, then per role change a
marker ("USER:", "ASSISTANT:"), each text segment encoded on its own, `<image>` placeholders,
and "</s>" after an assistant turn. The template writes the same pieces as one string: a space
between two text pieces, nothing next to an `<image>` or a special token. Message content may
be a list of {"type": "image"} / {"type": "text"} items, or a string with `<image>` marks (what
lmms-eval's llava_hf sends: "<image>\\nquestion"), split at the marks and trimmed, as
`vilactl generate` reads its --prompt. A tokenizer that starts every piece between special
tokens as a new word (byte-level BPE with a prefix space, like the demo tokenizer) then gives
exactly vilactl's ids; others (SentencePiece Llama-2, byte-level without a prefix space) can
differ where pieces meet. `template_mismatch` checks a probe conversation, and export warns.

Images: vilactl resizes to the tower's square size (PIL bicubic, no crop), scales to [0, 1] and
normalises with the tower's mean/std; `CLIPImageProcessor` is configured to do the same.
"""
from __future__ import annotations

from vilactl.train.sequences import ROLE_PREFIX, SequenceBuilder
from vilactl.train.tokenizer import IMAGE_TOKEN

_TEMPLATE = """\
{%- set ns = namespace(role=none, last='special') -%}
{%- if ADD_BOS %}{{ bos_token }}{% endif -%}
{%- for message in messages -%}
{%- if message['role'] != ns.role -%}
{%- if ns.last == 'text' %} {% endif -%}
{%- if message['role'] == 'user' %}USER:{% elif message['role'] == 'assistant' %}ASSISTANT:\
{% elif message['role'] == 'system' %}SYSTEM:{% else %}{{ message['role'] | upper }}:{% endif -%}
{%- set ns.role = message['role'] -%}{%- set ns.last = 'text' -%}
{%- endif -%}
{%- if message['content'] is string -%}
{%- for part in message['content'].split('<image>') -%}
{%- if not loop.first -%}<image>{%- set ns.last = 'image' -%}{%- endif -%}
{%- if part | trim -%}
{%- if ns.last == 'text' %} {% endif -%}{{ part | trim }}{%- set ns.last = 'text' -%}
{%- endif -%}
{%- endfor -%}
{%- else -%}
{%- for item in message['content'] -%}
{%- if item['type'] == 'image' -%}<image>{%- set ns.last = 'image' -%}
{%- elif item['type'] == 'text' -%}
{%- if ns.last == 'text' %} {% endif -%}{{ item['text'] }}{%- set ns.last = 'text' -%}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- if message['role'] == 'assistant' and ns.last == 'text' and (loop.last or \
messages[loop.index0 + 1]['role'] != 'assistant') -%}
{{ eos_token }}{%- set ns.last = 'special' -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{%- if ns.last == 'text' %} {% endif -%}ASSISTANT:{%- endif -%}
"""


def adds_bos(tok) -> bool:
    """Whether the tokenizer puts BOS in front by itself (Llama-2 style)."""
    ids = tok("a").input_ids
    return bool(ids) and tok.bos_token_id is not None and ids[0] == tok.bos_token_id


def chat_template(tok) -> str:
    """vilactl's conversation format as a Jinja chat template for this tokenizer."""
    assert set(ROLE_PREFIX) == {"user", "assistant", "system"}   # the template spells them out
    return _TEMPLATE.replace("ADD_BOS", "false" if adds_bos(tok) else "true")


def messages(segments: list[dict]) -> tuple[list[dict], list]:
    """Training-sample segments → chat messages (consecutive segments of one role merged, as
    vilactl writes one marker per role change) and the images in order."""
    out: list[dict] = []
    images = []
    for seg in segments:
        if not out or out[-1]["role"] != seg["role"]:
            out.append({"role": seg["role"], "content": []})
        if seg.get("image") is not None:
            out[-1]["content"].append({"type": "image"})
            images.append(seg["image"])
        else:
            out[-1]["content"].append({"type": "text", "text": seg["text"]})
    return out, images


def image_processor(vision):
    """A `CLIPImageProcessor` doing vilactl's preprocessing for this tower."""
    from transformers import CLIPImageProcessor
    from transformers.image_utils import PILImageResampling

    size = vision.image_size
    return CLIPImageProcessor(
        do_resize=True, size={"height": size, "width": size},
        resample=PILImageResampling.BICUBIC, do_center_crop=False, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
        image_mean=vision.mean.flatten().tolist(), image_std=vision.std.flatten().tolist())


def processor(model, tok):
    """The `LlavaProcessor` for an exported model: tokenizer (with `<image>` and the chat
    template) and image processor; `<image>` expands to the model's tokens per image."""
    from transformers import LlavaProcessor

    template = chat_template(tok)
    tok.chat_template = template
    patch = model.vision.image_size // int(model.vision.patches ** 0.5)
    has_cls = model.vision.has_cls
    return LlavaProcessor(image_processor=image_processor(model.vision), tokenizer=tok,
                          patch_size=patch, chat_template=template, image_token=IMAGE_TOKEN,
                          vision_feature_select_strategy="default" if has_cls else "full",
                          num_additional_image_tokens=1 if has_cls else 0)


PROBE = [{"role": "user", "image": b"", "text": None},
         {"role": "user", "image": None, "text": "What colour is the shape?"},
         {"role": "assistant", "image": None, "text": "red."},
         {"role": "user", "image": None, "text": "And this one, in 3 words:"},
         {"role": "user", "image": b"", "text": None},
         {"role": "user", "image": None, "text": "(left, \"big\")"}]


def template_mismatch(proc, model, tok) -> str | None:
    """None when the processor tokenises a probe conversation (images, multi-turn, quotes,
    digits) exactly as vilactl's SFT prompt; else where the ids first differ."""
    builder = SequenceBuilder(tok, model.image_token_id, model.tokens_per_image,
                              max_length=10**9, sft=True)
    want = builder.prompt(PROBE).input_ids.tolist()
    msgs, _ = messages(PROBE)
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    text = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * model.tokens_per_image)
    got = proc.tokenizer(text).input_ids
    if got == want:
        return None
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return (f"the chat template tokenises differently from vilactl's prompts from token {at} "
            f"({tok.decode(got[at:at + 3])!r} vs {tok.decode(want[at:at + 3])!r})")
