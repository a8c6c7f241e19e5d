"""Fusion strategies on the shapes questions (data.task=vqa) against their chance rates.

The question alone answers at best 13/36 = 0.361 (its type fixes the answer set), the image
alone at 1/12 = 0.083, and decision-level fusion at 0.5 (the question does not tell it which
of the two shapes' values to pick): mmexp/data/shapes/questions.py. A strategy that models
interactions climbs well above the best unimodal baseline; the baselines stay at theirs.

Measured on 8,000 training questions, 6 epochs (1 thread, 2026-12-03, about 3 min a run
with two side by side): test/vqa_acc of unimodal_image 0.074 (chance 0.083), unimodal_text
0.348 (0.361) and late 0.468 (0.5) on seed 0; concat 0.446, 0.422, 0.468 on seeds 0-2.
With these from-scratch encoders (a byte-level text Transformer, a small CNN) concat does
not yet bind the named shape to its attributes: on 16,000 questions and 8 epochs it
reaches test 0.514 (other 0.50, number 0.50, yes/no 0.56), late fusion's ceiling and no
more (allowed 20 epochs, validation peaks at 0.538 in epoch 7 and early stopping ends it at
12, test 0.502), so no claim is made that it beats late fusion.
"""

import pytest

from mmexp.train import train

BUDGET = [
    "data.task=vqa",
    "objective=vqa",
    "data.num_train=8000",
    "data.num_val=500",
    "data.num_test=500",
    "data.batch_size=64",
    "data.eval_batch_size=250",
    "trainer.max_epochs=6",
]
TEXT_ONLY = 13 / 36
CHANCE = {"unimodal_image": 1 / 12, "unimodal_text": TEXT_ONLY, "late": 0.5}


def vqa_accuracy(make_train_cfg, fusion: str, seed: int = 0) -> float:
    cfg = make_train_cfg(f"fusion={fusion}", *BUDGET, f"seed={seed}", run_name=f"{fusion}-{seed}")
    return train(cfg)["metrics"]["test/vqa_acc"]


@pytest.mark.learning
def test_concat_answers_above_the_question_alone_on_most_seeds(make_train_cfg):
    # 0.446, 0.422, 0.468 on seeds 0-2 against the question's 0.361: the bar leaves 0.02
    # to the lowest seed, and the median must clear it
    accuracies = sorted(vqa_accuracy(make_train_cfg, "concat", seed) for seed in (0, 1, 2))
    assert accuracies[1] > TEXT_ONLY + 0.04, f"concat on shapes vqa: {accuracies}"


@pytest.mark.learning
@pytest.mark.parametrize("fusion", sorted(CHANCE))
def test_unimodal_baselines_and_late_fusion_stay_near_their_chance(make_train_cfg, fusion):
    # seed 0: 0.074, 0.348 and 0.468 against 0.083, 0.361 and 0.5
    accuracy = vqa_accuracy(make_train_cfg, fusion)
    assert accuracy < CHANCE[fusion] + 0.05, f"{fusion} on shapes vqa: {accuracy:.3f}"
