"""Models out: a vilactl model exported as a Hugging Face LLaVA folder gives transformers the
same logits and the same greedy answers (tiny CLIP/SigLIP + Llama models here, the demo's
trained model in test_export_demo.py); LoRA merges; what LLaVA cannot express is refused."""
import json

import numpy as np
import pytest
import torch
from conftest import one_line_error, run_cli
from PIL import Image

from vilactl.pipeline.jobs.export import write_folder
from vilactl.train import checkpoint
from vilactl.train.generate import Decoding, HFGenerator, VilaGenerator
from vilactl.train.hf_processor import messages
from vilactl.train.model import VLM, ModelSpec
from vilactl.train.stages import add_lora
from vilactl.train.tokenizer import image_token_id, load_tokenizer, train_demo_tokenizer
from vilactl.train.vision_tower import TowerSpec

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
              image_size=32, patch_size=8)
LLAMA = dict(model_type="llama", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             tie_word_embeddings=False)
TEXT = ["What colour is the shape? It is red. A big blue circle on the left, 3 squares.",
        "How many triangles are there? Two green triangles at the bottom right."] * 20


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    return train_demo_tokenizer(TEXT, tmp_path_factory.mktemp("tok") / "tok", vocab_size=320)


def tiny(tok, projector="mlp2x_gelu", tower="clip", seed=0) -> VLM:
    torch.manual_seed(seed)
    kind = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}[tower]
    spec = ModelSpec(TowerSpec(kind="hf", config={"model_type": kind, **VISION}, layer=-2),
                     projector, llm_config={**LLAMA, "vocab_size": len(tok)})
    model = VLM(spec, image_token_id(tok)).eval()
    with torch.no_grad():                 # untrained heads would make every logit ~0
        for p in model.projector.parameters():
            p.normal_(0, 0.3)
    return model


def images(sizes=((32, 32), (32, 32))):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def interleaved(imgs) -> list[dict]:
    """Two images, text between them, a finished assistant turn: a multi-image 1-shot prompt."""
    return [{"role": "user", "image": imgs[0], "text": None},
            {"role": "user", "image": None, "text": "What colour is the shape?"},
            {"role": "assistant", "image": None, "text": "It is red."},
            {"role": "user", "image": None, "text": "And here,"},
            {"role": "user", "image": imgs[1], "text": None},
            {"role": "user", "image": None, "text": "how many triangles are there?"}]


@torch.no_grad()
def parity(model, tok, folder, segs, backend=None) -> float:
    """Max abs logit difference: vilactl's forward on its own prompt vs transformers' LLaVA
    from raw images + the chat template through AutoProcessor (ids must be identical)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    gen = VilaGenerator(model, tok, model.vision.preprocess)
    ids, imgs = gen.prompt_ids(segs)
    ours = model(torch.tensor([ids]), torch.stack([model.vision.preprocess(i) for i in imgs]))
    hf = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    proc = AutoProcessor.from_pretrained(folder, **({"backend": backend} if backend else {}))
    msgs, hf_imgs = messages(segs)
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=hf_imgs, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == ids
    return float((ours - hf(**inputs).logits).abs().max())


def greedy_same(model, tok, folder, segs) -> list[str]:
    ours = VilaGenerator(model, tok, model.vision.preprocess).answers(
        [segs, segs[:2]], Decoding(max_new_tokens=10))
    theirs = HFGenerator(folder).answers([segs, segs[:2]], Decoding(max_new_tokens=10))
    assert ours == theirs
    sampled = Decoding(max_new_tokens=10, temperature=0.9, top_p=0.8, seed=5)
    ours_s = VilaGenerator(model, tok, model.vision.preprocess).answers([segs], sampled)
    assert ours_s == HFGenerator(folder).answers([segs], sampled)
    return ours


@pytest.mark.parametrize("projector,tower", [("mlp2x_gelu", "clip"), ("linear", "siglip")])
def test_tiny_export_matches_transformers(tok_dir, tmp_path, projector, tower):
    tok = load_tokenizer(tok_dir)
    model = tiny(tok, projector, tower)
    assert write_folder(model, tok, tmp_path) is None      # the template reproduces our ids
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert cfg["vision_feature_select_strategy"] == ("default" if tower == "clip" else "full")
    segs = interleaved(images())
    assert parity(model, tok, tmp_path, segs) < 1e-4          # default (torchvision) processor
    # lmms-eval's llava_hf sends "<image>\nquestion" as a string: the same prompt
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    q = "What colour is the shape?"
    as_string = [{"role": "user", "content": "<image>\n" + q}]
    as_items = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    assert hf_tok.apply_chat_template(as_string, add_generation_prompt=True, tokenize=False) == \
        hf_tok.apply_chat_template(as_items, add_generation_prompt=True, tokenize=False)
    # images of another size are resized: the PIL backend resizes exactly as vilactl does
    odd = interleaved(images([(45, 60), (20, 33)]))
    assert parity(model, tok, tmp_path, odd, backend="pil") < 1e-4
    greedy_same(model, tok, tmp_path, segs)


def test_lora_checkpoint_exports_merged(tok_dir, tmp_path):
    tok = load_tokenizer(tok_dir)
    model = tiny(tok)
    add_lora(model, 4)
    with torch.no_grad():                 # trained-looking adapters (B starts at zero)
        for name, p in model.llm.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)
    segs = interleaved(images())
    gen = VilaGenerator(model, tok, model.vision.preprocess)
    ids, imgs = gen.prompt_ids(segs)
    pixels = torch.stack([model.vision.preprocess(i) for i in imgs])
    with torch.no_grad():
        with_adapters = model(torch.tensor([ids]), pixels)
        with model.llm.disable_adapter():
            base = model(torch.tensor([ids]), pixels)
    assert float((with_adapters - base).abs().max()) > 1e-2     # the adapters matter
    model.llm = model.llm.merge_and_unload()
    write_folder(model, tok, tmp_path)
    from transformers import LlavaForConditionalGeneration

    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert not [k for k in hf.state_dict() if "lora" in k]
    assert parity(model, tok, tmp_path, segs) < 1e-4
    with torch.no_grad():
        merged = hf(input_ids=torch.tensor([ids]), pixel_values=(
            pixels - model.vision.mean) / model.vision.std).logits
    assert float((merged - with_adapters).abs().max()) < 1e-4


def _checkpoint_folder(tok_dir, tmp_path, projector):
    """A checkpoint folder as `vilactl train` writes it, of a tiny model (no catalog)."""
    tok = load_tokenizer(tok_dir)
    model = tiny(tok, projector)
    cfg = {"model": {"vision_tower": {"kind": "hf", "config": {"model_type": "clip_vision_model",
                                                              **VISION}, "layer": -2},
                     "projector": projector, "llm_config": LLAMA, "tokenizer": str(tok_dir)}}
    folder = tmp_path / "ckpt" / "step-000001"
    checkpoint.save(folder, model, meta={"stage": "sft", "config": cfg, "lora": 0,
                                         "tokenizer": str(tok_dir)})
    return folder


def test_unsupported_projector_is_one_line(tok_dir, tmp_path):
    folder = _checkpoint_folder(tok_dir, tmp_path, "mlp_downsample")
    proc = run_cli("export", "--checkpoint", str(folder), "--out", str(tmp_path / "out"),
                   workspace=tmp_path / "ws")
    one_line_error(proc, "projector 'mlp_downsample'", "linear, mlp2x_gelu")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_export_of_a_checkpoint_folder_and_generate_from_both(tok_dir, tmp_path):
    folder = _checkpoint_folder(tok_dir, tmp_path, "mlp2x_gelu")
    out = tmp_path / "exported"
    proc = run_cli("export", "--checkpoint", str(folder), "--out", str(out),
                   workspace=tmp_path / "ws", check=True)
    assert "logits within" in proc.stdout
    marker = json.loads((out / "vilactl-export.json").read_text())
    assert marker["source_path"] == str(folder) and marker["checkpoint"] is None
    assert marker["params"]["verify"]["max_abs_logit_diff"] < 1e-4
    assert "no lineage" in (out / "README.md").read_text()
    images()[0].save(tmp_path / "a.png")
    ask = ["generate", "--image", str(tmp_path / "a.png"), "--prompt", "What colour is it?",
           "--max-new-tokens", "6"]
    ours = run_cli(*ask, "--checkpoint", str(folder), workspace=tmp_path / "ws", check=True)
    theirs = run_cli(*ask, "--model", str(out), workspace=tmp_path / "ws", check=True)
    assert ours.stdout == theirs.stdout and ours.stdout.strip()
    again = run_cli("export", "--checkpoint", str(folder), "--out", str(out),
                    workspace=tmp_path / "ws")
    one_line_error(again, "holds an earlier export", "--replace")
