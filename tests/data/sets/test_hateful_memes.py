"""Hateful Memes from a few samples in its release format, through mmexp-train."""

import json
import logging

import pytest

from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.published_fixtures import write_hateful_memes

FAST = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
LOADER = [
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.pin_memory=false",
]


def run(tmp_path, data_dir, root, *overrides):
    cfg = compose_config(
        "train",
        [
            *FAST,
            "data=hateful_memes",
            f"data.root={root}",
            *LOADER,
            "monitor=val/auroc",
            *overrides,
        ],
        tmp_path / "run",
        data_dir,
    )
    return train(cfg)


def test_training_on_the_release_format_reports_auroc_and_accuracy(tmp_path, data_dir, caplog):
    root = write_hateful_memes(tmp_path / "hm")
    with caplog.at_level(logging.WARNING):
        result = run(tmp_path, data_dir, root)
    metrics = result["metrics"]
    assert 0 <= metrics["test/auroc"] <= 1 and 0 <= metrics["test/acc"] <= 1
    assert "val/auroc_best" in metrics
    assert "train: 8 found, 8500 published" in caplog.text


def test_count_check_can_be_strict(tmp_path, data_dir):
    root = write_hateful_memes(tmp_path / "hm")
    with pytest.raises(ValueError, match="dev_seen: 4 found, 500 published"):
        run(tmp_path, data_dir, root, "data.check_counts=raise")


def test_missing_split_file_says_where_the_data_comes_from(tmp_path, data_dir):
    root = write_hateful_memes(tmp_path / "hm")
    (root / "test_seen.jsonl").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"missing .*test_seen.jsonl.*hatefulmemeschallenge"
    ):
        run(tmp_path, data_dir, root)


def test_unseen_test_split_and_bad_rows_are_named(tmp_path, data_dir):
    root = write_hateful_memes(
        tmp_path / "hm", {"train": 8, "dev_seen": 4, "test_seen": 4, "test_unseen": 4}
    )
    lines = (root / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["label"] = 5
    lines[3] = json.dumps(row)
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl: train row 3 \(id=10004\): unknown label 5"):
        run(tmp_path, data_dir, root, "data.test_split=test_unseen")
    result = run(tmp_path, data_dir, root, "data.test_split=test_unseen", "data.on_bad_sample=skip")
    assert result["data_skipped"]["counts"] == {"train": 1}
