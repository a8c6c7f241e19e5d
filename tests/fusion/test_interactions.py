"""Fusion strategies on the shapes interaction tasks behave as the taxonomy predicts.

On ``synergy`` with image + audio (the label is whether the tone's colour matches the
image's colour), no single modality carries any information: unimodal baselines and late
(decision-level) fusion must stay near chance, while strategies that model cross-modal
interactions learn it. On ``redundant`` every modality suffices and every strategy does
well. Fixed seeds and CPU determinism make the figures repeatable.
"""

import pytest
from omegaconf import OmegaConf

from mmexp.train import train
from tests.helpers.fusion import CONFIGS

#: Accuracy of guessing on synergy (two classes: the colours match or not).
CHANCE = 0.5

SMALL = [
    "data.num_train=800",
    "data.num_val=200",
    "data.num_test=200",
    "callbacks.early_stopping=null",
    "data.eval_batch_size=200",
]


# MISA's own losses (similarity, difference, reconstruction) drive its subspaces to
# constants before the task is learned at the shared default lr 2e-3 and at 1e-3 (redundant:
# 0.37, chance, on seed 0); at 5e-4 it learns (0.86). The reference trains at 1e-4. Its
# claims are made at 5e-4, and a table comparing it runs every row at that rate.
LEARNING_RATE = {"misa": 5e-4}


def accuracy_of(
    make_train_cfg, fusion: str, task: str, modalities: str, epochs: int, seed: int = 0
) -> float:
    rate = [f"model.optimizer.lr={LEARNING_RATE[fusion]}"] if fusion in LEARNING_RATE else []
    cfg = make_train_cfg(
        f"fusion={fusion}",
        f"data.task={task}",
        f"data.modalities={modalities}",
        f"trainer.max_epochs={epochs}",
        *SMALL,
        *rate,
        f"seed={seed}",
        run_name=f"{fusion}-{task}-{seed}",
    )
    return train(cfg)["metrics"]["test/acc"]


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["unimodal_image", "unimodal_audio", "late"])
def test_synergy_stays_near_chance_on_every_seed(make_train_cfg, fusion):
    # With the interaction strategies' longest budget, so that "does not learn" is not "has
    # not had time": no single modality carries the label, whatever the seed. Chance is
    # 0.5; the bar leaves 0.15 for what 200 test samples and overfitting can give, and every
    # one of seeds 0-2 must stay under it.
    accuracies = [
        accuracy_of(make_train_cfg, fusion, "synergy", "[image,audio]", 12, seed)
        for seed in (0, 1, 2)
    ]
    assert max(accuracies) < 0.65, f"{fusion} on synergy: {accuracies}"


@pytest.mark.slow
def test_concat_learns_synergy(make_train_cfg):
    # The one synergy learning run of the slow suite; every strategy on three seeds is
    # test_interaction_strategies_learn_synergy_on_most_seeds (pytest -m learning).
    # Seed 0 ends at 0.875-0.880 on one 2-core machine and at 0.840 on another (float
    # results differ with the CPU's vector units), its validation accuracy flat at about
    # 0.86 from epoch 3: the bar sits between that and the unimodal baselines' ceiling
    # (0.65), as the learning test's 0.7 does. A robust claim, so every one of seeds 0-2
    # (0.875, 0.975, 0.93 on 2 threads, 2026-12-02).
    accuracies = [
        accuracy_of(make_train_cfg, "concat", "synergy", "[image,audio]", 6, seed)
        for seed in (0, 1, 2)
    ]
    assert min(accuracies) > CHANCE + 0.2, f"concat should learn synergy: {accuracies}"


# Every strategy that models cross-modal interactions (all but the unimodal baselines,
# decision-level late fusion, mi_scalar and misa, below; checked by
# test_the_claim_covers_every_interaction_strategy).
INTERACTION = [
    "concat",
    "sum",
    "product",
    "gated",
    "attention",
    "tensor",
    "low_rank",
    "early_tokens",
    "cross_attention",
    "bottleneck",
    "film",
    "mult",
    "mlb",
    "mfb",
    "mfh",
    "mutan",
    "block",
    "mcb",
    "mi_matrix",
    "mi_vector",
    "nl_gate",
]
# MultiBench's scalar MI, a(z) x + c(z) 1, does model an interaction, but the shared head's
# LayerNorm removes the shift and the size of the scale: the head sees z only through the
# sign of a(z) (tests/fusion/test_multiplicative.py). On synergy it stays at chance (0.480
# and 0.495 on seeds 0 and 1 after 8 epochs), so it is no part of the claim.
CANCELLED_BY_THE_HEAD = {"mi_scalar"}
# MISA's similarity and difference losses pull its shared and private subspaces towards
# constants unless the task's gradient holds them apart; on synergy, where no modality alone
# carries the label, the task gives too little early signal: 0.49 and 0.49 on seeds 0 and 1
# after 8 epochs at lr 5e-4, 0.49 after 24 on seed 0, each with the reconstruction loss at
# 0.000 (collapsed); without its losses it stays at chance after 8 epochs at lr 2e-3 too.
# It learns redundant (test_every_strategy_solves_redundant), so it is no part of this claim.
COLLAPSED_BY_ITS_OWN_LOSSES = {"misa"}
# From scratch on 800 samples a seed may stay stuck at chance (tensor fusion: 0.49, 0.74
# and 0.93 on seeds 0-2), so the claim is about most seeds: 2 of 3. The joint transformers
# over tokens start slower (early_tokens: 0.87, 0.49, 0.49 after 12 epochs, 0.84 on seeds 1
# and 2 after 24; MBT, whose default exchanges once: 0.50, 0.49 after 12, 0.77, 0.84, 0.83
# after 24).
SYNERGY_EPOCHS = {
    "early_tokens": 24,
    "bottleneck": 24,
    "cross_attention": 12,
    "mult": 12,
    "tensor": 12,
    "film": 12,
}


def test_the_claim_covers_every_interaction_strategy():
    names = {p.stem for p in CONFIGS}
    decision_or_unimodal = {n for n in names if n == "late" or n.startswith("unimodal")}
    excluded = CANCELLED_BY_THE_HEAD | COLLAPSED_BY_ITS_OWN_LOSSES
    assert set(INTERACTION) == names - decision_or_unimodal - excluded


# Up to three trainings of 8 to 24 epochs per strategy: about an hour on 2 cores, more than
# CI's budget, so it has a marker of its own: pytest -m learning.
@pytest.mark.learning
@pytest.mark.parametrize("fusion", INTERACTION)
def test_interaction_strategies_learn_synergy_on_most_seeds(make_train_cfg, fusion):
    epochs = SYNERGY_EPOCHS.get(fusion, 8)
    accuracies = []
    for seed in (0, 1, 2):
        accuracies.append(
            accuracy_of(make_train_cfg, fusion, "synergy", "[image,audio]", epochs, seed)
        )
        learned = sum(a > 0.7 for a in accuracies)
        if learned == 2 or len(accuracies) - learned == 2:
            break  # decided: the third seed cannot change the verdict
    assert sum(a > 0.7 for a in accuracies) >= 2, f"{fusion} on synergy: {accuracies}"


# Joint transformers over token sequences start slower from scratch on 800 samples.
TOKEN_LEVEL = {"early_tokens", "cross_attention", "bottleneck", "mult"}
REDUNDANT_MODALITIES = ("image", "text")


def runs_on(path, modalities) -> bool:
    """Whether a strategy config makes a run of its own on ``modalities``.

    A config that names a ``modality`` (a unimodal baseline) needs it among them, and
    ``modality: null`` (the first of them) would repeat the run of ``unimodal_<first>``.
    """
    config = OmegaConf.load(path)
    return "modality" not in config or config.modality in modalities


# Every strategy config, each strategy once: on [image, text] that leaves out unimodal_audio
# (no audio) and unimodal (= unimodal_image there).
REDUNDANT = [p.stem for p in CONFIGS if runs_on(p, REDUNDANT_MODALITIES)]
# The bar on redundant, where the caption alone reaches 0.95 and concat 0.98 (seed 0, 8
# epochs). MISA fits the training set (0.99) but generalises less from 800 samples: test
# 0.830, 0.805, 0.835 on seeds 0-2 after 8 epochs at its lr, 0.85-0.875 after 20; 0.885
# with its own losses switched off, so its Transformer layer (feed-forward 2048) over the
# sigmoid subspaces is what limits it, not a wiring fault (1 thread, 2026-12-02). Its bar,
# more than twice chance (3 shapes: 0.33), still tells a learning run from a broken one.
REDUNDANT_BAR = {"misa": 0.75}


@pytest.mark.slow
@pytest.mark.parametrize("fusion", REDUNDANT)
def test_every_strategy_solves_redundant(make_train_cfg, fusion):
    epochs = 12 if fusion in TOKEN_LEVEL else 8
    modalities = f"[{','.join(REDUNDANT_MODALITIES)}]"
    accuracy = accuracy_of(make_train_cfg, fusion, "redundant", modalities, epochs)
    bar = REDUNDANT_BAR.get(fusion, 0.85)
    assert accuracy > bar, f"{fusion} on redundant: {accuracy:.3f} (bar {bar})"
