"""mmexp-eval ckpt_path=<folder>: every completed training run below it, into its own folder."""

import json

import pytest

from mmexp.eval_runs import run_checkpoints
from tests.helpers.cli import run_cli
from tests.helpers.tiny_runs import train_tiny


@pytest.mark.slow
def test_a_folder_of_runs_is_evaluated_run_by_run_into_each_runs_folder(tmp_path, data_dir):
    sweep = tmp_path / "multirun"
    first = train_tiny(sweep / "0", data_dir, "seed=1")
    train_tiny(sweep / "1", data_dir, "seed=2")
    failed = sweep / "2"  # a job that failed: left out
    failed.mkdir(parents=True)
    (failed / "config.yaml").write_text("seed: 3\n")
    (failed / "results.json").write_text(json.dumps({"status": "failed"}))
    found = run_checkpoints(sweep)
    assert [run.name for run, _ in found] == ["0", "1"]
    assert str(found[0][1]) == first["best_checkpoint"]  # the best checkpoint, not the last

    eval_dir = tmp_path / "eval"
    completed = run_cli(
        "eval",
        f"ckpt_path={sweep}",
        "robustness=missing",
        "analysis=[contribution]",
        f"hydra.run.dir={eval_dir}",
        cwd=tmp_path,
    )
    assert "mmexp-eval 2/2" in completed.stdout + completed.stderr
    for run in ("0", "1"):
        record = json.loads((eval_dir / run / "results.json").read_text())
        assert record["status"] == "completed"
        assert record["checkpoint"] == str(found[int(run)][1].resolve())
        assert (sweep / run / "robustness.json").is_file()
        analysis = json.loads((sweep / run / "analysis.json").read_text())
        assert set(analysis["components"]) == {"contribution"}
    # Each run scored its own checkpoint: the seeds differ, so do the subset metrics.
    scores = [
        json.loads((sweep / run / "robustness.json").read_text())["conditions"]["subset:image"]
        for run in ("0", "1")
    ]
    assert scores[0]["metrics"] != scores[1]["metrics"]
