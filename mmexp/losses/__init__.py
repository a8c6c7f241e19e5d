"""Training objectives beyond cross-entropy: contrastive and matching losses."""

from mmexp.losses.contrastive import ClipLoss, SigLipLoss, clip_loss
from mmexp.losses.itm import MatchingLoss, sample_hard_negatives, sample_random_negatives

__all__ = [
    "ClipLoss",
    "MatchingLoss",
    "SigLipLoss",
    "clip_loss",
    "sample_hard_negatives",
    "sample_random_negatives",
]
