"""mmexp-train robustness=<grid>: the results reach the run record and W&B, not only disk."""

import json

import pytest

from mmexp.robustness.keys import flat_metrics
from tests.helpers.cli import run_cli
from tests.helpers.configs import fast_overrides
from tests.helpers.wandb_offline import read_offline_run


@pytest.mark.slow
def test_training_with_a_grid_logs_every_condition_the_summaries_table_and_plot(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        "robustness=missing",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}",
        cwd=tmp_path,
        fast=fast_overrides(without=("logger",)),  # the default loggers: W&B offline + CSV
        env={"WANDB_API_KEY": None},
    )
    results = json.loads((run_dir / "results.json").read_text())
    payload = json.loads((run_dir / "robustness.json").read_text())
    # clean, two subsets and ten missing rates for each of the two modalities
    assert len(payload["conditions"]) == 1 + 2 + 2 * 10
    assert results["robustness"] == {
        "file": str(run_dir / "robustness.json"),
        "conditions": len(payload["conditions"]),
    }
    # The clean condition is the tested model: the test metrics of the run.
    assert payload["conditions"]["clean"]["metrics"]["acc"] == pytest.approx(
        results["metrics"]["test/acc"], abs=1e-6
    )
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    logged = read_offline_run(wandb_run)
    expected = flat_metrics(payload)
    assert {"robust/subset:image/acc", "robust/RR/missing:text"} <= set(expected)
    for key, value in expected.items():
        assert logged["summary"][key] == pytest.approx(value), key
    media = {key: value for row in logged["history"] for key, value in row.items()}
    assert media["robustness/table/nrows"] == len(payload["conditions"])
    assert media["robustness/curves/_type"] == "images/separated"
    assert (run_dir / "robustness_curves.png").stat().st_size > 0
    csv_lines = (run_dir / "robustness.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(payload["conditions"])
