"""Training order: independent of the process count, resumable mid-epoch."""

import pytest
import torch

from mmexp.data.loaders import ResumableLoader, stage_loader
from mmexp.data.sampling import ShuffledEpochs


def test_global_batches_hold_the_same_samples_on_one_and_three_processes():
    data = range(50)
    single = ShuffledEpochs(data, seed=3, num_replicas=1, rank=0)
    shards = [ShuffledEpochs(data, seed=3, num_replicas=3, rank=r) for r in range(3)]
    for sampler in (single, *shards):
        sampler.set_epoch(4)
    alone = list(single)
    split = [list(s) for s in shards]
    assert sorted(alone) == list(range(50))
    # Global batch k of 12 = one batch of 12 alone, or three batches of 4.
    for k in range(4):
        assert set(alone[12 * k : 12 * (k + 1)]) == {
            i for s in split for i in s[4 * k : 4 * (k + 1)]
        }
    # 50 samples on 3 ranks: 17 each, the one extra sample taken from the start.
    assert [len(s) for s in split] == [17, 17, 17]


def test_each_epoch_reshuffles_and_the_seed_fixes_the_order():
    sampler = ShuffledEpochs(range(40), seed=1, num_replicas=1, rank=0)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert len({tuple(o) for o in orders}) == 3
    again = ShuffledEpochs(range(40), seed=1, num_replicas=1, rank=0)
    again.set_epoch(1)
    assert list(again) == orders[1]
    other = ShuffledEpochs(range(40), seed=2, num_replicas=1, rank=0)
    other.set_epoch(1)
    assert list(other) != orders[1]


@pytest.mark.parametrize("world", [1, 2])
def test_resuming_into_an_epoch_yields_the_rest_in_order(world):
    shards = [ShuffledEpochs(range(40), seed=9, num_replicas=world, rank=r) for r in range(world)]
    for shard in shards:
        shard.set_epoch(2)
    full = [list(s) for s in shards]
    trained = 3  # batches of 4 per rank trained before the checkpoint
    for shard, whole in zip(shards, full, strict=True):
        shard.resume_at(epoch=2, position=trained * 4 * world)
        assert list(shard) == whole[trained * 4 :]
        assert len(shard) == len(whole)  # Lightning counts the epoch's batches as a whole
        shard.set_epoch(3)  # the next epoch starts from its beginning
        assert len(list(shard)) == len(whole)


class Progress:
    """A training loop's progress, set by hand."""

    def __init__(self, epoch: int = 0, trained: int = 0) -> None:
        self.at_epoch, self.trained = epoch, trained

    def epoch(self) -> int:
        return self.at_epoch

    def trained_batches(self) -> int:
        return self.trained


def _loader(progress: Progress, seed: int = 5, size: int = 30) -> ResumableLoader:
    loader = stage_loader(torch.arange(size), "train", 4, progress, seed=seed)
    assert isinstance(loader, ResumableLoader)
    return loader


def test_loader_state_resumes_the_remaining_batches():
    progress = Progress(epoch=1)
    loader = _loader(progress)
    batches = [b.tolist() for b in loader]
    assert loader.sampler.epoch == 1  # the loop's epoch, read when the iterator starts
    progress.trained = 3
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["position"] == 12

    # Lightning restores the loop's progress, then the loader, then starts its iterator.
    resumed = _loader(Progress(epoch=1))
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == batches[3:]
    # A checkpoint from the end of epoch 1 resumes into a whole epoch 2.
    ended = _loader(Progress(epoch=2))
    ended.load_state_dict({**state, "position": 32})
    assert len([b for b in ended]) == 8


def test_loader_refuses_a_state_from_another_order():
    state = _loader(Progress(trained=2)).state_dict()
    with pytest.raises(ValueError, match="seed 5.*seed 6"):
        _loader(Progress(), seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="30 samples"):
        _loader(Progress(), size=31).load_state_dict(state)


def test_evaluation_loaders_keep_the_split_order():
    loader = stage_loader(torch.arange(10), "val", 4, Progress())
    assert not isinstance(loader, ResumableLoader)
    assert torch.cat(list(loader)).tolist() == list(range(10))
