"""Zero-shot scores computed directly from two towers, to check mmexp.zeroshot against.

The prompts of each class are encoded as one batch, the class embedding is the normalised
mean of the normalised prompt embeddings, and the metrics come from sklearn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    log_loss,
    recall_score,
    top_k_accuracy_score,
)

from mmexp.builders import build_data_and_model


def module_of_checkpoint(checkpoint: Path):
    """The data module and module of a checkpoint, rebuilt from its config and state dict."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    datamodule, module = build_data_and_model(OmegaConf.create(saved["mmexp_config"]))
    module.load_state_dict(saved["state_dict"])
    return datamodule, module


@torch.no_grad()
def direct_class_embeddings(module, names, templates) -> torch.Tensor:
    """``[C, D]`` class embeddings of the module's text tower, class by class."""
    module.eval()
    text = module.encoders["text"]
    processor = text.processor(train=False)
    classes = []
    for name in names:  # one batch per class (mmexp.zeroshot batches across classes)
        batch = processor.collate([processor(t.format(name)) for t in templates])
        mean = F.normalize(text(batch).pooled, dim=-1).mean(dim=0)
        classes.append(mean / mean.norm())
    return torch.stack(classes)


@torch.no_grad()
def direct_scores(module, datamodule, names, templates) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N, C], labels [N])`` of the test split, class by class."""
    weights = direct_class_embeddings(module, names, templates)
    image = module.encoders["image"]
    datamodule.setup("test")
    images, labels = [], []
    for batch in datamodule.test_dataloader():
        images.append(F.normalize(image(batch["image"]).pooled, dim=-1))
        labels.append(batch["label"])
    scale = module.loss_fn.logit_scale.item()
    return (scale * torch.cat(images) @ weights.T).numpy(), torch.cat(labels).numpy()


def sklearn_metrics(logits: np.ndarray, labels: np.ndarray, ks=(1, 5)) -> dict:
    """Top-k (k up to the class count), per-class and mean per-class accuracy and the
    cross-entropy, by sklearn."""
    classes = list(range(logits.shape[1]))
    predicted = logits.argmax(axis=1)
    metrics = {
        f"top{k}": top_k_accuracy_score(labels, logits, k=k, labels=classes)
        for k in ks
        if k <= len(classes)
    }
    assert metrics["top1"] == accuracy_score(labels, predicted)
    metrics["mean_per_class"] = balanced_accuracy_score(labels, predicted)
    metrics["loss"] = log_loss(labels, softmax(logits.astype(np.float64), axis=1), labels=classes)
    metrics["per_class"] = list(recall_score(labels, predicted, labels=classes, average=None))
    return metrics


def assert_matches(entry: dict, expected: dict, labels: list[str]) -> None:
    """One template set's entry of zeroshot.json against :func:`sklearn_metrics`."""
    import pytest

    expected = dict(expected)
    per_class = expected.pop("per_class")
    assert entry["metrics"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert [entry["per_class"][label]["acc"] for label in labels] == pytest.approx(per_class)
