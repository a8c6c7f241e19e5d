"""Content hashes of tensors: every shape and dtype, values compared byte for byte."""

import pytest
import torch

from mmexp.utils.digest import tensor_bytes, tensors_digest


@pytest.mark.parametrize(
    "tensor",
    [torch.tensor(3), torch.tensor(2.5), torch.arange(6).reshape(2, 3).T, torch.ones(0, 4)],
    ids=["long-0d", "float-0d", "transposed", "empty"],
)
def test_tensor_bytes_are_the_values_in_row_major_order(tensor):
    assert tensor_bytes(tensor) == tensor.contiguous().numpy().tobytes()


def test_batchnorm_state_has_a_digest_that_follows_its_values():
    norm = torch.nn.BatchNorm1d(3)
    before = tensors_digest(norm.state_dict())
    norm.num_batches_tracked += 1  # the 0-dim long buffer alone changes
    assert tensors_digest(norm.state_dict()) != before
