"""MM-IMDb from a few samples in its release format: multi-label genres end to end."""

import json
import logging

import pytest
import torch

from mmexp.data.sets.mmimdb import GENRES, MMIMDbDataModule
from mmexp.metrics.multilabel import SamplesF1
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.published_fixtures import write_mmimdb

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = [
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.pin_memory=false",
]


def test_genres_become_multi_hot_targets_of_the_23(tmp_path):
    root = write_mmimdb(tmp_path / "mmimdb")
    dm = MMIMDbDataModule(root, batch_size=4)
    dataset = dm.dataset("train", processed=False)
    drama, comedy, horror, documentary = (
        GENRES.index(g) for g in ("Drama", "Comedy", "Horror", "Documentary")
    )
    assert dataset[1]["label"] == [int(i in (drama, comedy)) for i in range(23)]
    assert dataset[0]["label"] == [int(i == horror) for i in range(23)]
    assert dataset[2]["label"] == [int(i == documentary) for i in range(23)]  # News dropped


def test_gmu_protocol_keeps_every_movie_with_its_longest_plot(tmp_path):
    root = write_mmimdb(tmp_path / "mmimdb")
    dm = MMIMDbDataModule(root)
    for stage, count in (("train", 8), ("val", 4), ("test", 4)):
        rows = dm.dataset(stage, processed=False)
        assert len(rows) == count
        assert all(rows[i]["text"].startswith("plot of movie") for i in range(count))


def test_mmbt_protocol_drops_news_and_genres_unseen_in_training(tmp_path, caplog):
    root = write_mmimdb(tmp_path / "mmimdb")
    split = json.loads((root / "split.json").read_text())
    with caplog.at_level(logging.INFO):
        dm = MMIMDbDataModule(root, protocol="mmbt")
        ids = {
            stage: [r["id"] for r in dm.dataset(stage, processed=False).rows]
            for stage in ("train", "val", "test")
        }
    assert ids["train"] == [m for i, m in enumerate(split["train"]) if i != 2]  # News
    assert ids["val"] == [m for i, m in enumerate(split["dev"]) if i != 2]
    assert ids["test"] == [split["test"][i] for i in (0, 1)]  # News; Reality-TV unseen
    assert "left out 2 of 4 test movies" in caplog.text
    assert dm.dataset("train", processed=False)[1]["text"].startswith("plot of movie")


def test_first_plot_is_an_option_and_unknown_choices_are_named(tmp_path):
    root = write_mmimdb(tmp_path / "mmimdb")
    rows = MMIMDbDataModule(root, plot="first").dataset("train", processed=False)
    assert rows[1]["text"] == "first summary"
    assert rows[0]["text"].startswith("plot of movie")  # the only summary
    with pytest.raises(ValueError, match="data.plot must be one of"):
        MMIMDbDataModule(root, plot="all")
    with pytest.raises(ValueError, match="data.protocol must be one of"):
        MMIMDbDataModule(root, protocol="map")


def test_training_reports_the_four_f1_averages(tmp_path, data_dir):
    root = write_mmimdb(tmp_path / "mmimdb")
    cfg = compose_config(
        "train",
        [*FAST, "data=mmimdb", f"data.root={root}", *LOADER, "objective=multilabel"],
        tmp_path / "run",
        data_dir,
    )
    result = train(cfg)
    for average in ("micro", "macro", "weighted", "samples"):
        assert 0 <= result["metrics"][f"test/f1_{average}"] <= 1
    assert result["monitor"] == "val/f1_micro"


def test_missing_movie_file_says_where_the_data_comes_from(tmp_path):
    root = write_mmimdb(tmp_path / "mmimdb")
    split = json.loads((root / "split.json").read_text())
    (root / "dataset" / f"{split['dev'][0]}.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"MM-IMDb: missing .*\.json.*mmimdb.tar.gz"):
        MMIMDbDataModule(root).setup("fit")


def test_samples_f1_matches_the_definition():
    metric = SamplesF1()
    logits = torch.tensor([[5.0, 5.0, -5.0], [-5.0, -5.0, 5.0], [-5.0, -5.0, -5.0]])
    targets = torch.tensor([[1, 0, 0], [0, 0, 1], [1, 1, 0]])
    metric.update(logits, targets)
    # sample 1: 2*1/(2+1); sample 2: 1; sample 3: nothing predicted -> 0
    assert metric.compute().item() == pytest.approx((2 / 3 + 1 + 0) / 3)
