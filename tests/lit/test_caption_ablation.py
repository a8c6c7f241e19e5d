"""experiment=caption_ablation: its sweep, its documented commands, a reduced grid's table."""

import csv

import pytest

from mmexp.builders import build_module
from mmexp.config_check import check_config
from mmexp.tables.cli import main as table_main
from mmexp.tables.collect import collect_local
from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.experiment_files import documented_commands, sweep

STUDY = "experiment=caption_ablation"
ROWS = "objective/decoder,objective.module.conditioning"
CONDITIONINGS = ["tokens", "pooled", "fused", "fused_tokens"]


def test_the_ablation_sweeps_decoder_conditioning_and_seed(tmp_path, data_dir):
    mode, params = sweep([STUDY])
    assert mode == "RunMode.MULTIRUN"
    assert params == {
        "objective/decoder": "transformer",
        "objective.module.conditioning": ",".join(CONDITIONINGS),
        "seed": "1,2,3",
    }
    for conditioning in CONDITIONINGS:
        cfg = compose_config(
            "train",
            [STUDY, f"objective.module.conditioning={conditioning}"],
            tmp_path,
            data_dir,
        )
        check_config(cfg)
        module = build_module(cfg, num_classes=1)
        assert sorted(module.encoders) == ["audio", "image"]
        # the fused conditionings read fusion=early_tokens, the others the encoders
        fused = conditioning.startswith("fused")
        assert (module.memory.fusion is not None) == fused, conditioning


def test_the_ablation_documents_its_run_and_table_commands():
    (run, *_) = documented_commands("caption_ablation", "mmexp-train")
    assert run == ["mmexp-train", "-m", STUDY, "hydra.sweep.dir=outputs/caption_ablation"]
    (table,) = documented_commands("caption_ablation", "mmexp-table")
    assert table[1:] == [
        "outputs/caption_ablation",
        "--rows",
        ROWS,
        "--analysis",
        "test/bleu4",
        "test/meteor",
        "test/rouge_l",
        "test/cider",
        "--baseline",
        "transformer / tokens",
        "--out",
        "outputs/caption_ablation/table",
    ]


@pytest.mark.slow  # four tiny caption runs in one multirun process: about a minute
def test_a_reduced_grid_runs_and_makes_the_documented_table(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "train",
        STUDY,
        "objective.module.conditioning=tokens,fused_tokens",
        "seed=1,2",
        "data.num_train=96",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=1",
        "objective.decoder.width=64",
        "objective.decoder.depth=1",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        cwd=tmp_path,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        timeout=900,
    )
    (table,) = documented_commands("caption_ablation", "mmexp-table")
    out = tmp_path / "table"
    args = [str(sweep_dir), *table[2:-2], "--out", str(out), "--digits", "6"]
    assert table_main(args) == 0
    with out.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    runs = collect_local([sweep_dir])
    assert len(runs) == 4 and all(run.status == "completed" for run in runs)
    scores: dict[str, list[float]] = {}
    for run in runs:
        scores.setdefault(run.axis(ROWS), []).append(run.metrics["test/cider"])
    assert set(scores) == {"transformer / tokens", "transformer / fused_tokens"}
    assert {row[ROWS] for row in rows} == set(scores)
    # one CSV row per (row, column): the metrics are the columns
    cells = {(row[ROWS], row["metric"]): row for row in rows}
    assert {column for _, column in cells} == {
        "test/bleu4",
        "test/meteor",
        "test/rouge_l",
        "test/cider",
    }
    for name, values in scores.items():
        cell = cells[(name, "test/cider")]
        assert cell["n"] == "2"
        assert float(cell["mean"]) == pytest.approx(sum(values) / 2, abs=1e-5)
