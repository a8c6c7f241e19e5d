"""Two CPU processes (gloo) with half the batch each follow the single-process run."""

import csv
import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.tiny_models import TINY_VIT

# LayerNorm towers only: BatchNorm statistics are per process under CPU DDP (SyncBatchNorm
# needs GPUs), which would make the runs differ by design. No dropout, for the same reason.
TRAINING = [
    "trainer.max_epochs=2",
    "model.head.dropout=0.0",
    "logger=csv",
    "++callbacks.rich_progress_bar=null",
    "seed=5",
]
# The tiny ViT and the small text Transformer (no dropout by default) on shapes.
SHAPES_TOWERS = [
    "data.modalities=[image,text]",
    "model/encoders/image=timm",
    f"model.encoders.image.name={TINY_VIT['name']}",
    "model.encoders.image.pretrained=false",
    f"model.encoders.image.img_size={TINY_VIT['img_size']}",
    "+model.encoders.image.model_kwargs.depth=2",
]
COMMON = [
    *SHAPES_TOWERS,
    "data.num_train=192",
    "data.num_val=81",
    "data.num_test=81",
    "data.eval_batch_size=27",
    *TRAINING,
]


def run(tmp_path, data_dir, name, *overrides, common=COMMON) -> tuple[dict, Path]:
    """Train ``mmexp.train *common *overrides`` in a fresh process.

    Args:
        tmp_path: Folder the run folder ``name`` is made in.
        data_dir: ``paths.data_dir`` (the session's shapes cache).
        name: Run folder name below ``tmp_path``.
        overrides: Hydra overrides after ``common`` (``trainer=...``, batch sizes).
        common: Overrides shared by the runs compared.

    Returns:
        The final metrics of ``results.json`` and the run folder.
    """
    out = tmp_path / name
    run_cli(
        "train",
        *common,
        *overrides,
        f"hydra.run.dir={out}",
        f"paths.data_dir={data_dir}",
        cwd=tmp_path,
        env={"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    return json.loads((out / "results.json").read_text())["metrics"], out


def scored_test_samples(out: Path) -> int:
    """Test samples a classification run scored: the support of its per-class report."""
    with open(out / "test_report" / "per_class_metrics.csv") as handle:
        return sum(int(row["support"]) for row in csv.DictReader(handle))


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
