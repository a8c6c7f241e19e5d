"""Prediction heads applied to the fused representation."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmexp.fusion.layers import Mlp


class L2Normalize(nn.Module):
    """Scale each row to unit L2 norm (no parameters)."""

    def __init__(self, width: int | None = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.normalize(x, dim=-1)


#: Input normalisations of :class:`MLPHead`.
INPUT_NORMS = {"layer": nn.LayerNorm, "l2": L2Normalize}


class MLPHead(Mlp):
    """Input normalisation, hidden layers with GELU and dropout, then a linear output layer.

    An :class:`~mmexp.fusion.layers.Mlp` with its input normalised; the module indices (``0``
    the normalisation, then three per hidden layer) are the state-dict layout of saved
    checkpoints.

    Args:
        in_dim: Width of the fused representation.
        out_dim: Number of outputs (classes).
        hidden_dims: Widths of the hidden layers; empty for a linear head.
        dropout: Dropout before each linear layer after the first.
        input_norm: ``"layer"`` (LayerNorm) or ``"l2"`` (unit length, no parameters): with
            no hidden layers, the form of CLIP's zero-shot classifier, a linear map of the
            normalised embedding (WiSE-FT initialises and interpolates such a head).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dims: tuple[int, ...] = (256,),
        dropout: float = 0.1,
        input_norm: Literal["layer", "l2"] = "layer",
    ) -> None:
        if input_norm not in INPUT_NORMS:
            raise ValueError(
                f"model.head.input_norm must be one of {sorted(INPUT_NORMS)}, got {input_norm!r}"
            )
        super().__init__(
            in_dim,
            hidden_dims,
            out_dim,
            act_layer=nn.GELU,
            norm_layer=INPUT_NORMS[input_norm],
            drop=dropout,
        )
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.input_norm = input_norm


def unit_linear(head: nn.Module) -> nn.Linear | None:
    """The linear layer of a head that is one linear map of the L2-normalised input, else None.

    Such a head (``MLPHead`` with ``hidden_dims=[]`` and ``input_norm=l2``) is the zero-shot
    classifier's shape: its weight can be the scaled class embeddings.
    """
    if isinstance(head, MLPHead) and head.input_norm == "l2" and len(head) == 2:
        return head[1]
    return None
