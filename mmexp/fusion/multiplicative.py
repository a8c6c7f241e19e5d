"""Multiplicative Interactions (MI): one modality generates the weights applied to the other.

Jayakumar, Czarnecki, Menick, Schwarz, Rae, Osindero, Teh, Harley and Pascanu,
"Multiplicative Interactions and Where to Find Them", ICLR 2020. The MI layer of an input
``x`` (width ``n``) and a context ``z`` (width ``m``) is

    f(x, z) = z^T W x + z^T U + V x + b

with ``W`` a 3-tensor of shape ``m x n x k``, ``U`` of ``m x k``, ``V`` of ``n x k`` and ``b``
of ``k``. Read as a hypernetwork, ``z`` generates an affine layer for ``x``:
``f = W'(z) x + b'(z)`` with ``W'(z) = z^T W + V`` and ``b'(z) = z^T U + b``. The paper's
special cases restrict ``W'``; MultiBench (``MultiplicativeInteractions2Modal`` in
pliang279/MultiBench, ``fusions/common_fusions.py``) names them by what the hypernetwork
outputs, and so do the three strategies here (one ``fusion=`` choice each):

- ``mi_matrix`` (:class:`MIMatrixFusion`): the full layer, ``W'(z)`` an ``n x k`` matrix.
- ``mi_vector`` (:class:`MIVectorFusion`): ``W'(z)`` diagonal, the paper's "diagonal forms
  and gating": ``f = (W_d^T z + v) * x + (U^T z + b)``, with ``W_d`` and ``U`` of ``m x n``,
  ``v`` and ``b`` of ``n``; the output is as wide as ``x``.
- ``mi_scalar`` (:class:`MIScalarFusion`): ``W'(z)`` a multiple of the identity, the paper's
  "scales and biases", in MultiBench's form where the bias is a scalar too:
  ``f = (w^T z + v) x + (u^T z + c) 1``, with ``w`` and ``u`` of ``m`` and ``v``, ``c``
  scalars.

Defined for two modalities (``max_modalities``), as MultiBench's bimodal class, which fails
on a third. (MultiBench's three-modal class nests a bimodal MI that outputs a matrix for the
third modality: ``d^3 k`` weights, 2 M per output at width 128, so it is not offered.) The
modalities all have width ``dim`` here, so ``m = n = dim``. Each strategy fuses the pooled
vectors; the shared head reads ``f``. ``context`` chooses which modality is ``z``; the
function class of ``mi_matrix`` does not depend on it, those of the restricted forms do.

A modality a sample lacks enters as a zero vector, so the layer keeps its linear terms:
without ``z``, ``f = V x + b`` (``v * x + b``, ``v x + c``); without ``x``, ``f = U^T z + b``
(``u^T z + c``), independent of the placeholder features.

Differences from MultiBench: the weights are initialised as ``nn.Linear`` layers (``W`` as one
over the flattened outer product ``z x^T``, fan-in ``m n``) rather than by Xavier-normal
weights and unit-normal biases, and MultiBench's optional clipping of inputs and gradients is
left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_positive
from mmexp.fusion.layers import present_pooled


class MultiplicativeInteraction(FusionStrategy):
    """What the three MI forms share: two modalities, one of them the context ``z``.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        context: The modality ``z`` that generates the weights; ``None`` means the first of
            ``modalities`` (MultiBench's ``modalities[0]``). The other one is ``x``.

    Raises:
        ValueError: ``context`` is not one of ``modalities``.
    """

    min_modalities = 2
    max_modalities = 2

    def __init__(self, modalities: Sequence[str], dim: int, context: str | None = None) -> None:
        super().__init__(modalities, dim)
        self.context = self.fused_modality("context", context)
        self.input = next(m for m in self.modalities if m != self.context)

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return ``f(x, z)``, ``[B, out_dim]``, from the pooled vectors."""
        self.check_inputs(features)
        z = present_pooled(features[self.context])
        x = present_pooled(features[self.input])
        return self.interact(x, z)

    def interact(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The form's ``f(x, z)`` of ``[B, dim]`` input and context vectors."""
        raise NotImplementedError  # pragma: no cover - abstract


class MIMatrixFusion(MultiplicativeInteraction):
    """The full MI layer: ``f = z^T W x + z^T U + V x + b``, ``W`` of ``dim x dim x k``.

    See :mod:`mmexp.fusion.multiplicative`. ``z`` generates a ``dim x k`` weight matrix
    ``z^T W + V`` and a bias ``z^T U + b`` for ``x`` (MultiBench's ``output="matrix"``).

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        context: The modality ``z``; ``None`` means the first of ``modalities``.
        hidden_dim: Output width ``k``; ``None`` means ``dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales, in steps of ``(dim + 1)^2``
            parameters.

    Raises:
        ValueError: ``hidden_dim`` is below 1, or ``context`` is not fused.
    """

    config_name = "mi_matrix"

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        context: str | None = None,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(modalities, dim, context)
        width = dim if hidden_dim is None else hidden_dim
        check_positive("MIMatrixFusion", hidden_dim=width)
        self.hidden_dim = width
        self.out_dim = width
        # W[i, j, :] weighs z_i x_j: a linear layer over the m * n products, so its bound.
        bound = 1.0 / math.sqrt(dim * dim)
        self.weight = nn.Parameter(torch.empty(dim, dim, width).uniform_(-bound, bound))
        self.context_linear = nn.Linear(dim, width, bias=False)  # U
        self.input_linear = nn.Linear(dim, width)  # V and b

    def interact(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``z^T W x + z^T U + V x + b``: ``[B, k]``."""
        # z^T W + V is the generated [n, k] weight of each sample; one matmul for all of them.
        generated = (z @ self.weight.flatten(1)).unflatten(-1, (self.dim, self.hidden_dim))
        bilinear = torch.bmm(x[:, None, :], generated).squeeze(1)
        return bilinear + self.context_linear(z) + self.input_linear(x)


class MIVectorFusion(MultiplicativeInteraction):
    """The diagonal MI layer (gating): ``f = (W_d^T z + v) * x + (U^T z + b)``.

    See :mod:`mmexp.fusion.multiplicative`. ``z`` generates a per-unit scale and a bias for
    ``x`` (MultiBench's ``output="vector"``); ``out_dim = dim``. No internal width:
    :func:`mmexp.fusion.cost.match_params` scales the shared head.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        context: The modality ``z``; ``None`` means the first of ``modalities``.

    Raises:
        ValueError: ``context`` is not fused.
    """

    config_name = "mi_vector"

    def __init__(self, modalities: Sequence[str], dim: int, context: str | None = None) -> None:
        super().__init__(modalities, dim, context)
        self.scale = nn.Linear(dim, dim)  # W_d and v
        self.shift = nn.Linear(dim, dim)  # U and b

    def interact(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(W_d^T z + v) * x + U^T z + b``: ``[B, dim]``."""
        return self.scale(z) * x + self.shift(z)


class MIScalarFusion(MultiplicativeInteraction):
    """The scalar MI layer (scales and biases): ``f = (w^T z + v) x + (u^T z + c) 1``.

    See :mod:`mmexp.fusion.multiplicative`. ``z`` generates one scale and one bias for all
    of ``x`` (MultiBench's ``output="scalar"``); ``out_dim = dim``. No internal width:
    :func:`mmexp.fusion.cost.match_params` scales the shared head.

    Before the shared head, whose LayerNorm centres and rescales its input, little of ``z``
    is left: ``LayerNorm(a x + c 1) = LayerNorm(sign(a) x)`` (up to its epsilon), so the
    head sees ``z`` only through the sign of the scale ``a = w^T z + v``. It therefore is
    not among the strategies claimed to learn ``synergy``.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        context: The modality ``z``; ``None`` means the first of ``modalities``.

    Raises:
        ValueError: ``context`` is not fused.
    """

    config_name = "mi_scalar"

    def __init__(self, modalities: Sequence[str], dim: int, context: str | None = None) -> None:
        super().__init__(modalities, dim, context)
        self.scale = nn.Linear(dim, 1)  # w and v
        self.shift = nn.Linear(dim, 1)  # u and c

    def interact(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(w^T z + v) x + (u^T z + c)``, the scalars broadcast over ``x``: ``[B, dim]``."""
        return self.scale(z) * x + self.shift(z)
