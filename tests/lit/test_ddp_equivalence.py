"""Two CPU processes (gloo) with half the batch each follow the single-process run."""

import csv
import json

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.tiny_models import TINY_VIT

# LayerNorm towers only: BatchNorm statistics are per process under CPU DDP (SyncBatchNorm
# needs GPUs), which would make the runs differ by design. No dropout, for the same reason.
COMMON = [
    "data.modalities=[image,text]",
    "data.num_train=192",
    "data.num_val=81",
    "data.num_test=81",
    "data.eval_batch_size=27",
    "trainer.max_epochs=2",
    "model/encoders/image=timm",
    f"model.encoders.image.name={TINY_VIT['name']}",
    "model.encoders.image.pretrained=false",
    f"model.encoders.image.img_size={TINY_VIT['img_size']}",
    "+model.encoders.image.model_kwargs.depth=2",
    "model.head.dropout=0.0",
    "logger=csv",
    "++callbacks.rich_progress_bar=null",
    "seed=5",
]


def run(tmp_path, data_dir, name, *overrides):
    out = tmp_path / name
    run_cli(
        "train",
        *COMMON,
        *overrides,
        f"hydra.run.dir={out}",
        f"paths.data_dir={data_dir}",
        cwd=tmp_path,
        env={"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    result = json.loads((out / "results.json").read_text())
    with open(out / "test_report" / "per_class_metrics.csv") as handle:
        scored = sum(int(row["support"]) for row in csv.DictReader(handle))
    return result["metrics"], scored


@pytest.mark.slow
def test_two_processes_reach_the_single_process_validation_metrics(tmp_path, data_dir):
    single, single_scored = run(tmp_path, data_dir, "single", "trainer=cpu", "data.batch_size=32")
    ddp, ddp_scored = run(tmp_path, data_dir, "ddp", "trainer=ddp_cpu", "data.batch_size=16")
    # Every test sample scored once: Lightning's padding sampler would score 82.
    assert single_scored == ddp_scored == 81
    for name in ("val/loss", "val/acc", "val/auroc", "test/acc", "test/loss"):
        assert ddp[name] == pytest.approx(single[name], rel=2e-3, abs=2e-3), name
    # The training data order is the same set per global batch, so losses agree too.
    assert ddp["train/loss_epoch"] == pytest.approx(single["train/loss_epoch"], rel=2e-3)
