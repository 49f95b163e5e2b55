"""The trainer's model pieces without a workspace: parity with transformers' LLaVA, packing
isolation, projectors, freeze policies, and the real configs' sizes on the meta device."""
import numpy as np
import pytest
import torch

from vilactl.train import config
from vilactl.train.distributed import Dist, wrap
from vilactl.train.loop import LoopArgs, train_loop
from vilactl.train.model import VLM, ModelSpec, token_losses
from vilactl.train.packing import collate_packed, collate_padded, first_fit_decreasing
from vilactl.train.projector import DownsampleProjector, tokens_per_image
from vilactl.train.sequences import IGNORE, Example
from vilactl.train.stages import STAGES, apply_freeze
from vilactl.train.vision_tower import MEAN_STD, TowerSpec

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
              image_size=32, patch_size=8, projection_dim=32)
LLAMA = dict(vocab_size=120, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
             tie_word_embeddings=False)
IMAGE_ID = 119


def tiny_vlm(projector="mlp2x_gelu", seed=0) -> VLM:
    torch.manual_seed(seed)
    spec = ModelSpec(TowerSpec(kind="hf", config={"model_type": "clip_vision_model", **VISION},
                               layer=-2), projector, llm_config={"model_type": "llama", **LLAMA})
    return VLM(spec, IMAGE_ID).eval()


def example(rng, n_text, n_images, tokens_per_image, sid="x") -> Example:
    ids, images = [1], []
    for _ in range(n_images):
        ids += list(rng.integers(5, 100, n_text)) + [IMAGE_ID] * tokens_per_image
        images.append(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(len(ids))))
    ids += list(rng.integers(5, 100, n_text))
    ids = np.asarray(ids, np.int64)
    labels = np.where(ids == IMAGE_ID, IGNORE, ids)
    labels[0] = IGNORE                   # BOS is never a target (as SequenceBuilder does)
    return Example(sid, ids, labels, images)


def test_parity_with_transformers_llava():
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    ours = tiny_vlm()
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=LlamaConfig(**LLAMA),
                      image_token_id=IMAGE_ID, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    llava = LlavaForConditionalGeneration(cfg).eval()
    state = {f"model.vision_tower.{k}": v for k, v in ours.vision.model.state_dict().items()}
    state |= {f"model.multi_modal_projector.{k}": v for k, v in ours.projector.state_dict().items()}
    state |= {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v
              for k, v in ours.llm.state_dict().items()}
    missing, unexpected = llava.load_state_dict(state, strict=False)
    assert not unexpected and not [m for m in missing if "position_ids" not in m]
    ex = example(np.random.default_rng(0), 7, 2, ours.tokens_per_image)
    ids, labels = torch.from_numpy(ex.input_ids)[None], torch.from_numpy(ex.labels)[None]
    pixels = torch.stack(ex.images)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in MEAN_STD["clip"])
    with torch.no_grad():
        logits = ours(ids, pixels)
        ref = llava(input_ids=ids, pixel_values=(pixels - mean) / std, labels=labels)
    assert (logits - ref.logits).abs().max() < 1e-5
    losses = token_losses(logits, labels)
    ours_loss = losses.sum() / (labels[:, 1:] != IGNORE).sum()
    assert abs(float(ours_loss) - float(ref.loss)) < 1e-5


def test_packed_row_gives_each_document_its_own_loss():
    model = tiny_vlm("mlp_downsample")
    rng = np.random.default_rng(1)
    docs = [example(rng, n, k, model.tokens_per_image, f"d{i}")
            for i, (n, k) in enumerate([(9, 1), (4, 2), (13, 0), (6, 1)])]
    batch = collate_packed([docs], max_length=sum(map(len, docs)) + 5, pad_id=0)
    with torch.no_grad():
        packed = token_losses(model(batch.input_ids, batch.pixels, batch.attention_mask,
                                    batch.position_ids), batch.labels)
        doc = batch.doc[:, 1:]
        for i, ex in enumerate(docs):
            alone = collate_padded([ex], pad_id=0)
            ref = token_losses(model(alone.input_ids, alone.pixels, alone.attention_mask),
                               alone.labels).sum()
            # the target token sits one position right of the logit that predicts it
            assert abs(float(packed[doc == i].sum()) - float(ref)) < 1e-5 * max(1, float(ref))
        assert float(packed[doc == -1].sum()) == 0      # padding is never trained


def test_first_fit_decreasing_and_downsample_grid():
    bins = first_fit_decreasing([5, 3, 8, 2, 2], 10)
    assert sorted(sorted(b) for b in bins) == [[0, 1, 4], [2, 3]]
    x = torch.arange(2 * 9 * 1, dtype=torch.float).view(2, 9, 1)   # odd 3×3 grid → padded 4×4
    merged = DownsampleProjector.merge_2x2(x)
    assert merged.shape == (2, 4, 4) and merged[0, 0].tolist() == [0, 1, 3, 4]
    assert tokens_per_image("mlp_downsample", 64) == 16 and tokens_per_image("linear", 64) == 64


def _one_step(model, stage):
    apply_freeze(model, STAGES[stage])
    rng = np.random.default_rng(2)
    batches = iter([collate_packed([[example(rng, 8, 1, model.tokens_per_image)]], 64, 0)] * 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    train_loop(wrap(model, Dist()), lambda position: batches, LoopArgs(steps=1, lr=1e-2),
               Dist(), _tmp(), None)
    after = model.state_dict()
    return {part: all(torch.equal(before[k], after[k]) for k in after if k.startswith(part))
            for part in ("vision", "projector", "llm")}


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_freeze_policies():
    unchanged = _one_step(tiny_vlm(), "projector")
    assert unchanged == {"vision": True, "projector": False, "llm": True}
    unchanged = _one_step(tiny_vlm(), "pretrain")
    assert unchanged == {"vision": True, "projector": False, "llm": False}


@pytest.mark.parametrize("name, billions", [("vila-7b", 6.74), ("vila-13b", 13.02)])
def test_real_configs_have_paper_sizes_on_meta_device(name, billions):
    cfg = config.load(name)
    spec = ModelSpec(TowerSpec(**cfg.model.vision_tower), cfg.model.projector,
                     llm_config=cfg.model.llm_config)
    with torch.device("meta"):
        model = VLM(spec, image_token_id=0)
    llm = sum(p.numel() for p in model.llm.parameters()) / 1e9
    vision = sum(p.numel() for p in model.vision.parameters()) / 1e6
    assert abs(llm - billions) < 0.01, llm            # Llama-2 "7B" is 6.74 B, "13B" 13.02 B
    assert 300 < vision < 310                          # CLIP ViT-L/14-336 vision tower: 303 M
    assert model.tokens_per_image == 576               # (336 / 14)² patches, linear projector


def test_truncation_never_cuts_an_image():
    from vilactl.train.sequences import SequenceBuilder

    class Tok:   # one token per word, ids from a growing table
        bos_token_id, eos_token_id = 1, 2

        def __init__(self):
            self.vocab = {}

        def encode(self, text, add_special_tokens=False, split_special_tokens=False):
            return [self.vocab.setdefault(w, 10 + len(self.vocab)) for w in text.split()]

    seg = lambda text=None, image=None, role="user": {"role": role, "text": text,  # noqa: E731
                                                      "image": image}
    segments = [seg("a b c"), seg(image=b"1"), seg("d e f g h"), seg(image=b"2"), seg("i j")]
    for max_length in range(4, 40):
        b = SequenceBuilder(Tok(), IMAGE_ID, 8, max_length)
        ex = b.build("s", segments)
        if ex is None:
            continue
        n_slots = int((ex.input_ids == IMAGE_ID).sum())
        assert len(ex) <= max_length and n_slots == 8 * len(ex.images)


def test_packing_emits_rows_nothing_more_can_fill(monkeypatch):
    from vilactl.train import packing

    calls = []
    ffd = packing.first_fit_decreasing
    monkeypatch.setattr(packing, "first_fit_decreasing",
                        lambda *a: calls.append(1) or ffd(*a))
    rng = np.random.default_rng(3)
    same = [Example(f"s{i}", rng.integers(5, 100, 125), rng.integers(5, 100, 125), [])
            for i in range(60)]
    batches = list(packing.packed_batches(iter(same), 384, rows=2, pad_id=0, buffer=16))
    # a row no buffered example can still fill is emitted at once: one packing per buffer
    # refill, not one per row (rows of 3 × 125 = 375 are below the 98 % fill target)
    assert len(calls) <= 8, len(calls)
    assert sum(len(b.sample_ids) for b in batches) == 60
    # 3 × 125 = 375 of 384 fill a row (no fourth fits), so no row waits half empty
    assert all(len(b.sample_ids) == 6 for b in batches)
    assert 1 - sum(b.real_tokens for b in batches) / sum(b.tokens for b in batches) < 0.03
