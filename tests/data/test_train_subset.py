"""data.train_subset: a fixed subset of the training split, by count or fraction."""

import pytest

from mmexp.builders import build_module, encoder_processors, instantiate_datamodule


def ids(datamodule, stage):
    return [row["id"] for row in datamodule.dataset(stage, processed=False).rows]


def prepared(cfg):
    datamodule = instantiate_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.set_processors(*encoder_processors(build_module(cfg, datamodule.num_classes)))
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


@pytest.mark.parametrize(("subset", "size"), [("0.5", 120), ("200", 200), ("1.0", 240)])
def test_the_subset_is_fixed_and_only_the_training_split_shrinks(make_train_cfg, subset, size):
    whole = prepared(make_train_cfg(run_name="whole"))
    first = prepared(make_train_cfg(f"data.train_subset={subset}", run_name="a"))
    again = prepared(make_train_cfg(f"data.train_subset={subset}", run_name="b"))
    assert len(ids(first, "train")) == size
    assert ids(first, "train") == ids(again, "train")  # the same draw in every run
    assert set(ids(first, "train")) <= set(ids(whole, "train"))
    for stage in ("val", "test"):
        assert ids(first, stage) == ids(whole, stage)
