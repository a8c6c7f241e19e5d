import logging
from types import SimpleNamespace

import pytest

from mmexp.tables.aggregate import build_table
from mmexp.tables.collect import collect_local, collect_wandb, read_run_folder
from tests.helpers.robustness_runs import make_payload, write_run


def payload(clean, seed):
    return make_payload(
        clean,
        subsets={"image": clean - 0.2},
        missing={"text": {0.5: clean - 0.1, 1.0: clean - 0.3}},
        seed=seed,
    )


def test_robustness_json_beside_results_json_joins_the_metrics(tmp_path):
    folder = write_run(tmp_path, "a", "concat", 1, payload(0.9, 1))
    run = read_run_folder(folder)
    assert run.metrics["test/acc"] == 0.9
    assert run.metrics["robust/subset:image/acc"] == pytest.approx(0.7)
    assert run.metrics["robust/missing:text@0.5/acc"] == pytest.approx(0.8)
    assert run.metrics["robust/RR/missing:text"] == pytest.approx((0.9 + 0.8) / 4 + (0.8 + 0.6) / 4)
    assert run.robustness["grid"] == "all"
    plain = read_run_folder(write_run(tmp_path, "b", "concat", 2))
    assert plain.robustness == {} and not any(k.startswith("robust/") for k in plain.metrics)


def test_an_unreadable_robustness_json_leaves_the_run_and_warns(tmp_path, caplog):
    folder = write_run(tmp_path, "a", "concat", 1)
    (folder / "robustness.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        (run,) = collect_local([tmp_path])
    assert run.metrics == {"test/acc": 0.5} and run.robustness == {}
    assert "skipping unreadable" in caplog.text


def test_a_robustness_metric_is_an_ordinary_table_metric(tmp_path):
    for seed, clean in ((1, 0.9), (2, 0.8)):
        write_run(tmp_path, f"concat{seed}", "concat", seed, payload(clean, seed))
    write_run(tmp_path, "late1", "late", 1, payload(0.7, 1))
    runs = collect_local([tmp_path])
    table = build_table(runs, "robust/subset:image/acc", "fusion", "data.task")
    assert table.cell("concat", "redundant").mean == pytest.approx(0.65)
    assert table.cell("concat", "redundant").n == 2
    assert table.cell("late", "redundant").mean == pytest.approx(0.5)


def test_wandb_runs_read_robust_keys_logged_to_their_summary():
    class FakeApi:
        def runs(self, path, filters):
            config = {"seed": 1, "run": {"choices": {"fusion": "late"}}}
            summary = {"test/acc": 0.8, "robust/missing:text@0.5/acc": 0.7}
            summary["robust/RR/missing:text"] = 0.65
            return [SimpleNamespace(id="r1", state="finished", config=config, summary=summary)]

    (run,) = collect_wandb("team/mmexp", api=FakeApi())
    assert run.metrics["robust/missing:text@0.5/acc"] == 0.7
    assert build_table([run], "robust/RR/missing:text", "fusion").cell(
        "late", "robust/RR/missing:text"
    ).mean == pytest.approx(0.65)
