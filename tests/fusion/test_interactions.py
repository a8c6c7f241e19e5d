"""Fusion strategies on the shapes interaction tasks behave as the taxonomy predicts.

On ``synergy`` with image + audio (the label is whether the tone's colour matches the
image's colour), no single modality carries any information: unimodal baselines and late
(decision-level) fusion must stay near chance, while strategies that model cross-modal
interactions learn it. On ``redundant`` every modality suffices and every strategy does
well. Fixed seeds and CPU determinism make the figures repeatable.
"""

import pytest

from mmexp.train import train

SMALL = ["data.num_train=800", "data.num_val=200", "data.num_test=200",
         "callbacks.early_stopping=null", "data.eval_batch_size=200"]


def accuracy_of(make_train_cfg, fusion: str, task: str, modalities: str, epochs: int,
                seed: int = 0) -> float:
    cfg = make_train_cfg(f"fusion={fusion}", f"data.task={task}", f"data.modalities={modalities}",
                         f"trainer.max_epochs={epochs}", *SMALL, f"seed={seed}",
                         run_name=f"{fusion}-{task}-{seed}")
    return train(cfg)["metrics"]["test/acc"]


@pytest.mark.parametrize("fusion", ["unimodal_image", "unimodal_audio", "late"])
def test_synergy_stays_near_chance_without_interactions(make_train_cfg, fusion):
    accuracy = accuracy_of(make_train_cfg, fusion, "synergy", "[image,audio]", 6)
    assert accuracy < 0.65, f"{fusion} should stay near chance on synergy, got {accuracy:.3f}"


def test_concat_learns_synergy(make_train_cfg):
    accuracy = accuracy_of(make_train_cfg, "concat", "synergy", "[image,audio]", 6)
    assert accuracy > 0.85, f"concat should learn synergy, got {accuracy:.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["tensor", "cross_attention", "early_tokens"])
def test_interaction_strategies_learn_synergy(make_train_cfg, fusion):
    # From scratch on 800 samples a seed may stay stuck at chance (tensor fusion: 0.49, 0.74
    # and 0.93 on seeds 0-2), so the claim is about most seeds: the median of three. The
    # joint transformer over tokens starts slower: 0.87, 0.49, 0.49 after 12 epochs, 0.84 on
    # seeds 1 and 2 after 24.
    epochs = 24 if fusion == "early_tokens" else 12
    accuracies = [accuracy_of(make_train_cfg, fusion, "synergy", "[image,audio]", epochs, seed)
                  for seed in (0, 1, 2)]
    median = sorted(accuracies)[1]
    assert median > 0.7, f"{fusion} should learn synergy on most seeds, got {accuracies}"


# Joint transformers over token sequences start slower from scratch on 800 samples.
TOKEN_LEVEL = {"early_tokens", "cross_attention", "bottleneck", "mult"}
REDUNDANT = ["unimodal_image", "unimodal_text", "concat", "sum", "product", "late", "gated",
             "attention", "tensor", "low_rank", "early_tokens", "cross_attention", "bottleneck",
             "film", "mult"]


@pytest.mark.slow
@pytest.mark.parametrize("fusion", REDUNDANT)
def test_every_strategy_solves_redundant(make_train_cfg, fusion):
    epochs = 12 if fusion in TOKEN_LEVEL else 8
    accuracy = accuracy_of(make_train_cfg, fusion, "redundant", "[image,text]", epochs)
    assert accuracy > 0.85, f"{fusion} on redundant: {accuracy:.3f}"
