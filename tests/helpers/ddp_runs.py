"""Runs compared between one process and two CPU processes (``trainer=ddp_cpu``, gloo)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

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
