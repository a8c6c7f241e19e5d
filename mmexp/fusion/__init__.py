"""Fusion strategies: one file each, one contract (:class:`FusionStrategy`)."""

from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.concat import ConcatFusion

__all__ = ["ConcatFusion", "FusionStrategy"]
