"""Pretraining on shapes pays off: low-label finetuning and locked-text-tower retrieval.

Small but real runs. Image-caption contrastive pretraining on 2000 matched pairs aligns the
colour (and shape) words with what the image shows; finetuning on the ``synergy`` task
(does the caption's colour match the image's?) with 200 labels then works, while the same
model from scratch stays at chance: from scratch the task needs far more data, since no
single modality says anything about the label. And LiT-style contrastive training with
the pretrained MiniLM text tower locked beats both towers from scratch on retrieval.
Fixed seeds and CPU determinism make the figures repeatable.
"""

from pathlib import Path

import pytest

from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config

PRETRAIN = [
    "objective=contrastive",
    "data.num_train=2000",
    "data.num_val=200",
    "data.num_test=200",
    "data.batch_size=64",
    "trainer.max_epochs=10",
    "callbacks.early_stopping=null",
    "seed=0",
]
# 200 labels; validation only twice (it would cost more than the training).
LOW_LABEL = [
    "data.task=synergy",
    "data.num_train=1500",
    "data.num_val=200",
    "data.num_test=200",
    "data.train_subset=200",
    "trainer.max_epochs=40",
    "trainer.check_val_every_n_epoch=20",
    "callbacks.early_stopping=null",
]


def run(tmp_path_factory, data_dir: Path, name: str, *overrides: str) -> dict:
    cfg = compose_config(
        "train", [*FAST_OVERRIDES, *overrides], tmp_path_factory.mktemp(name), data_dir
    )
    return train(cfg)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir) -> dict:
    return run(tmp_path_factory, data_dir, "pretrain", *PRETRAIN)


@pytest.mark.slow  # nine finetuning runs: about four minutes on two cores
def test_contrastive_pretraining_improves_low_label_finetuning(
    tmp_path_factory, data_dir, pretrained
):
    checkpoint = pretrained["best_checkpoint"]
    assert pretrained["metrics"]["test/r@10_i2t"] > 0.5  # the towers did align
    # Both sides as medians of seeds 0-2: from scratch a seed may by chance pick up some of
    # the task (0.48 to 0.57 over seeds and thread counts), a margin over one seed is noise.
    scratches = [
        run(tmp_path_factory, data_dir, f"scratch{seed}", *LOW_LABEL, f"seed={seed}")
        for seed in (0, 1, 2)
    ]
    frozens = [
        run(
            tmp_path_factory,
            data_dir,
            f"frozen{seed}",
            *LOW_LABEL,
            f"seed={seed}",
            "finetune=frozen",
            f"finetune.checkpoint={checkpoint}",
        )
        for seed in (0, 1, 2)
    ]
    # Partial finetuning moves the towers on 200 labels, so its figure depends on the
    # seed's order and dropout; the claim is about the median of seeds 0-2. Frozen towers:
    # 0.795 on seed 0 since same-scene pairs stopped being negatives of each other in
    # pretraining (data.content_column).
    partials = [
        run(
            tmp_path_factory,
            data_dir,
            f"partial{seed}",
            *LOW_LABEL,
            f"seed={seed}",
            "finetune=partial",
            f"finetune.checkpoint={checkpoint}",
        )
        for seed in (0, 1, 2)
    ]
    scratch_accs = sorted(s["metrics"]["test/acc"] for s in scratches)
    scratch_acc = scratch_accs[1]
    assert scratch_acc < 0.65, f"from scratch, 200 labels should not solve synergy: {scratch_accs}"
    partial_accs = sorted(p["metrics"]["test/acc"] for p in partials)
    # Measured on 2 cores (2026-12-02), one thread per pytest worker: scratch 0.53, 0.565,
    # 0.57; partial 0.71, 0.71, 0.715; frozen 0.795 (seed 0). Two threads: scratch 0.48,
    # 0.53, 0.555; partial 0.69, 0.705, 0.755; frozen 0.795, 0.805, 0.81. Partial
    # finetuning on 200 labels gains less over scratch than the frozen towers do, but on
    # every seed; the frozen claim is the robust one, so it holds for the lowest seed.
    frozen_accs = sorted(f["metrics"]["test/acc"] for f in frozens)
    for name, accuracy, floor, margin in (
        ("frozen (the lowest of 3 seeds)", frozen_accs[0], 0.75, 0.15),
        ("partial (median of 3 seeds)", partial_accs[1], 0.7, 0.1),
    ):
        assert accuracy > floor and accuracy > scratch_acc + margin, (
            f"{name} from contrastive pretraining {accuracy:.3f} vs scratch median "
            f"{scratch_acc:.3f} (partial: {partial_accs}, scratch: {scratch_accs})"
        )
    assert partial_accs[0] > scratch_accs[-1], (partial_accs, scratch_accs)
    for result in (*frozens, *partials):
        assert result["pretrained_from"]["checkpoint"] == checkpoint
        assert result["pretrained_from"]["run"]["objective"] == "ContrastivePretrainer"
    assert all("pretrained_from" not in s for s in scratches)


@pytest.mark.slow  # a learning test: pretraining and two retrieval runs (about a minute)
def test_locked_pretrained_text_tower_beats_scratch_on_retrieval(tmp_path_factory, data_dir):
    common = [*PRETRAIN, "trainer.max_epochs=4"]
    scratch = run(tmp_path_factory, data_dir, "clip_scratch", *common)
    locked = run(
        tmp_path_factory,
        data_dir,
        "lit",
        *common,
        "model/encoders/text=minilm",
        "model.encoders.text.freeze=frozen",
    )
    scratch_rsum, locked_rsum = (r["metrics"]["test/rsum"] for r in (scratch, locked))
    assert locked_rsum > scratch_rsum + 20, (
        f"LiT (locked MiniLM) rsum {locked_rsum:.1f} vs both towers from scratch {scratch_rsum:.1f}"
    )
