"""Under DDP the first process builds a missing cache entry; the other waits and reads it."""

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mmexp.builders import instantiate_datamodule
from mmexp.data import feature_cache
from mmexp.data.cache_ranks import wait_for_entry
from mmexp.data.cached_datamodule import CachedDataModule
from mmexp.resolve import resolve_run_config
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.distributed import run_distributed
from tests.helpers.frozen_towers import FROZEN_TOWERS


def overrides(bert_dir: Path, vit_weights: Path, cache_dir: Path) -> list[str]:
    return [
        *FAST_OVERRIDES,
        *FROZEN_TOWERS,
        f"model.encoders.text.name_or_path={bert_dir}",
        f"model.encoders.image.checkpoint_path={vit_weights}",
        "feature_cache.enabled=true",
        f"feature_cache.dir={cache_dir}",
    ]


def assemble_with_cache(
    rank: int, world_size: int, *, options: list[str], data_dir: str, out: str
) -> dict:
    """One rank: assemble the run (feature cache on); what it encoded and what it read."""
    from mmexp.assemble import assemble  # after the process group is up

    encoded: list[str] = []
    compute = feature_cache.compute_features

    def counting(encoder, name, *args, **kwargs):
        encoded.append(name)
        return compute(encoder, name, *args, **kwargs)

    feature_cache.compute_features = counting
    cfg = compose_config("train", options, Path(out) / f"rank{rank}", Path(data_dir))
    cfg = resolve_run_config(cfg, "train")
    dist.barrier()  # both ranks look for the entries at the same moment
    run = assemble(cfg, "train")
    datamodule = run.datamodule
    assert isinstance(datamodule, CachedDataModule)
    datamodule.setup("fit")
    # The whole split (the loaders give each rank its own shard under DDP).
    split = datamodule.val_dataloader().dataset
    return {
        "encoded": encoded,
        "reused": {split: entry["reused"] for split, entry in datamodule.report.items()},
        "pooled": {m: split.modalities[m].features["pooled"].clone() for m in ("image", "text")},
    }


@pytest.mark.slow  # two processes, each importing and encoding: about 20 s on two cores
def test_only_rank_zero_encodes_and_both_read_the_same_features(
    tmp_path, data_dir, bert_dir, vit_weights
):
    options = overrides(bert_dir, vit_weights, tmp_path / "cache")
    # The shapes files exist before the ranks start (generating them is not under test).
    prepared = compose_config("train", options, tmp_path / "prepare", data_dir)
    instantiate_datamodule(prepared).prepare_data()
    work = partial(assemble_with_cache, options=options, data_dir=str(data_dir), out=str(tmp_path))
    first, second = run_distributed(work, 2, tmp_path)
    # Two modalities x three splits, encoded by rank 0 alone; rank 1 waited and read them.
    assert sorted(first["encoded"]) == ["image"] * 3 + ["text"] * 3
    assert second["encoded"] == []
    assert not any(first["reused"].values()) and all(second["reused"].values())
    for modality in ("image", "text"):
        torch.testing.assert_close(first["pooled"][modality], second["pooled"][modality])


def test_a_missing_entry_times_out_naming_the_file_and_key(tmp_path):
    with pytest.raises(TimeoutError, match=r"missing\.safetensors did not appear.*wait_s"):
        wait_for_entry(tmp_path / "missing.safetensors", timeout_s=0.3)
