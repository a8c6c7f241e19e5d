"""experiment=imbalance_ablation: its sweep, its documented commands, a reduced grid's table."""

import csv

import pytest

from mmexp.builders import build_module
from mmexp.config_check import check_config
from mmexp.tables.cli import main as table_main
from mmexp.tables.collect import collect_local
from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.experiment_files import documented_commands, sweep

STUDY = "experiment=imbalance_ablation"
ROWS = "training,fusion"
METHODS = ["standard", "ogm_ge", "gradient_blending", "unimodal_aux", "modality_dropout"]


def test_the_ablation_sweeps_method_fusion_and_seed_with_the_balance_probes(tmp_path, data_dir):
    mode, params = sweep([STUDY])
    assert mode == "RunMode.MULTIRUN"
    assert params == {"training": ",".join(METHODS), "fusion": "concat,sum,gated", "seed": "1,2,3"}
    for method in METHODS:
        cfg = compose_config("train", [STUDY, f"training={method}"], tmp_path, data_dir)
        check_config(cfg)
        assert "modality_balance" in cfg.callbacks and cfg.callbacks.early_stopping is None
        module = build_module(cfg, num_classes=3)
        assert sorted(module.encoders) == ["image", "text"]
        assert (module.unimodal_losses is not None) == (method in METHODS[2:4]), method
        assert ("ogm_ge" in cfg.callbacks) == (method == "ogm_ge")


def test_the_ablation_documents_its_run_and_table_commands():
    (run, *_) = documented_commands("imbalance_ablation", "mmexp-train")
    assert run == ["mmexp-train", "-m", STUDY, "hydra.sweep.dir=outputs/imbalance_ablation"]
    (table,) = documented_commands("imbalance_ablation", "mmexp-table")
    assert table[1:] == [
        "outputs/imbalance_ablation",
        "--rows",
        "training,fusion",
        "--analysis",
        "test/acc",
        "balance/image/probe_acc",
        "balance/text/probe_acc",
        "--baseline",
        "standard / concat",
        "--out",
        "outputs/imbalance_ablation/table",
    ]


def test_a_reduced_grid_runs_and_makes_the_documented_table(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "train",
        STUDY,
        "training=standard,gradient_blending",
        "fusion=concat",
        "seed=1,2",
        "data.num_train=96",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        cwd=tmp_path,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        timeout=900,
    )
    (table,) = documented_commands("imbalance_ablation", "mmexp-table")
    out = tmp_path / "table"
    args = [str(sweep_dir), *table[2:-2], "--out", str(out), "--digits", "6"]
    assert table_main(args) == 0
    with out.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    runs = collect_local([sweep_dir])
    assert len(runs) == 4 and all(run.status == "completed" for run in runs)
    probes: dict[str, list[float]] = {}
    for run in runs:
        probes.setdefault(run.axis(ROWS), []).append(run.metrics["balance/text/probe_acc"])
    assert set(probes) == {"standard / concat", "gradient_blending / concat"}
    cells = {(row[ROWS], row["metric"]): row for row in rows}
    assert {metric for _, metric in cells} == {
        "test/acc",
        "balance/image/probe_acc",
        "balance/text/probe_acc",
    }
    for method, values in probes.items():
        cell = cells[(method, "balance/text/probe_acc")]
        assert cell["n"] == "2"
        assert float(cell["mean"]) == pytest.approx(sum(values) / 2, abs=1e-5)
