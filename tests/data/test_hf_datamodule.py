"""Hugging Face data sets through datasets.load_dataset, from a folder in the hub layout."""

import pyarrow.parquet as pq
import pytest

from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.published_fixtures import write_hf_dataset

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = [
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.pin_memory=false",
    "data.columns={image:img,text:caption}",
]


def run(tmp_path, data_dir, root, *overrides):
    cfg = compose_config(
        "train",
        [
            *FAST,
            "data=hf",
            f"data.path={root}",
            f"data.cache_dir={tmp_path / 'hf_cache'}",
            *LOADER,
            *overrides,
        ],
        tmp_path / "run",
        data_dir,
    )
    return train(cfg)


def test_training_on_a_hub_layout_folder(tmp_path, data_dir):
    root = write_hf_dataset(tmp_path / "hf")
    result = run(tmp_path, data_dir, root)
    assert 0 <= result["metrics"]["test/acc"] <= 1
    assert result["data_skipped"]["counts"] == {}


def test_class_names_come_from_the_class_label_feature(tmp_path):
    from mmexp.data.hf_datamodule import HFDataModule

    root = write_hf_dataset(tmp_path / "hf")
    dm = HFDataModule(
        str(root), columns={"image": "img", "text": "caption"}, cache_dir=str(tmp_path / "cache")
    )
    assert dm.label_names == ["cat", "dog"]
    rows = dm.read_splits()["train"]
    assert len(rows) == 8 and isinstance(rows[0]["img"]["bytes"], bytes)  # not decoded yet


def test_empty_caption_is_named_or_skipped(tmp_path, data_dir):
    root = write_hf_dataset(tmp_path / "hf")
    path = root / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    captions = table.column("caption").to_pylist()
    captions[5] = "  "
    index = table.schema.get_field_index("caption")
    pq.write_table(table.set_column(index, "caption", [captions]), path)
    with pytest.raises(ValueError, match=r"hf\[train\]: train row 5: empty text"):
        run(tmp_path, data_dir, root)
    result = run(tmp_path, data_dir, root, "data.on_bad_sample=skip")
    assert result["data_skipped"]["counts"] == {"train": 1}


def test_missing_split_and_column_are_named(tmp_path, data_dir):
    root = write_hf_dataset(tmp_path / "hf", {"train": 4, "test": 4})
    with pytest.raises(ValueError, match=r"has splits \['test', 'train'\], not \['validation'\]"):
        run(tmp_path, data_dir, root)
    with pytest.raises(ValueError, match="has no column 'picture'"):
        run(
            tmp_path,
            data_dir,
            root,
            "data.split_names={train:train,val:test,test:test}",
            "data.columns={image:picture,text:caption}",
        )
