"""The recurrent and 1-D conv encoders learn shapes' redundant label from their modality alone.

Seed 0, 800 training samples, 6 epochs; chance is 1/3. With the mean pooling the four reach
0.99-1.0 on this machine; the recurrent ones pooling their final states stay near 0.5 at
this budget (mmexp/encoders/text_recurrent.py), so a bar at 0.85 tells the two apart.
"""

import pytest

from mmexp.train import train

SMALL = [
    "data.num_train=800",
    "data.num_val=200",
    "data.num_test=200",
    "data.eval_batch_size=200",
    "callbacks.early_stopping=null",
    "data.task=redundant",
    "trainer.max_epochs=6",
    "seed=0",
]


@pytest.mark.slow  # 5-30 s each on one core
@pytest.mark.parametrize(
    ("modality", "choice"),
    [("text", "lstm"), ("text", "gru"), ("audio", "lstm"), ("audio", "cnn1d")],
)
def test_the_encoder_alone_learns_the_redundant_shape(make_train_cfg, modality, choice):
    cfg = make_train_cfg(
        f"data.modalities=[{modality}]", f"model/encoders/{modality}={choice}", *SMALL
    )
    accuracy = train(cfg)["metrics"]["test/acc"]
    assert accuracy > 0.85, f"{modality}={choice} on redundant: {accuracy:.3f}"
