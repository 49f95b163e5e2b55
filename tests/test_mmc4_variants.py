"""MMC4 variants: placement properties, determinism, filters, and MMC4's published assignment."""
import json

import numpy as np
import pytest

from vilactl.curation.mmc4_variants import CoreFilter, assignment, build, count


def make_doc(rng, doc_id="d:1", n_img=4, n_sent=7):
    sim = rng.uniform(0.1, 0.2, (n_img, n_sent))
    slots = rng.permutation(n_sent)[:n_img]
    for i, j in enumerate(slots):
        sim[i, j] = 0.3 + rng.uniform(0, 0.05)
    return {"doc_id": doc_id, "text_list": [f"sentence {j}." for j in range(n_sent)],
            "similarity_matrix": sim.tolist(),
            "image_info": [{"image": f"img{i}".encode(), "width": 64, "height": 64}
                           for i in range(n_img)]}, slots


def images_in(sample):
    return [s["image"] for s in sample["segments"] if s["image"] is not None]


@pytest.mark.parametrize("seed", range(20))
def test_placement_properties(seed):
    rng = np.random.default_rng(seed)
    doc, slots = make_doc(rng, n_img=int(rng.integers(2, 7)), n_sent=int(rng.integers(7, 12)))
    images = {i["image"] for i in doc["image_info"]}
    for variant in ("interleaved", "after", "shuffled"):
        [sample] = build(doc, variant, max_images=6)
        got = images_in(sample)
        assert sorted(got) == sorted(images) and len(got) == len(set(got))  # each exactly once
        texts = [s["text"] for s in sample["segments"] if s["text"] is not None]
        assert texts == doc["text_list"]
    [inter] = build(doc, "interleaved")
    segs = inter["segments"]
    for i, j in enumerate(slots):  # image i sits right before its matched sentence
        pos = next(k for k, s in enumerate(segs) if s["image"] == f"img{i}".encode())
        after = next(s for s in segs[pos:] if s["text"] is not None)
        assert after["text"] == f"sentence {j}."
        assert segs[pos + 1]["text"] == f"sentence {j}." or segs[pos + 1]["image"] is not None
    [aft] = build(doc, "after")
    for i, j in enumerate(slots):
        pos = next(k for k, s in enumerate(aft["segments"]) if s["image"] == f"img{i}".encode())
        before = [s for s in aft["segments"][:pos] if s["text"] is not None][-1]
        assert before["text"] == f"sentence {j}."
    pairs = build(doc, "pairs")
    assert len(pairs) == len(slots)
    for p in pairs:
        i = int(p["sample_id"].split("#")[1])
        assert p["segments"][0]["image"] == f"img{i}".encode()
        assert p["segments"][1]["text"] == f"sentence {slots[i]}."


def test_shuffled_is_seeded_and_differs_from_interleaved():
    rng = np.random.default_rng(0)
    docs = [make_doc(rng, f"d:{k}", 5, 10)[0] for k in range(20)]
    a = [build(d, "shuffled", seed=1)[0] for d in docs]
    b = [build(d, "shuffled", seed=1)[0] for d in docs]
    c = [build(d, "shuffled", seed=2)[0] for d in docs]
    inter = [build(d, "interleaved")[0] for d in docs]
    assert a == b and a != c
    assert sum(x["segments"] != y["segments"] for x, y in zip(a, inter)) >= 15


def test_max_images_keeps_the_first_in_page_order_as_vila():
    rng = np.random.default_rng(3)
    doc, slots = make_doc(rng, n_img=8, n_sent=10)
    [sample] = build(doc, "interleaved", max_images=6)
    kept = images_in(sample)           # in the sample: placed before their sentences
    first6 = [f"img{i}".encode() for i in range(6)]
    assert sorted(kept) == sorted(first6) and count([sample])["images"] == 6
    assert kept == [f"img{i}".encode() for i in sorted(range(6), key=lambda i: (slots[i], i))]
    assert sorted(slots[:6]) != sorted(slots)[:6]   # this document tells the two rules apart


def test_max_images_sentence_order_option():
    rng = np.random.default_rng(3)
    doc, slots = make_doc(rng, n_img=8, n_sent=10)
    [sample] = build(doc, "interleaved", max_images=6, image_order="sentence")
    kept = images_in(sample)
    first6 = [f"img{i}".encode() for i in np.argsort(slots, kind="stable")[:6]]
    assert kept == first6 and count([sample])["images"] == 6


def test_published_assignment_and_filters(shared_data):
    doc = json.loads((shared_data / "mmc4_v1.1_doc.jsonl").read_text().splitlines()[0])
    doc["doc_id"] = "readme:1"
    matched, sims = assignment(doc)
    assert matched.tolist() == [i["matched_text_index"] for i in doc["image_info"]]
    assert sims.tolist() == [i["matched_sim"] for i in doc["image_info"]]
    # 3 sentences < 4: mmc4-core drops it; with the limit lowered its weakest match (0.277)
    # still passes the 0.25 bar for 75% of assignments.
    assert CoreFilter().reason(doc, matched, sims) == "sentences_out_of_range"
    assert CoreFilter(min_sentences=3).reason(doc, matched, sims) is None
    assert CoreFilter(min_sentences=3, strong_sim=0.3).reason(doc, matched, sims) == \
        "weak_assignments"
    for info in doc["image_info"]:
        info.update(width=100, height=30)
    assert CoreFilter(min_sentences=3, min_side=50).reason(doc, matched, sims) == \
        "image_too_small"
    assert CoreFilter(min_sentences=3, max_aspect=3.0).reason(doc, matched, sims) == \
        "aspect_ratio"
