"""Parameter and FLOP counts of fusion strategies, and parameter-matched widths.

Fusion ablations are only fair when the strategies have comparable capacity: a strategy that
wins with ten times the parameters says little about fusion. :func:`fusion_cost` reports the
size and compute of a strategy on given input shapes, and :func:`match_params` picks a width
so that the parameter count of what it builds meets a budget.

The builder (:func:`mmexp.builders.build_fusion_and_head`) budgets everything that differs
between the rows of an ablation: the fusion and the head after it. Every strategy whose size
is governed by an internal width takes it as the constructor argument ``hidden_dim`` (see
each class); decision-level fusion scales its per-modality classifiers, and the strategies
without a width of their own (the parameter-free ``ConcatFusion``, ``UnimodalFusion``,
``SumFusion``, ``ProductFusion``, and ``MIVectorFusion``, ``MIScalarFusion``,
``NLGateFusion``, whose sizes ``model.width`` fixes) the hidden layers of the shared head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy


def count_params(module: nn.Module) -> int:
    """Return the number of parameters of ``module`` (trainable or not)."""
    return sum(parameter.numel() for parameter in module.parameters())


def fusion_cost(
    fusion: FusionStrategy,
    modalities_shapes: dict[str, int] | dict[str, tuple[int, int]],
    dim: int,
    batch: int = 2,
) -> dict[str, int]:
    """Count the parameters and forward FLOPs per sample of a fusion strategy.

    The strategy is run once, in evaluation mode, on random inputs with no padding and every
    modality present, under :class:`torch.utils.flop_counter.FlopCounterMode`. That counter
    covers matrix products, convolutions and attention (a multiply-add counts as two FLOPs)
    but not elementwise operations, so parameter-free strategies report zero FLOPs. Gradient
    tracking stays on during the run because PyTorch's fused inference kernels for
    Transformer layers (used only without it) are invisible to the counter; attention is
    forced onto the decomposed math kernel for the same reason.

    Args:
        fusion: The strategy to measure; its training mode is restored afterwards.
        modalities_shapes: Number of tokens ``T`` per modality, either as an ``int`` or as
            a ``(T, D)`` pair (``D`` must then equal ``dim``).
        dim: Token width of every modality.
        batch: Batch size of the measuring run; FLOPs are divided by it.

    Returns:
        ``{"params": int, "flops_per_sample": int}``.

    Raises:
        ValueError: A ``(T, D)`` pair whose ``D`` differs from ``dim``.
    """
    parameter = next(fusion.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    features = {}
    for name, shape in modalities_shapes.items():
        if isinstance(shape, int):
            length = shape
        else:
            length, width = shape
            if width != dim:
                raise ValueError(f"fusion_cost: modality {name!r} has width {width}, not {dim}")
        tokens = torch.randn(batch, length, dim, generator=generator)
        pooled = torch.randn(batch, dim, generator=generator)
        features[name] = EncoderOutput(
            tokens=tokens.to(device=device, dtype=dtype),
            mask=torch.ones(batch, length, dtype=torch.bool, device=device),
            pooled=pooled.to(device=device, dtype=dtype),
        )
    was_training = fusion.training
    fusion.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fusion(features)
    finally:
        fusion.train(was_training)
    return {
        "params": count_params(fusion),
        "flops_per_sample": int(counter.get_total_flops()) // batch,
    }


def match_params(
    build: Callable[[int], nn.Module], budget: int, low: int = 8, high: int = 4096
) -> int:
    """Find the width whose module has the most parameters within ``budget``.

    Bisection over ``width`` in ``[low, high]``, assuming the parameter count of
    ``build(width)`` does not decrease with the width (true of every width the builder
    scales). The candidates are built on the ``meta`` device, so no memory is allocated for
    their weights.

    Example:
        ``match_params(lambda w: GatedFusion(["image", "text"], 128, hidden_dim=w), 100_000)``

    Args:
        build: Builds the module (e.g. fusion and head together) for a given width.
        budget: Largest allowed parameter count.
        low: Smallest width considered.
        high: Largest width considered; returned as is when even it fits the budget.

    Returns:
        The largest width in ``[low, high]`` whose parameter count is at most ``budget``.

    Raises:
        ValueError: ``low > high``, or even ``build(low)`` exceeds the budget.
    """
    if low > high:
        raise ValueError(f"match_params: low ({low}) must not exceed high ({high})")

    def params_at(width: int) -> int:
        with torch.device("meta"):
            return count_params(build(width))

    smallest = params_at(low)
    if smallest > budget:
        raise ValueError(
            f"match_params: even width {low} gives {smallest} parameters, over the budget "
            f"{budget}; lower `low` or raise the budget"
        )
    if params_at(high) <= budget:
        return high
    # Invariant: params_at(fits) <= budget < params_at(too_big).
    fits, too_big = low, high
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        if params_at(middle) <= budget:
            fits = middle
        else:
            too_big = middle
    return fits
