"""Gradient-Blending trains the encoder joint training leaves behind (seed medians).

On shapes `redundant` with image + text, both modalities show the label; joint training on
the fused loss alone fits it (test accuracy above 0.99) before either encoder's features
decode it fully. The ridge probe of the modality-balance callback on the image encoder's
features ends at 0.889, 0.925 and 0.903 on seeds 0-2 with `training=standard`, and at
0.991, 0.977 and 0.987 with `training=gradient_blending`, whose unimodal heads give each
encoder a loss of its own (text: 0.970, 0.948, 0.955 against 1.000, 0.990, 0.994).
Measured at this budget (2,000 samples, 8 epochs, 2 cores, 2026-12-03, about a minute a
run). An image encoder that never trains (`fusion=unimodal_text`) gives 0.509: the probe
is not near chance under standard training, which is why the claim is a raise over the
standard run and not one from chance.
"""

import statistics

import pytest

from mmexp.train import train

BUDGET = [
    "data.task=redundant",
    "data.modalities=[image,text]",
    "data.num_train=2000",
    "data.num_val=500",
    "data.num_test=500",
    "data.batch_size=64",
    "trainer.max_epochs=8",
    "callbacks.early_stopping=null",
    "+callbacks.modality_balance._target_=mmexp.lit.modality_balance.ModalityBalance",
]


def image_probe(make_train_cfg, method: str, seed: int) -> float:
    cfg = make_train_cfg(f"training={method}", *BUDGET, f"seed={seed}", run_name=f"{method}-{seed}")
    return train(cfg)["metrics"]["balance/image/probe_acc"]


@pytest.mark.learning
def test_gradient_blending_raises_the_image_probe_over_standard_training(make_train_cfg):
    # medians 0.903 and 0.987: the bar asks for half of that gap
    standard = statistics.median(image_probe(make_train_cfg, "standard", s) for s in (0, 1, 2))
    blended = statistics.median(
        image_probe(make_train_cfg, "gradient_blending", s) for s in (0, 1, 2)
    )
    assert blended > standard + 0.04, f"standard {standard:.3f}, gradient_blending {blended:.3f}"
