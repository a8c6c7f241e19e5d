import math

import numpy as np
import pytest
from scipy import stats

from mmexp.tables.aggregate import build_table
from mmexp.tables.collect import RunResult
from mmexp.tables.render import to_latex, to_markdown


def run(fusion, task, seed, acc, status="completed"):
    config = {"data": {"task": task, "modalities": ["image", "text"]}, "seed": seed}
    return RunResult(status, {"test/acc": acc}, config, {"fusion": fusion})


RUNS = [
    run("concat", "a", 1, 0.80),
    run("concat", "a", 2, 0.84),
    run("concat", "a", 3, 0.82),
    run("late", "a", 1, 0.70),
    run("late", "a", 2, 0.75),
    run("late", "a", 3, 0.71),
    run("concat", "b", 1, 0.60),
    run("late", "b", 1, 0.90),
    run("late", "b", 2, None, status="failed"),
    run("tensor", "a", 1, 0.10, status="failed"),
]


def test_cells_are_mean_std_n_over_seeds_and_best_per_column():
    table = build_table(RUNS, "test/acc", "fusion", "data.task")
    concat_a = table.cell("concat", "a")
    assert concat_a.n == 3
    assert concat_a.mean == pytest.approx(0.82)
    assert concat_a.std == pytest.approx(np.std([0.80, 0.84, 0.82], ddof=1))
    assert concat_a.best and not table.cell("late", "a").best
    assert table.cell("late", "b").best and table.cell("late", "b").failed == 1
    assert table.cell("tensor", "a").n == 0 and table.cell("tensor", "a").failed == 1
    assert table.cell("tensor", "b").n == 0 and table.cell("tensor", "b").failed == 0


def test_paired_t_test_against_baseline_matches_scipy():
    table = build_table(RUNS, "test/acc", "fusion", "data.task", baseline="concat")
    expected = stats.ttest_rel([0.70, 0.75, 0.71], [0.80, 0.84, 0.82]).pvalue
    assert table.cell("late", "a").p_value == pytest.approx(expected)
    assert table.cell("late", "b").p_value is None  # one paired seed only


def test_markdown_and_latex_mark_best_failed_missing_and_significance():
    table = build_table(RUNS, "test/acc", "fusion", "data.task", baseline="concat")
    markdown = to_markdown(table)
    assert "| concat | **82.00 ± 2.00 (3)** | 60.00 ± 0.00 (1) |" in markdown
    assert "| tensor | failed | -- |" in markdown
    assert "**90.00 ± 0.00 (1)†**" in markdown
    p = table.cell("late", "a").p_value
    assert ("72.00 ± 2.65 (3)*" in markdown) == (p < 0.05)
    latex = to_latex(table)
    assert r"\toprule" in latex and r"\textbf{82.00 $\pm$ 2.00 (3)}" in latex


def test_axis_reads_choices_then_dotted_keys_and_joins_lists():
    result = RUNS[0]
    assert result.axis("fusion") == "concat"
    assert result.axis("data.task") == "a"
    assert result.axis("data.modalities") == "image+text"
    assert result.axis("no.such.key") is None


def test_unknown_baseline_and_row_axis_are_named():
    with pytest.raises(ValueError, match="baseline 'nope'"):
        build_table(RUNS, "test/acc", "fusion", "data.task", baseline="nope")
    with pytest.raises(ValueError, match="row axis 'nope'"):
        build_table(RUNS, "test/acc", "nope")
    assert math.isnan(build_table(RUNS, "test/acc", "fusion", "data.task").cell("x", "a").mean)


def test_two_runs_in_one_cell_with_one_seed_are_refused_naming_the_axis():
    # RUNS vary over data.task: a table without it would keep one task's value per seed
    with pytest.raises(ValueError, match=r"two completed runs share fusion=.* give the axis"):
        build_table(RUNS, "test/acc", "fusion")


def test_wandb_project_runs_become_run_results():
    from types import SimpleNamespace

    from mmexp.tables.collect import collect_wandb

    class FakeApi:
        def runs(self, path, filters):
            assert path == "team/mmexp" and filters == {"group": "ablation"}
            config = {
                "seed": 1,
                "data": {"task": "a"},
                "run": {"choices": {"fusion": "late"}},
                "_wandb": {},
            }
            return [
                SimpleNamespace(
                    id="r1", state="finished", config=config, summary={"test/acc": 0.7, "note": "x"}
                ),
                SimpleNamespace(id="r2", state="crashed", config=config, summary={}),
                # a trial its Optuna pruner stopped finishes as a W&B run too
                SimpleNamespace(
                    id="r3",
                    state="finished",
                    config=config,
                    summary={"test/acc": 0.4, "optuna/pruned_at_epoch": 1},
                ),
            ]

    runs = collect_wandb("team/mmexp", "ablation", api=FakeApi())
    assert [r.status for r in runs] == ["completed", "failed", "pruned"]
    runs = runs[:2]
    assert runs[0].axis("fusion") == "late" and runs[0].metrics == {"test/acc": 0.7}
    table = build_table(runs, "test/acc", "fusion", "data.task")
    assert table.cell("late", "a").n == 1 and table.cell("late", "a").failed == 1
