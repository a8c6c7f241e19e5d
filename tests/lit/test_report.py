import torch
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from mmexp.metrics.report import per_class_metrics


def test_per_class_metrics_match_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 4, generator=generator)
    target = torch.randint(0, 4, (300,), generator=generator)
    target[target == 3] = 2  # class 3 never occurs: undefined recall must be 0, not NaN
    confusion = MulticlassConfusionMatrix(4)(logits, target)
    rows = per_class_metrics(confusion, ["a", "b", "c", "d"])
    for name, metric in (
        ("precision", MulticlassPrecision),
        ("recall", MulticlassRecall),
        ("f1", MulticlassF1Score),
    ):
        expected = metric(4, average=None)(logits, target)
        assert torch.allclose(
            torch.tensor([row[name] for row in rows], dtype=torch.float32), expected, atol=1e-6
        ), name
    assert [row["support"] for row in rows] == torch.bincount(target, minlength=4).tolist()
