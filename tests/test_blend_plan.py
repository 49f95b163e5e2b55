"""curation/blend_plan.py without I/O: the unit rule, exactness, seeds, grouping, upsampling."""
import numpy as np
import pytest

from vilactl.base.errors import VilactlError
from vilactl.curation.blend_plan import Supply, check_weights, plan


def docs(n, seed=0):
    return np.random.default_rng(seed).integers(1, 7, n)     # 1..6 images per document


def test_image_shares_exact_to_one_document():
    p = plan([Supply("mmc4", 0.5, docs(5000)), Supply("coyo", 0.5, np.ones(20000, int))], 3)
    mmc4, coyo = p.draws
    assert coyo.units == coyo.target and abs(mmc4.units - mmc4.target) <= 3
    assert abs(p.achieved_share(mmc4) - 0.5) < 0.005
    # default size: the most reachable without repeats (MMC4 is the limit at 1:1)
    assert mmc4.units <= docs(5000).sum() and not mmc4.repeats and not coyo.repeats
    assert len(set(mmc4.rows.tolist())) == len(mmc4.rows)


def test_text_only_component_counts_samples():
    p = plan([Supply("vqa", 0.7, np.ones(2400, int)), Supply("text", 0.3, np.zeros(1000, int))],
             0)
    vqa, text = p.draws
    assert text.unit == "samples" and len(text.rows) == 1000 and vqa.units == round(1000 / .3 * .7)


def test_positions_are_a_permutation_and_seeded():
    sup = [Supply("a", 0.25, docs(300)), Supply("b", 0.75, np.ones(3000, int), group=4)]
    p, q, r = plan(sup, 1), plan(sup, 1), plan(sup, 2)
    assert np.array_equal(p.position, q.position) and not np.array_equal(p.position, r.position)
    # another seed draws other documents: the same shares, to one document
    assert all(abs(a.units - b.units) <= 6 for a, b in zip(p.draws, r.draws))
    b = p.component == 1
    # each group of 4 pairs shares one position, members 0..3
    pos, counts = np.unique(p.position[b], return_counts=True)
    assert counts.max() == 4 and sorted(set(p.member[b].tolist())) == [0, 1, 2, 3]
    assert sorted(np.unique(p.position).tolist()) == list(range(p.num_samples))


def test_upsample_draws_fresh_epochs():
    p = plan([Supply("a", 1.0, np.ones(10, int))], 0, images=25, allow_upsample=True)
    d = p.draws[0]
    assert d.units == 25 and d.repeats == 15 and sorted(np.bincount(d.epoch)) == [5, 10, 10]
    with pytest.raises(VilactlError, match="has 10 images, the blend needs 25"):
        plan([Supply("a", 1.0, np.ones(10, int))], 0, images=25)


@pytest.mark.parametrize("weights, normalize, message", [
    ({}, False, "at least one component"),
    ({"a": -1.0, "b": 2.0}, False, "non-negative"),
    ({"a": 0.0}, False, "all weights are zero"),
    ({"a": 0.2, "b": 0.2}, False, "weights sum to 0.4"),
])
def test_bad_weights(weights, normalize, message):
    with pytest.raises(VilactlError, match=message):
        check_weights(weights, normalize)


def test_normalize_and_zero_weight_dropped():
    assert check_weights({"a": 2.0, "b": 6.0, "c": 0.0}, True) == {"a": 0.25, "b": 0.75}
