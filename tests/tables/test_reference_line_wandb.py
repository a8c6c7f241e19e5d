"""mmexp-table: published numbers beside reproduced ones, lines against a numeric axis, W&B."""

import csv

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from PIL import Image
from scipy import stats

from mmexp.tables.aggregate import build_table
from mmexp.tables.cli import main
from mmexp.tables.collect import RunResult
from mmexp.tables.plots import line_figure, numeric_columns, write_line_plot
from tests.helpers.run_folders import write_run_folder
from tests.helpers.wandb_offline import read_offline_run

# label budget (fraction of the training set) x fusion x seed
ACCURACIES = {
    ("concat", 0.1, 1): 0.61,
    ("concat", 0.1, 2): 0.65,
    ("concat", 0.1, 3): 0.63,
    ("concat", 1.0, 1): 0.90,
    ("concat", 1.0, 2): 0.92,
    ("concat", 1.0, 3): 0.94,
    ("late", 0.1, 1): 0.55,
    ("late", 0.1, 2): 0.57,
    ("late", 0.1, 3): 0.50,
    ("late", 1.0, 1): 0.80,
    ("late", 1.0, 2): 0.85,
    ("late", 1.0, 3): 0.84,
    ("late", 0.01, 1): 0.34,
    ("late", 0.01, 2): 0.35,
    ("late", 0.01, 3): 0.36,
}


def write_runs(root, fraction=None):
    chosen = {key: acc for key, acc in ACCURACIES.items() if fraction in (None, key[1])}
    for index, ((fusion, fraction, seed), acc) in enumerate(chosen.items()):
        config = {"data": {"train_fraction": fraction, "task": "synergy"}}
        write_run_folder(root / str(index), fusion, seed, {"test/acc": acc}, config)
    return root


def write_reference(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def runs_dir(tmp_path):
    return write_runs(tmp_path / "runs")


def cli(runs_dir, out, *extra):
    argv = [str(runs_dir), "--rows", "fusion", "--cols", "data.train_fraction", "--out", str(out)]
    return main([*argv, *extra])


def test_published_numbers_beside_reproduced_ones_with_difference_and_agreement(
    runs_dir, tmp_path, capsys
):
    reference = write_reference(
        tmp_path / "published.csv",
        [
            "row,column,value,source",
            "concat,1.0,93.5,Table 2",
            "late,0.1,65.0,Table 2",
        ],
    )
    assert cli(runs_dir, tmp_path / "t", "--ci", "t", "--reference", str(reference)) == 0
    printed = capsys.readouterr().out
    concat = [0.90, 0.92, 0.94]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(concat), scale=stats.sem(concat))
    # reproduced 92.00, published 93.5: inside the t interval [87.03, 96.97]
    assert "| concat | 1.0 | 93.50 | 92.00 ± 2.00 (3) | -1.50 | yes | Table 2 |" in printed
    late = [0.55, 0.57, 0.50]
    _, late_high = stats.t.interval(0.95, 2, loc=np.mean(late), scale=stats.sem(late))
    assert late_high * 100 < 65.0  # the published 65 lies above the reproduced interval
    assert "| late | 0.1 | 65.00 | 54.00 ± 3.61 (3) | -11.00 | no | Table 2 |" in printed
    assert "published in 95 % CI" in printed
    with (tmp_path / "t_reference.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["fusion"] for row in rows] == ["concat", "late"]
    assert float(rows[0]["ci_low"]) == pytest.approx(100 * low)
    assert float(rows[0]["ci_high"]) == pytest.approx(100 * high)
    assert float(rows[1]["difference"]) == pytest.approx(-11.0)
    assert rows[1]["agrees"] == "0"
    assert (tmp_path / "t_reference.md").read_text().startswith("| fusion | data.train_fraction")


def test_without_intervals_agreement_is_within_one_std(runs_dir, tmp_path, capsys):
    reference = write_reference(
        tmp_path / "published.csv", ["row,column,value", "concat,1.0,93.5", "concat,0.1,70"]
    )
    assert cli(runs_dir, tmp_path / "t", "--reference", str(reference)) == 0
    printed = capsys.readouterr().out
    assert "| concat | 1.0 | 93.50 | 92.00 ± 2.00 (3) | -1.50 | yes |  |" in printed
    assert "| concat | 0.1 | 70.00 | 63.00 ± 2.00 (3) | -7.00 | no |  |" in printed
    assert "published in mean ± std" in printed


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["row,value", "concat,93"], r"no column given, and the table has several"),
        (["row,column,value", "tensor,1.0,90"], r"line 2: row 'tensor' is not in the table"),
        (["row,column,value", "late,0.5,90"], r"line 2: column '0.5' is not in the table"),
        (["row,column,value", "late,1.0,ninety"], r"line 2: value 'ninety' is not a number"),
        (["fusion,column,value", "late,1.0,90"], r"no \['row'\] column in the header"),
    ],
    ids=["no-column", "unknown-row", "unknown-column", "not-a-number", "no-row-header"],
)
def test_a_bad_reference_file_names_the_line_and_writes_nothing(runs_dir, tmp_path, lines, message):
    reference = write_reference(tmp_path / "published.csv", lines)
    with pytest.raises(ValueError, match=message):
        cli(runs_dir, tmp_path / "t", "--reference", str(reference))
    assert not list(tmp_path.glob("t*"))
    with pytest.raises(FileNotFoundError, match="nope.csv: no such file"):
        cli(runs_dir, tmp_path / "t", "--reference", str(tmp_path / "nope.csv"))


def test_one_column_tables_take_references_without_a_column(tmp_path, capsys):
    runs_dir = write_runs(tmp_path / "runs", fraction=1.0)
    reference = write_reference(tmp_path / "published.csv", ["row,value", "late,80"])
    argv = [str(runs_dir), "--rows", "fusion", "--out", str(tmp_path / "t")]
    assert main([*argv, "--reference", str(reference)]) == 0
    assert "| late | test/acc | 80.00 | 83.00 ± 2.65 (3) | +3.00 | no |" in capsys.readouterr().out


def run(fusion, fraction, seed, acc):
    config = {"data": {"train_fraction": fraction}, "seed": seed}
    return RunResult("completed", {"test/acc": acc}, config, {"fusion": fusion})


def test_line_plot_draws_each_row_at_its_numbers_with_the_band_cut_at_the_range(tmp_path):
    runs = [run(f, x, s, a) for (f, x, s), a in ACCURACIES.items()]
    runs += [run("concat", 0.01, s, a) for s, a in [(1, 0.99), (2, 0.34), (3, 0.98)]]
    table = build_table(runs, "test/acc", "fusion", "data.train_fraction", interval="t")
    assert numeric_columns(table) == [0.01, 0.1, 1.0]
    figure = line_figure(table, log_x=True)
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert list(lines["late"].get_xdata()) == [0.01, 0.1, 1.0]
    late = [[0.34, 0.35, 0.36], [0.55, 0.57, 0.50], [0.8, 0.85, 0.84]]
    assert np.allclose(lines["late"].get_ydata(), 100 * np.mean(late, axis=1))
    assert axes.get_xscale() == "log"
    # concat at 0.01 (0.99, 0.34, 0.98) has a t interval of about [-0.16, 1.70]: its band
    # is cut at 0 and 100, where late's stays inside
    split = [0.99, 0.34, 0.98]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(split), scale=stats.sem(split))
    assert low < 0 and high > 1
    bands = [c for c in axes.collections if isinstance(c, PolyCollection)]  # not the dots
    concat_band, late_band = (band.get_paths()[0].vertices[:, 1] for band in bands)
    assert (concat_band.min(), concat_band.max()) == pytest.approx((0.0, 100.0))
    assert 0 < late_band.min() < late_band.max() < 100
    written = write_line_plot(table, tmp_path / "line.png")
    assert [p.suffix for p in written] == [".png", ".pdf"]
    with Image.open(written[0]) as image:
        assert image.format == "PNG"


def test_line_plot_refuses_a_column_axis_that_is_not_numeric(runs_dir, tmp_path):
    runs = [run(f, x, s, a) for (f, x, s), a in ACCURACIES.items()]
    table = build_table(runs, "test/acc", "data.train_fraction", "fusion")
    with pytest.raises(ValueError, match=r"column axis 'fusion', whose value 'concat' is not"):
        numeric_columns(table)
    with pytest.raises(SystemExit):
        cli(runs_dir, tmp_path / "t", "--logx")


def test_every_written_file_is_logged_to_a_wandb_run(runs_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    reference = write_reference(tmp_path / "published.csv", ["row,column,value", "late,0.1,60"])
    out = tmp_path / "tables" / "budget"
    extra = ["--line", "--reference", str(reference), "--log-wandb", "team/mmexp"]
    assert cli(runs_dir, out, *extra, "--group", "label_budget") == 0
    printed = capsys.readouterr().out
    folder = printed.split("logged to W&B: ")[1].strip()
    logged = read_offline_run(folder)
    assert logged["run"]["job_type"] == "table"
    assert logged["run"]["project"] == "mmexp"
    assert logged["run"]["group"] == "label_budget"
    (history,) = logged["history"]
    assert history["table/_type"] == "table-file"
    assert history["table/nrows"] == 6  # 2 rows x 3 columns of the CSV
    assert history["table/ncols"] == 14
    images = {key for key, value in history.items() if value == "image-file"}
    assert images == {"plots/budget/_type", "plots/budget_line/_type"}
    (artifact,) = [entry for entry in logged["artifacts"] if entry["type"] == "table"]
    assert sorted(artifact["files"]) == sorted(
        [
            "budget.md",
            "budget.tex",
            "budget.csv",
            "budget_seeds.csv",
            "budget.png",
            "budget.pdf",
            "budget_line.png",
            "budget_line.pdf",
            "budget_reference.md",
            "budget_reference.csv",
        ]
    )
    assert logged["config"]["reference"] == str(reference)


def test_a_single_seed_cannot_agree_or_disagree(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    write_run_folder(
        runs_dir / "0", "late", 1, {"test/acc": 0.8}, {"data": {"train_fraction": 1.0}}
    )
    reference = write_reference(tmp_path / "published.csv", ["row,value", "late,80"])
    argv = [str(runs_dir), "--rows", "fusion", "--out", str(tmp_path / "t")]
    assert main([*argv, "--reference", str(reference)]) == 0
    # equal to the published number, yet one seed has no spread: neither yes nor no
    assert "| late | test/acc | 80.00 | 80.00 ± 0.00 (1) | +0.00 | -- |" in capsys.readouterr().out


def test_a_log_axis_refuses_zero_before_anything_is_written(tmp_path):
    runs_dir = tmp_path / "runs"
    for index, (fraction, acc) in enumerate([(0.0, 0.5), (0.5, 0.7), (1.0, 0.9)]):
        config = {"data": {"train_fraction": fraction}}
        write_run_folder(runs_dir / str(index), "late", 1, {"test/acc": acc}, config)
    with pytest.raises(ValueError, match=r"--logx: .* has the value 0.0"):
        cli(runs_dir, tmp_path / "t", "--line", "--logx")
    assert not list(tmp_path.glob("t*"))
    assert cli(runs_dir, tmp_path / "t", "--line") == 0  # a linear axis shows it
