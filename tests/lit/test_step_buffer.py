"""Training metrics updated in batches of held steps equal one update per step."""

import pytest
import torch
from torchmetrics import MeanMetric

from mmexp.lit.common import EpochMeans
from mmexp.lit.step_buffer import StepBuffer
from mmexp.metrics.classification import classification_metrics


def steps(count: int, classes: int = 3):
    generator = torch.Generator().manual_seed(0)
    for index in range(count):
        size = 2 + index % 3  # batches of different sizes: the loss mean is weighted
        logits = torch.randn(size, classes, generator=generator)
        labels = torch.arange(size) % classes
        yield logits, labels, torch.nn.functional.cross_entropy(logits, labels)


@pytest.mark.parametrize("every", [1, 4, None])
def test_held_steps_give_the_per_step_figures(every):
    per_step = classification_metrics(3, "train")
    per_step_loss = MeanMetric()
    batched = classification_metrics(3, "train")
    means = EpochMeans(["loss"])

    def consume(logits, labels, losses, sizes):
        batched.update(logits, labels)
        means.update({"loss": losses}, sizes)

    buffer = StepBuffer(every, consume)
    for logits, labels, loss in steps(11):
        per_step.update(logits, labels)
        per_step_loss.update(loss, weight=len(labels))
        buffer.add(logits, labels, loss.reshape(1), weight=len(labels))
    assert len(buffer) == (11 % every if every else 11)
    buffer.flush()
    assert len(buffer) == 0
    expected, got = per_step.compute(), batched.compute()
    for name in expected:
        assert got[name] == pytest.approx(expected[name].item(), abs=1e-6), name
    assert means.means["loss"].compute() == pytest.approx(per_step_loss.compute().item())


def test_flush_of_nothing_calls_nobody_and_bad_intervals_are_refused():
    calls = []
    StepBuffer(None, lambda *a: calls.append(a)).flush()
    assert calls == []
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="model.train_metrics_every_n_steps"):
            StepBuffer(bad, print)
