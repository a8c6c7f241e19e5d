"""Two CPU processes (gloo) with half the batch each follow the single-process run."""

import pytest

from tests.helpers.ddp_runs import run, scored_test_samples


@pytest.mark.slow
def test_two_processes_reach_the_single_process_validation_metrics(tmp_path, data_dir):
    single, single_out = run(tmp_path, data_dir, "single", "trainer=cpu", "data.batch_size=32")
    ddp, ddp_out = run(tmp_path, data_dir, "ddp", "trainer=ddp_cpu", "data.batch_size=16")
    # Every test sample scored once: Lightning's padding sampler would score 82.
    assert scored_test_samples(single_out) == scored_test_samples(ddp_out) == 81
    for name in ("val/loss", "val/acc", "val/auroc", "test/acc", "test/loss"):
        assert ddp[name] == pytest.approx(single[name], rel=2e-3, abs=2e-3), name
    # The training data order is the same set per global batch, so losses agree too.
    assert ddp["train/loss_epoch"] == pytest.approx(single["train/loss_epoch"], rel=2e-3)
