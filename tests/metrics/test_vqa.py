"""The VQA answer normalisation and accuracy against vqaEval.py's rules and formula."""

import math
from itertools import combinations

import pytest
import torch

from mmexp.metrics.vqa import ANSWER_TYPES, VQAAccuracy, VQABCELoss, sample_scores, vqa_metrics
from mmexp.metrics.vqa_answers import (
    answer_scores,
    normalize_answer,
    process_punctuation,
    vqa_accuracy,
)


def leave_one_out_accuracy(prediction: str, answers: list[str]) -> float:
    # The official formula written out: every subset of len-1 human answers, the matches
    # among them over 3, capped at 1, averaged. Strings compared as given.
    subsets = list(combinations(range(len(answers)), len(answers) - 1))
    return sum(min(1, sum(answers[i] == prediction for i in s) / 3) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Two", "2"),
        ("two", "2"),
        ("none", "0"),
        ("a dog", "dog"),
        ("The Dog", "dog"),
        ("an apple", "apple"),
        ("yes.", "yes"),
        ("Yes!", "yes"),
        ("dont", "don't"),
        ("it isnt", "it isn't"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # a comma between digits: every mark is removed, not spaced
        ("black/white", "black white"),  # a mark touching no space becomes one
        ("black / white", "black white"),  # one touching a space is removed
        ("left-handed", "left handed"),
        ("t-shirt, blue", "t shirt blue"),  # each mark is tested on its own
        ("  fire\thydrant\n", "fire hydrant"),
        ("10:30", "10:30"),  # ':' is not among the marks
        ("what's", "what's"),
    ],
)
def test_normalisation_follows_vqa_eval(raw, normal):
    assert normalize_answer(raw) == normal


def test_at_most_32_periods_are_removed_as_in_the_reference():
    # vqaEval passes re.UNICODE (32) as sub()'s count
    assert process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize(
    ("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]
)
def test_accuracy_by_number_of_matching_humans(matches, expected):
    answers = ["cat"] * matches + [f"other{i}" for i in range(10 - matches)]
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)
    assert vqa_accuracy("cat", answers) == pytest.approx(leave_one_out_accuracy("cat", answers))


HAND_MADE = [
    # (prediction, ten human answers, official accuracy)
    ("2", ["two", "2", "2", "Two", "3", "2", "two", "2", "2 ", "2"], 1.0),
    (
        "dog",
        ["a dog", "dog", "the dog", "puppy", "puppy", "puppy", "cat", "cat", "cat", "cat"],
        0.9,
    ),  # fmt: skip
    ("yes", ["yes.", "yes", "no", "no", "no", "no", "no", "no", "no", "no"], 0.6),
    ("don't know", ["dont know", "no idea"] + ["unsure"] * 8, 0.3),
    ("red", ["blue"] * 10, 0.0),
    # all ten agree: nothing is normalised, so "yes" does not match "Yes."
    ("yes", ["Yes."] * 10, 0.0),
    ("Yes.", ["Yes."] * 10, 1.0),
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), HAND_MADE)
def test_hand_made_answer_sets(prediction, answers, expected):
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)
    # the formula on the answers as the reference compares them
    if len(set(a.strip() for a in answers)) > 1:
        compared = [normalize_answer(a) for a in answers]
        prediction = normalize_answer(prediction)
    else:
        compared = [a.strip() for a in answers]
    assert vqa_accuracy(prediction, answers) == pytest.approx(
        leave_one_out_accuracy(prediction, compared)
    )


def test_answer_scores_are_the_accuracy_of_each_normalised_answer():
    answers = ["two", "2", "2", "Two", "3", "three", "a cat", "4", "four", "4"]
    scores = answer_scores(answers)
    assert scores == pytest.approx({"2": 1.0, "3": 0.6, "cat": 0.3, "4": 0.9})
    for answer, score in scores.items():
        assert score == pytest.approx(vqa_accuracy(answer, answers))
    assert answer_scores(["Yes."] * 10) == {}  # no normalised answer matches them


def test_metric_scores_the_top_answer_overall_and_per_type():
    # three answers; rows: yes/no (top answer 0, right), number (top 1, 0.3), other (top 2, 0)
    logits = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    targets = torch.tensor(
        [[1.0, 0, 0], [0, 0.3, 0.9], [0.6, 0, 0], [0.9, 0, 0]], dtype=torch.float32
    )
    types = torch.tensor([0, 1, 2, 2])
    metrics = vqa_metrics(3, "val")
    metrics.update(logits, targets, answer_type=types)
    values = {k: v.item() for k, v in metrics.compute().items()}
    assert values == pytest.approx(
        {
            "val/vqa_acc": (1.0 + 0.3 + 0.0 + 0.9) / 4,
            "val/vqa_acc_yes_no": 1.0,
            "val/vqa_acc_number": 0.3,
            "val/vqa_acc_other": 0.45,
        }
    )
    assert set(vqa_metrics(3, "train").keys()) == {"train/vqa_acc"}


def test_class_index_targets_score_like_ten_identical_answers():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert sample_scores(logits, torch.tensor([0, 1])).tolist() == [1.0, 0.0]


def test_a_per_type_metric_without_types_is_nan():
    metric = VQAAccuracy("number")
    metric.update(torch.zeros(2, 3), torch.zeros(2, 3))
    assert math.isnan(metric.compute().item())
    with pytest.raises(ValueError, match="answer_type must be one of"):
        VQAAccuracy("yes_no")
    assert ANSWER_TYPES == ("yes/no", "number", "other")


def test_loss_is_bce_summed_over_answers():
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    targets = torch.tensor([[1.0, 0.3, 0.0]])
    p = torch.sigmoid(logits)
    expected = -(targets * p.log() + (1 - targets) * (1 - p).log()).sum()
    assert VQABCELoss()(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    one_hot = VQABCELoss()(logits, torch.tensor([0]))
    assert one_hot.item() == pytest.approx(
        VQABCELoss()(logits, torch.tensor([[1.0, 0.0, 0.0]])).item()
    )
