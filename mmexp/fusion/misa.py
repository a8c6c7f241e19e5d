"""MISA: modality-invariant and -specific subspaces, fused by a Transformer, with own losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_heads, check_positive
from mmexp.fusion.layers import presence, zero_absent

#: The reference configuration's loss weights (declare-lab/MISA, ``src/config.py``).
DIFF_WEIGHT, SIM_WEIGHT, RECON_WEIGHT = 0.3, 1.0, 1.0
#: Central moments matched by CMD (the reference's ``n_moments``).
CMD_MOMENTS = 5


def masked_mean_of_rows(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean over the first dimension of the rows marked ``True``; 0 when none is."""
    weights = rows.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
    return (values * weights).sum(0) / weights.sum().clamp_min(1.0)


def central_moment_discrepancy(
    x: torch.Tensor, y: torch.Tensor, moments: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """CMD (Zellinger et al., ICLR 2017) as MISA uses it, without the interval scaling.

    ``||E x - E y||`` plus ``||E (x - E x)^k - E (y - E y)^k||`` for ``k = 2..moments``,
    over the batch rows (those marked in ``rows``; zero when none is); the inputs are
    sigmoid outputs, in [0, 1], as the reference relies on.
    """
    rows = torch.ones(len(x), dtype=torch.bool, device=x.device) if rows is None else rows
    mean_x, mean_y = masked_mean_of_rows(x, rows), masked_mean_of_rows(y, rows)
    centred_x, centred_y = x - mean_x, y - mean_y
    total = torch.linalg.vector_norm(mean_x - mean_y)
    for order in range(2, moments + 1):
        total = total + torch.linalg.vector_norm(
            masked_mean_of_rows(centred_x.pow(order), rows)
            - masked_mean_of_rows(centred_y.pow(order), rows)
        )
    return total


def soft_orthogonality(
    x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """MISA's difference loss: the mean squared entry of ``X^T Y`` for centred, unit rows.

    Over the rows marked in ``rows`` (all by default; zero when none is): each input is
    centred over them and each row divided by its L2 norm (plus 1e-6); the norms are
    detached, as in the reference (``DiffLoss``), so the gradient does not flow through the
    normalisation.
    """
    rows = torch.ones(len(x), dtype=torch.bool, device=x.device) if rows is None else rows
    keep = rows.to(x.dtype)[:, None]
    x = (x - masked_mean_of_rows(x, rows)) * keep
    y = (y - masked_mean_of_rows(y, rows)) * keep
    x = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True).detach() + 1e-6)
    y = y / (torch.linalg.vector_norm(y, dim=1, keepdim=True).detach() + 1e-6)
    return (x.T @ y).pow(2).mean()


class MISAFusion(FusionStrategy):
    """Modality-invariant and -specific representations, fused by a Transformer layer.

    Hazarika, Zimmermann and Poria, "MISA: Modality-Invariant and -Specific Representations
    for Multimodal Sentiment Analysis", ACM MM 2020, as the authors' code builds it
    (declare-lab/MISA, ``src/models.py`` and ``src/solver.py``). Each modality's utterance
    vector ``u_m`` is projected, ``v_m = LayerNorm(ReLU(W_m u_m))``, then split into a
    shared (invariant) part ``c_m = sigmoid(E_c v_m)``, one encoder for all modalities, and
    a private (specific) part ``p_m = sigmoid(E_m v_m)``. The ``2M`` vectors (private ones
    first, then shared, in the order of ``modalities``) go as a sequence without positions
    through one post-norm Transformer encoder layer (ReLU; the reference's PyTorch
    defaults: feed-forward 2048, dropout 0.1), and the output is their concatenation
    (``out_dim = 2 M hidden_dim``).

    Its own training losses (:meth:`fuse_with_losses`, weighted by :attr:`own_losses`, the
    reference's defaults 0.3, 1.0, 1.0):

    - ``misa_sim``: central moment discrepancy (5 moments) between the shared parts of
      each pair of modalities, averaged over the pairs;
    - ``misa_diff``: soft orthogonality of each modality's private and shared parts and of
      each pair of private parts, summed;
    - ``misa_recon``: mean squared error of ``D_m(p_m + c_m)`` against ``v_m``, one linear
      decoder per modality, averaged over the modalities.

    Simplified relative to the paper: the utterance vectors are the encoders' pooled
    outputs (the paper's BERT and biLSTM encoders are mmexp's encoder choice), the
    classifier after the concatenation is the shared head (the paper's
    ``Linear(6h, 3h), Dropout, ReLU, Linear``), and the similarity loss is CMD only (the
    reference's default; its adversarial alternative is left out). For more than three
    modalities the pairs and sums extend as written.

    Absent modalities: their vectors are masked as keys of the Transformer layer and zero
    in the output, and each loss term uses the samples that have its modalities.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Width of the subspaces (the reference's ``hidden_size``, 128);
            ``None`` means ``dim`` (``model.width``, 128 by default).
        heads: Attention heads of the Transformer layer (2); must divide ``hidden_dim``.
        ff_dim: Feed-forward width of the Transformer layer (2048).
        dropout: Dropout of the Transformer layer (0.1).
        diff_weight: Weight of ``misa_diff``.
        sim_weight: Weight of ``misa_sim``.
        recon_weight: Weight of ``misa_recon``.

    Raises:
        ValueError: A width, head count or weight is out of range; the message names it.
    """

    config_name = "misa"
    min_modalities = 2
    # the heads split the subspace width: fusion.match_params tries multiples of them
    width_multiple_of = "heads"

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int | None = None,
        heads: int = 2,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        diff_weight: float = DIFF_WEIGHT,
        sim_weight: float = SIM_WEIGHT,
        recon_weight: float = RECON_WEIGHT,
    ) -> None:
        super().__init__(modalities, dim)
        hidden_dim = dim if hidden_dim is None else hidden_dim
        check_positive(type(self).__name__, hidden_dim=hidden_dim, heads=heads, ff_dim=ff_dim)
        check_heads(type(self).__name__, hidden_dim, heads)
        weights = {"misa_diff": diff_weight, "misa_sim": sim_weight, "misa_recon": recon_weight}
        negative = {name: weight for name, weight in weights.items() if weight < 0}
        if negative:
            raise ValueError(f"MISAFusion: loss weights must be >= 0, got {negative}")
        self.own_losses = weights
        self.project = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.LayerNorm(hidden_dim))
                for m in self.modalities
            }
        )
        self.shared = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.Sigmoid())
        self.private = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.Sigmoid())
                for m in self.modalities
            }
        )
        self.reconstruct = nn.ModuleDict(
            {m: nn.Linear(hidden_dim, hidden_dim) for m in self.modalities}
        )
        self.fuse_layer = nn.TransformerEncoderLayer(
            hidden_dim, heads, dim_feedforward=ff_dim, dropout=dropout, batch_first=True
        )
        self.out_dim = 2 * len(self.modalities) * hidden_dim

    def subspaces(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Projected ``v_m``, private ``p_m`` and shared ``c_m`` vectors, each ``[B, h]``."""
        self.check_inputs(features)
        projected, private, shared = {}, {}, {}
        for name in self.modalities:
            output = features[name]
            # absent placeholders zeroed first: no NaN reaches the products
            projected[name] = self.project[name](zero_absent(output.pooled, output.present_mask()))
            private[name] = self.private[name](projected[name])
            shared[name] = self.shared(projected[name])
        return projected, private, shared

    def _fuse(
        self, private: Mapping[str, torch.Tensor], shared: Mapping[str, torch.Tensor], present
    ) -> torch.Tensor:
        sequence = torch.stack(
            [private[m] for m in self.modalities] + [shared[m] for m in self.modalities], dim=1
        )
        valid = torch.cat([present, present], dim=1)  # [B, 2M]
        # a sample with no modality attends everywhere (finite) and is zeroed below
        ignore = ~(valid | ~valid.any(dim=1, keepdim=True))
        fused = self.fuse_layer(sequence, src_key_padding_mask=ignore)
        return zero_absent(fused, valid).flatten(1)

    def forward(
        self, features: Mapping[str, EncoderOutput], with_losses: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The ``[B, 2 M hidden_dim]`` concatenated Transformer outputs (and the losses).

        Args:
            features: The encoder outputs.
            with_losses: Also return the unweighted ``misa_diff``, ``misa_sim`` and
                ``misa_recon`` (:meth:`fuse_with_losses`).
        """
        projected, private, shared = self.subspaces(features)
        present = presence(features, self.modalities)
        fused = self._fuse(private, shared, present)
        if not with_losses:
            return fused
        return fused, self._losses(projected, private, shared, present)

    def fuse_with_losses(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The fused output and the unweighted ``misa_diff``, ``misa_sim``, ``misa_recon``.

        Through the module call, so forward hooks (``callbacks.modality_balance``) see the
        training steps as well.
        """
        return self(features, with_losses=True)

    def _losses(
        self,
        projected: Mapping[str, torch.Tensor],
        private: Mapping[str, torch.Tensor],
        shared: Mapping[str, torch.Tensor],
        present: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        # Every term is computed in every step, over the samples that have its modalities
        # (a weighted mean; none: zero with the graph kept), so every parameter gets a
        # gradient each step, as DDP's static graph needs.
        have = {m: present[:, i] for i, m in enumerate(self.modalities)}
        pairs = list(combinations(self.modalities, 2))
        similarity = [
            central_moment_discrepancy(shared[a], shared[b], CMD_MOMENTS, have[a] & have[b])
            for a, b in pairs
        ]
        difference = [
            soft_orthogonality(private[m], shared[m], have[m]) for m in self.modalities
        ] + [soft_orthogonality(private[a], private[b], have[a] & have[b]) for a, b in pairs]
        reconstruction = [
            masked_mean_of_rows(
                (self.reconstruct[m](private[m] + shared[m]) - projected[m]).pow(2).mean(1),
                have[m],
            )
            for m in self.modalities
        ]
        # means over the terms whose modalities some sample has, as if the others were absent
        pairs_seen = torch.stack([(have[a] & have[b]).any() for a, b in pairs]).to(present.dtype)
        seen = torch.stack([have[m].any() for m in self.modalities]).to(present.dtype)
        return {
            "misa_diff": torch.stack(difference).sum(),
            "misa_sim": torch.stack(similarity).sum() / pairs_seen.sum().clamp_min(1.0),
            "misa_recon": torch.stack(reconstruction).sum() / seen.sum().clamp_min(1.0),
        }
