"""Fusion strategies: one file each, one contract (:class:`FusionStrategy`)."""

from mmexp.fusion.attention_pool import AttentionFusion
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.bottleneck import BottleneckFusion
from mmexp.fusion.concat import ConcatFusion
from mmexp.fusion.cross_attention import CrossAttentionFusion
from mmexp.fusion.early_tokens import EarlyTokenFusion
from mmexp.fusion.elementwise import ProductFusion, SumFusion
from mmexp.fusion.film import FiLMFusion
from mmexp.fusion.gated import GatedFusion
from mmexp.fusion.late import LateFusion
from mmexp.fusion.low_rank import LowRankFusion
from mmexp.fusion.mult import MulTFusion
from mmexp.fusion.tensor import TensorFusion
from mmexp.fusion.unimodal import UnimodalFusion

__all__ = [
    "AttentionFusion",
    "BottleneckFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "EarlyTokenFusion",
    "FiLMFusion",
    "FusionStrategy",
    "GatedFusion",
    "LateFusion",
    "LowRankFusion",
    "MulTFusion",
    "ProductFusion",
    "SumFusion",
    "TensorFusion",
    "UnimodalFusion",
]
