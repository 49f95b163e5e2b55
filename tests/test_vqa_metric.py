"""The VQAv2 metric beside exact match: answer normalisation, soft accuracy over several
reference answers, and eval items that carry them."""
import pytest

from vilactl.train.evaluate import items
from vilactl.train.evaluate import normalise as exact
from vilactl.train.vqa_metric import normalise, score


@pytest.mark.parametrize("answer, expected", [
    ("Two.", "2"), ("the red-circle", "red circle"), ("Top left!", "top left"),
    ("10.5", "10.5"), ("left.", "left"), ("1,000", "1000"), ("dont know", "don't know"),
    ("A  Yellow\tSquare ", "yellow square"), ("none", "0"), ("an apple", "apple"),
])
def test_answers_are_normalised_as_vqav2_does(answer, expected):
    assert normalise(answer) == expected


def test_one_reference_is_a_normalised_exact_match():
    assert score("Two", ["2"]) == 1.0 and score("a triangle", ["triangle."]) == 1.0
    assert score("square", ["triangle"]) == 0.0
    # exact match after lower-casing (the `accuracy` metric) calls both of these wrong
    assert exact("Two") != exact("2") and exact("the circle") != exact("circle")
    assert score("the circle", ["circle"]) == 1.0


@pytest.mark.parametrize("agree, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0),
                                             (10, 1.0)])
def test_soft_accuracy_over_ten_answers(agree, expected):
    refs = ["red"] * agree + ["blue"] * (10 - agree)
    assert score("Red", refs) == pytest.approx(expected)


def test_a_question_needs_a_reference():
    with pytest.raises(ValueError, match="at least one reference"):
        score("red", [])


def test_eval_items_carry_the_answers_column():
    seg = [{"role": "user", "text": "What colour?", "image": b"x"},
           {"role": "assistant", "text": "red", "image": None}]
    rows = [{"sample_id": "a", "source": "vqa:color", "segments": seg,
             "answers": ["red", "red", "dark red"]},
            {"sample_id": "b", "source": "vqa:color", "segments": seg}]
    a, b = items(rows)
    assert a.references == ("red", "red", "dark red") and b.references == ()
    assert a.answer == b.answer == "red" and a.kind == "color"
