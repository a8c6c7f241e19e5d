"""Fusion strategies: one file each, one contract (:class:`FusionStrategy`)."""

from mmexp.fusion.attention_pool import AttentionFusion
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.block import BlockFusion
from mmexp.fusion.bottleneck import BottleneckFusion
from mmexp.fusion.concat import ConcatFusion
from mmexp.fusion.cross_attention import CrossAttentionFusion
from mmexp.fusion.early_tokens import EarlyTokenFusion
from mmexp.fusion.elementwise import ProductFusion, SumFusion
from mmexp.fusion.film import FiLMFusion
from mmexp.fusion.gated import GatedFusion
from mmexp.fusion.late import LateFusion
from mmexp.fusion.low_rank import LowRankFusion
from mmexp.fusion.mcb import MCBFusion
from mmexp.fusion.mfb import MFBFusion
from mmexp.fusion.mfh import MFHFusion
from mmexp.fusion.misa import MISAFusion
from mmexp.fusion.mlb import MLBFusion
from mmexp.fusion.mult import MulTFusion
from mmexp.fusion.multiplicative import MIMatrixFusion, MIScalarFusion, MIVectorFusion
from mmexp.fusion.mutan import MutanFusion
from mmexp.fusion.nl_gate import NLGateFusion
from mmexp.fusion.tensor import TensorFusion
from mmexp.fusion.unimodal import UnimodalFusion

__all__ = [
    "AttentionFusion",
    "BlockFusion",
    "BottleneckFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "EarlyTokenFusion",
    "FiLMFusion",
    "FusionStrategy",
    "GatedFusion",
    "LateFusion",
    "LowRankFusion",
    "MCBFusion",
    "MFBFusion",
    "MFHFusion",
    "MIMatrixFusion",
    "MISAFusion",
    "MIScalarFusion",
    "MIVectorFusion",
    "MLBFusion",
    "MulTFusion",
    "MutanFusion",
    "NLGateFusion",
    "ProductFusion",
    "SumFusion",
    "TensorFusion",
    "UnimodalFusion",
]
