"""Multimodal Compact Bilinear pooling (MCB): the count sketch of the outer product, by FFT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_positive
from mmexp.fusion.layers import power_normalise, present_pooled


class MCBFusion(FusionStrategy):
    """Multimodal Compact Bilinear (MCB) pooling of two modalities.

    Fukui, Park, Yang, Rohrbach, Darrell and Rohrbach, "Multimodal Compact Bilinear Pooling
    for Visual Question Answering and Visual Grounding", EMNLP 2016. The outer product
    ``x y^T`` (``dim^2`` features) is replaced by its count sketch of width ``d``, computed
    without forming it (Pham and Pagh, KDD 2013): the sketch of an outer product is the
    circular convolution of the inputs' sketches, a product in the Fourier domain. Each
    modality has a fixed random hash ``h: [dim] -> [d]`` and sign ``s: [dim] -> {-1, 1}``,
    ``Psi(x)[j] = sum_{i : h(i) = j} s(i) x_i``, and

        z = irfft(rfft(Psi_1(x)) * rfft(Psi_2(y))),  z = sign(z) sqrt(|z|),  z = z / ||z||

    then dropout and a linear layer to ``dim``. In expectation over the hashes,
    ``<z(x, y), z(x', y')>`` before normalisation equals ``<x, x'> <y, y'>``, the inner
    product of the outer products.

    The hashes and signs are drawn once from ``seed`` with a generator of their own (the
    global random state is left alone) and are buffers: saved in the state dict, so a
    checkpoint restores them whatever seed rebuilt the module, and moved with the module
    across devices. They are not trained. The count sketch is a scatter-add
    (``index_add``) and the convolution uses ``torch.fft`` in at least float32 (cuFFT and
    pocketfft take no bfloat16); :func:`mmexp.fusion.cost.fusion_cost` counts neither, only
    the output layer's FLOPs.

    Differences from the paper and from the BLOCK authors' library
    (``block.bootstrap.pytorch``, ``fusions.MCB`` over ``CompactBilinearPooling``, which
    needs the pre-1.0 ``torch.rfft``): the signed square root and L2 normalisation of the
    paper are applied (the library applies neither); dropout on the normalised sketch
    before the output layer (the library drops after it, behind a ReLU that is left out
    here); the strategy fuses pooled vectors (no attention maps). In the paper a linear
    layer maps ``z`` to the answers; here it maps to ``dim`` (``out_dim``) and the shared
    head follows, as in every other row of an ablation. The paper's ``d = 16000`` is for
    2048-wide inputs; the default 2048 holds the ``128^2`` products of ``model.width=128``
    at one eighth.

    Defined for two modalities (``max_modalities``), as in the paper and the library. A
    modality a sample lacks enters as ``x = 0`` (the convention of
    :class:`~mmexp.fusion.low_rank.LowRankFusion`). MCB has no linear terms, so its sketch
    and ``z`` are then zero: the output is the output layer's bias whatever the other
    modality holds (finite: the normalisation leaves a zero vector at zero).

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Width ``d`` of the sketches. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        seed: Seed of the hashes and signs.
        dropout: Dropout on the normalised sketch.

    Raises:
        ValueError: ``hidden_dim`` is below 1.
    """

    config_name = "mcb"

    min_modalities = 2
    max_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int = 2048,
        seed: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        check_positive("MCBFusion", hidden_dim=hidden_dim)
        self.hidden_dim = hidden_dim
        self.seed = seed
        # Drawn on the CPU, the same on every machine, then put where the other weights are
        # created (the default device: torch.device("meta") when match_params builds).
        generator = torch.Generator().manual_seed(seed)
        device = torch.empty(0).device
        for name in self.modalities:
            hashes = torch.randint(hidden_dim, (dim,), generator=generator, device="cpu")
            signs = torch.randint(2, (dim,), generator=generator, device="cpu") * 2 - 1
            self.register_buffer(f"hash_{name}", hashes.to(device))
            self.register_buffer(f"sign_{name}", signs.to(device, torch.get_default_dtype()))
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, dim)
        self.out_dim = dim

    def count_sketch(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The ``[B, d]`` count sketch of modality ``name``'s ``[B, dim]`` vectors."""
        hashes, signs = getattr(self, f"hash_{name}"), getattr(self, f"sign_{name}")
        signed = x * signs.to(x.dtype)
        return signed.new_zeros(x.shape[0], self.hidden_dim).index_add_(1, hashes, signed)

    def compact_bilinear(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The ``[B, d]`` count sketch of the outer products ``x_b y_b^T``, not normalised.

        Args:
            x: ``[B, dim]`` vectors of the first modality.
            y: ``[B, dim]`` vectors of the second modality.
        """
        dtype = torch.promote_types(x.dtype, torch.float32)  # FFTs take no bfloat16
        first, second = self.modalities
        spectra = [
            torch.fft.rfft(self.count_sketch(name, v.to(dtype)), n=self.hidden_dim)
            for name, v in ((first, x), (second, y))
        ]
        return torch.fft.irfft(spectra[0] * spectra[1], n=self.hidden_dim)

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` projection of the normalised compact bilinear pooling."""
        self.check_inputs(features)
        x, y = (present_pooled(features[m]) for m in self.modalities)
        pooled = power_normalise(self.compact_bilinear(x, y)).to(x.dtype)
        return self.output(self.dropout(pooled))
