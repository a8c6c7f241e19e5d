"""Prediction heads applied to the fused representation."""

from __future__ import annotations

from torch import nn

from mmexp.fusion.layers import Mlp


class MLPHead(Mlp):
    """LayerNorm, hidden layers with GELU and dropout, then a linear output layer.

    An :class:`~mmexp.fusion.layers.Mlp` with a LayerNorm on its input; the module indices
    (``0`` the LayerNorm, then three per hidden layer) are the state-dict layout of saved
    checkpoints.

    Args:
        in_dim: Width of the fused representation.
        out_dim: Number of outputs (classes).
        hidden_dims: Widths of the hidden layers; empty for a linear head.
        dropout: Dropout before each linear layer after the first.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dims: tuple[int, ...] = (256,), dropout: float = 0.1
    ) -> None:
        super().__init__(
            in_dim, hidden_dims, out_dim, act_layer=nn.GELU, norm_layer=nn.LayerNorm, drop=dropout
        )
        self.in_dim = in_dim
        self.out_dim = out_dim
