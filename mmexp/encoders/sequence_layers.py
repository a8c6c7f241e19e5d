"""Blocks the sequence encoders share: masked batch norm and a packed recurrence.

Both keep padding out of the computation, so that a sample's features do not depend on how
much padding its batch adds: batch statistics are taken over real steps only, and the
recurrence runs on packed sequences (``pack_padded_sequence`` with the true lengths), so
padded steps never enter a hidden state.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def check_positive(key: str, value: int) -> None:
    """Refuse a size setting below 1, naming its config key."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be an integer >= 1, got {value!r}")


#: How the recurrent encoders pool: the masked mean of the tokens, or the final states.
POOLINGS = ("mean", "final")


def check_pooling(key: str, value: str) -> None:
    """Refuse a pooling that is not one of :data:`POOLINGS`, naming its config key."""
    if value not in POOLINGS:
        raise ValueError(f"{key} must be one of {POOLINGS}, got {value!r}")


def check_dropout(key: str, value: float) -> None:
    """Refuse a dropout probability outside ``[0, 1)``, naming its config key."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{key} must be in [0, 1), got {value!r}")


def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Real steps per sample of a right-padded ``[B, T]`` mask, as a CPU tensor.

    A sample without a real step is given one (``pack_padded_sequence`` refuses length 0);
    its mask stays empty, so nothing downstream reads the step.
    """
    # The lengths go to the CPU: pack_padded_sequence wants them there.
    return mask.sum(dim=1).clamp_min(1).cpu()


def masked_batch_norm(norm: nn.BatchNorm1d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Batch-normalise the real steps of ``x`` ``[B, T, C]`` only; padded steps become zero.

    In training the statistics are the real steps' (padding would bias them); a batch with a
    single real step has no variance, so the running statistics are used for it.
    """
    real = x[mask]
    if norm.training and len(real) < 2:
        normed = nn.functional.batch_norm(
            real,
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
            training=False,
            eps=norm.eps,
        )
    else:
        normed = norm(real)
    out = x.new_zeros(x.shape)
    out[mask] = normed.to(out.dtype)
    return out


class PackedRecurrence(nn.Module):
    """A (bi)LSTM or GRU run on packed sequences: outputs per step and a final summary.

    Args:
        cell: ``torch.nn.LSTM`` or ``torch.nn.GRU`` (the class).
        input_size: Features per input step.
        hidden_size: Hidden units per direction.
        num_layers: Stacked recurrent layers.
        bidirectional: Run a backward recurrence too; outputs concatenate both directions.
        dropout: Dropout on the outputs of every layer, the last included (``torch.nn``'s
            own ``dropout`` leaves the last out, which would make it a no-op for one layer).
        key: Config key of the encoder, named in errors (``model.encoders.text``).

    Attributes:
        out_features: Width of outputs and summary, ``hidden_size`` times the directions.
    """

    def __init__(
        self,
        cell: type[nn.LSTM] | type[nn.GRU],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        key: str = "model.encoders",
    ) -> None:
        super().__init__()
        check_positive(f"{key}.hidden_size", hidden_size)
        check_positive(f"{key}.num_layers", num_layers)
        check_dropout(f"{key}.dropout", dropout)
        self.rnn = cell(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.out_features = hidden_size * self.directions
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run over the real steps of ``x`` ``[B, T, F]`` (``mask`` ``[B, T]``, right-padded).

        Returns:
            ``outputs`` ``[B, T, out_features]`` (zero at padded steps) and ``final``
            ``[B, out_features]``: the last layer's final hidden states, the forward
            direction's after the last real step and the backward direction's after the
            first, concatenated.
        """
        # Zeroed so that even a sample without a real step (given one, see
        # lengths_from_mask) reads zeros, not whatever its padding holds.
        x = x * mask.unsqueeze(-1).to(x.dtype)
        packed = pack_padded_sequence(
            x, lengths_from_mask(mask), batch_first=True, enforce_sorted=False
        )
        packed_out, state = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
        hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c); GRU: h
        # h_n is [layers * directions, B, H] in the input order (pack undoes its sorting).
        final = torch.cat(list(hidden[-self.directions :]), dim=-1)
        return self.dropout(outputs), self.dropout(final)
