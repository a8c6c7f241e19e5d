"""NL-gate: the tokens of one modality attend to another's, added back as a residual."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, masked_mean
from mmexp.fusion.attention_record import CrossModalAttention, cross_modal_map
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import masked_softmax, valid_tokens


class NLGateFusion(FusionStrategy):
    """Non-local gate: a query modality's tokens gather the other modalities' by attention.

    Wang, Tran and Feiszli, "What Makes Training Multi-Modal Classification Networks Hard?",
    CVPR 2020 (its appendix on fusion strategies: the NL-gate, a non-local block after Wang,
    Girshick, Gupta and He, CVPR 2018, whose queries are the visual features and whose keys
    and values are the audio features), as MultiBench implements it (``NLgate`` in
    pliang279/MultiBench, ``fusions/common_fusions.py``). With ``q`` the ``[Tq, D]`` tokens of
    the query modality and ``y`` the ``[Tk, D]`` tokens of the other:

        k = W_k y + b_k,  v = W_v y + b_v
        z = q + softmax(q k^T) v          (softmax over the key tokens, no 1/sqrt(D))

    as MultiBench's one use of it configures it (linear maps for keys and values, none for
    the queries), so the residual is the query tokens themselves. The output is the masked
    mean of ``z`` over the query's real tokens (``out_dim = dim``).

    Simplified relative to MultiBench, which reshapes flat feature vectors into fixed-size
    token grids (its one use maps a single static vector by one linear layer to all ``Tk``
    keys, another to the values) and flattens ``z``: here the encoders' token sequences are
    used as they are, ``k`` and ``v`` are per-token projections of ``y``, and ``z`` is mean
    pooled, so sequences of any length and with padding are taken.

    With three or more modalities the query attends over the concatenated tokens of all the
    others (one softmax over all of them, each modality with its own ``W_k``, ``W_v``); with
    two it is exactly the form above.

    Padded key tokens and those of absent modalities get no attention; a sample with no
    valid key has ``z = q`` (no update). A sample that lacks the query modality gets a zero
    output, as the classifier of the paper reads the gated query features alone.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        query: The modality whose tokens attend; ``None`` means the first of ``modalities``
            (MultiBench's ``x[0]``; with ``data.modalities=[image, audio]`` the paper's
            visual queries over audio). It has no internal width:
            :func:`mmexp.fusion.cost.match_params` scales the shared head.

    Raises:
        ValueError: ``query`` is not one of ``modalities``.
    """

    config_name = "nl_gate"

    uses_tokens = True
    min_modalities = 2

    def __init__(self, modalities: Sequence[str], dim: int, query: str | None = None) -> None:
        super().__init__(modalities, dim)
        self.query = self.fused_modality("query", query)
        self.key_maps = nn.ModuleDict({m: nn.Linear(dim, dim) for m in self.key_modalities})
        self.value_maps = nn.ModuleDict({m: nn.Linear(dim, dim) for m in self.key_modalities})

    @property
    def key_modalities(self) -> tuple[str, ...]:
        """The modalities whose tokens are the keys and values, in the order of ``modalities``."""
        return tuple(m for m in self.modalities if m != self.query)

    def attend(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gated query tokens, their validity and the attention weights.

        Returns:
            ``(z, query_valid, weights)``: ``[B, Tq, D]`` tokens ``q + softmax(q k^T) v``,
            ``[B, Tq]`` validity of the query tokens, ``[B, Tq, Tk]`` weights over the
            concatenated key tokens (in the order of :attr:`key_modalities`; zero for
            invalid keys and for samples with none).
        """
        self.check_inputs(features)
        # Padding and absent placeholders zeroed before the projections: no NaN * 0.
        query, query_valid = valid_tokens(features[self.query])
        keys, values, key_valid = [], [], []
        for name in self.key_modalities:
            tokens, valid = valid_tokens(features[name])
            keys.append(self.key_maps[name](tokens))
            values.append(self.value_maps[name](tokens))
            key_valid.append(valid)
        logits = query @ torch.cat(keys, dim=1).transpose(1, 2)  # [B, Tq, Tk]
        # masked_softmax wants the mask as a prefix of the shape: softmax over dim 1 of the
        # transposed scores. Samples without a valid key get all-zero weights.
        weights = masked_softmax(logits.transpose(1, 2), torch.cat(key_valid, 1), dim=1)
        weights = weights.transpose(1, 2)
        return query + weights @ torch.cat(values, dim=1), query_valid, weights

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` masked mean of the gated query tokens."""
        gated, query_valid, _ = self.attend(features)
        return masked_mean(gated, query_valid)

    def cross_modal_attention(
        self, features: Mapping[str, EncoderOutput]
    ) -> list[CrossModalAttention]:
        """The query modality's attention over each other modality (one head, one layer)."""
        _, query_valid, weights = self.attend(features)
        maps, start = [], 0
        for name in self.key_modalities:
            span = slice(start, start + features[name].tokens.shape[1])
            maps.append(
                cross_modal_map(self.query, name, 0, weights[:, None, :, span], query_valid)
            )
            start = span.stop
        return maps
