"""A trained VLM as a Hugging Face LLaVA folder that plain transformers loads
(`LlavaForConditionalGeneration.from_pretrained`, no `trust_remote_code`).

What maps, and how:
- vision tower: a transformers CLIP/SigLIP tower is copied as is; an open_clip ViT (the demo
  CLIP) is rewritten as `CLIPVisionModel` weights (fused q/k/v split, `ln_pre` → `pre_layrnorm`,
  learned positions → `position_embedding`). Both models read hidden state `layer` with the same
  counting, so features agree to float rounding. A tower with parts CLIP has no slot for
  (LayerScale, scaled-cosine heads, rotary/sincos positions, no class token) is refused.
- projector: `mlp2x_gelu` is transformers' `LlavaMultiModalProjector` one to one; `linear`
  becomes linear_1 = W with the identity activation and linear_2 = I (exact: a product with
  the identity matrix adds no rounding). `mlp_downsample` (VILA's 2×2 token merge + LayerNorm)
  has no LLaVA equivalent and is refused with one line.
- LLM: any `*ForCausalLM` whose state is `model.*` + `lm_head.*` (Llama, Mistral, Qwen2, …); LoRA
  adapters are merged by the caller before export.
The tokenizer, the chat template and the image processor live in train/hf_processor.py.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vilactl.base.errors import VilactlError

# projector kind → transformers' `projector_hidden_act` between linear_1 and linear_2
PROJECTOR_ACT = {"linear": "linear", "mlp2x_gelu": "gelu"}
MAX_SHARD_SIZE = "5GB"      # model.safetensors is split into shards above this size


def check_projector(kind: str) -> None:
    if kind not in PROJECTOR_ACT:
        raise VilactlError(f"projector {kind!r} has no transformers LLaVA equivalent; export "
                           f"supports the projectors {', '.join(PROJECTOR_ACT)} (train with "
                           "model.projector: mlp2x_gelu to export)")


def check_exportable(model) -> None:
    """One line naming what is supported, for a model transformers' LLaVA cannot express."""
    check_projector(model.spec.projector)
    if model.spec.tower.kind == "open_clip":
        open_clip_problem(model.vision.model, model.spec.tower.name)
    if not {"model", "lm_head"} <= {k.split(".", 1)[0] for k in model.llm.state_dict()}:
        raise VilactlError(f"LLM {type(model.llm).__name__}: export supports causal LMs laid out "
                           "as model.* + lm_head.* (Llama, Mistral, Qwen2, …)")


_OPEN_CLIP_ACT = {"GELU": "gelu", "QuickGELU": "quick_gelu"}


def _block_problem(block) -> str | None:
    if type(block).__name__ != "ResidualAttentionBlock":
        return f"blocks of type {type(block).__name__}"
    if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
        return "LayerScale"
    if not isinstance(block.attn, nn.MultiheadAttention) or block.attn.in_proj_weight is None:
        return "attention other than one fused q/k/v MultiheadAttention"
    if getattr(block, "ln_1_kv", None) is not None:
        return "cross-attention"
    act = type(block.mlp.gelu).__name__
    if act not in _OPEN_CLIP_ACT or getattr(block.mlp.gelu, "approximate", "none") != "none":
        return f"the activation {act}"
    if not isinstance(block.ln_1, nn.LayerNorm) or not isinstance(block.ln_2, nn.LayerNorm):
        return "norms other than LayerNorm"
    return None


def open_clip_problem(visual, name: str | None) -> None:
    """Refuse an open_clip image tower that `CLIPVisionModel` cannot hold, in one line."""
    blocks = list(visual.transformer.resblocks)
    problem = None
    if getattr(visual, "class_embedding", None) is None:
        problem = "no class token"
    elif visual.conv1.bias is not None:
        problem = "a patch embedding with bias"
    elif not isinstance(visual.ln_pre, nn.LayerNorm):
        problem = "no pre-LayerNorm"
    elif getattr(visual, "positional_embedding", None) is None or \
            getattr(visual, "pos_embed_type", "learnable") != "learnable":
        problem = "positions other than a learned table"
    else:
        problem = next((p for b in blocks if (p := _block_problem(b))), None)
    if problem:
        raise VilactlError(f"open_clip tower {name}: {problem} has no CLIPVisionModel "
                           "equivalent; export supports plain ViTs (class token, learned "
                           "positions, pre-LayerNorm, GELU or QuickGELU MLP)")


def open_clip_to_clip(visual):
    """An open_clip ViT as an equivalent transformers `CLIPVisionModel` (eval mode)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    blocks = list(visual.transformer.resblocks)
    width, patch = visual.conv1.out_channels, visual.conv1.kernel_size[0]
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    cfg = CLIPVisionConfig(
        hidden_size=width, intermediate_size=blocks[0].mlp.c_fc.out_features,
        num_hidden_layers=len(blocks), num_attention_heads=blocks[0].attn.num_heads,
        image_size=size, patch_size=patch, num_channels=visual.conv1.in_channels,
        hidden_act=_OPEN_CLIP_ACT[type(blocks[0].mlp.gelu).__name__],
        layer_norm_eps=visual.ln_pre.eps, projection_dim=width)
    s = {"embeddings.class_embedding": visual.class_embedding,
         "embeddings.patch_embedding.weight": visual.conv1.weight,
         "embeddings.position_embedding.weight": visual.positional_embedding,
         "pre_layrnorm.weight": visual.ln_pre.weight, "pre_layrnorm.bias": visual.ln_pre.bias,
         "post_layernorm.weight": visual.ln_post.weight, "post_layernorm.bias": visual.ln_post.bias}
    for i, b in enumerate(blocks):
        p = f"encoder.layers.{i}."
        # nn.MultiheadAttention fuses q, k, v as rows [q; k; v] of in_proj
        for name, w, bias in zip(("q", "k", "v"), b.attn.in_proj_weight.chunk(3),
                                 b.attn.in_proj_bias.chunk(3)):
            s[f"{p}self_attn.{name}_proj.weight"], s[f"{p}self_attn.{name}_proj.bias"] = w, bias
        s |= {f"{p}self_attn.out_proj.weight": b.attn.out_proj.weight,
              f"{p}self_attn.out_proj.bias": b.attn.out_proj.bias,
              f"{p}layer_norm1.weight": b.ln_1.weight, f"{p}layer_norm1.bias": b.ln_1.bias,
              f"{p}layer_norm2.weight": b.ln_2.weight, f"{p}layer_norm2.bias": b.ln_2.bias,
              f"{p}mlp.fc1.weight": b.mlp.c_fc.weight, f"{p}mlp.fc1.bias": b.mlp.c_fc.bias,
              f"{p}mlp.fc2.weight": b.mlp.c_proj.weight, f"{p}mlp.fc2.bias": b.mlp.c_proj.bias}
    model = CLIPVisionModel(cfg).to(visual.conv1.weight.dtype)
    _load_exactly(model, {k: v.detach().clone() for k, v in s.items()}, "open_clip tower")
    return model.eval()


def _load_exactly(module: nn.Module, state: dict, what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    # position ids are a buffer transformers rebuilds itself
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise VilactlError(f"{what}: conversion left {len(missing)} tensor(s) unset and "
                           f"{len(unexpected)} unused (e.g. {(missing or unexpected)[0]})")


def hf_tower(model):
    """The vision tower as a transformers model, and whether its features drop a CLS token."""
    if model.spec.tower.kind == "open_clip":
        return open_clip_to_clip(model.vision.model), True
    return model.vision.model, model.vision.has_cls


def projector_state(kind: str, projector: nn.Module, llm_dim: int) -> dict:
    if kind == "mlp2x_gelu":
        return dict(projector.state_dict())
    w = projector.weight
    return {"linear_1.weight": w, "linear_1.bias": projector.bias,
            "linear_2.weight": torch.eye(llm_dim, dtype=w.dtype),
            "linear_2.bias": torch.zeros(llm_dim, dtype=w.dtype)}


def llava_config(model, tower, has_cls: bool):
    from transformers import LlavaConfig

    text = model.llm.config
    return LlavaConfig(
        vision_config=tower.config.to_dict(), text_config=text.to_dict(),
        image_token_id=model.image_token_id,
        projector_hidden_act=PROJECTOR_ACT[model.spec.projector],
        vision_feature_layer=model.spec.tower.layer,
        vision_feature_select_strategy="default" if has_cls else "full",
        image_seq_length=model.tokens_per_image, multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)))


def llava_state(model, tower) -> dict:
    """The whole VLM under transformers' LLaVA names (model.vision_tower / multi_modal_projector
    / language_model, lm_head)."""
    state = {f"model.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    proj = projector_state(model.spec.projector, model.projector, model.llm.config.hidden_size)
    state |= {f"model.multi_modal_projector.{k}": v for k, v in proj.items()}
    for k, v in model.llm.state_dict().items():
        state["model.language_model." + k[len("model."):] if k.startswith("model.") else k] = v
    return {k: v.detach() for k, v in state.items() if not k.endswith("position_ids")}


def to_llava(model):
    """A `LlavaForConditionalGeneration` holding the VLM's weights, for saving: built on the
    meta device, so its non-persistent buffers (rotary frequencies, position ids) stay unset
    until `from_pretrained` rebuilds them."""
    from transformers import LlavaForConditionalGeneration

    check_exportable(model)
    tower, has_cls = hf_tower(model)
    cfg = llava_config(model, tower, has_cls)
    dtype = next(model.llm.parameters()).dtype
    # built on the meta device and filled with the VLM's own tensors: no second copy in memory
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(cfg).to(dtype)
    missing, unexpected = llava.load_state_dict(llava_state(model, tower), strict=False,
                                                assign=True)
    missing = [m for m in missing if not m.endswith("position_ids")
               and not (cfg.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise VilactlError(f"LLaVA weights: {len(missing)} tensor(s) unset and "
                           f"{len(unexpected)} unused (e.g. {(missing or unexpected)[0]})")
    if cfg.tie_word_embeddings:
        llava.tie_weights()
    return llava.eval()


def save_llava(model, tok, folder: Path) -> None:
    """config.json, generation_config.json and model*.safetensors (sharded above
    MAX_SHARD_SIZE) into `folder`."""
    from transformers import GenerationConfig

    llava = to_llava(model)
    llava.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, do_sample=False)
    llava.config.pad_token_id = tok.pad_token_id
    llava.save_pretrained(folder, max_shard_size=MAX_SHARD_SIZE)
