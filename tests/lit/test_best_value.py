"""<monitor>_best is the running best of the logged validation values; the best checkpoint
is the epoch that reached it."""

import csv
import re
from pathlib import Path

import pytest

from mmexp.train import train


def validation_rows(run_dir: Path, monitor: str) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(monitor)]
    return sorted(rows, key=lambda row: int(row["epoch"]))


@pytest.mark.parametrize(("monitor", "mode"), [("val/acc", "max"), ("val/loss", "min")])
def test_best_value_and_checkpoint_follow_the_validation_column(make_train_cfg, monitor, mode):
    cfg = make_train_cfg(
        f"monitor={monitor}",
        f"monitor_mode={mode}",
        "trainer.max_epochs=4",
        "data.num_train=160",
        "data.batch_size=16",
    )
    result = train(cfg)
    rows = validation_rows(Path(cfg.paths.output_dir), monitor)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]  # no sanity-check row
    values = [float(row[monitor]) for row in rows]
    pick = max if mode == "max" else min
    for seen, row in enumerate(rows, start=1):
        assert float(row[f"{monitor}_best"]) == pytest.approx(pick(values[:seen]))
    assert result["metrics"][f"{monitor}_best"] == pytest.approx(pick(values))
    # Lightning replaces the best checkpoint only on a strict improvement: the first best.
    best_epoch = values.index(pick(values))
    epoch = re.search(r"epoch_(\d+)\.ckpt$", result["best_checkpoint"])
    assert epoch is not None and int(epoch.group(1)) == best_epoch
