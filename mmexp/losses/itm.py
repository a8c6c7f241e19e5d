"""Matching (ITM) with hard negatives mined from the contrastive similarities.

As in ALBEF (Li et al., "Align before Fuse", NeurIPS 2021) and BLIP (Li et al., ICML 2022):
for every pair in the batch, a negative partner is drawn with probability proportional to
``softmax`` of its contrastive similarity, so the fusion model learns from the confusable
pairs rather than from random, easy ones. A fusion strategy from the fusion library reads
the two modalities' tokens and a linear head says match / no match.

Negatives are mined within each rank's batch: the fusion needs the negatives' tokens, and
gathering token sequences across ranks would cost more than the extra negatives are worth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy


def sample_hard_negatives(logits: torch.Tensor) -> torch.Tensor:
    """Draw one negative column per row, ``P(j) ∝ exp(logits[i, j])`` over ``j != i``.

    Args:
        logits: ``[B, B]`` scaled similarities; row ``i``'s positive is column ``i``.

    Returns:
        ``[B]`` column indices, never equal to the row index.

    Raises:
        ValueError: The batch has fewer than two pairs (no negative exists).
    """
    if logits.shape[0] < 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"hard negatives need a square batch of >= 2 pairs, got "
                         f"{tuple(logits.shape)}")
    weights = torch.softmax(logits.detach().float(), dim=1)
    weights.fill_diagonal_(0.0)
    # A row whose off-diagonal mass underflowed to zero falls back to uniform negatives.
    empty = weights.sum(dim=1, keepdim=True) <= 0
    uniform = 1.0 - torch.eye(len(weights), device=weights.device)
    weights = torch.where(empty, uniform, weights)
    return torch.multinomial(weights, 1).squeeze(1)


def select(output: EncoderOutput, index: torch.Tensor) -> EncoderOutput:
    """The samples ``index`` of a batch of encoder features."""
    present = output.present[index] if output.present is not None else None
    return EncoderOutput(output.tokens[index], output.mask[index], output.pooled[index], present)


def concat(outputs: list[EncoderOutput]) -> EncoderOutput:
    """Stack batches of encoder features; token sequences are padded to the longest."""
    length = max(o.tokens.shape[1] for o in outputs)
    tokens = [F.pad(o.tokens, (0, 0, 0, length - o.tokens.shape[1])) for o in outputs]
    masks = [F.pad(o.mask, (0, length - o.mask.shape[1]), value=False) for o in outputs]
    presents = [o.present_mask() for o in outputs]
    return EncoderOutput(torch.cat(tokens), torch.cat(masks),
                         torch.cat([o.pooled for o in outputs]), torch.cat(presents))


class MatchingLoss(nn.Module):
    """Binary matching loss over positives and mined negatives in both directions.

    Each batch of ``B`` pairs gives ``3B`` fused examples: the ``B`` true pairs, each ``a``
    with a hard-negative ``b`` and each ``b`` with a hard-negative ``a``.

    Args:
        fusion: A fusion strategy over exactly the two modalities, producing features
            (decision-level strategies cannot judge a pair and are refused).
    """

    def __init__(self, fusion: FusionStrategy) -> None:
        super().__init__()
        if fusion.produces_logits:
            raise ValueError(
                f"matching needs a fusion that outputs features, not logits; "
                f"{type(fusion).__name__} is decision-level (use fusion=cross_attention, "
                "early_tokens, concat, ...)"
            )
        if len(fusion.modalities) != 2:
            raise ValueError(f"matching fuses two modalities, fusion has {fusion.modalities}")
        self.fusion = fusion
        self.head = nn.Linear(fusion.out_dim, 2)

    def forward(
        self, features: dict[str, EncoderOutput], logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, accuracy)`` of match / no-match on the ``3B`` examples.

        Args:
            features: Encoder outputs of the two modalities for the ``B`` pairs.
            logits: ``[B, B]`` contrastive similarities, rows ``a``, columns ``b``.
        """
        name_a, name_b = self.fusion.modalities
        a, b = features[name_a], features[name_b]
        rows = torch.arange(len(logits), device=logits.device)
        negative_b = sample_hard_negatives(logits)
        negative_a = sample_hard_negatives(logits.T)
        fused = self.fusion({
            name_a: concat([a, a, select(a, negative_a)]),
            name_b: concat([b, select(b, negative_b), b]),
        })
        scores = self.head(fused)
        labels = torch.cat([torch.ones_like(rows), torch.zeros_like(rows),
                            torch.zeros_like(rows)])
        loss = F.cross_entropy(scores, labels)
        accuracy = (scores.argmax(dim=1) == labels).float().mean()
        return loss, accuracy

    def score(self, features: dict[str, EncoderOutput]) -> torch.Tensor:
        """Match probability ``[B]`` of the given pairs (row ``i`` of both modalities)."""
        return torch.softmax(self.head(self.fusion(features)), dim=1)[:, 1]
