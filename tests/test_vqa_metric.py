"""The VQAv2 metric beside exact match: answer normalisation, soft accuracy over several
reference answers, and eval items that carry them."""
import pytest

from vilactl.train.evaluate import items, majority_baseline, qa_turns
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


def _seg(role, text=None, image=None):
    return {"role": role, "text": text, "image": image}


def test_majority_baseline_reads_conversations_typed_by_the_test_set():
    """The training set holds conversations (one image, several questions): each turn counts
    for the type the identical held-out question has; untyped questions are left out."""
    test = items([
        {"sample_id": "e1", "source": "eval_vqa:count", "segments": [
            _seg("user", image=b"png"), _seg("user", "How many?"), _seg("assistant", "2")]},
        {"sample_id": "e2", "source": "eval_vqa:color", "segments": [
            _seg("user", image=b"png"), _seg("user", "What color?"), _seg("assistant", "red")]},
    ])
    train = [
        {"sample_id": "t1", "source": "vqa", "segments": [
            _seg("user", image=b"png"), _seg("user", "How many?"), _seg("assistant", "3"),
            _seg("user", "What color?"), _seg("assistant", "red"),
            _seg("user", "Unseen question?"), _seg("assistant", "3")]},
        {"sample_id": "t2", "source": "vqa", "segments": [
            _seg("user", image=b"png"), _seg("user", "What color?"), _seg("assistant", "green"),
            _seg("user", "What color?"), _seg("assistant", "green"),
            _seg("user", "How many?"), _seg("assistant", "2")]},
        {"sample_id": "t3", "source": "vqa:count", "segments": [
            _seg("user", image=b"png"), _seg("user", "Count them"), _seg("assistant", "2")]},
    ]
    turns = qa_turns(train, test)
    assert sorted((t.kind, t.answer) for t in turns) == [
        ("color", "green"), ("color", "green"), ("color", "red"), ("count", "2"), ("count", "2"),
        ("count", "3")]
    base = majority_baseline(turns, test)
    # "green" twice beats "red" once, "2" twice beats "3" once
    assert base["by_kind"] == {"color": 0.0, "count": 1.0} and base["value"] == 0.5
