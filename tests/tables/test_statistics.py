"""Cell statistics against independent computations: scipy, statsmodels, fixed numbers."""

import csv

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from mmexp.tables.aggregate import build_table
from mmexp.tables.collect import RunResult
from mmexp.tables.plots import error_bounds, metric_range
from mmexp.tables.render import to_latex, to_markdown, write_csv, write_seed_csv
from mmexp.tables.statistics import bootstrap_interval, holm, seeds_split, t_interval
from tests.helpers.run_folders import write_run_folder


def run(fusion, task, seed, acc):
    config = {"data": {"task": task, "modalities": ["image", "text"]}, "seed": seed}
    return RunResult("completed", {"test/acc": acc}, config, {"fusion": fusion})


VALUES = [0.81, 0.84, 0.79, 0.86, 0.80]


def test_t_interval_is_scipys():
    expected = stats.t.interval(0.95, len(VALUES) - 1, loc=np.mean(VALUES), scale=stats.sem(VALUES))
    assert t_interval(VALUES) == pytest.approx(expected, rel=1e-12)
    assert t_interval([0.5]) is None


def test_bootstrap_interval_is_scipys_percentile_bootstrap_and_repeats():
    expected = stats.bootstrap(
        (np.asarray(VALUES),),
        np.mean,
        method="percentile",
        n_resamples=9999,
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert bootstrap_interval(VALUES) == pytest.approx((expected.low, expected.high))
    assert bootstrap_interval(VALUES) == bootstrap_interval(VALUES)
    low, high = bootstrap_interval(VALUES)
    assert min(VALUES) <= low < np.mean(VALUES) < high <= max(VALUES)
    assert bootstrap_interval([0.7, 0.7, 0.7]) == (0.7, 0.7)
    # Two seeds: every resample mean is a, b or (a + b) / 2, so the interval is their range.
    assert bootstrap_interval([0.80, 0.55]) == pytest.approx((0.55, 0.80))


@pytest.mark.parametrize(
    "p_values",
    [
        [0.01, 0.04, 0.03, 0.005],
        [0.2, 0.01, 0.6],
        [0.04],
        [0.02, 0.02, 0.5, 0.001, 0.3],
        [0.6, 0.7, 0.9],  # every adjusted value capped at 1
    ],
)
def test_holm_equals_statsmodels(p_values):
    expected = multipletests(p_values, method="holm")[1]
    assert holm(p_values) == pytest.approx(list(expected))


def test_split_seeds_flags_learned_and_not_learned_but_not_spread():
    assert seeds_split([0.99, 0.34, 0.33], 0.1)  # one seed learned XOR, two at chance
    assert seeds_split([0.98, 0.34], 0.1)
    assert not seeds_split([0.80, 0.84, 0.82], 0.1)  # ordinary seed noise
    assert not seeds_split([0.50, 0.60, 0.70, 0.80], 0.1)  # even spread, no two groups
    assert not seeds_split([0.98, 0.34], 0.7)  # a gap below the threshold
    assert not seeds_split([0.9], 0.1)


def two_seed_xor_study():
    # concat learned the task on one seed only; tensor on both.
    return [
        run("concat", "synergy", 1, 0.99),
        run("concat", "synergy", 2, 0.34),
        run("tensor", "synergy", 1, 0.97),
        run("tensor", "synergy", 2, 0.98),
    ]


def test_table_cells_carry_interval_split_and_holm_p_values():
    runs = [
        *[run("concat", "a", s, v) for s, v in zip(range(5), VALUES, strict=True)],
        *[run("late", "a", s, v - 0.05 + 0.01 * s) for s, v in enumerate(VALUES)],
        *[run("sum", "a", s, v + 0.002 * (-1) ** s) for s, v in enumerate(VALUES)],
    ]
    table = build_table(runs, "test/acc", "fusion", "data.task", baseline="concat", interval="t")
    concat = table.cell("concat", "a")
    assert concat.interval == pytest.approx(t_interval(VALUES))
    raw = {
        row: stats.ttest_rel(list(table.cell(row, "a").values.values()), VALUES).pvalue
        for row in ("late", "sum")
    }
    adjusted = multipletests([raw["late"], raw["sum"]], method="holm")[1]
    assert table.cell("late", "a").p_value == pytest.approx(raw["late"])
    assert table.cell("late", "a").p_adjusted == pytest.approx(adjusted[0])
    assert table.cell("sum", "a").p_adjusted == pytest.approx(adjusted[1])
    assert concat.p_adjusted is None


def test_markdown_shows_interval_split_marker_and_says_which_test(tmp_path):
    table = build_table(
        two_seed_xor_study(), "test/acc", "fusion", "data.task", baseline="tensor", interval="t"
    )
    concat = table.cell("concat", "synergy")
    assert concat.split and not table.cell("tensor", "synergy").split
    low, high = t_interval([0.99, 0.34])
    markdown = to_markdown(table)
    assert f"66.50 ± 45.96 [{100 * low:.2f}, {100 * high:.2f}] (2)§" in markdown
    assert "Holm-corrected" in markdown and "Student's t" in markdown
    assert "§ seeds split into two distant groups" in markdown
    assert r"$^\S$" in to_latex(table)
    write_csv(table, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as handle:
        rows = {row["fusion"]: row for row in csv.DictReader(handle)}
    assert rows["concat"]["split_seeds"] == "1" and rows["tensor"]["split_seeds"] == "0"
    assert float(rows["concat"]["ci_low"]) == pytest.approx(low)
    write_seed_csv(table, tmp_path / "seeds.csv")
    with (tmp_path / "seeds.csv").open() as handle:
        seeds = [(r["fusion"], r["seed"], float(r["value"])) for r in csv.DictReader(handle)]
    assert ("concat", "2", 0.34) in seeds and len(seeds) == 4


def test_chart_error_bars_stay_inside_the_metrics_range():
    table = build_table(two_seed_xor_study(), "test/acc", "fusion", "data.task", interval="t")
    concat = table.cell("concat", "synergy")
    assert concat.interval[1] > 1 and concat.mean + concat.std > 1  # what used to be drawn
    assert metric_range("test/acc") == (0.0, 1.0) and metric_range("test/loss") is None
    assert error_bounds(concat, (0.0, 1.0)) == (0.0, 1.0)
    assert error_bounds(concat, None) == pytest.approx(concat.interval)


def write_runs(root, accuracies):
    config = {"data": {"task": "synergy", "modalities": ["image", "text"]}}
    for index, ((fusion, seed), acc) in enumerate(accuracies.items()):
        write_run_folder(root / str(index), fusion, seed, {"test/acc": acc}, config)


def test_cli_bootstrap_interval_sorted_rows_seed_csv_and_pdf(tmp_path, capsys):
    from mmexp.tables.cli import main

    accuracies = {("late", 1): 0.50, ("late", 2): 0.52, ("late", 3): 0.49}
    accuracies |= {("concat", 1): 0.99, ("concat", 2): 0.34, ("concat", 3): 0.33}
    accuracies |= {("tensor", 1): 0.97, ("tensor", 2): 0.98, ("tensor", 3): 0.96}
    write_runs(tmp_path / "runs", accuracies)
    out = tmp_path / "table"
    argv = [str(tmp_path / "runs"), "--rows", "fusion", "--cols", "data.task", "--out", str(out)]
    assert main([*argv, "--ci", "bootstrap", "--sort", "synergy", "--baseline", "late"]) == 0
    printed = capsys.readouterr().out
    body = [line for line in printed.splitlines() if line.startswith("| ") and "fusion" not in line]
    # means: tensor 0.97, concat 0.553, late 0.503
    assert [line.split(" | ")[0] for line in body] == ["| tensor", "| concat", "| late"]
    low, high = bootstrap_interval([0.99, 0.34, 0.33])
    assert f"[{100 * low:.2f}, {100 * high:.2f}] (3)§" in printed
    assert "percentile bootstrap" in printed
    with out.with_name("table_seeds.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 9
    assert out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert out.with_suffix(".png").is_file()
    with pytest.raises(ValueError, match="--sort 'nope': not a column"):
        main([*argv, "--sort", "nope"])


def test_holm_decides_the_asterisk_and_equal_differences_get_no_p_value():
    # Two rows against concat over 3 seeds: late's raw p is below 0.05, Holm's is not.
    base = [0.80, 0.84, 0.82]
    late = [0.78, 0.81, 0.805]  # raw p 0.039; Holm over 2 tested rows: 0.078
    sum_ = [0.81, 0.83, 0.825]
    runs = [run("concat", "a", s, v) for s, v in enumerate(base)]
    runs += [run("late", "a", s, v) for s, v in enumerate(late)]
    runs += [run("sum", "a", s, v) for s, v in enumerate(sum_)]
    runs += [run("gated", "a", s, v + 0.02) for s, v in enumerate(base)]  # constant +0.02
    table = build_table(runs, "test/acc", "fusion", "data.task", baseline="concat")
    raw = stats.ttest_rel(late, base).pvalue
    assert raw < 0.05 < table.cell("late", "a").p_adjusted
    markdown = to_markdown(table)
    assert f"{100 * np.mean(late):.2f} ± {100 * np.std(late, ddof=1):.2f} (3) |" in markdown
    assert table.cell("gated", "a").p_value is None


def test_chart_of_negative_values_with_a_fraction_range_does_not_break(tmp_path):
    from mmexp.tables.plots import write_bar_chart

    runs = [run("concat", "a", s, v) for s, v in enumerate([-0.05, -0.01, -0.03])]
    table = build_table(runs, "test/acc", "fusion", "data.task", interval="t")
    cell = table.cell("concat", "a")
    assert error_bounds(cell, (0.0, 1.0)) == pytest.approx(cell.interval)  # mean outside
    written = write_bar_chart(table, tmp_path / "chart.png")
    assert [path.suffix for path in written] == [".png", ".pdf"]
    assert all(path.stat().st_size > 0 for path in written)
