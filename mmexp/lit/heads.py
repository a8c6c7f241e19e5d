"""Prediction heads applied to the fused representation."""

from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    """LayerNorm, hidden layers with GELU and dropout, then a linear output layer.

    Args:
        in_dim: Width of the fused representation.
        out_dim: Number of outputs (classes).
        hidden_dims: Widths of the hidden layers; empty for a linear head.
        dropout: Dropout before each linear layer after the first.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dims: tuple[int, ...] = (256,), dropout: float = 0.1
    ) -> None:
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        width = in_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim
