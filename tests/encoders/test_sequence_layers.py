"""Shared sequence blocks: masked batch norm and the packed recurrence, against torch.nn."""

import pytest
import torch
from torch import nn

from mmexp.encoders.sequence_layers import (
    PackedRecurrence,
    lengths_from_mask,
    masked_batch_norm,
)

LENGTHS = [5, 2, 7]


def right_padded(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(len(lengths), max(lengths), width)
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return x, mask


def test_masked_batch_norm_takes_its_statistics_from_the_real_steps_only():
    x, mask = right_padded(LENGTHS, 3)
    x[~mask] = 1e4  # padding that would dominate the statistics
    norm = nn.BatchNorm1d(3, momentum=1.0).train()  # momentum 1: running = last batch
    out = masked_batch_norm(norm, x, mask)
    real = x[mask]
    expected = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + norm.eps)
    torch.testing.assert_close(out[mask], expected)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    torch.testing.assert_close(norm.running_mean, real.mean(0))


def test_masked_batch_norm_uses_running_statistics_for_a_single_real_step():
    x, mask = right_padded([1, 0], 2)
    norm = nn.BatchNorm1d(2).train()
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    out = masked_batch_norm(norm, x, mask)
    torch.testing.assert_close(out[0, 0], (x[0, 0] - 1.0) / torch.sqrt(4.0 + torch.tensor(1e-5)))


def test_lengths_give_an_empty_sample_one_step():
    _, mask = right_padded([3, 0, 1], 1)
    assert lengths_from_mask(mask).tolist() == [3, 1, 1]


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, True), (2, True), (2, False)])
def test_packed_recurrence_equals_the_cell_run_on_each_unpadded_sequence(
    cell, layers, bidirectional
):
    x, mask = right_padded(LENGTHS, 4)
    torch.manual_seed(1)
    recurrence = PackedRecurrence(cell, 4, 6, layers, bidirectional).eval()
    outputs, final = recurrence(x, mask)
    # The reference: a separate cell with the same weights, one sequence at a time, no
    # packing, so nothing but the real steps exists.
    reference = cell(4, 6, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    reference.load_state_dict(recurrence.rnn.state_dict())
    directions = 2 if bidirectional else 1
    assert outputs.shape == (3, 7, 6 * directions) and final.shape == (3, 6 * directions)
    for row, length in enumerate(LENGTHS):
        expected, state = reference(x[row : row + 1, :length])
        hidden = state[0] if isinstance(state, tuple) else state
        torch.testing.assert_close(outputs[row, :length], expected[0], atol=1e-6, rtol=1e-5)
        assert torch.equal(outputs[row, length:], torch.zeros_like(outputs[row, length:]))
        summary = torch.cat(list(hidden[-directions:, 0]), dim=-1)
        torch.testing.assert_close(final[row], summary, atol=1e-6, rtol=1e-5)
        # What the summary is: forward after the last real step, backward after the first.
        torch.testing.assert_close(final[row, :6], expected[0, length - 1, :6])
        if bidirectional:
            torch.testing.assert_close(final[row, 6:], expected[0, 0, 6:])


def test_padding_values_never_reach_the_recurrence():
    x, mask = right_padded([3, 0, 5], 4)
    recurrence = PackedRecurrence(nn.LSTM, 4, 5).eval()
    changed = x.clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 100
    for a, b in zip(recurrence(x, mask), recurrence(changed, mask), strict=True):
        assert torch.equal(a, b)


def test_dropout_also_applies_to_a_single_layer():
    x, mask = right_padded(LENGTHS, 4)
    recurrence = PackedRecurrence(nn.GRU, 4, 8, num_layers=1, dropout=0.5).train()
    outputs, _ = recurrence(x, mask)
    assert (outputs[mask] == 0).float().mean() > 0.3


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"hidden_size": 0}, "model.encoders.text.hidden_size"),
        ({"num_layers": 0}, "model.encoders.text.num_layers"),
        ({"dropout": 1.0}, "model.encoders.text.dropout"),
        ({"hidden_size": 2.5}, "model.encoders.text.hidden_size"),
    ],
)
def test_bad_settings_are_named_by_key(options, key):
    settings = {"hidden_size": 4, "num_layers": 1, "dropout": 0.0, **options}
    with pytest.raises(ValueError, match=rf"^{key} must be"):
        PackedRecurrence(nn.LSTM, 3, key="model.encoders.text", **settings)
