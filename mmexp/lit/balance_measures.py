"""What the modality-balance callback measures: probes, gradient norms, unimodal scores.

Used by :class:`~mmexp.lit.modality_balance.ModalityBalance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mmexp.encoders.base import EncoderOutput
from mmexp.lit.presence import mark_absent


def ridge_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    alpha: float = 1.0,
) -> float:
    """Test accuracy of a ridge classifier fitted in closed form on the training rows.

    Features are standardised with the training statistics; the targets are one-vs-rest
    in {-1, 1} (scikit-learn's ``RidgeClassifier``), the intercept is not penalised.

    Raises:
        ValueError: No training or test rows.
    """
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError("ridge_probe needs training and test rows")
    x, z = train_x.double().cpu(), test_x.double().cpu()
    y, t = train_y.long().cpu(), test_y.long().cpu()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-12)
    x, z = (x - mean) / std, (z - mean) / std
    classes = torch.unique(y)
    targets = (y[:, None] == classes[None, :]).double() * 2 - 1
    x_mean, y_mean = x.mean(0), targets.mean(0)
    xc, yc = x - x_mean, targets - y_mean
    gram = xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, xc.T @ yc)
    scores = (z - x_mean) @ weights + y_mean
    predicted = classes[scores.argmax(dim=1)]
    return float((predicted == t).double().mean())


def class_targets(labels: Any) -> bool:
    """Whether ``labels`` are single-label class indices."""
    return isinstance(labels, torch.Tensor) and labels.dim() == 1 and not labels.is_floating_point()


class FeatureRows:
    """Pooled features and labels of one split, per modality (present samples only).

    Args:
        limit: Rows kept per modality (the latest); ``None`` keeps all.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.features: dict[str, list[torch.Tensor]] = {}
        self.labels: dict[str, list[torch.Tensor]] = {}

    def add(self, features: Mapping[str, EncoderOutput], labels: torch.Tensor) -> None:
        """Keep the pooled features and labels of a batch's samples that have the modality."""
        for name, output in features.items():
            present = output.present_mask()
            self.features.setdefault(name, []).append(output.pooled.detach()[present])
            self.labels.setdefault(name, []).append(labels.detach()[present])
            if self.limit is not None and sum(map(len, self.labels[name])) > 2 * self.limit:
                self.features[name] = [self.get(name)[0]]
                self.labels[name] = [self.get(name)[1]]

    def get(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [N, D], labels [N])`` kept for modality ``name``."""
        features, labels = torch.cat(self.features[name]), torch.cat(self.labels[name])
        if self.limit is not None:
            features, labels = features[-self.limit :], labels[-self.limit :]
        return features, labels


def encoder_grad_norms(module: Any) -> dict[str, float]:
    """The L2 norm of the gradient of each encoder's parameters (0 without gradients)."""
    norms = {}
    for name, encoder in module.encoders.items():
        squares = [
            p.grad.detach().float().pow(2).sum() for p in encoder.parameters() if p.grad is not None
        ]
        norms[name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms


def unimodal_scores(
    module: Any, features: Mapping[str, EncoderOutput], labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """OGM-GE's confidence of each modality: the true class's probability with it alone.

    The other modalities are marked absent and the module's fusion and head score the
    batch (``module.predict_from_features``), without gradients.

    Returns:
        ``{modality: [n] probabilities}`` of the samples that have the modality; ``{}`` when
        the outputs are not class logits.
    """
    scores = {}
    with torch.no_grad():
        for name, output in features.items():
            only = {
                other: mark_absent(out, torch.full_like(out.present_mask(), other == name))
                for other, out in features.items()
            }
            logits = module.predict_from_features(only)
            if logits.dim() != 2 or logits.shape[1] < 2:
                return {}
            true = logits.float().softmax(dim=1).gather(1, labels[:, None])[:, 0]
            scores[name] = true[output.present_mask()]
    return scores


def unimodal_scores_apart(
    module: Any, features: Mapping[str, EncoderOutput], labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """:func:`unimodal_scores` with the random generators restored afterwards.

    Callbacks score during training steps; a dropout layer in the fusion or head would
    otherwise draw from the generators and change the rest of training.
    """
    device = labels.device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return unimodal_scores(module, features, labels)
