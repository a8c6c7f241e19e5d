"""The debug presets run and do what their configs say."""

import csv
from pathlib import Path

import pytest

from mmexp.train import train
from tests.helpers.batch_counter import read_counts


def metric_rows(cfg) -> list[dict[str, str]]:
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def counted(tmp_path) -> list[str]:
    """Overrides adding a batch counter that writes to ``tmp_path / batches.json``."""
    return [
        "+callbacks.batch_counter._target_=tests.helpers.batch_counter.BatchCounter",
        f"+callbacks.batch_counter.path={tmp_path / 'batches.json'}",
    ]


def test_fdr_runs_one_batch_of_each_split_and_writes_no_checkpoint(make_train_cfg, tmp_path):
    cfg = make_train_cfg("debug=fdr", *counted(tmp_path))
    result = train(cfg)
    assert result["status"] == "completed"
    # one training and one validation batch, no sanity check; test=false tests nothing
    assert read_counts(tmp_path / "batches.json") == {"train": 1, "val": 1}
    assert result["best_checkpoint"] is None and result["last_checkpoint"] is None
    assert result["metrics"]["train/loss"] > 0
    assert "test/acc" not in result["metrics"]  # test=false


def test_limit_trains_few_batches_for_three_epochs(make_train_cfg, tmp_path):
    # the fast settings say 2 epochs
    # 80 validation and test samples in batches of 16: 5 batches each, of which 2 run
    cfg = make_train_cfg(
        "debug=limit", "trainer.max_epochs=3", "data.eval_batch_size=16", *counted(tmp_path)
    )
    result = train(cfg)
    # 5 training and 2 validation batches an epoch, 2 test batches (and Lightning's sanity
    # check of 2 validation batches)
    counts = read_counts(tmp_path / "batches.json")
    assert counts == {"train": 15, "val": 6, "sanity": 2, "test": 2}
    epochs = sorted({int(row["epoch"]) for row in metric_rows(cfg) if row.get("val/acc")})
    assert epochs == [0, 1, 2]
    # 5 training batches per epoch: the last step of epoch 2 is 14 (counted from 0)
    steps = [int(row["step"]) for row in metric_rows(cfg) if row.get("train/loss_epoch")]
    assert max(steps) == 3 * 5 - 1
    assert result["metrics"]["test/acc"] >= 0


def test_overfit_trains_on_its_few_batches(make_train_cfg):
    cfg = make_train_cfg("debug=overfit", "trainer.max_epochs=1")
    result = train(cfg)
    steps = [int(row["step"]) for row in metric_rows(cfg) if row.get("train/loss_epoch")]
    assert result["status"] == "completed" and steps == [2]  # 3 batches


@pytest.mark.slow  # a learning test: 30 epochs
def test_overfit_fits_its_few_batches(make_train_cfg):
    cfg = make_train_cfg("debug=overfit", "trainer.max_epochs=30", "model.head.dropout=0")
    result = train(cfg)
    assert result["metrics"]["train/acc"] >= 0.9
