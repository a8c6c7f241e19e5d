import logging

import pytest

from mmexp.robustness.keys import flat_metrics
from mmexp.tables.collect import RunResult
from mmexp.tables.robust import condition_metric, robustness_columns, with_effective_robustness
from tests.helpers.robustness_runs import make_payload


def run(fusion, seed, task, clean, half, full):
    payload = make_payload(clean, missing={"text": {0.5: half, 0.05: clean, 1.0: full}})
    config = {"seed": seed, "data": {"task": task}}
    metrics = flat_metrics(payload)
    return RunResult("completed", metrics, config, {"fusion": fusion}, robustness=payload)


RUNS = [
    run("concat", 1, "a", 0.9, 0.8, 0.6),
    run("late", 1, "a", 0.8, 0.6, 0.2),
    run("concat", 1, "b", 0.9, 0.8, 0.6),
    run("late", 1, "b", 0.8, 0.7, 0.6),
    run("concat", 2, "a", 0.9, 0.8, 0.6),
]


def test_a_curve_request_expands_to_its_levels_in_increasing_order():
    assert condition_metric("test/f1_macro") == "f1_macro" and condition_metric("acc") == "acc"
    columns = robustness_columns(RUNS, ["missing:text", "RR/missing:text"], "acc")
    assert [label for label, _ in columns] == [
        "missing:text@0.05",
        "missing:text@0.5",
        "missing:text@1.0",
        "RR/missing:text",
    ]
    assert columns[1][1] == "robust/missing:text@0.5/acc"
    with pytest.raises(ValueError, match="'ER/missing:text'"):
        robustness_columns(RUNS, ["ER/missing:text"], "acc")


def test_effective_robustness_pairs_runs_on_seed_and_the_other_axes(caplog):
    with caplog.at_level(logging.WARNING):
        paired = with_effective_robustness(RUNS, "fusion", "late", ["seed", "data.task"])
    er = [run.metrics.get("robust/ER/missing:text") for run in paired]
    # Levels 0, 0.05, 0.5, 1. Task a: concat minus shifted late fusion [0.9, 0.9, 0.7, 0.3]
    # is [0, 0, 0.1, 0.3]; task b: minus [0.9, 0.9, 0.8, 0.7] is [0, 0, 0, -0.1].
    assert er[0] == pytest.approx(0.45 * 0.1 / 2 + 0.5 * 0.4 / 2)
    assert er[1] == pytest.approx(0.0) and er[3] == pytest.approx(0.0)
    assert er[2] == pytest.approx(0.5 * -0.1 / 2)
    assert er[4] is None  # no late-fusion run of seed 2
    assert "1 runs have no fusion=late run to pair with" in caplog.text
    assert "robust/ER/missing:text" not in RUNS[0].metrics  # the input runs are left alone
