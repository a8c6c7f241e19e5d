import csv

import numpy as np
import pytest

from mmexp.tables.aggregate import build_columns_table
from mmexp.tables.collect import RunResult
from mmexp.tables.render import to_markdown, write_csv


def run(fusion, seed, image, half, status="completed"):
    metrics = {"robust/subset:image/acc": image, "robust/missing:text@0.5/acc": half}
    return RunResult(status, metrics, {"seed": seed}, {"fusion": fusion})


RUNS = [
    run("concat", 1, 0.70, 0.80),
    run("concat", 2, 0.60, 0.84),
    run("late", 1, 0.75, 0.70),
    run("late", 2, 0.77, 0.72),
    run("late", 3, None, None, status="failed"),
]
COLUMNS = [
    ("subset:image", "robust/subset:image/acc"),
    ("missing:text@0.5", "robust/missing:text@0.5/acc"),
]


def test_each_column_is_its_own_metric_over_seeds_in_the_requested_order(tmp_path):
    table = build_columns_table(RUNS, COLUMNS, "fusion", baseline="concat", metric="acc")
    assert table.columns == ["subset:image", "missing:text@0.5"]
    concat = table.cell("concat", "subset:image")
    assert concat.mean == pytest.approx(0.65) and concat.std == pytest.approx(
        np.std([0.7, 0.6], ddof=1)
    )
    assert table.cell("late", "subset:image").best and table.cell("concat", "missing:text@0.5").best
    assert table.cell("late", "missing:text@0.5").failed == 1
    assert table.cell("late", "subset:image").p_value is not None
    markdown = to_markdown(table)
    assert "| fusion | subset:image | missing:text@0.5 |" in markdown
    assert "| concat | 65.00 ± 7.07 (2) | **82.00 ± 2.83 (2)** |" in markdown
    write_csv(table, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["metric"] for row in rows if row["metric"]} == {key for _, key in COLUMNS}


def test_min_mode_marks_the_lowest_mean_best():
    table = build_columns_table(RUNS, COLUMNS, "fusion", mode="min")
    assert table.cell("concat", "subset:image").best
    with pytest.raises(ValueError, match="mode must be"):
        build_columns_table(RUNS, COLUMNS, "fusion", mode="lowest")
