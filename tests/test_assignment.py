"""MMC4's assignment: threshold, one image per sentence, leftovers take their argmax."""
import numpy as np

from vilactl.curation.assignment import assign


def test_assignment_is_optimal_not_greedy():
    # Greedy would give image 0 sentence 0 (0.9) and image 1 sentence 1 (0.1): total 1.0.
    sim = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert assign(sim).tolist() == [1, 0]  # total 1.65


def test_low_similarity_images_are_dropped():
    sim = np.array([[0.14, 0.10, 0.12], [0.2, 0.3, 0.16]])
    assert assign(sim).tolist() == [-1, 1]


def test_more_images_than_sentences_leftovers_take_argmax():
    sim = np.array([[0.30, 0.20], [0.29, 0.25], [0.31, 0.16]])
    # Best one-to-one: image 2 → 0 and image 1 → 1 (0.56); image 0 is left over → its argmax 0.
    assert assign(sim).tolist() == [0, 1, 0]


def test_empty_inputs():
    assert assign(np.zeros((0, 3))).tolist() == []
    assert assign(np.zeros((2, 0))).tolist() == [-1, -1]
