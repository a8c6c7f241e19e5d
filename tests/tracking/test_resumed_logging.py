"""A run resumed into its folder keeps its earlier logs: CSV rows and the W&B run."""

import csv

from mmexp.tracking.csv_logger import AppendingCSVLogger
from mmexp.tracking.wandb_logger import create_wandb_logger


def test_csv_rows_of_the_first_attempt_survive_the_resume(tmp_path):
    first = AppendingCSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.log_metrics({"train/loss": 0.5}, step=1)
    first.save()
    resumed = AppendingCSVLogger(tmp_path, name="csv", version="")
    resumed.log_metrics({"train/loss": 0.25}, step=2)
    resumed.log_metrics({"val/acc": 0.9}, step=2)  # a new column rewrites the header
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["0", "1", "2", "2"]
    assert [row["train/loss"] for row in rows] == ["1.0", "0.5", "0.25", ""]
    assert rows[-1]["val/acc"] == "0.9"


def test_wandb_run_id_is_kept_per_run_folder(tmp_path):
    first = create_wandb_logger(tmp_path / "run", mode="offline")
    run_id = first.experiment.id
    first.experiment.finish()
    again = create_wandb_logger(tmp_path / "run", mode="offline")
    assert again.experiment.id == run_id
    again.experiment.finish()
    other = create_wandb_logger(tmp_path / "other", mode="offline")
    assert other.experiment.id != run_id
    other.experiment.finish()
